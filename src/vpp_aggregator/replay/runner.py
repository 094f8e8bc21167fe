"""One replay: the service built as `serve` builds it (SQLite, in-process bus) on a simulated
clock, the fleet registered, and then minute by minute: devices move, drivers arrive (telling
the service when they leave and with how much charge) and depart, telemetry goes in, the
service's own jobs run (offers, settlement, dispatch follow-through), the market gateway awards
offers and the devices follow the commands. The ledger keeps the figures."""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np

from vpp_aggregator import bootstrap
from vpp_aggregator.adapters.data.files import read_weather_hours
from vpp_aggregator.app.messages import CommandAck
from vpp_aggregator.app.telemetry import TelemetryBatch
from vpp_aggregator.config import ConfigError, load_settings
from vpp_aggregator.domain.baselines import BaselineMethod
from vpp_aggregator.domain.dispatch.safety import ResourceFacts, check_wire
from vpp_aggregator.domain.forecast.quantiles import QUANTILES
from vpp_aggregator.domain.resources import Trip
from vpp_aggregator.replay.clock import SimClock, SimJobs
from vpp_aggregator.replay.devices import Behaviour, Devices
from vpp_aggregator.replay.fleet import FleetSpec, ReplayFleet, build
from vpp_aggregator.replay.gaps import gap_days, hourly_beside
from vpp_aggregator.replay.gateway import Gateway
from vpp_aggregator.replay.ledger import Ledger
from vpp_aggregator.replay.stays import read_stays

STEP_S = 60.0
# While no device holds a command and no dispatch begins within it, a step is this long (on its
# grid from the start): the service's ticks would find nothing to follow, and the devices still
# move, arrive and leave minute by minute inside it.
IDLE_STEP_S = 300.0
MAX_COMMAND_ROUNDS = 8  # re-plans after refusals, each refusal possibly setting off another
# Telemetry at every idle step's grid point while nothing is dispatched (so at most 5 minutes
# apart: every grid point is a step); while something is, every step, from each device plugged
# in (or just unplugged) or holding a command. A vehicle away from its charger (no power, the
# same SoC: nothing new to say) reports at most `AWAY_TELEMETRY_S` apart.
IDLE_TELEMETRY_S = IDLE_STEP_S
# The service's stale window in a replay too: a vehicle away is heard often enough for the
# service to hold each of its samples (no power) over every minute until the next.
AWAY_TELEMETRY_S = 3 * IDLE_TELEMETRY_S
WARMUP_DAYS = 28  # history before the first day, so the forecaster has learnt the fleet
RETRAIN_DAYS = 7
SETTLE_AFTER_S = 3 * IDLE_TELEMETRY_S


@dataclass(frozen=True, slots=True)
class ReplaySpec:
    sessions: Path
    start: date
    end: date  # exclusive
    data_dir: Path
    weather: Path | None = None
    site: str | None = None
    fleet: FleetSpec = field(default_factory=FleetSpec)
    quantile: str = "p10"
    award_share: float = 1.0
    timezone: str = "America/Los_Angeles"
    behaviour: Behaviour = field(default_factory=Behaviour)
    seed: int = 19
    warmup_days: int = WARMUP_DAYS
    baseline: str = "caiso_10in10"  # how settlement baselines the vehicles (`BaselineMethod`)
    settings: dict[str, str] = field(default_factory=dict)  # the service's own, e.g. floors
    # The days the fleet's drivers are drawn from (None: these): the whole replay's, when this
    # is one part of it (`replay/parts`), so every part replays the same vehicles.
    fleet_days: tuple[date, date] | None = None

    def check(self) -> None:
        """Refuse a replay that could not mean anything, naming what is wrong."""
        problems = []
        if self.end <= self.start:
            problems.append(f"--to {self.end} must be after --from {self.start}")
        if self.quantile not in QUANTILES:  # the forecast levels offers can be made at
            problems.append(f"quantile {self.quantile!r} is not one of {', '.join(QUANTILES)}")
        if not 0.0 <= self.award_share <= 1.0:
            problems.append(f"award share {self.award_share:g} is not between 0 and 1")
        if not self.sessions.is_file():
            problems.append(f"sessions file not found: {self.sessions}")
        if self.weather is not None and not self.weather.is_file():
            problems.append(f"weather file not found: {self.weather}")
        if self.fleet_days is not None:
            first, last = self.fleet_days
            if last <= first:
                problems.append(f"--fleet-to {last} must be after --fleet-from {first}")
            elif first > self.start or last < self.end:
                # the stays are read over the fleet's days: outside them no driver arrives
                problems.append(
                    f"--fleet-from {first} to --fleet-to {last} must cover the replayed days "
                    f"({self.start} to {self.end})"
                )
        if self.warmup_days < 0:
            problems.append("warm-up days must be >= 0")
        if self.baseline not in {m.value for m in BaselineMethod}:
            names = ", ".join(m.value for m in BaselineMethod)
            problems.append(f"baseline {self.baseline!r} is not one of {names}")
        owned = sorted(set(self.settings) & set(_settings(self, Path("."))))
        if owned:
            problems.append(f"the replay sets {', '.join(owned)} itself")
        else:
            try:
                load_settings(**self.settings)
            except ConfigError as exc:
                problems.append(str(exc))
        b = self.behaviour
        for name, share in (("refusal", b.refusal_share), ("dropout", b.dropout_share)):
            if not 0.0 <= share < 1.0:
                problems.append(f"{name} share {share:g} is not in [0, 1)")
        if problems:
            raise ValueError("; ".join(problems))


def run(spec: ReplaySpec, progress: Callable[[float], None] | None = None) -> dict[str, Any]:
    zone = ZoneInfo(spec.timezone)

    def midnight(day: date) -> float:
        return datetime.combine(day, datetime.min.time(), zone).timestamp()

    start_ts, end_ts = midnight(spec.start), midnight(spec.end)
    warm_ts = start_ts - spec.warmup_days * 86_400.0
    first, last = spec.fleet_days or (spec.start, spec.end)
    fleet_span = (midnight(first) - spec.warmup_days * 86_400.0, midnight(last))
    stays = read_stays(spec.sessions, spec.site, fleet_span)
    gaps = gap_days(hourly_beside(spec.sessions), spec.timezone)
    with tempfile.TemporaryDirectory(prefix="vpp-replay-") as tmp:
        settings = load_settings(**{**spec.settings, **_settings(spec, Path(tmp))})
        clock = SimClock(warm_ts)
        service = bootstrap.build(settings, clock)
        try:
            return _Replay(
                spec, settings, service, clock, stays, gaps, fleet_span, warm_ts, start_ts, end_ts
            ).run(progress)
        finally:
            service.engine.dispose()


def _settings(spec: ReplaySpec, tmp: Path) -> dict[str, Any]:
    """What the replay sets of the service: its own store, clock-driven cadences, no brokers."""
    return dict(
        DATABASE_URL=f"sqlite:///{tmp / 'replay.db'}",
        VPP_SQLITE_SYNCHRONOUS="off",  # thrown away at the end: a sync buys nothing
        VPP_MODEL_DIR=str(tmp / "models"),
        VPP_SITE_TIMEZONE=spec.timezone,
        VPP_OFFER_QUANTILE=spec.quantile,
        VPP_BASELINE_DEFAULT=spec.baseline,
        VPP_MARKETS="day_ahead",
        VPP_REGULATION_ENABLED=False,
        VPP_DISPATCH_TICK_SECONDS=STEP_S,
        VPP_MARKET_TICK_SECONDS=IDLE_TELEMETRY_S,
        # messages are sent as they are stored; the in-process bus never leaves one behind
        VPP_OUTBOX_SWEEP_SECONDS=3600,
        VPP_PEER_POLL_SECONDS=3600,  # no other process shares a replay's store
        # the newest sample per resource, kept for a restart, which a replay never has
        VPP_TELEMETRY_SNAPSHOT_SECONDS=3600,
        VPP_TELEMETRY_STALE_SECONDS=AWAY_TELEMETRY_S,
        VPP_STATE_SNAPSHOT_SECONDS=0,
        VPP_AGGREGATE_TELEMETRY_SECONDS=0,
        VPP_FORECAST_RETRAIN_HOURS=0,  # the replay retrains on its own clock, in line
        # the accuracy gauges' hourly forecast: a replay's score of its forecast is the delivery
        VPP_FORECAST_ACCURACY_ENABLED=False,
        VPP_MALLOC_TRIM_SECONDS=0,
        KAFKA_BROKERS="",
        REDIS_URL="",
        VPP_OPENADR_VTN_URL="",
    )


class _Replay:
    def __init__(
        self,
        spec: ReplaySpec,
        settings: Any,
        service: Any,
        clock: SimClock,
        stays: Any,
        gaps: frozenset[date],
        fleet_span: tuple[float, float],
        warm_ts: float,
        start_ts: float,
        end_ts: float,
    ) -> None:
        self.spec, self.settings, self.clock = spec, settings, clock
        self.agg = service.aggregator
        self.fleet: ReplayFleet = build(
            stays,
            spec.fleet,
            *fleet_span,
            spec.data_dir,
            spec.seed,
            settings.round_trip_efficiency,
        )
        self.devices = Devices(
            self.fleet.hardware, self.fleet.visits, self.fleet.soc_pct, spec.behaviour, warm_ts
        )
        self.warm_ts, self.start_ts, self.end_ts = warm_ts, start_ts, end_ts
        self.gateway = Gateway(spec.award_share)
        self.commands: list[tuple[str, Any]] = []
        self.ledger = Ledger(self.fleet, spec.timezone, gaps, start_ts, end_ts)
        bus = self.agg.bus
        bus.subscribe(settings.topic_market_offers, self._on_offer)
        bus.subscribe(
            settings.topic_v2g_commands, lambda _t, _k, p: self.commands.append(("v2g", p))
        )
        bus.subscribe(settings.topic_market_settlement, lambda _t, _k, p: self.ledger.settled(p))
        self.agg.registry.register_many(self.fleet.registrations)
        if spec.weather is not None:  # as an operator stores it for the forecast
            self.agg.forecast.inputs.add_weather(read_weather_hours(spec.weather))
        self.jobs = SimJobs(service.scheduler.jobs, clock)  # as `serve` schedules them
        self._reported_ts = np.full(len(self.fleet.hardware.resource_ids), -math.inf)
        self._reported_plugged = np.zeros(len(self.fleet.hardware.resource_ids), dtype=bool)
        self._last_train = -math.inf
        self.ids = self.fleet.hardware.resource_ids
        self.fleet_ids = frozenset(self.ids)

    def _on_offer(self, topic: str, key: str, offer: Any) -> None:
        if self.clock.ts >= self.start_ts - 2 * 86_400:  # offers for replayed days only
            self.ledger.offered(offer)
            self.gateway.on_offer(topic, key, offer)

    def run(self, progress: Callable[[float], None] | None) -> dict[str, Any]:
        t = self.warm_ts
        total = self.end_ts - self.warm_ts
        # A little past the last day, so its last intervals are settled too.
        while t < self.end_ts + SETTLE_AFTER_S:
            t = self._next_step(t)
            for departed in self.devices.advance(t):
                self.ledger.departed(departed)
            self.clock.advance_to(t)
            self._arrivals()
            if t >= self._last_train + RETRAIN_DAYS * 86_400 and t >= self.start_ts - 86_400:
                self._train()
            self._telemetry(t)
            self.jobs.run_due()
            self._award()
            self._deliver_commands(t)
            if progress is not None and int(t) % 3600 == 0:
                progress(min(1.0, (t - self.warm_ts) / total))
        return self.ledger.report()

    def _next_step(self, t: float) -> float:
        """A minute on, or to the next idle step's end when nothing will be followed by then."""
        idle_end = self.warm_ts + (math.floor((t - self.warm_ts) / IDLE_STEP_S) + 1) * IDLE_STEP_S
        busy = (
            self.devices.any_commanded()
            or bool(self.commands)
            or self.agg.dispatch.first_start_ts() <= idle_end
        )
        return t + STEP_S if busy else idle_end

    def _arrivals(self) -> None:
        """Drivers who plugged in this step tell the service when they leave, needing what."""
        v = self.devices.visits
        for i in self.devices.take_arrivals():
            k = int(self.devices.visit[i])
            stated = float(v.stated_departure_ts[k])
            leave = (
                stated
                if math.isfinite(stated) and stated > self.clock.ts + 600
                else float(v.end_ts[k])
            )
            trip = Trip(datetime.fromtimestamp(leave, UTC), None, float(v.required_soc_pct[k]))
            self.agg.registry.change(self.fleet.hardware.resource_ids[i], {"trips": (trip,)})
            self.ledger.arrived(i, k, leave)

    def _train(self) -> None:
        self._last_train = self.clock.ts
        try:
            self.agg.forecast.models.train_now()
        except Exception as exc:  # too little history yet: the seasonal profile answers
            self.ledger.note(f"{self.clock().date()}: no model trained ({exc})")

    def _telemetry(self, t: float) -> None:
        """On the 5-minute grid, and every minute while a device holds a command: from the
        devices plugged in, holding a command or unplugged since they last reported. A vehicle
        away from its charger reports nothing new (no power, the same SoC), every 15 minutes on
        the grid: nine in ten of the samples of a week of the year's 200 vehicles were such, and
        storing, reading back and folding each into the forecast history cost a sixth of the
        week's CPU (docs/replay.md). Reports come at most 5 minutes apart, so one that is due
        once 10 minutes have passed is never more than 15 late: the service never hears the
        vehicle as stale unless a sample drops out."""
        busy = self.devices.any_commanded()
        if not busy and round(t - self.warm_ts) % round(IDLE_TELEMETRY_S):
            return
        due = (
            self.devices.plugged()
            | self._reported_plugged
            | self.devices.holding()
            | (t - self._reported_ts > AWAY_TELEMETRY_S - IDLE_TELEMETRY_S)
        )
        rows, soc, kw, plugged, dropped = self.devices.samples(due)
        if dropped.size and busy:
            self.ledger.dropout(dropped, t)
        self._reported_ts[due] = t
        self._reported_plugged[rows] = plugged
        if rows.size:
            ids = [self.ids[i] for i in rows.tolist()]
            n = rows.size
            batch = TelemetryBatch(
                ids, np.full(n, t), soc, plugged, kw, np.arange(n, dtype=np.int64)
            )
            self.agg.telemetry.ingest(batch)

    def _award(self) -> None:
        for award in self.gateway.awards():
            try:
                self.agg.market.award(award)
                self.ledger.awarded(award)
            except Exception as exc:  # refused: recorded as not awarded, with why
                self.ledger.note(f"award {award.award_id} refused: {exc}")

    def _deliver_commands(self, t: float) -> None:
        """Every command sent by now, those of re-plans a refusal set off included: a service
        re-plans in seconds, so its new commands must not wait for the next step (a minute in
        which the devices would keep to the plans being replaced)."""
        for _ in range(MAX_COMMAND_ROUNDS):
            if not self.commands:
                return
            todo, self.commands = self.commands, []
            self._deliver(todo, t)
        if self.commands:
            self.ledger.note(
                f"{datetime.fromtimestamp(t, UTC).isoformat()}: re-plans after refusals still "
                f"sending commands after {MAX_COMMAND_ROUNDS} rounds; the rest go out next step"
            )

    def _deliver(self, todo: list[tuple[str, Any]], t: float) -> None:
        for _kind, cmd in todo:
            rid = str(cmd["resource_id"])
            took = self.devices.command(
                rid, str(cmd["dispatch_id"]), int(cmd["revision"]), list(cmd["schedule"]), t
            )
            self.ledger.commanded(cmd, took, self._check(rid, cmd))
            if took is False:
                ack = CommandAck(
                    dispatch_id=str(cmd["dispatch_id"]),
                    status="Rejected",
                    resource_id=str(cmd["resource_id"]),
                    reason="device refused",
                )
                self.agg.integration.command_ack(ack)

    def _check(self, rid: str, cmd: dict[str, Any]) -> list[Any]:
        """The independent checker over the schedule as it went out, from what the service knew
        of the resource when it sent it."""
        if rid not in self.fleet_ids:
            return []
        now = self.clock()
        facts = ResourceFacts.of(self.agg.registry.get(rid), self.settings.bess_min_soc_pct, now)
        live = self.agg.state.live(rid, now)
        points = [
            (datetime.fromisoformat(str(p["t"])), float(p["setpoint_kw"])) for p in cmd["schedule"]
        ]
        if live is None or live.soc_pct is None or not points:
            return []
        points = from_sample(points, live.telemetry_at or now)
        return check_wire(
            facts,
            float(live.soc_pct),
            points,
            ramp_kw_per_min=self.settings.max_ramp_kw_per_min,
            round_trip_efficiency=self.settings.round_trip_efficiency,
        )


def from_sample(
    points: list[tuple[datetime, float]], sampled_at: datetime
) -> list[tuple[datetime, float]]:
    """A schedule from the point in effect when the SoC it is checked from was sampled: one
    that began before (planned a step before it reached the device) would otherwise count the
    minutes already run twice, and a plan ending at a battery's floor would read as crossing it."""
    return points[max(0, sum(1 for t, _ in points if t <= sampled_at) - 1) :]


def days_between(start: date, end: date) -> list[date]:
    return [start + timedelta(days=k) for k in range((end - start).days)]
