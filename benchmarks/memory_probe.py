"""Where the live state's memory goes, in one process: RSS and tracemalloc's top allocation sites
after loading `n` resources with telemetry, two capacity windows and the forecast's plug-in
history (each resource's ids arriving as separate string objects, as from the database)."""

from __future__ import annotations

import gc
import tracemalloc
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import numpy as np

from devservices.synthetic import synthetic_fleet
from vpp_aggregator.adapters import native_heap
from vpp_aggregator.config import Settings
from vpp_aggregator.domain.fleet_image import FleetImage, restore_image, take_image
from vpp_aggregator.domain.fleet_state import FleetState
from vpp_aggregator.domain.forecast.history import PluggedHistory


def _rss_bytes() -> int:
    """RSS once freed native memory is given back, as the service's periodic trim does."""
    native_heap.trim()
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def _short(path: str) -> str:
    return path.rsplit("/src/", 1)[-1].rsplit("site-packages/", 1)[-1].rsplit("/work/", 1)[-1]


def _restored(n: int, rules: dict[str, Any], now: datetime) -> tuple[FleetImage, list[Any]]:
    """An image of `n` resources, and 1,000 registrations made after it: what a server
    restarting after a crash loads."""
    state = FleetState(**rules)
    for s in range(0, n, 50_000):
        state.upsert_many(synthetic_fleet(min(50_000, n - s), s), now)
    return take_image(state, now), synthetic_fleet(1000, n)


def probe(
    n: int, top: int = 8, rules: dict[str, Any] | None = None, path: str = "registry"
) -> dict[str, Any]:
    """Per-resource bytes (RSS and traced) of the live state and the plug-in history, and the
    top allocation sites. `path`: "registry" (registered in chunks, as a first start) or
    "image" (an image restored, then 1,000 registered: the restart benchmark's third start)."""
    from benchmarks.suite import shipped_rules

    rules = rules or shipped_rules()
    now = datetime(2026, 11, 25, 14, 0, tzinfo=UTC)
    image: FleetImage | None = None
    if path == "image":
        image, more = _restored(n, rules, now)
        fleets = [more]
    else:
        fleets = [synthetic_fleet(min(50_000, n - s), s) for s in range(0, n, 50_000)]
    gc.collect()
    rss0 = _rss_bytes()
    tracemalloc.start(1)
    snap0 = tracemalloc.take_snapshot()
    state = FleetState(**rules)
    if image is not None:
        # Fresh id strings, as read back from the database, made inside the measurement.
        ids = [x.encode().decode() for x in image.resource_ids]
        restore_image(state, replace(image, resource_ids=ids), now)
        del ids  # the image itself is kept: freeing it here would count against the state
    for chunk in fleets:
        state.upsert_many(chunk, now)
    n = len(state)
    rng = np.random.default_rng(1)
    rows = np.arange(n, dtype=np.int64)
    ts = now.timestamp() - rng.uniform(0, 240, n)
    soc, plugged = rng.uniform(15, 95, n), rng.random(n) < 0.85
    state.apply_telemetry(rows, ts, soc, plugged, np.zeros(n), now)
    state.capacity(now, 60)
    state.capacity(now, 15)
    gc.collect()
    rss_state = _rss_bytes()
    traced_state = tracemalloc.get_traced_memory()[0]
    history = PluggedHistory(  # as the forecast service has it
        28 * 24, state.history_rows, hold_s=Settings().telemetry_stale_seconds
    )
    every = state.ids_of(np.arange(n, dtype=np.int64))  # the rows' ids, in row order
    for start in range(0, n, 100_000):  # fresh strings, as read back from the database
        ids = [x.encode().decode() for x in every[start : start + 100_000]]
        k = len(ids)
        history.add(
            ids,
            ts[start : start + k],
            plugged[start : start + k],
            soc[start : start + k],
            now.timestamp(),
        )
    del every, ids  # read and let go, as the forecast service's load does
    gc.collect()
    rss_all = _rss_bytes()
    traced_all = tracemalloc.get_traced_memory()[0]
    sites = tracemalloc.take_snapshot().compare_to(snap0, "lineno")[:top]
    tracemalloc.stop()
    del fleets
    return {
        "resources": n,
        "path": path,
        "rss_state_B": (rss_state - rss0) / n,
        "rss_all_B": (rss_all - rss0) / n,
        "traced_state_B": traced_state / n,
        "traced_all_B": traced_all / n,
        "sites": [
            (
                f"{_short(s.traceback[0].filename)}:{s.traceback[0].lineno}",
                s.size_diff / n,
            )
            for s in sites
        ],
        "_keep": (state, history, image),
    }


def probe_lines(n: int) -> list[str]:
    """The probe in a process of its own (a clean heap) per path, as Markdown."""
    import json
    import subprocess
    import sys

    lines = []
    for flag, what in (
        ("", "registered"),
        ("--image", "restored from an image, then 1,000 registered"),
    ):
        cmd = f"python -m benchmarks.memory_probe {n} {flag}".rstrip()
        out = subprocess.run(
            [sys.executable, *cmd.split()[1:], "--json"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        r = json.loads(out)
        lines.append(
            f"- In one process at {n:,} resources {what} "
            f"(`{cmd}`): live state "
            f"(telemetry, 60 and 15 min windows) {r['rss_state_B']:,.0f} B RSS per resource "
            f"({r['traced_state_B']:,.0f} B traced); with the forecast's plug-in history "
            f"{r['rss_all_B']:,.0f} B ({r['traced_all_B']:,.0f} B traced). Top allocation sites "
            "(tracemalloc, B per resource): "
            + "; ".join(f"`{site}` {b:,.0f}" for site, b in r["sites"]),
        )
    return lines


if __name__ == "__main__":
    import json
    import sys

    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    result = probe(
        int(args[0]) if args else 200_000, path="image" if "--image" in sys.argv else "registry"
    )
    result.pop("_keep")
    if "--json" in sys.argv:
        print(json.dumps(result))
    else:
        for k, v in result.items():
            if k != "sites":
                print(k, round(v, 1) if isinstance(v, float) else v)
        for site, b in result["sites"]:
            print(f"  {b:8.1f} B  {site}")
