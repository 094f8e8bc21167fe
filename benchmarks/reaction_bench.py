"""A grid event to its first V2G command, stage by stage (`make bench ONLY=reaction`).

The deployment of the Kafka benchmark (`benchmarks/kafka_bench.py`: a `vpp-aggregator worker`
process, PostgreSQL, Redis and Apache Kafka on loopback) at 10,000 and 100,000 resources
(VPP_REACTION_SIZES). Events go one at a time on `grid_signals`; the end-to-end time is measured
by a reader of the command topic, and each stage is read from the worker's own histogram
(`vpp_reaction_stage_seconds` on /metrics): after each event the growth of every stage's `_sum`
is that event's time in the stage, so the percentiles are exact, not read from buckets.
"""

from __future__ import annotations

import os
import re
import time
import uuid
from dataclasses import dataclass, field

import httpx
import numpy as np
import orjson
from confluent_kafka import Consumer, Producer

from benchmarks.kafka_bench import BROKER_NAMES, Servers, _applied, _drain, _sample, deployment
from devservices.synthetic import synthetic_fleet

STAGES = ("parse", "plan", "safety", "outbox", "publish")
SUMS = re.compile(
    r'^vpp_reaction_(?:stage_(cpu_)?seconds_sum\{path="grid_signals",stage="(\w+)"\}'
    r'|seconds_(sum|count)\{path="grid_signals"\}) ([0-9.e+-]+)$',
    re.M,
)
WARM_UP = 2  # events sent first and not counted: the first plan loads the solvers


@dataclass
class Reaction:
    resources: int
    events: int
    target_kw: float
    e2e_ms: list[float] = field(default_factory=list)  # send -> first command read back
    total_ms: list[float] = field(default_factory=list)  # the worker's own total
    stage_ms: dict[str, list[float]] = field(default_factory=lambda: {s: [] for s in STAGES})
    # CPU of the handling thread in each stage (the worker's own histogram)
    stage_cpu_ms: dict[str, list[float]] = field(default_factory=lambda: {s: [] for s in STAGES})
    cpu_ms: list[float] = field(default_factory=list)  # worker CPU from send to the command


def _sums(base: str) -> dict[str, float]:
    """The worker's reaction histograms: each stage's and the total's `_sum`, and the count."""
    out: dict[str, float] = {}
    for cpu, stage, total, value in SUMS.findall(httpx.get(base + "/metrics", timeout=30).text):
        out[f"{cpu}{stage}" or total] = float(value)
    return out


def _cpu_s(pid: int) -> float:
    """CPU seconds every thread of a process has run so far (Linux schedstat, in ns)."""
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/schedstat") as fh:
                total += int(fh.read().split()[0])
        except (FileNotFoundError, ProcessLookupError):  # a thread that just ended
            continue
    return total / 1e9


def bench_reaction(srv: Servers, n: int, events: int = 100, target_kw: float = 200.0) -> Reaction:
    """`events` demand-response events of `target_kw` on one grid node each (50 nodes in turn)."""
    with deployment(srv, n) as (procs, brokers, env):
        base = procs.start("worker")
        pid = procs.procs[-1].pid
        ids = [r.resource_id for r in synthetic_fleet(n)]
        bulk = Producer({"bootstrap.servers": brokers, "linger.ms": 20})
        for rid in ids:
            while True:
                try:
                    bulk.produce(env["VPP_TOPIC_TELEMETRY"], key=rid, value=_sample(rid, 80.0))
                    break
                except BufferError:
                    bulk.poll(0.05)
        bulk.flush(60)
        deadline = time.monotonic() + 300
        while _applied(base) < n:  # every resource has reported: all can take part
            if time.monotonic() > deadline:
                raise RuntimeError("the worker did not apply the fleet's telemetry in 5 minutes")
            time.sleep(0.5)
        producer = Producer({"bootstrap.servers": brokers, "linger.ms": 0})
        consumer = Consumer(
            {
                "bootstrap.servers": brokers,
                "group.id": f"bench-reader-{uuid.uuid4().hex[:6]}",
                "auto.offset.reset": "latest",
                "enable.auto.commit": False,
                "session.timeout.ms": 6000,
            }
        )
        consumer.subscribe([env["VPP_TOPIC_V2G_COMMANDS"]])
        while not consumer.assignment():  # joined before the first event, so none is missed
            consumer.poll(0.1)
        _drain(consumer, 0.5)
        out = Reaction(n, events, target_kw)
        before = _sums(base)
        for i in range(events + WARM_UP):
            event = {
                "event_id": f"bench-{uuid.uuid4().hex[:8]}",
                "site_id": f"NODE_{i % 50:02d}",
                "v2g_requested": True,
                "der_control": {"op_mode": "discharge", "set_point_kw": target_kw},
                "intervals": [],
            }
            cpu0 = _cpu_s(pid)
            t = time.monotonic()
            producer.produce(
                env["VPP_TOPIC_GRID_SIGNALS"], key=str(event["event_id"]), value=orjson.dumps(event)
            )
            producer.flush(5)
            got = None
            while time.monotonic() - t < 30:
                if any(m.error() is None for m in consumer.consume(100, 0.002)):
                    got = time.monotonic()
                    break
            if got is None:
                raise RuntimeError(f"no command within 30 s for event {i}")
            cpu = _cpu_s(pid) - cpu0
            _drain(consumer, 0.2)  # the rest of this dispatch's commands
            while (after := _sums(base)).get("count", 0) <= before.get("count", 0):
                if time.monotonic() - t > 60:
                    raise RuntimeError(f"event {i} was not timed on /metrics")
                time.sleep(0.05)
            if i >= WARM_UP:
                out.e2e_ms.append((got - t) * 1e3)
                out.cpu_ms.append(cpu * 1e3)
                out.total_ms.append((after["sum"] - before["sum"]) * 1e3)
                for s in STAGES:
                    out.stage_ms[s].append((after.get(s, 0.0) - before.get(s, 0.0)) * 1e3)
                    c = f"cpu_{s}"
                    out.stage_cpu_ms[s].append((after.get(c, 0.0) - before.get(c, 0.0)) * 1e3)
            before = after
        consumer.close()
        return out


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def run_reaction(log: object = print) -> list[str]:
    """The section of BENCHMARKS.md: one table per fleet size."""
    from benchmarks.kafka_bench import servers

    say = log if callable(log) else print
    sizes = [int(x) for x in os.environ.get("VPP_REACTION_SIZES", "10000,100000").split(",") if x]
    events = int(os.environ.get("VPP_REACTION_EVENTS", "100"))
    results = []
    with servers() as srv:
        broker = BROKER_NAMES.get(srv.kafka.kind, "the broker of KAFKA_BROKERS")
        for n in sizes:
            say(f"reaction: {events} grid events at {n:,} resources ...")
            results.append(bench_reaction(srv, n, events))
    lines = [
        f"### Grid event to first V2G command, by stage (a `vpp-aggregator worker`, PostgreSQL, Redis, {broker} on loopback)",
        "",
        f"Events of {results[0].target_kw:g} kW discharge on `grid_signals`, one at a time, each on one of 50 grid nodes in turn "
        f"(after {WARM_UP} not counted). End to end: sent to read back from the command topic by the benchmark. "
        "Stages: the worker's `vpp_reaction_stage_seconds` for each event, and beside it the handling "
        "thread's CPU in that stage (`vpp_reaction_stage_cpu_seconds`; docs/architecture.md). "
        "Worker CPU: all its threads, from send to the command read back.",
        "",
        "| resources | events | measure | p50 (ms) | p99 (ms) | max (ms) | CPU p50 (ms) | CPU p99 (ms) |",
        "|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        rows: list[tuple[str, list[float], list[float] | None]] = [
            *((f"stage `{s}`", r.stage_ms[s], r.stage_cpu_ms[s]) for s in STAGES),
            (
                "worker total",
                r.total_ms,
                [sum(x) for x in zip(*r.stage_cpu_ms.values(), strict=True)],
            ),
            ("**end to end**", r.e2e_ms, r.cpu_ms),
        ]
        for name, values, cpu in rows:
            lines.append(
                f"| {r.resources:,} | {len(values)} | {name} | {_pct(values, 50):.2f} "
                f"| {_pct(values, 99):.2f} | {max(values):.2f} "
                + (f"| {_pct(cpu, 50):.2f} | {_pct(cpu, 99):.2f} |" if cpu else "| | |")
            )
    lines += ["", "Target: end to end p99 ≤ 100 ms at 100,000 resources.", ""]
    return lines
