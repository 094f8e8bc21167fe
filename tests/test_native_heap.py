"""Freed native memory goes back to the system: the load run's RSS creep (RELIABILITY.md)."""

from __future__ import annotations

import platform
import subprocess
import sys
import textwrap

import pytest

from vpp_aggregator.adapters import native_heap
from vpp_aggregator.config import ConfigError, load_settings

glibc_only = pytest.mark.skipif(
    platform.libc_ver()[0] != "glibc", reason="malloc_trim and mallopt are glibc's"
)

# A request thread that allocates a burst, keeps every 16th block and drops the rest: the heap
# is left fragmented, so free() alone cannot shrink it. Run apart so the suite's heap is not measured.
_FRAGMENT = textwrap.dedent(
    """
    import threading
    from vpp_aggregator.adapters import native_heap

    def rss_mb():
        with open("/proc/self/status") as fh:
            return next(int(l.split()[1]) / 1024 for l in fh if l.startswith("VmRSS:"))

    kept = []
    def burst():
        blocks = [bytes(2000) for _ in range(100_000)]
        kept.extend(blocks[::16])
        blocks.clear()

    t = threading.Thread(target=burst)
    t.start()
    t.join()
    before = rss_mb()
    native_heap.trim()
    print(before, rss_mb(), len(kept))
    """
)


@glibc_only
def test_trim_returns_a_fragmented_thread_heap_to_the_system() -> None:
    out = subprocess.run(
        [sys.executable, "-c", _FRAGMENT], capture_output=True, text=True, check=True, timeout=60
    ).stdout.split()
    before_mb, after_mb, kept = float(out[0]), float(out[1]), int(out[2])
    assert kept == 6250  # the survivors are still there
    # ~190 MB were freed in the burst; at least 100 MB of it must leave the process.
    assert before_mb - after_mb > 100.0, (before_mb, after_mb)


@glibc_only
def test_arena_cap_is_accepted_and_zero_leaves_the_default() -> None:
    assert native_heap.cap_arenas(2) is True
    assert native_heap.cap_arenas(0) is False


def test_heap_settings_are_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VPP_MALLOC_TRIM_SECONDS", "-1")
    with pytest.raises(ConfigError, match="VPP_MALLOC_TRIM_SECONDS"):
        load_settings()
    monkeypatch.setenv("VPP_MALLOC_TRIM_SECONDS", "0")
    monkeypatch.setenv("VPP_MALLOC_ARENA_MAX", "0")
    settings = load_settings()
    assert (settings.malloc_trim_seconds, settings.malloc_arena_max) == (0.0, 0)
