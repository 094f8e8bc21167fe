"""The scale-out deployment at fleet size (`make bench ONLY=scaleout`): two `worker` processes
share the telemetry topic's partitions, two API replicas follow through Redis, all on one
PostgreSQL, Redis and Apache Kafka on loopback. `make test` runs the same shape at 10,000
resources (tests/test_scale_out.py) and checks it against the embedded mode; here it runs at
100,000 and reports throughput, CPU per sample of each process, start-up and agreement."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
from confluent_kafka import Producer
from sqlalchemy import func, select

from benchmarks.http_scale import _job_cpu_s
from benchmarks.kafka_bench import _applied, deployment, servers
from benchmarks.telemetry_bench import _cpu_s, _postgres_cpu_s
from devservices.synthetic import synthetic_fleet


def bench_scale_out(n: int = 100_000, rounds: int = 3) -> dict[str, Any]:
    from vpp_aggregator.adapters.store.database import make_engine
    from vpp_aggregator.adapters.store.tables import telemetry_samples

    with servers() as srv, deployment(srv, n) as (procs, brokers, env):
        procs.ready_timeout_s = 900.0
        t0 = time.perf_counter()
        workers = [procs.start("worker") for _ in range(2)]
        replicas = [procs.start("serve", VPP_KAFKA_CONSUME="false") for _ in range(2)]
        start_s = time.perf_counter() - t0
        pids = [p.pid for p in procs.procs]
        ids = [r.resource_id for r in synthetic_fleet(n)]
        producer = Producer(
            {"bootstrap.servers": brokers, "linger.ms": 20, "batch.num.messages": 10_000}
        )
        cpu0 = [_cpu_s(p) for p in pids]
        jobs0 = [sum(_job_cpu_s(b).values()) for b in workers]
        pg0 = _postgres_cpu_s()
        t0 = time.perf_counter()
        sent = 0
        for k in range(rounds):
            stamp = datetime.now(UTC).isoformat()
            for i, rid in enumerate(ids):
                value = orjson.dumps(
                    {
                        "resource_id": rid,
                        "timestamp": stamp,
                        "soc_pct": 30.0 + (i * 7 + k * 13) % 65,
                        "plugged_in": (i + k) % 6 != 0,
                        "power_kw": 0.0,
                    }
                )
                while True:
                    try:
                        producer.produce(env["VPP_TOPIC_TELEMETRY"], key=rid, value=value)
                        break
                    except BufferError:
                        producer.poll(0.05)
                sent += 1
        producer.flush(120)
        deadline = time.monotonic() + 900
        while sum(_applied(b) for b in workers) < sent:
            if time.monotonic() > deadline:
                raise RuntimeError("the workers did not apply every sample within 15 minutes")
            time.sleep(0.25)
        wall = time.perf_counter() - t0
        cpu = [_cpu_s(p) - c for p, c in zip(pids, cpu0, strict=True)]
        jobs = [sum(_job_cpu_s(b).values()) - j for b, j in zip(workers, jobs0, strict=True)]
        pg = _postgres_cpu_s() - pg0
        engine = make_engine(env["DATABASE_URL"])
        with engine.connect() as conn:
            stored = conn.execute(select(func.count()).select_from(telemetry_samples)).scalar_one()
        engine.dispose()
        del producer
        # every process follows the others through Redis: all four must answer the same
        deadline = time.monotonic() + 120  # well inside the 300 s a sample stays fresh
        while True:
            answers = [
                httpx.get(b + "/capacity/available", timeout=30).json() for b in replicas + workers
            ]
            # counts exactly; power to 0.1 % (vehicles' departure windows move with the
            # clock between the four reads)
            counts = {(a["resource_count"], a["available_resource_count"]) for a in answers}
            kw = [a["discharge"]["kw"] for a in answers]
            if len(counts) == 1 and min(kw) > 0 and max(kw) - min(kw) <= 1e-3 * max(kw):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(
                    "the processes did not agree within 2 minutes: "
                    + ", ".join(
                        f"{a['available_resource_count']} available, {a['discharge']['kw']:.0f} kW"
                        for a in answers
                    )
                )
            time.sleep(1.0)
        return {
            "resources": n,
            "sent": sent,
            "stored": int(stored),
            "seconds": wall,
            "per_s": sent / wall,
            "worker_us": sum(cpu[:2]) / sent * 1e6,
            "worker_jobs_us": sum(jobs) / sent * 1e6,
            "replica_us": sum(cpu[2:]) / sent * 1e6 / 2,
            "postgres_us": pg / sent * 1e6,
            "start_s": start_s,
            "available_kw": answers[0]["discharge"]["kw"],
        }


def run_scale_out(log: Callable[[str], None]) -> list[str]:
    lines: list[str] = []
    for n in [int(x) for x in os.environ.get("VPP_SCALEOUT_SIZES", "100000").split(",") if x]:
        log(f"scale-out: 2 workers and 2 API replicas at {n:,} resources ...")
        lines += _section(n, bench_scale_out(n))
    return lines


def _section(n: int, r: dict[str, Any]) -> list[str]:
    return [
        f"### Scale-out at {n:,} resources: 2 `worker` processes, 2 API replicas, PostgreSQL, Redis, Apache Kafka (loopback)",
        "",
        f"- {r['sent']:,} samples ({r['sent'] // n} per resource) produced to the telemetry topic "
        f"(4 partitions); **{r['per_s']:,.0f} samples/s** from the first produced to the last "
        f"applied ({r['seconds']:.1f} s), producer and all processes on the same 2 cores",
        f"- Stored in PostgreSQL: {r['stored']:,} of {r['sent']:,} (nothing lost, nothing twice)",
        f"- CPU per sample: the workers {r['worker_us']:.1f} µs (parse, live state, COPY, Redis "
        f"share, offsets; of it {r['worker_jobs_us']:.1f} µs their periodic jobs ran in the "
        "window, such as the hourly whole-fleet forecast: `vpp_job_cpu_seconds_total`), "
        f"each API replica {r['replica_us']:.1f} µs (following through Redis), "
        f"PostgreSQL {r['postgres_us']:.1f} µs",
        f"- Both replicas and both workers answer the same `GET /capacity/available` "
        f"({r['available_kw']:,.0f} kW available, {r['resources']:,} resources); the 4 processes "
        f"were ready {r['start_s']:.0f} s after they were started",
        "",
    ]
