"""A bounded load run against one `vpp-aggregator serve` process on loopback (`make bench ONLY=load`).

Mixed traffic from an asyncio client: capacity reads, resource reads, telemetry batches and
dispatches (each cancelled after a while), for `minutes` (10 by default). Reported: throughput and
p50/p99 per endpoint, server RSS after warm-up and at the end. Every schedule the service emits,
the ramp-downs of the cancels included, is read back through the package's one safety checker
(`domain/dispatch/safety.check_wire`) with the settings the server runs with: every rule of
docs/safety.md, and points exactly a minute apart.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import numpy as np

from benchmarks.suite import _Server, seeded_server
from devservices.synthetic import synthetic_fleet
from vpp_aggregator.app.dispatch_records import read_schedule_points
from vpp_aggregator.config import Settings, load_settings
from vpp_aggregator.domain.dispatch.safety import ResourceFacts, check_wire
from vpp_aggregator.domain.resources import Resource


@dataclass
class LoadResult:
    minutes: float
    requests: int
    latencies_ms: dict[str, list[float]] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    rss_start_mb: float = 0.0
    rss_end_mb: float = 0.0
    rss_timeline_mb: list[tuple[float, float]] = field(default_factory=list)
    schedules_checked: int = 0
    violations: list[str] = field(default_factory=list)


def _violations(allocation: dict[str, Any], resource: Resource, settings: Settings) -> list[str]:
    """The broken rules of one allocation of an API answer (none = safe), by the one checker."""
    points = read_schedule_points(allocation["schedule"])
    if not points:
        return []
    facts = ResourceFacts.of(resource, settings.bess_min_soc_pct, after=points[0][0])
    violations = check_wire(
        facts,
        float(allocation["start_soc_pct"]),
        points,
        ramp_kw_per_min=settings.max_ramp_kw_per_min,
        round_trip_efficiency=settings.round_trip_efficiency,
    )
    return [f"{v.resource_id}: {v.rule} at point {v.point} ({v.detail})" for v in violations]


async def _run(base: str, n: int, minutes: float, server: _Server) -> LoadResult:
    settings = load_settings()  # the server's own: it inherits this environment
    fleet = {r.resource_id: r for r in synthetic_fleet(n)}
    ids = list(fleet)
    rng = random.Random(11)
    result = LoadResult(minutes, 0)
    lat: dict[str, list[float]] = defaultdict(list)
    errors: dict[str, int] = defaultdict(int)
    open_dispatches: list[str] = []
    stop_at = time.monotonic() + minutes * 60.0
    warm_until = time.monotonic() + min(30.0, minutes * 6.0)

    async def timed(client: httpx.AsyncClient, name: str, method: str, url: str, **kw: Any) -> Any:
        t = time.perf_counter()
        try:
            r = await client.request(method, url, **kw)
        except httpx.HTTPError:
            errors[name] += 1
            return None
        lat[name].append((time.perf_counter() - t) * 1e3)
        result.requests += 1
        if r.status_code >= 500:
            errors[name] += 1
        return r

    async def telemetry(client: httpx.AsyncClient) -> None:
        while time.monotonic() < stop_at:
            stamp = datetime.now(UTC).isoformat()
            batch = [
                {
                    "resource_id": rid,
                    "timestamp": stamp,
                    "soc_pct": round(rng.uniform(40, 95), 1),
                    "plugged_in": rng.random() < 0.9,
                    "power_kw": 0.0,
                }
                for rid in rng.sample(ids, 500)
            ]
            await timed(
                client, "POST /telemetry (500)", "POST", "/telemetry", json={"samples": batch}
            )
            await asyncio.sleep(0.2)

    async def reader(client: httpx.AsyncClient) -> None:
        while time.monotonic() < stop_at:
            roll = rng.random()
            if roll < 0.75:
                node = rng.choice([None, f"NODE_{rng.randrange(50):02d}"])
                await timed(
                    client,
                    "GET /capacity/available",
                    "GET",
                    "/capacity/available",
                    params={"grid_node": node} if node else None,
                )
            elif roll < 0.97:
                await timed(client, "GET /resources/{id}", "GET", f"/resources/{rng.choice(ids)}")
            else:
                await timed(
                    client,
                    "GET /capacity/forecast",
                    "GET",
                    "/capacity/forecast",
                    params={"horizon_hours": 24},
                )
            await asyncio.sleep(0.01)

    async def dispatcher(client: httpx.AsyncClient) -> None:
        while time.monotonic() < stop_at:
            body = {
                "target_kw": rng.choice([50.0, 150.0, 400.0]) * rng.choice([1, -1]),
                "duration_minutes": rng.choice([15, 30, 60]),
                "grid_node": f"NODE_{rng.randrange(50):02d}",
            }
            r = await timed(client, "POST /dispatch", "POST", "/dispatch", json=body)
            if r is not None and r.status_code == 201:
                doc = r.json()
                open_dispatches.append(doc["dispatch_id"])
                for a in doc["allocations"]:
                    result.schedules_checked += 1
                    result.violations += _violations(a, fleet[a["resource_id"]], settings)
            if len(open_dispatches) > 5:
                did = open_dispatches.pop(0)
                r = await timed(
                    client, "POST /dispatch/{id}/cancel", "POST", f"/dispatch/{did}/cancel"
                )
                if r is not None and r.status_code == 200:
                    for a in r.json()["allocations"]:
                        result.schedules_checked += 1
                        result.violations += _violations(a, fleet[a["resource_id"]], settings)
            await asyncio.sleep(1.0)

    async def rss_probe() -> None:
        started = time.monotonic()
        while time.monotonic() < warm_until:
            await asyncio.sleep(0.5)
        result.rss_start_mb = server.rss_mb()
        # A timeline tells a leak (steady climb) from a working set filling up (a plateau).
        while time.monotonic() < stop_at:
            result.rss_timeline_mb.append((time.monotonic() - started, server.rss_mb()))
            await asyncio.sleep(min(30.0, max(1.0, (stop_at - time.monotonic()) / 2)))

    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        await asyncio.gather(
            telemetry(client), *(reader(client) for _ in range(4)), dispatcher(client), rss_probe()
        )
    result.rss_end_mb = server.rss_mb()
    result.latencies_ms = dict(lat)
    result.errors = dict(errors)
    return result


def bench_load(minutes: float = 10.0, n: int = 2_000) -> LoadResult:
    with seeded_server(n, "vpp-load-") as server:
        return asyncio.run(_run(server.base, n, minutes, server))


def run_load(log: Any = print, minutes: float = 10.0) -> list[str]:
    log(f"load run for {minutes:g} minutes ...")
    r = bench_load(minutes)
    lines = [
        f"### Load run: {r.minutes:g} minutes, one `serve` process (SQLite), 2,000 resources, asyncio client on the same 2 cores",
        "",
        "| endpoint | requests | req/s | p50 (ms) | p99 (ms) | 5xx or failed |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, ms in sorted(r.latencies_ms.items()):
        a = np.asarray(ms)
        lines.append(
            f"| {name} | {a.size:,} | {a.size / (r.minutes * 60):.1f} | {np.percentile(a, 50):.1f} | "
            f"{np.percentile(a, 99):.1f} | {r.errors.get(name, 0)} |"
        )
    growth = (r.rss_end_mb / r.rss_start_mb - 1.0) * 100.0 if r.rss_start_mb else float("nan")
    lines += [
        "",
        f"- {r.requests:,} requests; server RSS after warm-up {r.rss_start_mb:.0f} MB, at the end "
        f"{r.rss_end_mb:.0f} MB (**{growth:+.1f} %**, target ≤ +10 %)",
        "- Server RSS over the run (s: MB): "
        + ", ".join(f"{t:.0f}: {mb:.0f}" for t, mb in r.rss_timeline_mb),
        f"- Safety under load: {r.schedules_checked:,} emitted schedules re-checked by the safety checker "
        f"(every rule, point spacing included): **{len(r.violations)} violations**"
        + (f" (first: {r.violations[0]})" if r.violations else ""),
        "",
    ]
    return lines
