"""`make bench` (`python -m benchmarks`): the speed and memory targets of the capacity engine and the HTTP API.

Everything runs on loopback with bounded loops. Figures are appended to BENCHMARKS.md together
with the machine and the command, so a reader can rerun and compare.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson

from benchmarks.settlement_bench import bench_regulation, bench_settlement
from devservices.ports import free_port
from devservices.synthetic import synthetic_fleet
from vpp_aggregator.app.results import CapacityForecast
from vpp_aggregator.config import Settings
from vpp_aggregator.demo.constants import PACKAGED_DATA_DIR
from vpp_aggregator.domain.fleet_state import FleetState


def _chunks(n: int, size: int = 50_000) -> Iterator[tuple[int, int]]:
    for start in range(0, n, size):
        yield start, min(size, n - start)


def _rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@dataclass
class CapacityResult:
    resources: int
    build_s: float
    cold_read_ms: float
    read_p50_ms: float
    read_p99_ms: float
    reads: int
    telemetry_per_read: int
    state_rss_mb: float


def shipped_rules() -> dict[str, Any]:
    """The fleet rules the service ships with (their one home is `Settings`), so the benchmarks
    measure the state as deployed rather than a copy of its defaults."""
    fields = Settings.model_fields
    return {
        "bess_min_soc_pct": fields["bess_min_soc_pct"].default,
        "stale_seconds": fields["telemetry_stale_seconds"].default,
        "round_trip_efficiency": fields["round_trip_efficiency"].default,
    }


def bench_capacity(n: int, reads: int = 300, seed: int = 1) -> CapacityResult:
    """Steady state: between reads a slice of the fleet reports; only the read is timed."""
    now = datetime(2026, 11, 25, 14, 0, tzinfo=UTC)  # 06:00 in Los Angeles: departures are near
    rss0 = _rss_mb()
    t0 = time.perf_counter()
    state = FleetState(**shipped_rules(), initial_rows=n)
    for start, size in _chunks(n):
        state.upsert_many(synthetic_fleet(size, start, seed), now)
    rng = np.random.default_rng(seed)
    rows = np.arange(n, dtype=np.int64)
    state.apply_telemetry(
        rows,
        now.timestamp() - rng.uniform(0, 240, n),
        rng.uniform(15, 95, n),
        rng.random(n) < 0.85,
        np.zeros(n),
        now,
    )
    build_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    state.capacity(now, 60)
    cold_ms = (time.perf_counter() - t1) * 1e3
    rss = _rss_mb() - rss0
    per_read = max(1, n // 1000)
    times = []
    for k in range(reads):
        t = now + timedelta(milliseconds=200 * (k + 1))
        b = rng.integers(0, n, size=per_read)
        state.apply_telemetry(
            b,
            np.full(per_read, t.timestamp()),
            rng.uniform(15, 95, per_read),
            np.ones(per_read, bool),
            np.zeros(per_read),
            t,
        )
        a = time.perf_counter()
        state.capacity(t, 60)
        times.append(time.perf_counter() - a)
    ms = np.asarray(times) * 1e3
    return CapacityResult(
        n,
        build_s,
        cold_ms,
        float(np.percentile(ms, 50)),
        float(np.percentile(ms, 99)),
        reads,
        per_read,
        rss,
    )


@dataclass
class DispatchSolveResult:
    resources: int
    target_kw: float
    build_ms: float
    solve_ms: float
    solve_cpu_ms: float  # CPU time of this process: steadier than wall time on a shared machine
    scheduled: int
    delivered_kwh: float


def _dispatch_state(n: int, seed: int = 2) -> tuple[FleetState, datetime]:
    now = datetime(2026, 11, 25, 20, 0, tzinfo=UTC)  # midday in Los Angeles: vehicles at work
    state = FleetState(**shipped_rules(), initial_rows=n)
    for start, size in _chunks(n):
        state.upsert_many(synthetic_fleet(size, start, seed), now)
    rng = np.random.default_rng(seed)
    rows = np.arange(n, dtype=np.int64)
    # Plugged vehicles either idle or charging; batteries idle.
    power = np.where(state.is_bess[:n], 0.0, rng.choice([0.0, -7.2, -11.0], n))
    state.apply_telemetry(
        rows,
        np.full(n, now.timestamp() - 30),
        rng.uniform(30, 95, n),
        rng.random(n) < 0.9,
        power,
        now,
    )
    return state, now


def bench_dispatch_solve(n: int, share: float, solver: str = "fast") -> DispatchSolveResult:
    """Plan a 60 min dispatch asking `share` of the fleet's available discharge power."""
    from vpp_aggregator.domain.dispatch.fast import solve_fast
    from vpp_aggregator.domain.dispatch.lp import solve_lp
    from vpp_aggregator.domain.dispatch.problem import DispatchProblem

    state, now = _dispatch_state(n)
    inputs, _ = state.dispatch_inputs(now, now, direction=1)
    target = share * float(inputs.max_discharge_kw[inputs.available].sum())
    t0 = time.perf_counter()
    problem = DispatchProblem(inputs, target, 60, 10.0)
    build_ms = (time.perf_counter() - t0) * 1e3
    runs, cpu = [], []
    for _ in range(
        1 if solver == "lp" else 5
    ):  # median of warm runs: a service plans again and again
        t1, c1 = time.perf_counter(), time.process_time()
        sol = solve_lp(problem, time_limit_s=60) if solver == "lp" else solve_fast(problem)
        runs.append((time.perf_counter() - t1) * 1e3)
        cpu.append((time.process_time() - c1) * 1e3)
    return DispatchSolveResult(
        n,
        target,
        build_ms,
        float(np.median(runs)),
        float(np.median(cpu)),
        int(sol.rows.size),
        sol.delivered_kwh(problem),
    )


def bench_lp_gap(
    n: int = 1000, shares: tuple[float, ...] = (0.1, 0.5, 1.2)
) -> list[tuple[float, float, float, float, float]]:
    """(share, LP seconds, LP kWh, fast kWh, gap %) on the same problems."""
    from vpp_aggregator.domain.dispatch.fast import solve_fast
    from vpp_aggregator.domain.dispatch.lp import solve_lp
    from vpp_aggregator.domain.dispatch.problem import DispatchProblem

    state, now = _dispatch_state(n)
    inputs, _ = state.dispatch_inputs(now, now, direction=1)
    power = float(inputs.max_discharge_kw[inputs.available].sum())
    out = []
    for share in shares:
        problem = DispatchProblem(inputs, share * power, 60, 10.0)
        t = time.perf_counter()
        lp = solve_lp(problem, time_limit_s=120)
        lp_s = time.perf_counter() - t
        e_lp, e_fast = lp.delivered_kwh(problem), solve_fast(problem).delivered_kwh(problem)
        out.append((share, lp_s, e_lp, e_fast, 100.0 * (e_lp - e_fast) / max(abs(e_lp), 1e-9)))
    return out


def _seed_database(url: str, n: int, now: datetime) -> None:
    from vpp_aggregator.adapters.store.database import make_engine, migrate
    from vpp_aggregator.adapters.store.repository import Repository

    engine = make_engine(url)
    migrate(engine)
    repo = Repository(engine)
    rng = np.random.default_rng(3)
    for start, size in _chunks(n, 20_000):
        fleet = synthetic_fleet(size, start)
        for r in fleet:
            r.created_at = r.updated_at = now
        repo.add_many(fleet)
        repo.insert_samples(
            [r.resource_id for r in fleet],
            np.full(size, now.timestamp() - 5.0),
            rng.uniform(15, 95, size),
            rng.random(size) < 0.85,
            np.zeros(size),
            now,
        )
    engine.dispose()


@contextlib.contextmanager
def seeded_server(n: int, prefix: str = "vpp-bench-", startup_s: float = 180) -> Iterator[_Server]:
    """A `serve` process on a fresh SQLite database seeded with `n` synthetic resources, ended
    and removed afterwards."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        url = f"sqlite:///{Path(tmp) / 'bench.db'}"
        _seed_database(url, n, datetime.now(UTC))
        server = _Server(url, free_port(), startup_s)
        try:
            yield server
        finally:
            server.stop()


class _Server:
    def __init__(
        self,
        url: str,
        port: int,
        startup_s: float = 180.0,
        env_extra: dict[str, str] | None = None,
    ) -> None:
        env = {
            **os.environ,
            "DATABASE_URL": url,
            "PORT": str(port),
            "VPP_HOST": "127.0.0.1",
            **(env_extra or {}),
        }
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "vpp_aggregator.cli", "serve"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self.base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + startup_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"server exited: {self.proc.stderr.read().decode() if self.proc.stderr else ''}"
                )
            try:
                ready = httpx.get(self.base + "/health/ready", timeout=1).json()
                if ready["dependencies"]["live_state"]["ok"]:  # loaded: answers for real
                    return
            except httpx.HTTPError:
                time.sleep(0.3)
        raise RuntimeError(f"server did not become healthy within {startup_s:.0f} s")

    def rss_mb(self) -> float:
        with open(f"/proc/{self.proc.pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


async def _get_loop(
    host: str, port: int, path: str, count: list[int], latencies: list[float]
) -> None:
    """One keep-alive HTTP/1.1 connection issuing GETs back to back (a closed-loop client).

    Raw asyncio streams instead of an HTTP library: on two shared cores a heavy client would
    steal the CPU the server is being measured on.
    """
    reader, writer = await asyncio.open_connection(host, port)
    request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: application/json\r\n\r\n".encode()
    try:
        while count[0] > 0:
            count[0] -= 1
            t = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            body = await reader.readexactly(length)
            latencies.append(time.perf_counter() - t)
            if status != 200:
                raise RuntimeError(f"GET {path} answered {status}: {body[:200]!r}")
    finally:
        writer.close()


async def _paced_loop(
    host: str, port: int, path: str, interval_s: float, until: float, latencies: list[float]
) -> None:
    """One client asking every `interval_s` (an open loop: a dashboard or gateway polling)."""
    reader, writer = await asyncio.open_connection(host, port)
    request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    next_at = time.perf_counter() + interval_s * np.random.default_rng().random()
    try:
        while next_at < until:
            await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
            t = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                int(x.split(b":", 1)[1])
                for x in head.split(b"\r\n")
                if x.lower().startswith(b"content-length:")
            )
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - t)
            next_at += interval_s
    finally:
        writer.close()


async def _open_loop(
    base: str, path: str, clients: int, rate_per_client: float, seconds: float
) -> list[float]:
    host, port = base.removeprefix("http://").split(":")
    latencies: list[float] = []
    until = time.perf_counter() + seconds
    await asyncio.gather(
        *(
            _paced_loop(host, int(port), path, 1.0 / rate_per_client, until, latencies)
            for _ in range(clients)
        )
    )
    return latencies


async def _closed_loop(
    base: str, path: str, concurrency: int, total: int
) -> tuple[list[float], float]:
    host, port = base.removeprefix("http://").split(":")
    latencies: list[float] = []
    count = [total]
    t0 = time.perf_counter()
    await asyncio.gather(
        *(_get_loop(host, int(port), path, count, latencies) for _ in range(concurrency))
    )
    return latencies, time.perf_counter() - t0


@dataclass
class HttpResult:
    resources: int
    capacity_requests: int
    capacity_concurrency: int
    capacity_p50_ms: float
    capacity_p99_ms: float
    capacity_rps: float
    open_loop: list[tuple[int, int, float, float]]  # (total req/s, requests, p50 ms, p99 ms)
    ingest_batches: int
    ingest_batch_size: int
    ingest_concurrency: int
    ingest_samples_per_s: float
    ingest_batch_p50_ms: float
    server_rss_mb: float


def bench_http(
    n: int = 100_000,
    requests: int = 5000,
    concurrency: int = 50,
    batches: int = 30,
    batch: int = 10_000,
) -> HttpResult:
    with seeded_server(n, "vpp-bench-") as server:
        asyncio.run(_closed_loop(server.base, "/capacity/available", concurrency, 2000))  # warm-up
        lat, elapsed = asyncio.run(
            _closed_loop(server.base, "/capacity/available", concurrency, requests)
        )
        open_loop = []
        for rate in (10, 20, 40):
            ol = (
                np.asarray(
                    asyncio.run(
                        _open_loop(server.base, "/capacity/available", concurrency, rate, 10.0)
                    )
                )
                * 1e3
            )
            open_loop.append(
                (
                    concurrency * rate,
                    int(ol.size),
                    float(np.percentile(ol, 50)),
                    float(np.percentile(ol, 99)),
                )
            )
        answer = httpx.get(server.base + "/capacity/available").json()
        assert answer["resource_count"] == n, answer["resource_count"]
        cap_ms = np.asarray(lat) * 1e3
        ids = [r.resource_id for r in synthetic_fleet(n)]
        rng = np.random.default_rng(5)
        bodies = []
        for _ in range(batches):
            pick = rng.integers(0, n, size=batch)
            ts = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
            bodies.append(
                orjson.dumps(
                    {
                        "samples": [
                            {
                                "resource_id": ids[i],
                                "timestamp": ts,
                                "soc_pct": round(float(rng.uniform(15, 95)), 2),
                                "plugged_in": True,
                                "power_kw": -7.2,
                            }
                            for i in pick.tolist()
                        ]
                    }
                )
            )
        ingest_conc = 4
        lat_i: list[float] = []
        accepted = 0
        t0 = time.perf_counter()
        for k in range(0, batches, ingest_conc):
            group = bodies[k : k + ingest_conc]

            async def post_all(group: list[bytes] = group) -> list[Any]:
                async with httpx.AsyncClient(base_url=server.base, timeout=60) as client:

                    async def one(body: bytes) -> Any:
                        t = time.perf_counter()
                        r = await client.post(
                            "/telemetry",
                            content=body,
                            headers={"content-type": "application/json"},
                        )
                        lat_i.append(time.perf_counter() - t)
                        r.raise_for_status()
                        return r.json()

                    return await asyncio.gather(*(one(b) for b in group))

            accepted += sum(a["accepted"] for a in asyncio.run(post_all()))
        elapsed_i = time.perf_counter() - t0
        assert accepted == batches * batch, accepted
        return HttpResult(
            resources=n,
            capacity_requests=requests,
            capacity_concurrency=concurrency,
            capacity_p50_ms=float(np.percentile(cap_ms, 50)),
            capacity_p99_ms=float(np.percentile(cap_ms, 99)),
            capacity_rps=requests / elapsed,
            open_loop=open_loop,
            ingest_batches=batches,
            ingest_batch_size=batch,
            ingest_concurrency=ingest_conc,
            ingest_samples_per_s=accepted / elapsed_i,
            ingest_batch_p50_ms=float(np.percentile(np.asarray(lat_i) * 1e3, 50)),
            server_rss_mb=server.rss_mb(),
        )


def bench_http_dispatch(n: int = 10_000, requests: int = 60) -> tuple[float, float, float, int]:
    """POST /dispatch latency with `n` registered resources: (p50 ms, p99 ms, max ms, mean resources)."""
    with seeded_server(n, "vpp-bench-") as server:
        ids = [r.resource_id for r in synthetic_fleet(n)]
        rng = np.random.default_rng(9)
        with httpx.Client(base_url=server.base, timeout=60) as client:
            stamp = datetime.now(UTC).isoformat()
            for k in range(0, n, 10_000):
                batch = [
                    {
                        "resource_id": rid,
                        "timestamp": stamp,
                        "soc_pct": round(float(rng.uniform(40, 95)), 2),
                        "plugged_in": True,
                        "power_kw": 0.0,
                    }
                    for rid in ids[k : k + 10_000]
                ]
                client.post("/telemetry", json={"samples": batch}).raise_for_status()
            lat = []
            sizes = []
            for i in range(requests):
                body = {
                    "target_kw": float(rng.choice([150.0, 500.0, 2000.0])),
                    "duration_minutes": 60,
                    "grid_node": f"NODE_{i % 50:02d}",
                    "source": "market_award",
                }
                t = time.perf_counter()
                r = client.post("/dispatch", json=body)
                lat.append(time.perf_counter() - t)
                r.raise_for_status()
                d = r.json()
                sizes.append(d["resource_count"])
                client.post(f"/dispatch/{d['dispatch_id']}/cancel").raise_for_status()
        ms = np.asarray(lat) * 1e3
        return (
            float(np.percentile(ms, 50)),
            float(np.percentile(ms, 99)),
            float(ms.max()),
            int(np.mean(sizes)),
        )


@dataclass
class ForecastBenchResult:
    resources: int
    history_samples: int
    fold_samples_per_s: float
    fallback_p50_ms: float
    fallback_p99_ms: float
    model_p50_ms: float
    model_p99_ms: float
    history_mb: float


def reporting_fleet(n: int, now: datetime) -> tuple[FleetState, list[str], np.random.Generator]:
    """A synthetic fleet of `n` in a live state (registered 50,000 at a time), each resource
    reporting 30 s before `now`; its ids, and the seeded generator for what comes next."""
    state = FleetState(**shipped_rules(), initial_rows=n)
    ids: list[str] = []
    for s in range(0, n, 50_000):
        chunk = synthetic_fleet(min(50_000, n - s), s)
        state.upsert_many(chunk, now)
        ids += [r.resource_id for r in chunk]
    rng = np.random.default_rng(5)
    state.apply_telemetry(
        np.arange(n, dtype=np.int64),
        np.full(n, now.timestamp() - 30.0),
        rng.uniform(20, 95, n),
        rng.random(n) < 0.8,
        np.zeros(n),
        now,
    )
    return state, ids, rng


def bench_forecast(n: int = 10_000, days: int = 28, reads: int = 20) -> ForecastBenchResult:
    """72 h hourly forecast of a fleet with `days` of hourly telemetry folded in, without and with
    a stored model (trained on the packaged Caltech extract). Only the forecast call is timed."""
    from vpp_aggregator.adapters.data.forecasting import train
    from vpp_aggregator.adapters.store.database import make_engine, migrate
    from vpp_aggregator.adapters.store.repository import Repository
    from vpp_aggregator.app.forecast_service import ForecastService

    now = datetime(2026, 11, 25, 14, 0, tzinfo=UTC)
    state, ids, rng = reporting_fleet(n, now)
    with tempfile.TemporaryDirectory() as tmp:
        engine = make_engine(f"sqlite:///{tmp}/f.db")
        migrate(engine)
        models = Path(tmp) / "models"
        service = ForecastService(
            state,
            Repository(engine),
            lambda: now,
            max_horizon_hours=72,
            timezone="America/Los_Angeles",
            hold_s=Settings().telemetry_stale_seconds,
            history_days=days,
            model_dir=models,
        )
        service.history_ready.set()
        home = rng.integers(16, 20, n)  # hour (UTC offset ignored) each vehicle comes home
        rss0 = _rss_mb()
        fold_s = 0.0
        for h in range(days * 24, 0, -1):
            t = now.timestamp() - h * 3600.0
            hour = int(t // 3600) % 24
            plugged = ((hour >= home) | (hour < 7)) & (rng.random(n) < 0.9)
            a = time.perf_counter()
            service.record(ids, np.full(n, t), plugged, rng.uniform(30, 90, n))
            fold_s += time.perf_counter() - a
        history_mb = _rss_mb() - rss0

        def timed() -> tuple[float, float, CapacityForecast]:
            times: list[float] = []
            for _ in range(reads):
                a = time.perf_counter()
                doc = service.capacity_forecast(72, 60, None)
                times.append(time.perf_counter() - a)
            assert reads > 0
            ms = np.asarray(times) * 1e3
            return float(np.percentile(ms, 50)), float(np.percentile(ms, 99)), doc

        f50, f99, doc = timed()
        assert doc["model"]["fallback"] is True
        train(DEMO_SESSIONS, None, "America/Los_Angeles", models)
        m50, m99, doc = timed()
        assert doc["model"]["fallback"] is False, doc["model"]
        engine.dispose()
    samples = n * days * 24
    return ForecastBenchResult(n, samples, samples / fold_s, f50, f99, m50, m99, history_mb)


DEMO_SESSIONS = PACKAGED_DATA_DIR / "acn_caltech" / "sessions_caltech.csv"


def _capacity_in_subprocess(n: int) -> CapacityResult:
    """Each size in a fresh interpreter so its RSS is the state's alone."""
    code = f"import json,dataclasses; from benchmarks.suite import bench_capacity; print(json.dumps(dataclasses.asdict(bench_capacity({n}))))"
    root = str(Path(__file__).resolve().parents[1])  # benchmarks/ and devservices/ live there
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, cwd=root
    ).stdout
    return CapacityResult(**json.loads(out.strip().splitlines()[-1]))


def machine() -> str:
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:  # not Linux: the CPU stays unnamed
        cpu = "unknown CPU"
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{cpu}, {os.cpu_count()} cores, {mem:.0f} GiB RAM, {platform.system()} {platform.release()}, Python {platform.python_version()}, numpy {np.__version__}"


SECTIONS = frozenset(
    {
        "capacity",
        "telemetry",
        "scaleout",
        "http",
        "http-scale",
        "dispatch",
        "forecast",
        "settlement",
        "regulation",
        "onboarding",
        "kafka",
        "reaction",
        "load",
        "restart",
        "replay",
    }
)


def bench_onboarding(total: int = 100_000, batch: int = 10_000) -> dict[str, float]:
    """`POST /resources/register` with lists of `batch` into a fresh `serve` process (SQLite):
    resources registered per second, one list after another; every tenth is refused (40 kWh)."""
    import httpx

    def body(i: int) -> dict[str, object]:
        return {
            "resource_id": f"ev-{i}",
            "resource_type": "EV",
            "fleet_id": "f1",
            "grid_node": f"N{i % 50}",
            "battery_capacity_kwh": 40.0 if i % 10 == 0 else 75.0,
            "max_charge_kw": 11.0,
            "max_discharge_kw": 11.0,
            "v2g_capable": True,
            "telemetry_enabled": True,
            "interconnection": {"approved": True, "reference": "IA"},
            "departure_schedule": [
                {
                    "days": ["mon", "tue", "wed", "thu", "fri"],
                    "departure": "07:30",
                    "required_soc_pct": 80,
                }
            ],
        }

    registered = refused = 0
    with (
        seeded_server(0, "vpp-onboard-") as server,
        httpx.Client(base_url=server.base, timeout=300) as client,
    ):
        lists = [[body(i) for i in range(s, min(total, s + batch))] for s in range(0, total, batch)]
        t0 = time.perf_counter()
        for part in lists:
            doc = client.post("/resources/register", json=part).json()
            registered += doc["registered"]
            refused += len(doc["rejected"])
        seconds = time.perf_counter() - t0
    return {
        "submitted": float(total),
        "registered": float(registered),
        "refused": float(refused),
        "seconds": seconds,
        "per_s": total / seconds,
    }


def run_all(
    sizes: list[int],
    http_resources: int,
    output: Path | None,
    log: Any = print,
    sections: frozenset[str] = SECTIONS,
) -> str:
    lines = [
        f"## Run of {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"- Machine: {machine()}",
        "- Command: `make bench` (= `python -m benchmarks --output BENCHMARKS.md`)"
        + ("" if sections == SECTIONS else f" with `--only {','.join(sorted(sections))}`"),
        "",
    ]
    if "capacity" in sections:
        lines += [
            "### Capacity computation (in-process, `FleetState.capacity`, 60 min window)",
            "",
            "Steady state: before every read 0.1 % of the fleet reports new telemetry (not timed); the read",
            "brings the aggregates up to date and returns totals, by type and by grid node. 80 % EVs on weekday",
            "routines departing 05:00-09:45 local, measured at 06:00 local, so most EVs sit inside their",
            "departure raise. `cold` is the first read, which builds the aggregates from scratch.",
            "",
            "| resources | build (s) | cold read (ms) | read p50 (ms) | read p99 (ms) | state RSS (MB) | target |",
            "|---:|---:|---:|---:|---:|---:|---|",
        ]
        targets = {100_000: "≤ 1 ms", 1_000_000: "≤ 10 ms; ≤ 500 MB"}
        for n in sizes:
            log(f"capacity benchmark at {n:,} resources ...")
            r = _capacity_in_subprocess(n)
            lines.append(
                f"| {n:,} | {r.build_s:.1f} | {r.cold_read_ms:.1f} | {r.read_p50_ms:.3f} | {r.read_p99_ms:.3f} | {r.state_rss_mb:.0f} | {targets.get(n, '')} |"
            )
    if "http" in sections:
        log(f"HTTP benchmark at {http_resources:,} resources (seeding, starting the server) ...")
        h = bench_http(http_resources)
        lines += [
            "",
            f"### HTTP, one `vpp-aggregator serve` process, SQLite, {h.resources:,} resources (load client on the same 2 cores)",
            "",
            f"- `GET /capacity/available`, {h.capacity_concurrency} clients each polling at a fixed rate (open loop, 10 s each; target p99 ≤ 20 ms):",
            "",
            "| total req/s | requests | p50 (ms) | p99 (ms) |",
            "|---:|---:|---:|---:|",
            *[f"| {r:,} | {c:,} | {p50:.2f} | {p99:.2f} |" for r, c, p50, p99 in h.open_loop],
            "",
            f"- `GET /capacity/available`, {h.capacity_concurrency} clients back to back with no pause (closed loop, saturation): "
            f"{h.capacity_requests:,} requests, {h.capacity_rps:,.0f} req/s, p50 {h.capacity_p50_ms:.1f} ms, p99 {h.capacity_p99_ms:.1f} ms. "
            "At saturation latency is queueing (50 in flight / throughput), so this is the single process's ceiling, not its response time.",
            f"- `POST /telemetry`: {h.ingest_batches} batches of {h.ingest_batch_size:,} samples, {h.ingest_concurrency} concurrent: "
            f"**{h.ingest_samples_per_s:,.0f} samples/s** into state and history (target ≥ 50,000), batch p50 {h.ingest_batch_p50_ms:.0f} ms",
            f"- Server RSS after the run: {h.server_rss_mb:.0f} MB",
            "",
        ]
    if "http-scale" in sections:
        from benchmarks.http_scale import run_http_scale

        lines += run_http_scale(log)
    if "dispatch" in sections:
        log("dispatch solver benchmarks ...")
        lines += [
            "### Dispatch planning (in-process, 60 one-minute steps plus the ramp back down)",
            "",
            "Synthetic fleet at midday: 80 % EVs (9 in 10 plugged, idle or charging), 20 % 500 kWh / 250 kW",
            "batteries; the target is a share of the fleet's available discharge power. `build` makes the",
            "problem (floors, departures, eligibility), `solve` plans every resource at every point (median",
            "of 5 runs in one process for the fast allocator, one run for the LP).",
            "",
            "| resources | solver | target (share of power) | build (ms) | solve (ms) | solve CPU (ms) | resources scheduled | target |",
            "|---:|---|---:|---:|---:|---:|---:|---|",
        ]
        for n, share in ((100_000, 0.05), (100_000, 0.3), (1_000_000, 0.05), (1_000_000, 0.3)):
            ds = bench_dispatch_solve(n, share)
            goal = "≤ 20 ms" if n == 100_000 else "≤ 1 s"
            lines.append(
                f"| {n:,} | fast | {ds.target_kw:,.0f} kW ({share:.0%}) | {ds.build_ms:.0f} | {ds.solve_ms:.0f} | {ds.solve_cpu_ms:.0f} | {ds.scheduled:,} | {goal} |"
            )
        ds = bench_dispatch_solve(1000, 0.3, "lp")
        lines.append(
            f"| 1,000 | LP (HiGHS) | {ds.target_kw:,.0f} kW (30%) | {ds.build_ms:.0f} | {ds.solve_ms:.0f} | {ds.solve_cpu_ms:.0f} | {ds.scheduled:,} | ≤ 1 s |"
        )
        lines += [
            "",
            "Fast allocator against the LP optimum on the same 1,000-resource problems (energy delivered inside the window):",
            "",
            "| target (share of power) | LP time (s) | LP kWh | fast kWh | fast below LP |",
            "|---:|---:|---:|---:|---:|",
        ]
        for share, lp_s, e_lp, e_fast, gap in bench_lp_gap():
            lines.append(
                f"| {share:.0%} | {lp_s:.2f} | {e_lp:,.1f} | {e_fast:,.1f} | {gap:.3f} % |"
            )
        log("POST /dispatch latency with 10,000 registered resources ...")
        p50, p99, worst, mean_res = bench_http_dispatch()
        lines += [
            "",
            f"- `POST /dispatch` with 10,000 registered resources (SQLite, one server process; 60 dispatches of "
            f"150, 500 or 2,000 kW on one grid node each, each cancelled before the next): p50 {p50:.0f} ms, "
            f"**p99 {p99:.0f} ms** (target ≤ 200 ms), max {worst:.0f} ms; {mean_res} resources scheduled on average",
            "",
        ]
    if "settlement" in sections:
        log("settlement benchmark (45 days of telemetry into SQLite first) ...")
        st = bench_settlement()
        lines += [
            "### Settlement of a 5-minute real-time award against a CAISO 10-in-10 baseline (in-process, SQLite)",
            "",
            f"{st.vehicles} vehicles, a sample every {st.sample_s} s for 46 days ({st.rows:,} rows). Cold: the",
            "aggregation's 45 days are read and integrated for the first time. Warm: the next award of the",
            "day, with past days kept by the meter, so only the award's own day is read (yesterday, not",
            "final until a day after it ends, only where samples of it were received since).",
            "",
            "| vehicles | rows | cold (ms) | warm (ms) | delivered (kWh) |",
            "|---:|---:|---:|---:|---:|",
            f"| {st.vehicles} | {st.rows:,} | {st.cold_ms:,.0f} | {st.warm_ms:,.0f} | {st.delivered_kwh:.2f} |",
            "",
        ]
    if "regulation" in sections:
        log("regulation replays of PJM RegA (100 kW, 500 kW, 2 MW) ...")
        lines += [
            "### Frequency regulation: PJM RegA, 2017-08-01 16:00-24:00, replayed on the simulated fleet",
            "",
            "`vpp-aggregator regulation replay --capacity-kw C` with the fleet the sizing rule gives",
            "(power, the signal's p99 change per minute × C over 10 kW/min, and the most energy it moves",
            "one way); devices hear the signal 2-4 s late and ramp at most 10 kW/min. Hourly PJM",
            "performance score (target ≥ 0.75 every hour, aim ≥ 0.90).",
            "",
            "| C (kW) | resources (power / ramp / energy) | hourly scores 16:00 … 23:00 | min | safety violations | commands | replay (s) |",
            "|---:|---|---|---:|---:|---:|---:|",
        ]
        for c_kw in (100.0, 500.0, 2000.0):
            rg = bench_regulation(c_kw)
            lines.append(
                f"| {c_kw:,.0f} | {rg['resources']} ({rg['for_power']} / {rg['for_ramp']} / {rg['for_energy']}) "
                f"| {' '.join(f'{x:.3f}' for x in rg['scores'])} | {min(rg['scores']):.3f} "
                f"| {rg['violations']} | {rg['commands']:,} | {rg['seconds']:.1f} |"
            )
        lines.append("")
    if "onboarding" in sections:
        log("bulk onboarding: 100,000 resources in lists of 10,000 ...")
        ob = bench_onboarding()
        lines += [
            "### Bulk onboarding, `POST /resources/register` with lists of 10,000, one `serve` process, SQLite",
            "",
            f"- {ob['submitted']:,.0f} registrations (every tenth refused: 40 kWh) in {ob['seconds']:.1f} s: "
            f"**{ob['per_s']:,.0f} resources/s** checked, stored and live (target ≥ 10,000); "
            f"{ob['registered']:,.0f} registered, {ob['refused']:,.0f} refused with their reasons",
            "",
        ]
    if "forecast" in sections:
        log("72 h forecast for 10,000 resources ...")
        fc = bench_forecast()
        lines += [
            "### Capacity forecast (in-process, `ForecastService.capacity_forecast(72, 60)`)",
            "",
            f"{fc.resources:,} resources (80 % EVs), {fc.history_samples:,} hourly telemetry samples (28 days) folded into",
            f"the hourly history as they arrive ({fc.fold_samples_per_s:,.0f} samples/s; history {fc.history_mb:.0f} MB RSS).",
            "Median and p99 of 20 forecasts each (target ≤ 500 ms):",
            "",
            "| model | p50 (ms) | p99 (ms) |",
            "|---|---:|---:|",
            f"| seasonal-profile fallback | {fc.fallback_p50_ms:.0f} | {fc.fallback_p99_ms:.0f} |",
            f"| stored LightGBM model (trained on the packaged Caltech extract) | {fc.model_p50_ms:.0f} | {fc.model_p99_ms:.0f} |",
            "",
        ]
    if "telemetry" in sections:
        from benchmarks.telemetry_bench import run_telemetry

        lines += run_telemetry(log)
    if "scaleout" in sections:
        from benchmarks.scale_out_bench import run_scale_out

        lines += run_scale_out(log)
    if "kafka" in sections:
        from benchmarks.kafka_bench import run_kafka

        lines += run_kafka(log)
    if "reaction" in sections:
        from benchmarks.reaction_bench import run_reaction

        lines += run_reaction(log)
    if "load" in sections:
        from benchmarks.load import run_load

        lines += run_load(log, float(os.environ.get("VPP_LOAD_MINUTES", "10")))
    if "restart" in sections:
        from benchmarks.restart_bench import run_restart

        lines += run_restart(log)
    if "replay" in sections:
        from benchmarks.replay_bench import run_replay

        lines += run_replay(log)
    text = "\n".join(lines)
    if output is not None:
        header = "# Benchmarks\n\nNewest run first. Rerun with `make bench`.\n\n"
        old = output.read_text() if output.exists() else ""
        old = old.replace(header, "", 1) if old.startswith(header) else old
        output.write_text(header + text + "\n" + old)
    return text
