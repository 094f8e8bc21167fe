"""Frequency regulation in service: each aggregation with regulation capacity C awarded now
follows the grid operator's signal (−1…+1 every 2 s, from `VPP_TOPIC_REGULATION_SIGNAL` or
`POST /regulation/signal`).

The devices do the fast part. Every `VPP_REGULATION_REPLAN_SECONDS` each resource is given a
base point, a participation (kW per unit of signal) and its ramp limit (`domain/regulation`),
checked by the independent checker (`domain/regulation_safety`) and sent only when they change
(`vpp.regulation.commands`); every signal value is passed on once per aggregation
(`vpp.regulation.broadcast`), and each device sets `base + participation × signal` itself.
The response is measured from telemetry (net power less the base points) every few seconds
and scored hour by hour as PJM scores it (`domain/regulation_score`)."""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta

import numpy as np

from vpp_aggregator.app.dispatch_ports import Bus
from vpp_aggregator.app.messages import RegulationSignal
from vpp_aggregator.app.outbound import RegulationBroadcast, RegulationCommandMessage
from vpp_aggregator.app.outcome import Outcome
from vpp_aggregator.domain.fleet_state import FleetState
from vpp_aggregator.domain.regulation import RegulationResources, allocate, facts_of
from vpp_aggregator.domain.regulation_safety import RegulationCommand, check_regulation
from vpp_aggregator.domain.regulation_score import HourScore, hourly_scores

KEEP_S = 2 * 3600.0  # signal and response kept for scoring: this hour and the last
HORIZON_S = 15 * 60.0  # each command is proven safe for this long, and re-planned well before
Awarded = Callable[[datetime], Mapping[str, float]]  # regulation kW per aggregation now


class RegulationService:
    def __init__(
        self,
        state: FleetState,
        bus: Bus,
        clock: Callable[[], datetime],
        awarded: Awarded,
        busy: Callable[[datetime, datetime], list[str]],
        *,
        commands_topic: str,
        broadcast_topic: str,
        horizon_s: float,
        ramp_kw_per_min: float,
        signal_rate_per_min: float,
        round_trip_efficiency: float,
        replan_s: float = 60.0,
    ) -> None:
        self.state = state
        self.bus = bus
        self.clock = clock
        self.awarded = awarded
        self.busy = busy
        self.commands_topic = commands_topic
        self.broadcast_topic = broadcast_topic
        self.horizon_s = horizon_s
        self.ramp = ramp_kw_per_min
        self.rate = signal_rate_per_min
        self.rte = round_trip_efficiency
        # a command this close to its end is sent again (two re-plans, half its validity at most)
        self.renew_s = min(2 * replan_s, horizon_s / 2)
        self._lock = threading.Lock()
        self._planning = threading.Lock()  # one re-plan at a time (the scheduler, an operator)
        self._signal: dict[str, deque[tuple[float, float]]] = {}
        self._response: dict[str, deque[tuple[float, float]]] = {}
        # per resource, what it was last told: base, participation, revision, valid until (s)
        self._sent: dict[str, tuple[float, float, int, float]] = {}
        # per regulating aggregation, its resources holding a command now
        self._members: dict[str, list[str]] = {}
        self.refused = 0  # commands the checker stopped (never sent)

    # ------------------------------------------------------------------ signal in
    def take(self, message: RegulationSignal) -> Outcome:
        """A signal message (Kafka or HTTP): recorded and passed on."""
        at = message.timestamp or self.clock()
        sent = self.signal(message.value, at, message.aggregation_id)
        if not sent:
            return Outcome("ignored", "no aggregation regulates now")
        idle = message.aggregation_id and message.aggregation_id not in self.awarded(at)
        if idle:  # passed on all the same: its devices hold no participation, so nothing moves
            return Outcome(
                "applied",
                f"signal {message.value:g} passed on to {message.aggregation_id}, which has no "
                "regulation awarded now: its resources do not follow it",
            )
        return Outcome("applied", f"signal {message.value:g} to {sent} aggregation(s)")

    def signal(self, value: float, at: datetime, aggregation_id: str | None = None) -> int:
        """Record a signal value for one aggregation (or every regulating one) and pass it on
        to its devices; returns how many aggregations it went to."""
        value = max(-1.0, min(1.0, float(value)))
        nodes = [aggregation_id] if aggregation_id else list(self.awarded(at))
        out: list[tuple[str, Mapping[str, object]]] = []
        with self._lock:
            for node in nodes:
                kept = self._signal.setdefault(node, deque())
                if kept and kept[-1][0] >= at.timestamp():
                    continue  # a late or repeated value: the devices already have a newer one
                kept.append((at.timestamp(), value))
                _trim(kept, at.timestamp())
                msg: RegulationBroadcast = {
                    "aggregation_id": node,
                    "timestamp": at.isoformat(),
                    "signal": value,
                }
                out.append((node, dict(msg)))
        if out:
            self.bus.publish_many(self.broadcast_topic, out)
        return len(out)

    # ------------------------------------------------------------------ commands out
    def replan(self) -> int:
        """Give each regulating aggregation's resources their base and participation; send the
        ones that changed. Returns the commands sent."""
        with self._planning:
            return self._replan()

    def _replan(self) -> int:
        now = self.clock()
        awarded = self.awarded(now)
        busy = self.busy(now, now + timedelta(seconds=self.horizon_s))
        out: list[tuple[str, Mapping[str, object]]] = []
        members: dict[str, list[str]] = {}
        for node, capacity_kw in sorted(awarded.items()):
            if capacity_kw <= 0:
                continue
            inputs, _ = self.state.dispatch_inputs(now, now, direction=1, grid_node=node, busy=busy)
            r = RegulationResources(
                inputs.resource_ids,
                inputs.capacity_kwh,
                inputs.soc_pct,
                inputs.floor_pct,
                inputs.ceiling_pct,
                inputs.max_discharge_kw,
                inputs.max_charge_kw,
                inputs.departure_min * 60.0,
                inputs.departure_soc_pct,
                inputs.available,
                inputs.power_kw,
            )
            plan = allocate(
                r,
                capacity_kw,
                horizon_s=self.horizon_s,
                ramp_kw_per_min=self.ramp,
                signal_rate_per_min=self.rate,
                eta=math.sqrt(self.rte),
            )
            told = members.setdefault(node, [])
            for i, rid in enumerate(inputs.resource_ids):
                cmd = RegulationCommand(
                    rid,
                    float(plan.base_kw[i]),
                    float(plan.participation_kw[i]),
                    self.ramp,
                    float(plan.valid_s[i]),
                )
                if not self._safe(cmd, r, i, bool(inputs.is_bess[i])):
                    cmd = RegulationCommand(rid, 0.0, 0.0, self.ramp, 0.0)  # released
                msg = self._message(node, cmd, now)
                if msg is not None:
                    out.append((self.state.charge_point(rid), dict(msg)))
                if rid in self._sent:
                    told.append(rid)
        regulating = {rid for rids in members.values() for rid in rids}
        for rid in [r for r in self._sent if r not in regulating]:  # no longer: released
            msg = self._message("", RegulationCommand(rid, 0.0, 0.0, self.ramp, 0.0), now)
            if msg is not None:
                out.append((self.state.charge_point(rid), dict(msg)))
        with self._lock:
            self._members = members
        if out:
            self.bus.publish_many(self.commands_topic, out)
        return len(out)

    def _safe(self, cmd: RegulationCommand, r: RegulationResources, i: int, is_bess: bool) -> bool:
        """The independent checker's word on a command; one it refuses is never sent."""
        facts = facts_of(r, i, is_bess)
        leaves = float(r.departure_s[i]) if np.isfinite(r.departure_s[i]) else None
        found = check_regulation(
            cmd,
            facts,
            soc_pct=float(r.soc_pct[i]),
            departure_in_s=leaves,
            max_ramp_kw_per_min=self.ramp,
            round_trip_efficiency=self.rte,
            power_kw=float(r.power_kw[i]) if r.power_kw is not None else 0.0,
        )
        if found:
            self.refused += 1
        return not found

    def _message(
        self, node: str, cmd: RegulationCommand, now: datetime
    ) -> RegulationCommandMessage | None:
        """The command to send, or None when the device already has it: a change of under
        0.5 kW (or 5 % of its participation) is not worth a message, unless what it holds ends
        within two re-plans."""
        before = self._sent.get(cmd.resource_id)
        release = cmd.participation_kw == 0 and cmd.base_kw == 0
        if before is None and release:
            return None
        if before is not None:
            moved = abs(before[0] - cmd.base_kw) + abs(before[1] - cmd.participation_kw)
            ending = before[3] - now.timestamp() < self.renew_s
            if moved <= max(0.5, 0.05 * before[1]) and not ending and not release:
                return None
        revision = before[2] + 1 if before else 1
        until = now + timedelta(seconds=cmd.valid_s)
        if release:
            self._sent.pop(cmd.resource_id, None)
        else:
            self._sent[cmd.resource_id] = (
                cmd.base_kw,
                cmd.participation_kw,
                revision,
                until.timestamp(),
            )
        return {
            "resource_id": cmd.resource_id,
            "chargePointId": self.state.charge_point(cmd.resource_id),
            "aggregation_id": node,
            "timestamp": now.isoformat(),
            "revision": revision,
            "base_kw": cmd.base_kw,
            "participation_kw": cmd.participation_kw,
            "ramp_kw_per_min": cmd.ramp_kw_per_min,
            "valid_until": until.isoformat(),
        }

    # ------------------------------------------------------------------ measuring
    def sample(self) -> None:
        """Record each regulating aggregation's response: what its regulating resources
        report, less the base points they hold."""
        now = self.clock()
        with self._lock:
            members = {node: list(rids) for node, rids in self._members.items()}
        for node, rids in members.items():
            base = sum(self._sent[r][0] for r in rids if r in self._sent)
            kw = self.state.power_of(rids, now.timestamp())
            with self._lock:
                self._response.setdefault(node, deque()).append((now.timestamp(), kw - base))
                _trim(self._response[node], now.timestamp())

    def scores(self, aggregation_id: str, at: datetime | None = None) -> list[HourScore]:
        """PJM's score of each hour the aggregation regulated, from what was recorded (hours
        counted from the first sample), against the capacity awarded at `at` (default now)."""
        capacity = self.awarded(at or self.clock()).get(aggregation_id, 0.0)
        with self._lock:
            sig = list(self._signal.get(aggregation_id, ()))
            resp = list(self._response.get(aggregation_id, ()))
        if capacity <= 0 or len(sig) < 2 or len(resp) < 2:
            return []
        t = np.array([x for x, _ in resp])
        st, sv = np.array([x for x, _ in sig]), np.array([v for _, v in sig])
        last = np.searchsorted(st, t, side="right") - 1  # the signal each response answered
        seen = last >= 0
        values = np.array([v for _, v in resp])
        return hourly_scores(t[seen], sv[last[seen]], values[seen] / capacity)

    def score_over(self, aggregation_id: str, start: datetime, end: datetime) -> float | None:
        """The mean score of the recorded hours that began within [start, end)."""
        hours = [
            h.score
            for h in self.scores(aggregation_id, start)
            if start.timestamp() <= h.start_s < end.timestamp()
        ]
        return float(np.mean(hours)) if hours else None

    def status(self) -> dict[str, object]:
        now = self.clock()
        out = []
        for node, capacity in sorted(self.awarded(now).items()):
            hours = self.scores(node)
            out.append(
                {
                    "aggregation_id": node,
                    "capacity_kw": capacity,
                    "base_kw": round(
                        sum(
                            self._sent[r][0] for r in self._members.get(node, []) if r in self._sent
                        ),
                        3,
                    ),
                    "hours": [
                        {
                            "start": datetime.fromtimestamp(h.start_s, UTC).isoformat(),
                            "score": round(h.score, 4),
                            "correlation": None
                            if h.correlation is None
                            else round(h.correlation, 4),
                            "delay": None if h.delay is None else round(h.delay, 4),
                            "precision": round(h.precision, 4),
                        }
                        for h in hours
                    ],
                }
            )
        return {"aggregations": out, "commands_refused": self.refused}


def cached(read: Awarded, seconds: float = 5.0) -> Awarded:
    """The awarded capacity, read at most every few seconds for the present (the signal comes
    every 2 s); a question about another time is read at once."""
    memo: dict[float, Mapping[str, float]] = {}
    lock = threading.Lock()

    def awarded(at: datetime) -> Mapping[str, float]:
        slot = at.timestamp() // seconds
        with lock:
            found = memo.get(slot)
        if found is None:
            found = read(at)
            with lock:
                if len(memo) > 8:
                    memo.clear()
                memo[slot] = found
        return found

    return awarded


def _trim(buffer: deque[tuple[float, float]], now_s: float) -> None:
    while buffer and buffer[0][0] < now_s - KEEP_S:
        buffer.popleft()
