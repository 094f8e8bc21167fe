"""`make bench ONLY=restart`: how long a `vpp-aggregator serve` takes from start to ready on
PostgreSQL with 100,000 and 1,000,000 resources, that its capacity after a restart is the capacity
before it, and what the loaded state costs in memory (RSS over an empty server).

Per size, on a fresh database seeded with the synthetic fleet and each resource's latest sample:
1. first start (no image of the live state yet: rebuilt from the registry and telemetry),
   stopped cleanly (which stores the image);
2. second start (from the image); while it runs, registry changes and telemetry through the API;
   its capacity is read, then it is killed (no final image: what changed is only in the tables);
3. third start: image plus what changed after it. Its capacity must equal step 2's.
The fleet's departures are put three days ahead and the stale limit at a day, so capacity does not
move between the reads by itself and "equal" is a real check.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import numpy as np

from benchmarks.memory_probe import probe_lines
from devservices.ports import free_port
from devservices.synthetic import synthetic_fleet
from vpp_aggregator.domain.resources import RecurringDeparture, Resource

SIZES = (100_000, 1_000_000)
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass
class Start:
    listening_s: float  # first HTTP answer of any kind
    listening_cpu_s: float  # the process's CPU time then (imports, migrations, wiring)
    ready_s: float  # GET /health/ready = 200
    rss_mb: float  # at ready
    cpu_s: float  # the process's CPU time at ready
    not_ready_seen: str  # a readiness answer while loading, as the operator sees it


@dataclass
class RestartResult:
    resources: int
    seed_s: float
    cold: Start  # no image
    warm: Start  # image, nothing since
    replay: Start  # image plus changes since
    capacity_equal: bool
    differences: list[str] = field(default_factory=list)
    rss_loaded_mb: float = 0.0  # after the forecast history is in too
    image_at: str = ""


def _routines(now: datetime) -> list[tuple[RecurringDeparture, ...]]:
    """Weekly departures three days ahead (local time now), twenty variants."""
    local = now.astimezone(ZoneInfo("America/Los_Angeles")) + timedelta(days=3)
    day = DAYS[local.weekday()]
    return [
        (
            RecurringDeparture(
                (day,),
                f"{(local.hour + k // 4) % 24:02d}:{15 * (k % 4):02d}",
                "23:00",
                80.0,
                "America/Los_Angeles",
            ),
        )
        for k in range(20)
    ]


def _fleet(n: int, start: int, routines: list[Any]) -> list[Resource]:
    out = []
    for i, r in enumerate(synthetic_fleet(n, start)):
        if r.departure_schedule:
            r = replace(r, departure_schedule=routines[(start + i) % len(routines)])
        out.append(r)
    return out


SEED_SQL = """
INSERT INTO resources
SELECT CASE WHEN ev THEN 'ev-' ELSE 'bess-' END || lpad(i::text, 7, '0'),
       CASE WHEN ev THEN 'EV' ELSE 'BESS' END, '', 'fleet-' || (i %% 10),
       'NODE_' || lpad((i %% 50)::text, 2, '0'),
       CASE WHEN ev THEN (ARRAY[57.5, 64.8, 77.0, 82.0, 100.0])[1 + (i / 5) %% 5] ELSE 500 END,
       CASE WHEN ev THEN 11 ELSE 250 END, CASE WHEN ev THEN 11 ELSE 250 END,
       true, true, true, 'IA-' || i, CASE WHEN ev THEN 30 ELSE 20 END, 100,
       CASE WHEN ev THEN (%(routines)s::json[])[1 + i %% 20] ELSE '[]'::json END, '[]'::json,
       NULL, 'active', %(now)s, %(now)s
FROM (SELECT i, i %% 5 <> 0 AS ev FROM generate_series(0, %(n)s - 1) AS i) AS f;
INSERT INTO telemetry_samples (ts, resource_id, soc_pct, plugged_in, power_kw, received_at)
SELECT %(ts)s, resource_id, round((15 + random() * 80)::numeric, 1), random() < 0.85, 0, %(now)s
FROM resources;
INSERT INTO telemetry_latest (resource_id, ts, soc_pct, plugged_in, power_kw)
SELECT resource_id, ts, soc_pct, plugged_in, power_kw FROM telemetry_samples;
INSERT INTO service_meta (key, value) VALUES ('latest_snapshot_at', %(now_iso)s);
ANALYZE;
"""


def seed(url: str, n: int, now: datetime) -> None:
    """The synthetic fleet's registry and each resource's latest sample (as the telemetry
    snapshotter leaves them), generated inside PostgreSQL (seconds, where row by row from Python
    takes many minutes at a million)."""
    import json

    import psycopg

    from vpp_aggregator.adapters.store.database import make_engine, migrate
    from vpp_aggregator.adapters.store.repository import Repository
    from vpp_aggregator.adapters.store.resource_rows import schedule_to_json

    engine = make_engine(url)
    migrate(engine)
    at = now - timedelta(minutes=10)
    # telemetry_samples is partitioned by day on PostgreSQL: the seed's day needs its partition
    Repository(engine).partitions.ensure([(at - timedelta(seconds=5)).astimezone(UTC).date()])
    engine.dispose()
    routines = [json.dumps(schedule_to_json(r)) for r in _routines(now)]
    # Written ten minutes ago: the start-up re-reads what changed within a margin (a minute)
    # before the image, and a seed that recent would all count as changed.
    args = {
        "n": n,
        "routines": routines,
        "now": at,
        "ts": at - timedelta(seconds=5),
        # The latest-sample snapshot a few minutes after those samples, as the snapshotter
        # leaves it: a start without an image replays only what came after it.
        "now_iso": (at + timedelta(minutes=5)).isoformat(),
    }
    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as conn:
        for statement in SEED_SQL.split(";\n"):
            if statement.strip():
                conn.execute(statement, {k: v for k, v in args.items() if f"%({k})s" in statement})


class Server:
    def __init__(self, url: str, **env: str) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        full = {
            **os.environ,
            "DATABASE_URL": url,
            "PORT": str(self.port),
            "VPP_HOST": "127.0.0.1",
            "VPP_TELEMETRY_STALE_SECONDS": "86400",
            "VPP_STATE_SNAPSHOT_SECONDS": "0",  # only at a clean stop: the bench says when
            # Without the market's offers and the first tick's hourly forecast: at a million
            # resources each forecast holds GBs for a while, which is not the state's memory.
            "VPP_MARKET_ENABLED": "false",
            "VPP_DISPATCH_TICK_SECONDS": "300",
            "VPP_MALLOC_TRIM_SECONDS": "5",
            **env,
        }
        self.began = time.perf_counter()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "vpp_aggregator.cli", "serve"],
            env=full,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    def wait_ready(self, timeout_s: float = 900.0) -> Start:
        listening = None
        listening_cpu = 0.0
        not_ready = ""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise RuntimeError(f"server exited: {err[-2000:]}")
            try:
                r = httpx.get(self.base + "/health/ready", timeout=5)
            except httpx.HTTPError:
                time.sleep(0.05)
                continue
            if listening is None:
                listening = time.perf_counter() - self.began
                listening_cpu = self.cpu_s()
            if r.status_code == 200:
                ready = time.perf_counter() - self.began
                return Start(
                    listening, listening_cpu, ready, self.rss_mb(), self.cpu_s(), not_ready
                )
            live = r.json().get("dependencies", {}).get("live_state", {})
            not_ready = not_ready or f"{r.status_code}: {live.get('detail')}"
            time.sleep(0.05)
        raise RuntimeError(f"not ready within {timeout_s:g} s")

    def _status(self, key: str) -> float:
        with open(f"/proc/{self.proc.pid}/status") as fh:
            for line in fh:
                if line.startswith(key):
                    return int(line.split()[1]) / 1024
        return float("nan")

    def rss_mb(self) -> float:
        return self._status("VmRSS:")

    def cpu_s(self) -> float:
        with open(f"/proc/{self.proc.pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        self.proc.send_signal(sig)
        try:
            self.proc.wait(300)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _flat(doc: Any, path: str = "") -> dict[str, Any]:
    if isinstance(doc, dict):
        return {k: v for key, sub in doc.items() for k, v in _flat(sub, f"{path}.{key}").items()}
    return {path: doc}


def _capacity(base: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for params in ({}, {"duration_minutes": 15}, {"grid_node": "NODE_07"}, {"fleet_id": "fleet-3"}):
        doc = httpx.get(base + "/capacity/available", params=params, timeout=60).json()
        doc.pop("shared_state_age_seconds", None)
        doc.pop("as_of", None)  # the figures must be equal; the instants differ
        tag = ",".join(f"{k}={v}" for k, v in params.items()) or "all"
        out.update({f"{tag}{k}": v for k, v in _flat(doc).items()})
    return out


def _differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    diffs = []
    for key in sorted(set(a) | set(b)):
        x, y = a.get(key), b.get(key)
        if isinstance(x, float) and isinstance(y, float):
            if abs(x - y) > 1e-6 * max(1.0, abs(x)):
                diffs.append(f"{key}: {x} != {y}")
        elif x != y:
            diffs.append(f"{key}: {x} != {y}")
    return diffs


def _changes(base: str, n: int, now: datetime) -> None:
    """Registry changes and telemetry while the server runs (after its image)."""
    c = httpx.Client(base_url=base, timeout=120)
    new = _fleet(1000, n, _routines(now))
    body = [
        {
            "resource_id": r.resource_id,
            "resource_type": r.resource_type.value,
            "name": "new",
            "fleet_id": r.fleet_id,
            "grid_node": r.grid_node,
            "battery_capacity_kwh": r.battery_capacity_kwh,
            "max_charge_kw": r.max_charge_kw,
            "max_discharge_kw": r.max_discharge_kw,
            "v2g_capable": True,
            "telemetry_enabled": True,
            "interconnection": {"approved": True, "reference": "IA-new"},
            "min_soc_pct": r.min_soc_pct,
        }
        for r in new
    ]
    assert c.post("/resources/register", json=body).status_code == 200
    for i in range(0, 2000, 10):  # some raise their floor, some leave
        rid = f"bess-{i * 5:07d}"
        assert c.patch(f"/resources/{rid}", json={"min_soc_pct": 35}).status_code == 200
        assert c.delete(f"/resources/ev-{i * 5 + 1:07d}").status_code == 200
    rng = np.random.default_rng(5)
    stamp = datetime.now(UTC).isoformat()
    ids = [f"ev-{i:07d}" for i in rng.choice(n, 9000, replace=False) if i % 5] + [
        r.resource_id for r in new
    ]
    samples = [
        {
            "resource_id": rid,
            "timestamp": stamp,
            "soc_pct": float(round(rng.uniform(20, 99), 1)),
            "plugged_in": bool(rng.random() < 0.9),
            "power_kw": 0.0,
        }
        for rid in ids
    ]
    for k in range(0, len(samples), 5000):
        assert c.post("/telemetry", json={"samples": samples[k : k + 5000]}).status_code == 200


def _history_loaded(base: str, timeout_s: float = 600.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        doc = httpx.get(base + "/forecast/model", timeout=30).json()
        if not doc.get("history_loading", True):
            return
        time.sleep(0.5)


def _settled_rss(server: Server, seconds: float = 15.0) -> float:
    """RSS once the service's periodic heap trim (every 5 s here) has given back what loading
    the history read through: the lowest seen over a few trims."""
    lowest = server.rss_mb()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(1.0)
        lowest = min(lowest, server.rss_mb())
    return lowest


@contextlib.contextmanager
def _database(admin_url: str) -> Iterator[str]:
    import psycopg

    name = f"vpp_restart_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield "postgresql+psycopg://" + admin_url.split("://", 1)[1].rsplit("/", 1)[0] + f"/{name}"
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def bench_restart(admin_url: str, n: int) -> RestartResult:
    now = datetime.now(UTC)
    with _database(admin_url) as url:
        t = time.perf_counter()
        seed(url, n, now)
        seed_s = time.perf_counter() - t
        first = Server(url)
        cold = first.wait_ready()
        first.stop()  # clean: stores the image
        second = Server(url)
        warm = second.wait_ready()
        _changes(second.base, n, now)
        before = _capacity(second.base)
        second.stop(signal.SIGKILL)  # a crash: what changed is only in the tables
        third = Server(url)
        replay = third.wait_ready()
        after = _capacity(third.base)
        _history_loaded(third.base)
        loaded = _settled_rss(third)
        third.stop()
        image_at = _image_time(url)
    diffs = _differences(before, after)
    return RestartResult(n, seed_s, cold, warm, replay, not diffs, diffs[:5], loaded, image_at)


def _image_time(url: str) -> str:
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            row = conn.execute(text("SELECT taken_at, resources FROM state_snapshots")).first()
        return f"{row[1]:,} resources" if row else "none"
    except Exception:
        return "no image table"
    finally:
        engine.dispose()


def empty_server_rss(admin_url: str) -> float:
    with _database(admin_url) as url:
        seed(url, 0, datetime.now(UTC))
        server = Server(url)
        server.wait_ready()
        rss = _settled_rss(server)
        server.stop()
    return rss


def run_restart(log: Any = print, sizes: tuple[int, ...] | None = None) -> list[str]:
    """`sizes` default to VPP_RESTART_SIZES (comma-separated), else SIZES."""
    from devservices import local

    env_sizes = os.environ.get("VPP_RESTART_SIZES", "")
    sizes = sizes or tuple(int(x) for x in env_sizes.split(",") if x.strip()) or SIZES
    found = local.postgres(os.environ.get("VPP_BENCH_POSTGRES_URL"))
    try:
        log("restart: an empty server's RSS ...")
        empty = empty_server_rss(found.address)
        results = []
        for n in sizes:
            log(f"restart benchmark at {n:,} resources (seeding PostgreSQL, three starts) ...")
            results.append(bench_restart(found.address, n))
            log(f"restart at {n:,}: {results[-1]}")
    finally:
        found.stop()
    lines = [
        "### Start to ready, `vpp-aggregator serve` on PostgreSQL (`make bench ONLY=restart`)",
        "",
        "Seeded registry plus each resource's latest sample. *cold*: no image of the live state",
        "(rebuilt from the tables); *image*: restored from the stored image; *image + changes*: after",
        "a crash, with 1,000 registrations, 200 changes, 200 deactivations and ~8,000 samples made",
        "after the image. Capacity (total, 15 min, one node, one fleet) read before the crash and",
        "after the restart must be equal (market off, dispatch tick 300 s: no forecast of the whole",
        "fleet runs meanwhile). Wall seconds from the process start to ready on a shared",
        "2-core machine, and the CPU seconds the process spent between listening and ready (the load).",
        "",
        "| resources | cold: ready s / load CPU s | image | image + changes | listening after s | capacity equal | RSS at ready (MB) | RSS with history (MB) | per resource over empty |",
        "|---:|---:|---:|---:|---:|---|---:|---:|---:|",
    ]

    def cell(x: Start) -> str:
        return f"{x.ready_s:.1f} / {x.cpu_s - x.listening_cpu_s:.1f}"

    for r in results:
        per = (r.rss_loaded_mb - empty) * 1024 * 1024 / r.resources
        lines.append(
            f"| {r.resources:,} | {cell(r.cold)} | {cell(r.warm)} | **{cell(r.replay)}** | "
            f"{r.replay.listening_s:.1f} | {'yes' if r.capacity_equal else 'NO: ' + '; '.join(r.differences)} "
            f"| {r.replay.rss_mb:.0f} | {r.rss_loaded_mb:.0f} | {per:,.0f} B |"
        )
    lines += [
        "",
        f"- Empty server RSS: {empty:.0f} MB. While loading, readiness answered e.g. "
        f"`{results[-1].replay.not_ready_seen or 'ready at once'}`; image in the database: {results[-1].image_at}.",
        *probe_lines(max(sizes)),
        "",
    ]
    return lines
