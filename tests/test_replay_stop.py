"""A parted replay (`--jobs`) stopped with SIGTERM stops its parts and leaves nothing behind."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from vpp_aggregator.demo.constants import PACKAGED_DATA_DIR

SESSIONS = PACKAGED_DATA_DIR / "acn_caltech" / "sessions_caltech.csv"


def _children(pid: int) -> set[int]:
    """The processes whose parent is `pid` (Linux: read from /proc)."""
    out = set()
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            text = status.read_text()
        except OSError:  # gone meanwhile
            continue
        if re.search(rf"^PPid:\s+{pid}$", text, re.M):
            out.add(int(status.parent.name))
    return out


def _wait_for(what: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if what():
            return True
        time.sleep(0.2)
    return bool(what())


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads processes in /proc")
def test_a_parted_replay_stopped_with_sigterm_stops_its_parts_and_leaves_no_store(
    tmp_path: Path,
) -> None:
    """`kill` of a `--jobs 2` replay: its two parts stop with it, and their stores go with the
    directory the replay made for them (the parent once died alone and left both replaying)."""
    cmd = [
        sys.executable, "-m", "vpp_aggregator.cli", "replay", "--sessions", str(SESSIONS),
        "--from", "2019-03-05", "--to", "2019-04-05", "--fleet", "ev=8,bess=1",
        "--jobs", "2", "--json", str(tmp_path / "out.json"),
    ]  # fmt: skip
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    parts_of: set[int] = set()
    try:
        stores = lambda: list(tmp_path.glob("vpp-replay-parts-*/vpp-replay-*"))  # noqa: E731
        # both parts replaying: each has made its store (the pool's helper may be a child too)
        assert _wait_for(lambda: len(stores()) == 2, 180.0), "the parts never started"
        parts_of = _children(proc.pid)
        assert len(parts_of) >= 2
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=180.0) != 0
        assert _wait_for(lambda: not any(Path(f"/proc/{p}").exists() for p in parts_of), 60.0)
        assert list(tmp_path.iterdir()) == []  # no store, no directory, no report
    finally:  # nothing left running, whatever failed
        for p in _children(proc.pid) | parts_of:
            with contextlib.suppress(OSError):
                os.kill(p, signal.SIGKILL)
        proc.kill()
