"""`make bench ONLY=http-scale`: `GET /capacity/available` latency at 100,000 and 1,000,000
resources, one `serve` process each on a seeded SQLite database.

The polling starts as soon as the process answers `/health`, so the window holds what a process
does in its first minute besides answering: the first offers of every market and grid node, the
hourly forecast the accuracy tracking makes, telemetry snapshots. Those jobs run on threads beside
the event loop and are what made the tail long, not the handler (0.1 ms). The server's own CPU
seconds over the window are given beside the latencies: on a shared machine they say how much of
the window was this process's work. `VPP_HTTP_SCALE_SIZES` (comma-separated) and
`VPP_HTTP_SCALE_SECONDS` change the sizes and the window.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx
import numpy as np

from benchmarks.suite import _open_loop, seeded_server

PATH = "/capacity/available"
CLIENTS = 50
RATE_PER_CLIENT = 10.0  # 500 requests/s in all


@dataclass(frozen=True, slots=True)
class ScaleResult:
    resources: int
    requests: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    server_cpu_s: float
    seconds: float
    startup_s: float
    busiest_jobs: str  # the periodic jobs that spent most CPU in the window


def _job_cpu_s(base: str) -> dict[str, float]:
    """CPU seconds each periodic job has spent so far (`vpp_job_cpu_seconds_total`)."""
    out: dict[str, float] = {}
    for line in httpx.get(base + "/metrics", timeout=60).text.splitlines():
        if line.startswith('vpp_job_cpu_seconds_total{job="'):
            name, value = line[len('vpp_job_cpu_seconds_total{job="') :].split('"} ')
            out[name] = float(value)
    return out


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(n: int, seconds: float) -> ScaleResult:
    t0 = time.perf_counter()
    with seeded_server(n, "vpp-http-scale-", startup_s=900) as server:
        startup_s = time.perf_counter() - t0
        answer = httpx.get(server.base + PATH, timeout=60).json()
        assert answer["resource_count"] == n, answer["resource_count"]
        cpu0, jobs0 = _cpu_seconds(server.proc.pid), _job_cpu_s(server.base)
        lat = np.asarray(
            asyncio.run(_open_loop(server.base, PATH, CLIENTS, RATE_PER_CLIENT, seconds))
        )
        cpu = _cpu_seconds(server.proc.pid) - cpu0
        jobs = {k: v - jobs0.get(k, 0.0) for k, v in _job_cpu_s(server.base).items()}
    top = sorted(jobs.items(), key=lambda kv: -kv[1])[:3]
    busiest = ", ".join(f"{k} {v:.1f}" for k, v in top if v >= 0.05) or "none above 0.05 s"
    ms = lat * 1e3
    return ScaleResult(
        resources=n,
        requests=int(ms.size),
        p50_ms=float(np.percentile(ms, 50)),
        p99_ms=float(np.percentile(ms, 99)),
        max_ms=float(ms.max()),
        server_cpu_s=cpu,
        seconds=seconds,
        startup_s=startup_s,
        busiest_jobs=busiest,
    )


def run_http_scale(log: Callable[[str], object]) -> list[str]:
    sizes = [int(x) for x in os.environ.get("VPP_HTTP_SCALE_SIZES", "100000,1000000").split(",")]
    seconds = float(os.environ.get("VPP_HTTP_SCALE_SECONDS", "60"))
    lines = [
        f"### `GET /capacity/available` at scale: {CLIENTS} clients polling, "
        f"{CLIENTS * RATE_PER_CLIENT:.0f} req/s in all, for {seconds:.0f} s from the moment "
        "`serve` answers (its first offers, forecasts and snapshots run meanwhile); "
        "SQLite, load client on the same cores (target p99 ≤ 10 ms at 1,000,000)",
        "",
        "| resources | requests | p50 (ms) | p99 (ms) | max (ms) | server CPU in the window (s) | of it, the busiest periodic jobs (CPU s) | seed + start (s) |",
        "|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for n in sizes:
        log(f"HTTP at scale: {n:,} resources (seeding, starting the server) ...")
        r = measure(n, seconds)
        log(
            f"  p50 {r.p50_ms:.2f} ms, p99 {r.p99_ms:.2f} ms, server CPU {r.server_cpu_s:.1f} s"
            f" ({r.busiest_jobs})"
        )
        lines.append(
            f"| {r.resources:,} | {r.requests:,} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | {r.max_ms:.1f} "
            f"| {r.server_cpu_s:.1f} | {r.busiest_jobs} | {r.startup_s:.0f} |"
        )
    return [*lines, ""]
