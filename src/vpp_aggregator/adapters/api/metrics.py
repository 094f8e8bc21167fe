"""Prometheus metrics: request latency, telemetry counters, and capacity read at scrape time."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Mapping
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vpp_aggregator.app.aggregator import Aggregator
from vpp_aggregator.app.dispatch_records import DispatchRecord, DispatchStatus
from vpp_aggregator.domain.forecast.metrics import ErrorSums
from vpp_aggregator.scheduler import Scheduler

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class FleetCollector(Collector):
    """Computes capacity when Prometheus scrapes, so the numbers are never older than the scrape."""

    def __init__(self, agg: Aggregator) -> None:
        self.agg = agg

    def collect(self) -> Iterator[GaugeMetricFamily]:
        snap = self.agg.capacity.snapshot(60)
        kw = GaugeMetricFamily(
            "vpp_available_capacity_kw",
            "Available power over a 60 min window (direction: discharge=up, charge=down)",
            labels=["direction", "scope", "name"],
        )
        kwh = GaugeMetricFamily(
            "vpp_available_energy_kwh",
            "Available energy over a 60 min window",
            labels=["direction", "scope", "name"],
        )
        scopes: list[tuple[str, str, Any]] = [("total", "all", snap.total)]
        scopes += [("resource_type", t, f) for t, f in snap.by_type.items()]
        scopes += [("grid_node", n, f) for n, f in snap.by_grid_node.items()]
        for scope, name, f in scopes:
            kw.add_metric(["discharge", scope, name], round(f.discharge_kw, 3))
            kw.add_metric(["charge", scope, name], round(f.charge_kw, 3))
            kwh.add_metric(["discharge", scope, name], round(f.discharge_kwh, 3))
            kwh.add_metric(["charge", scope, name], round(f.charge_kwh, 3))
        yield kw
        yield kwh
        active = GaugeMetricFamily(
            "vpp_active_resources",
            "Registered, not deactivated resources",
            labels=["resource_type"],
        )
        for t, n in self.agg.state.counts_by_type().items():
            active.add_metric([t], n)
        yield active
        avail = GaugeMetricFamily(
            "vpp_available_resources",
            "Resources available right now (60 min window)",
            labels=["resource_type"],
        )
        for t, f in snap.by_type.items():
            avail.add_metric([t], f.available_resource_count)
        yield avail
        lockouts = GaugeMetricFamily(
            "vpp_bess_safety_lockouts",
            "Batteries reported below their floor, locked out of discharge",
        )
        lockouts.add_metric([], len(self.agg.state.lockouts()))
        yield lockouts
        yield from forecast_accuracy(self.agg.forecast.accuracy.scores())


def forecast_accuracy(scores: dict[str, ErrorSums]) -> Iterator[GaugeMetricFamily]:
    """Online forecast accuracy by `model` (fallback, trained). The fallback is there from
    start-up on: NaN until an hour is scored (MAPE also while no scored hour had a vehicle), so
    the series exists for alert rules and dashboards but compares false until measured."""
    mape = GaugeMetricFamily(
        "vpp_forecast_mape",
        "Running MAPE of the available-vehicle forecast (hours with >= 1)",
        labels=["model"],
    )
    wape = GaugeMetricFamily(
        "vpp_forecast_wape", "Running WAPE of the available-vehicle forecast", labels=["model"]
    )
    scored = GaugeMetricFamily(
        "vpp_forecast_scored_hours", "Forecast hours compared with what happened", labels=["model"]
    )
    for model, sums in sorted(scores.items()):
        mape.add_metric([model], math.nan if sums.mape is None else sums.mape)
        wape.add_metric([model], math.nan if sums.wape is None else sums.wape)
        scored.add_metric([model], sums.hours)
    yield from (mape, wape, scored)


class RegulationCollector(Collector):
    """Regulation as scraped: capacity awarded now and PJM's score of the latest hour."""

    def __init__(self, agg: Aggregator) -> None:
        self.agg = agg

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        status = self.agg.regulation.status()
        capacity = GaugeMetricFamily(
            "vpp_regulation_capacity_kw", "Regulation capacity awarded now", labels=["aggregation"]
        )
        score = GaugeMetricFamily(
            "vpp_regulation_score",
            "PJM performance score of the latest hour recorded (0-1; 0.75 qualifies)",
            labels=["aggregation", "part"],
        )
        for a in status["aggregations"]:  # type: ignore[attr-defined]
            capacity.add_metric([a["aggregation_id"]], a["capacity_kw"])
            if a["hours"]:
                last = a["hours"][-1]
                for part in ("score", "correlation", "delay", "precision"):
                    if last[part] is not None:
                        score.add_metric([a["aggregation_id"], part], last[part])
        refused = CounterMetricFamily(
            "vpp_regulation_commands_refused",
            "Regulation commands the independent checker stopped (never sent)",
            value=float(status["commands_refused"]),  # type: ignore[arg-type]
        )
        yield from (capacity, score, refused)


class SchedulerCollector(Collector):
    """Runs and cost of each periodic job (`scheduler`)."""

    def __init__(self, scheduler: Scheduler) -> None:
        self.scheduler = scheduler

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        label = ["job"]
        runs = CounterMetricFamily("vpp_job_runs", "Runs of each periodic job", labels=label)
        failures = CounterMetricFamily(
            "vpp_job_failures", "Runs of each periodic job that failed", labels=label
        )
        wall = CounterMetricFamily(
            "vpp_job_seconds", "Time spent in each periodic job", labels=label
        )
        cpu = CounterMetricFamily(
            "vpp_job_cpu_seconds", "CPU time of each periodic job's thread", labels=label
        )
        last = GaugeMetricFamily(
            "vpp_job_last_run_seconds", "Duration of each periodic job's latest run", labels=label
        )
        for name, s in list(self.scheduler.stats.items()):
            runs.add_metric([name], s.runs)
            failures.add_metric([name], self.scheduler.failures.get(name, 0))
            wall.add_metric([name], s.wall_s)
            cpu.add_metric([name], s.cpu_s)
            last.add_metric([name], s.last_wall_s)
        yield from (runs, failures, wall, cpu, last)


class Metrics:
    def __init__(self, agg: Aggregator) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(FleetCollector(agg))
        self.registry.register(RegulationCollector(agg))
        # Resident memory, CPU and open files of this process, as every Prometheus exporter has.
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self.samples_accepted = Counter(
            "vpp_telemetry_samples_accepted", "Telemetry samples accepted", registry=self.registry
        )
        self.samples_rejected = Counter(
            "vpp_telemetry_samples_rejected",
            "Telemetry samples rejected",
            ["reason"],
            registry=self.registry,
        )
        self.dispatch = DispatchMetrics(self.registry)
        agg.dispatch.metrics = self.dispatch
        agg.reactions.observer = ReactionMetrics(self.registry)
        self.request_latency = Histogram(
            "vpp_http_request_duration_seconds",
            "HTTP request latency",
            ["method", "route", "status"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )


class DispatchMetrics:
    """Dispatch response time, dispatches by status and the latest shortfall."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.response = Histogram(
            "vpp_dispatch_response_seconds",
            "Dispatch request received to control commands emitted",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0),
            registry=registry,
        )
        self.by_status = Counter(
            "vpp_dispatches", "Dispatches entering each status", ["status"], registry=registry
        )
        self.shortfall = Gauge(
            "vpp_dispatch_shortfall_kw",
            "Shortfall of the latest dispatch (signed like its target)",
            registry=registry,
        )

    def observe(self, record: DispatchRecord) -> None:
        self.response.observe(record.response_time_ms / 1e3)
        self.by_status.labels(record.status.value).inc()
        self.shortfall.set(record.shortfall_kw)

    def status_changed(self, status: DispatchStatus) -> None:
        self.by_status.labels(status.value).inc()


# Reaction stages take from tens of microseconds (safety) to seconds (a broker away): fine at
# the low end, so a p99 read from the buckets is within a few percent of the true one.
REACTION_BUCKETS = (
    *(x / 1e4 for x in (1, 2.5, 5)),
    *(x / 1e3 for x in (1, 2, 3, 5, 7.5, 10, 15, 20, 30, 50, 75, 100, 150, 200, 300, 500)),
    1.0,
    2.5,
    5.0,
)


class ReactionMetrics:
    """A grid event to its first command at the broker, by stage and in all (`app/reaction`)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.stage = Histogram(
            "vpp_reaction_stage_seconds",
            "Grid event to first device command, time in each stage "
            "(parse, plan, safety, outbox, publish)",
            ["path", "stage"],
            buckets=REACTION_BUCKETS,
            registry=registry,
        )
        self.cpu = Histogram(
            "vpp_reaction_stage_cpu_seconds",
            "CPU time of the handling thread in each stage of vpp_reaction_stage_seconds",
            ["path", "stage"],
            buckets=REACTION_BUCKETS,
            registry=registry,
        )
        self.total = Histogram(
            "vpp_reaction_seconds",
            "Grid event received to its first device command acknowledged by the broker",
            ["path"],
            buckets=REACTION_BUCKETS,
            registry=registry,
        )

    def observe(
        self, path: str, stages: Mapping[str, float], total_s: float, cpu: Mapping[str, float]
    ) -> None:
        for name, seconds in stages.items():
            self.stage.labels(path, name).observe(seconds)
            self.cpu.labels(path, name).observe(cpu[name])
        self.total.labels(path).observe(total_s)


class LatencyMiddleware:
    """Pure ASGI (no per-request task) so timing costs microseconds on the hot read path."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", "unmatched")
            self.metrics.request_latency.labels(scope["method"], path, str(status)).observe(
                time.perf_counter() - start
            )


class TransportCollector(Collector):
    """Kafka and Redis as this process sees them, read at scrape time."""

    def __init__(self, kafka: Any, shared: Any, ven: Any = None) -> None:
        self.kafka = kafka
        self.shared = shared
        self.ven = ven

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        if self.kafka is not None:
            handled = CounterMetricFamily(
                "vpp_kafka_messages",
                "Messages consumed by outcome (applied, dispatched, rejected, duplicate, ignored, dead_letter...)",
                labels=["topic", "outcome"],
            )
            ingest = self.kafka.ingest
            for (topic, outcome), n in sorted((ingest.stats if ingest else {}).items()):
                handled.add_metric([topic, outcome], n)
            yield handled
            sent = CounterMetricFamily(
                "vpp_kafka_published_messages", "Messages the broker acknowledged"
            )
            sent.add_metric([], self.kafka.bus.published)
            yield sent
        if self.ven is not None:
            for name, what, value in (
                ("vpp_openadr_polls", "Polls of the VTN that answered", self.ven.polls),
                ("vpp_openadr_poll_failures", "Polls of the VTN that failed", self.ven.failures),
                (
                    "vpp_openadr_tokens",
                    "Tokens fetched from the VTN",
                    self.ven.client.tokens_fetched,
                ),
                ("vpp_openadr_reports", "Reports the VTN took", self.ven.reports_sent),
                (
                    "vpp_openadr_other_failures",
                    "Registrations, reports and single events that failed",
                    self.ven.side_failures,
                ),
            ):
                counter = CounterMetricFamily(name, what)
                counter.add_metric([], value)
                yield counter
            events = GaugeMetricFamily(
                "vpp_openadr_vtn_events", "Events the VTN showed at the last poll"
            )
            events.add_metric([], len(self.ven.known))
            yield events
        if self.shared is not None:
            follower = self.shared.follower
            applied = CounterMetricFamily(
                "vpp_redis_followed_samples", "Samples other processes ingested, applied here"
            )
            applied.add_metric([], follower.applied)
            yield applied
            age = follower.stale_seconds()
            if age is not None:
                lag = GaugeMetricFamily(
                    "vpp_shared_state_age_seconds", "Since the shared state was last read"
                )
                lag.add_metric([], age)
                yield lag
