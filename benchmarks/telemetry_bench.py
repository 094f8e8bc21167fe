"""Telemetry into PostgreSQL at fleet scale: `POST /telemetry` in batches of 10,000 into one
`serve` process whose database holds 100k or 1M resources, with the CPU time each process
spent per sample (the service, and PostgreSQL's own processes), which a shared machine does
not distort the way it distorts samples per second."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import numpy as np
import orjson
import psycopg

from benchmarks.suite import _seed_database, _Server
from devservices.ports import free_port
from devservices.synthetic import synthetic_fleet

CLK = os.sysconf("SC_CLK_TCK")


def _cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK


def _postgres_cpu_s() -> float:
    """CPU time of every local `postgres` process, ended backends excluded (they are
    counted in their parent's children time, which /proc also reports)."""
    total = 0.0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as fh:
                raw = fh.read()
        except OSError:
            continue
        if "(postgres)" not in raw:
            continue
        f = raw.rsplit(")", 1)[1].split()
        total += (int(f[11]) + int(f[12]) + int(f[13]) + int(f[14])) / CLK
    return total


class _Idle:
    """CPU per second of the service while no telemetry arrives."""

    def __init__(self, pid: int, seconds: float) -> None:
        c0, t0 = _cpu_s(pid), time.perf_counter()
        time.sleep(seconds)  # a measuring window, not a wait for a condition
        self.service_per_s = (_cpu_s(pid) - c0) / (time.perf_counter() - t0)


@contextlib.contextmanager
def postgres_database() -> Iterator[str]:
    """A fresh database on DATABASE_URL's server, or on a private server started here."""
    from devservices import local

    found = local.postgres(os.environ.get("DATABASE_URL"))
    name = f"vpp_bench_{uuid.uuid4().hex[:10]}"
    admin = psycopg.connect(found.address, autocommit=True)
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield (
            "postgresql+psycopg://"
            + found.address.split("://", 1)[1].rsplit("/", 1)[0]
            + f"/{name}"
        )
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()
        found.stop()


def _bodies(n: int, batches: int, batch: int) -> list[bytes]:
    ids = [r.resource_id for r in synthetic_fleet(n)]
    rng = np.random.default_rng(5)
    out = []
    for k in range(batches):
        pick = rng.choice(n, size=batch, replace=False)
        ts = (datetime.now(UTC) - timedelta(seconds=batches - k)).isoformat()
        soc = np.round(rng.uniform(15, 95, batch), 2).tolist()
        out.append(
            orjson.dumps(
                {
                    "samples": [
                        {
                            "resource_id": ids[i],
                            "timestamp": ts,
                            "soc_pct": s,
                            "plugged_in": True,
                            "power_kw": -7.2,
                        }
                        for i, s in zip(pick.tolist(), soc, strict=True)
                    ]
                }
            )
        )
    return out


async def _post(base: str, bodies: list[bytes], concurrency: int) -> tuple[int, list[float]]:
    accepted, lat = 0, []
    async with httpx.AsyncClient(base_url=base, timeout=120) as client:

        async def one(body: bytes) -> int:
            t = time.perf_counter()
            r = await client.post(
                "/telemetry", content=body, headers={"content-type": "application/json"}
            )
            lat.append(time.perf_counter() - t)
            r.raise_for_status()
            return int(r.json()["accepted"])

        for k in range(0, len(bodies), concurrency):
            accepted += sum(await asyncio.gather(*(one(b) for b in bodies[k : k + concurrency])))
    return accepted, lat


def bench_telemetry_pg(n: int, batches: int = 30, batch: int = 10_000) -> dict[str, Any]:
    with postgres_database() as url:
        t0 = time.perf_counter()
        _seed_database(url, n, datetime.now(UTC))
        seeded_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        # the market loop and aggregate telemetry off: their bursts are not telemetry's cost
        quiet = {"VPP_MARKET_ENABLED": "0", "VPP_AGGREGATE_TELEMETRY_SECONDS": "0"}
        server = _Server(url, free_port(), startup_s=900, env_extra=quiet)
        start_s = time.perf_counter() - t0
        try:
            bodies = _bodies(n, batches + 4, batch)
            asyncio.run(_post(server.base, bodies[:4], 4))  # warm-up, not counted
            # What the processes spend with no telemetry arriving (market loop, snapshots,
            # aggregate telemetry) is measured first and taken off, so the figure is per sample.
            idle = _Idle(server.proc.pid, 10.0)
            cpu0, pg0, t0 = _cpu_s(server.proc.pid), _postgres_cpu_s(), time.perf_counter()
            accepted, lat = asyncio.run(_post(server.base, bodies[4:], 4))
            wall = time.perf_counter() - t0
            cpu1 = _cpu_s(server.proc.pid) - idle.service_per_s * wall
            # PostgreSQL's own background work (autovacuum, checkpoints) during the run is
            # what the samples cost it, so its idle rate is not taken off
            pg1 = _postgres_cpu_s()
            assert accepted == batches * batch, accepted
            return {
                "resources": n,
                "samples": accepted,
                "per_s": accepted / wall,
                "batch_p50_ms": float(np.percentile(lat, 50)) * 1e3,
                "service_us": (cpu1 - cpu0) / accepted * 1e6,
                "postgres_us": (pg1 - pg0) / accepted * 1e6,
                "seed_s": seeded_s,
                "start_s": start_s,
                "rss_mb": server.rss_mb(),
            }
        finally:
            server.stop()


def run_telemetry(
    log: Callable[[str], None], sizes: tuple[int, ...] = (100_000, 1_000_000)
) -> list[str]:
    lines = [
        "### Telemetry into PostgreSQL, `POST /telemetry` in batches of 10,000 (one `serve` process, 4 concurrent)",
        "",
        "The market loop and the aggregate telemetry are off (their periodic bursts are not",
        "telemetry's cost). CPU per sample is each process's own CPU time over the run divided by",
        "the samples (the service: parse, live state, history write, less what it spends with no",
        "telemetry arriving, measured for 10 s before; PostgreSQL: all its processes, autovacuum",
        "included), so it does not depend on what else the two shared cores run. Target ≥ 100,000 samples/s at 1M.",
        "",
        "| resources | samples | samples/s | batch p50 (ms) | service CPU (µs/sample) | PostgreSQL CPU (µs/sample) | server start (s) |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for n in sizes:
        log(f"telemetry into PostgreSQL at {n:,} resources ...")
        r = bench_telemetry_pg(n)
        lines.append(
            f"| {n:,} | {r['samples']:,} | **{r['per_s']:,.0f}** | {r['batch_p50_ms']:.0f} "
            f"| {r['service_us']:.1f} | {r['postgres_us']:.1f} | {r['start_s']:.0f} |"
        )
    lines.append("")
    return lines
