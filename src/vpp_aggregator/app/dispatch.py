"""Dispatch lifecycle: plan, check, persist, command; follow through; re-plan when the fleet moves.

A dispatch is planned on the live fleet state with one of two solvers behind one problem
definition (the HiGHS LP for small fleets, the vectorised allocator for large ones), checked by
the independent safety checker before anything leaves, persisted together with its control
commands (transactional outbox) and then published. While it runs, every allocated resource is
watched: one that unplugs, goes stale, is locked out or drifts off its planned SoC is dropped and
the rest of the window is re-planned on what is left, each time as a recorded revision.
"""

from __future__ import annotations

import builtins
import contextlib
import logging
import math
import socket
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from vpp_aggregator.app.dispatch_records import (
    OPEN_STATUSES,
    AllocationRecord,
    DispatchRecord,
    DispatchStatus,
    NotFollowedHereError,
    PlanningBusyError,
    RevisionRecord,
    schedule_points,
)
from vpp_aggregator.domain.dispatch.fast import solve_fast
from vpp_aggregator.domain.dispatch.held import plan_held
from vpp_aggregator.domain.dispatch.lp import LPError, solve_lp
from vpp_aggregator.domain.dispatch.outcome import Outcome, Shortfall, summarise
from vpp_aggregator.domain.dispatch.problem import (
    STEP_MIN,
    DispatchProblem,
    ResourceInputs,
    Solution,
    round_toward_safety,
)
from vpp_aggregator.domain.dispatch.safety import check_rows, check_schedules, soc_trajectory
from vpp_aggregator.domain.fleet_state import FleetState
from vpp_aggregator.domain.tariff import Tariff

log = logging.getLogger(__name__)

MAX_DURATION_MIN = 24 * 60
PAST_TOLERANCE = timedelta(minutes=1)


class DispatchStore(Protocol):
    def lease(
        self, owner: str, dispatch_ids: Sequence[str], until: datetime
    ) -> builtins.set[str]: ...
    def claim_unfollowed(
        self, owner: str, now: datetime, until: datetime
    ) -> builtins.list[DispatchRecord]: ...
    def release(self, owner: str, at: datetime) -> None: ...
    def add_refusal(
        self, dispatch_id: str, resource_id: str, reason: str, at: datetime
    ) -> None: ...
    def take_refusals(
        self, dispatch_ids: Sequence[str], at: datetime
    ) -> builtins.list[tuple[str, str, str]]: ...
    def insert(
        self,
        record: DispatchRecord,
        commands: Sequence[dict[str, Any]],
        at: datetime,
        owner: str | None = None,
        lease_until: datetime | None = None,
    ) -> None: ...
    def revise(
        self,
        record: DispatchRecord,
        reason: str,
        detail: dict[str, Any],
        commands: Sequence[dict[str, Any]],
        at: datetime,
        owner: str | None = None,
    ) -> None: ...
    def take_over(self, dispatch_id: str, owner: str, until: datetime) -> DispatchRecord | None: ...
    def set_status(self, dispatch_id: str, status: DispatchStatus, at: datetime) -> None: ...
    def find_by_key(self, key: str) -> DispatchRecord | None: ...
    def get(self, dispatch_id: str) -> DispatchRecord | None: ...
    def list(
        self,
        *,
        status: Sequence[str] = (),
        source: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> tuple[builtins.list[DispatchRecord], int]: ...
    def held_resources(
        self, start: datetime, end: datetime, exclude: str | None = None
    ) -> builtins.list[str]: ...
    def planning_lock(self) -> contextlib.AbstractContextManager[None]: ...
    def revisions(self, dispatch_id: str) -> builtins.list[RevisionRecord]: ...
    def relay_commands(
        self,
        send: Callable[[builtins.list[dict[str, Any]]], builtins.list[bool]],
        at: datetime,
        limit: int = 10_000,
    ) -> int: ...


class Bus(Protocol):
    def publish(self, topic: str, key: str, payload: dict[str, Any]) -> None: ...
    def publish_many(self, topic: str, items: Sequence[tuple[str, dict[str, Any]]]) -> list[bool]:
        """Send in order (per key); which ones were delivered."""
        ...


class DispatchMetricsPort(Protocol):
    def observe(self, record: DispatchRecord) -> None: ...
    def status_changed(self, status: DispatchStatus) -> None: ...


class DispatchRejectedError(Exception):
    def __init__(self, errors: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{f}: {m}" for f, m in errors))
        self.errors = errors


class DispatchNotFoundError(Exception):
    """No dispatch with that id."""


class DispatchConflictError(Exception):
    """The dispatch cannot change that way in its present state."""


@dataclass(frozen=True, slots=True)
class DispatchRequest:
    target_kw: float
    duration_minutes: int
    start: datetime | None = None
    grid_node: str | None = None
    fleet_id: str | None = None
    resource_ids: tuple[str, ...] | None = None
    source: str = "manual"
    reference: str | None = None
    idempotency_key: str | None = None
    # Recharges stop each battery where it was before the discharge (never above the target).
    charge_ceiling_pct: dict[str, float] | None = None


@dataclass(frozen=True, slots=True)
class DeliveryView:
    """What a dispatch is doing right now."""

    planned_kw: float
    delivered_kw: float | None  # from the allocated resources' fresh telemetry
    reporting_resources: int


@dataclass(slots=True)
class _Open:
    """A dispatch in flight, as the closed loop follows it."""

    record: DispatchRecord
    start_ts: float
    window_end_ts: float
    ids: list[str]
    kw: NDArray[np.float64]  # (resources, points) signed setpoints
    soc: NDArray[np.float64]  # planned SoC at each point
    released: list[bool]  # ramping down after being dropped or cancelled: not followed again
    # SoC (%) each resource gave up under earlier revisions of this dispatch (kept in memory:
    # after a restart a recharge may fall short, never overshoot what was taken)
    drawn_pct: dict[str, float] = field(default_factory=dict)

    def drawn_by(self, now_ts: float) -> dict[str, float]:
        """SoC (%) each resource has given up to this dispatch so far, by its plan: nothing
        before the dispatch starts."""
        drawn = dict(self.drawn_pct)
        point = (now_ts - self.start_ts) / 60.0
        if point <= 0:
            return drawn
        grid = np.arange(self.soc.shape[1])
        for j, rid in enumerate(self.ids):
            taken = float(self.soc[j, 0] - np.interp(point, grid, self.soc[j]))
            drawn[rid] = drawn.get(rid, 0.0) + max(taken, 0.0)
        return drawn


class DispatchService:
    def __init__(
        self,
        state: FleetState,
        store: DispatchStore,
        bus: Bus,
        clock: Callable[[], datetime],
        *,
        ramp_kw_per_min: float,
        round_trip_efficiency: float = 0.9,
        prefer_bess: bool = True,
        lp_max_resources: int = 40,
        max_target_kw: float = 1e7,
        soc_tolerance_pct: float = 5.0,
        recharge_target_soc_pct: float = 80.0,
        tariff: Tariff | None = None,
        command_topic: str = "migrid.l3.v2g",
        metrics: DispatchMetricsPort | None = None,
        lease_seconds: float = 30.0,
    ) -> None:
        self.state = state
        # Each open dispatch is followed through by one process, which renews its claim every
        # tick; another process takes over a dispatch whose claim has lapsed.
        self.owner = f"{socket.gethostname()[:40]}-{uuid.uuid4().hex[:12]}"
        self.lease = timedelta(seconds=lease_seconds)
        self.store = store
        self.bus = bus
        self.clock = clock
        self.ramp = ramp_kw_per_min
        self.rte = round_trip_efficiency
        self.prefer_bess = prefer_bess
        self.lp_max = lp_max_resources
        self.max_target_kw = max_target_kw
        self.soc_tolerance = soc_tolerance_pct
        self.recharge_target = recharge_target_soc_pct
        self.tariff = tariff
        self.topic = command_topic
        self.metrics = metrics
        self._lock = threading.RLock()
        self._relay_lock = threading.Lock()
        self._open: dict[str, _Open] = {}

    # ----------------------------------------------------------------- create
    def create(
        self, req: DispatchRequest, received: float | None = None
    ) -> tuple[DispatchRecord, bool]:
        """Plan and emit a dispatch; the same idempotency key returns the first one (created=False)."""
        t0 = received if received is not None else time.perf_counter()
        if req.idempotency_key:
            existing = self.store.find_by_key(req.idempotency_key)
            if existing is not None:
                return existing, False
        now = self.clock()
        start = req.start or now
        self._validate(req, now, start)
        with self._lock, self.store.planning_lock():
            record, commands = self._plan_record(req, now, start)
            record.response_time_ms = (time.perf_counter() - t0) * 1e3
            try:
                self.store.insert(
                    record, commands, now, owner=self.owner, lease_until=self.clock() + self.lease
                )
            except Exception as exc:
                if req.idempotency_key and (again := self.store.find_by_key(req.idempotency_key)):
                    return again, False
                raise DispatchConflictError(str(exc)) from exc
            self._track(record)
        self.publish_pending()
        record.response_time_ms = (time.perf_counter() - t0) * 1e3
        if self.metrics:
            self.metrics.observe(record)
        return record, True

    def _validate(self, req: DispatchRequest, now: datetime, start: datetime) -> None:
        errors: list[tuple[str, str]] = []
        if not math.isfinite(req.target_kw) or req.target_kw == 0:
            errors.append(
                (
                    "target_kw",
                    "Target must be a non-zero power in kW (positive discharges to the grid, "
                    "negative charges).",
                )
            )
        elif abs(req.target_kw) > self.max_target_kw:
            errors.append(
                (
                    "target_kw",
                    f"{req.target_kw:g} kW is beyond any fleet this service runs "
                    f"(limit {self.max_target_kw:g} kW, VPP_DISPATCH_MAX_TARGET_KW).",
                )
            )
        if not 0 < req.duration_minutes <= MAX_DURATION_MIN:
            errors.append(
                ("duration_minutes", f"Duration must be between 1 and {MAX_DURATION_MIN} minutes.")
            )
        if start.tzinfo is None:
            errors.append(("start", "Start needs a time zone offset."))
        elif start < now - PAST_TOLERANCE:
            errors.append(
                ("start", f"Start {start.isoformat()} is more than a minute in the past.")
            )
        elif start > now + timedelta(days=7):
            errors.append(("start", "Start may be at most 7 days ahead."))
        # Scoped to a fleet, another fleet's nodes and resources do not exist.
        if req.grid_node is not None and req.grid_node not in self.state.grid_nodes(req.fleet_id):
            errors.append(
                ("grid_node", f"No registered resource is on grid node {req.grid_node!r}.")
            )
        if req.resource_ids is not None:
            known = self.state.in_fleet(req.resource_ids, req.fleet_id)
            unknown = [r for r, ok in zip(req.resource_ids, known, strict=True) if not ok]
            if not req.resource_ids:
                errors.append(("resource_ids", "Give at least one resource id, or leave it out."))
            elif unknown:
                errors.append(
                    (
                        "resource_ids",
                        f"Unknown or deactivated: {', '.join(unknown[:10])}"
                        + (" ..." if len(unknown) > 10 else ""),
                    )
                )
        if errors:
            raise DispatchRejectedError(errors)

    def _plan(
        self,
        target_kw: float,
        duration_min: int,
        now: datetime,
        start: datetime,
        scope: dict[str, Any],
        busy: Sequence[str],
        power_override: dict[str, float] | None = None,
        charge_ceiling_pct: dict[str, float] | float | None = None,
    ) -> tuple[DispatchProblem, Solution, Outcome]:
        direction = 1 if target_kw > 0 else -1
        inputs, unavailable = self.state.dispatch_inputs(
            now,
            start,
            direction=direction,
            grid_node=scope.get("grid_node"),
            fleet_id=scope.get("fleet_id"),
            resource_ids=scope.get("resource_ids"),
            busy=busy,
        )
        if power_override:
            inputs = _override_power(inputs, power_override)
        if isinstance(charge_ceiling_pct, dict):  # per battery (a float: records made before)
            cap = np.array([charge_ceiling_pct.get(r, np.inf) for r in inputs.resource_ids])
            inputs = replace(inputs, ceiling_pct=np.minimum(inputs.ceiling_pct, cap))
        elif charge_ceiling_pct is not None:
            inputs = replace(inputs, ceiling_pct=np.minimum(inputs.ceiling_pct, charge_ceiling_pct))
        best: tuple[DispatchProblem, Solution, Outcome] | None = None
        refused: str | None = None
        for include_opposite in (False, True):
            problem = DispatchProblem(
                inputs,
                target_kw,
                duration_min,
                self.ramp,
                self.rte,
                self.prefer_bess,
                include_opposite=include_opposite,
            )
            solution = self._solve(problem)
            # Never emit an unsafe schedule: every try passes the independent checker first.
            violations = check_rows(
                problem, solution.rows, problem.direction * solution.q, self.ramp
            )
            if violations:
                log.error("safety check refused a %s schedule: %s", solution.solver, violations[:5])
                refused = str(violations[0])
                solution = Solution(solution.rows[:0], solution.q[:0], solution.solver)
            outcome = summarise(problem, solution, unavailable)
            if best is None or abs(outcome.delivered_kwh) > abs(best[2].delivered_kwh) + 1e-6:
                best = (problem, solution, outcome)
            opposite = bool(((problem.q0 < 0) & inputs.available).any())
            if outcome.shortfall_kw == 0 or not opposite:
                break
        assert best is not None
        if refused is not None and not best[1].rows.size:
            best[2].reasons.insert(0, Shortfall("safety_check", refused))
        return best

    def _solve(self, problem: DispatchProblem) -> Solution:
        return plan_held(problem, self._solve_once)

    def _solve_once(self, problem: DispatchProblem) -> Solution:
        if int(problem.eligible.sum()) <= self.lp_max:
            try:
                return solve_lp(problem, time_limit_s=5.0)
            except LPError as exc:
                log.warning("LP solver gave up (%s); using the fast allocator", exc)
        return solve_fast(problem)

    def _plan_record(
        self,
        req: DispatchRequest,
        now: datetime,
        start: datetime,
    ) -> tuple[DispatchRecord, list[dict[str, Any]]]:
        scope = {
            "grid_node": req.grid_node,
            "fleet_id": req.fleet_id,
            "resource_ids": list(req.resource_ids) if req.resource_ids is not None else None,
        }
        problem, solution, outcome = self._plan(
            req.target_kw,
            req.duration_minutes,
            now,
            start,
            scope,
            busy=self.busy_everywhere(start, start + timedelta(minutes=req.duration_minutes + 60)),
            charge_ceiling_pct=req.charge_ceiling_pct,
        )
        # A recharge is an energy goal, not a power obligation: reaching the SoC target early is
        # success, not a shortfall.
        energy_goal = req.charge_ceiling_pct is not None
        status = _initial_status(outcome, start, now, energy_goal)
        record = DispatchRecord(
            dispatch_id=f"dsp-{uuid.uuid4().hex[:16]}",
            status=status,
            source=req.source,
            reference=req.reference,
            idempotency_key=req.idempotency_key,
            target_kw=req.target_kw,
            start=start,
            duration_minutes=req.duration_minutes,
            end_at=start,  # set below from the schedules
            scope={**scope, "charge_ceiling_pct": req.charge_ceiling_pct},
            solver=solution.solver,
            allocated_kw=round(outcome.allocated_kw, 3),
            shortfall_kw=round(outcome.shortfall_kw, 3),
            shortfall_reasons=[{"rule": r.rule, "detail": r.detail} for r in outcome.reasons],
            ramp_complete_at=(
                start + timedelta(minutes=outcome.ramp_complete_min)
                if outcome.ramp_complete_min is not None
                else None
            ),
            response_time_ms=0.0,
            revision=1,
            plan_kw=[round(float(x), 3) for x in outcome.fleet_kw],
            created_at=now,
            updated_at=now,
            allocations=self._allocations(problem, outcome, start),
        )
        # Held until the last resource is back at zero (the window's end when none takes part).
        record.end_at = start + timedelta(
            minutes=max(
                (len(a.schedule_kw) - 1 for a in record.allocations),
                default=req.duration_minutes,
            )
        )
        return record, self._commands(record, now)

    def _allocations(
        self, problem: DispatchProblem, outcome: Outcome, start: datetime
    ) -> list[AllocationRecord]:
        d = problem.direction
        return [
            AllocationRecord(
                resource_id=a.resource_id,
                resource_type="BESS" if a.is_bess else "EV",
                charge_point_id=self.state.charge_point(a.resource_id),
                setpoint_kw=float(round_toward_safety(np.array(a.setpoint_kw), d)),
                schedule_start=start,
                schedule_kw=_until_stopped(round_toward_safety(a.schedule_kw, d)),
                # SoC to 1e-6 %: a replay of the schedule from a start rounded to 1e-3 % could
                # appear to cross a floor the plan only just reaches.
                start_soc_pct=round(a.start_soc_pct, 6),
                expected_end_soc_pct=round(a.expected_end_soc_pct, 6),
                binding_constraint=a.binding_constraint,
            )
            for a in outcome.allocations
        ]

    def _commands(
        self,
        record: DispatchRecord,
        at: datetime,
        allocations: Sequence[AllocationRecord] | None = None,
    ) -> list[dict[str, Any]]:
        out = []
        for a in allocations if allocations is not None else record.allocations:
            direction = 1.0 if record.target_kw > 0 else -1.0
            # The limit in the dispatch's direction; a release carries 0 (it only ramps down).
            peak = max((direction * x for x in a.schedule_kw), default=0.0)
            if a.binding_constraint.startswith("released"):
                peak = 0.0
            out.append(
                {
                    "chargePointId": a.charge_point_id,
                    "timestamp": at.isoformat(),
                    "mode": "Discharge" if record.target_kw > 0 else "Charge",
                    "limitKw": round(max(peak, 0.0), 3),
                    "v2xProfile": True,
                    "dispatch_id": record.dispatch_id,
                    "revision": record.revision,
                    "resource_id": a.resource_id,
                    "schedule": schedule_points(a),
                }
            )
        return out

    def publish_pending(self) -> int:
        """Outbox relay: publish stored commands not yet published; safe to call any time."""
        with self._relay_lock:  # one relay per process; the store's row locks cover the rest
            return self.store.relay_commands(
                lambda payloads: self.bus.publish_many(
                    self.topic, [(str(p["chargePointId"]), p) for p in payloads]
                ),
                self.clock(),
            )

    # ----------------------------------------------------------------- follow-through
    def _track(self, record: DispatchRecord) -> None:
        if record.status not in OPEN_STATUSES or not record.allocations:
            self._open.pop(record.dispatch_id, None)
            return
        width = max(len(a.schedule_kw) for a in record.allocations)
        kw = np.zeros((len(record.allocations), width))
        for j, a in enumerate(record.allocations):
            kw[j, : len(a.schedule_kw)] = a.schedule_kw
        ids = [a.resource_id for a in record.allocations]
        start_ts = record.allocations[0].schedule_start.timestamp()
        rows = self.state.rows_of(ids)
        cap = np.array([self.state.capacity_kwh[r] if r >= 0 else 1.0 for r in rows.tolist()])
        soc0 = np.array([a.start_soc_pct for a in record.allocations])
        self._open[record.dispatch_id] = _Open(
            record=record,
            start_ts=start_ts,
            window_end_ts=record.start.timestamp() + record.duration_minutes * 60.0,
            ids=ids,
            kw=kw,
            soc=soc_trajectory(soc0, cap, self.rte, kw),
            released=[a.binding_constraint.startswith("released") for a in record.allocations],
        )

    def held_resources(
        self, start: datetime | None = None, end: datetime | None = None, exclude: str | None = None
    ) -> list[str]:
        """Resources in open dispatches whose time overlaps [start, end] (all when not given)."""
        with self._lock:
            out = []
            for did, o in self._open.items():
                if did == exclude:
                    continue
                if (
                    start is not None
                    and end is not None
                    and (o.record.end_at <= start or o.record.start >= end)
                ):
                    continue
                out.extend(o.ids)
            return out

    def busy_everywhere(
        self, start: datetime, end: datetime, exclude: str | None = None
    ) -> list[str]:
        """Held by any process of the deployment: every dispatch is in the store, this process's
        own included (stored before it is followed)."""
        return self.store.held_resources(start, end, exclude)

    def resume(self) -> int:
        """After a restart: follow the running dispatches that no live process follows (their
        claim lapsed, or was let go on a clean stop), and flush the outbox."""
        self._adopt(self.clock())
        self.publish_pending()
        return len(self._open)

    def _adopt(self, now: datetime) -> None:
        """Renew the claim on what this process follows; take over what nobody follows."""
        with self._lock:
            kept = self.store.lease(self.owner, list(self._open), now + self.lease)
            for did in [d for d in self._open if d not in kept]:
                log.warning("dispatch %s is followed by another process now", did)
                del self._open[did]
            for record in self.store.claim_unfollowed(self.owner, now, now + self.lease):
                if record.dispatch_id not in self._open:
                    self._track(record)

    def release(self) -> None:
        """On a clean stop: let another process take over the dispatches this one follows."""
        with self._lock:
            self.store.release(self.owner, self.clock())
            self._open.clear()

    def tick(self) -> None:
        """Move statuses with time, re-plan dispatches whose resources dropped out, schedule recharges."""
        now = self.clock()
        now_ts = now.timestamp()
        finished: list[tuple[DispatchRecord, dict[str, float]]] = []
        self._adopt(now)
        self._handle_queued_refusals(now)
        with self._lock:
            for did, o in list(self._open.items()):
                r = o.record
                if now_ts >= r.end_at.timestamp():
                    self._set_status(r, DispatchStatus.COMPLETED, now)
                    del self._open[did]
                    finished.append((r, o.drawn_by(now_ts)))
                    continue
                if r.status is DispatchStatus.SCHEDULED and now_ts >= r.start.timestamp():
                    self._set_status(r, DispatchStatus.ACTIVE, now)
                if r.start.timestamp() <= now_ts < o.window_end_ts:
                    try:
                        self._follow(o, now)
                    except Exception:  # one dispatch's trouble must not stop the others
                        log.exception("following dispatch %s failed; next tick tries again", did)
        for r, drawn in finished:
            self._schedule_recharge(r, now, drawn)

    def command_rejected(self, dispatch_id: str, resource_id: str, reason: str) -> str:
        """A device refused its command: re-plan without it. Returns "replanned"; "queued" when
        another process follows that dispatch (it re-plans on its next tick); "ignored" when the
        dispatch is over or the resource has no part left in it."""
        now = self.clock()
        with self._lock:
            o = self._open.get(dispatch_id)
            if o is None:
                record = self.store.get(dispatch_id)
                if record is None or record.status not in OPEN_STATUSES or record.end_at <= now:
                    return "ignored"
                if resource_id not in {a.resource_id for a in record.allocations}:
                    return "ignored"
                self.store.add_refusal(dispatch_id, resource_id, reason, now)
                return "queued"
            if not self._refused(o, resource_id, reason, now):
                return "ignored"
        self.publish_pending()
        return "replanned"

    def _refused(self, o: _Open, resource_id: str, reason: str, now: datetime) -> bool:
        if resource_id not in o.ids or o.released[o.ids.index(resource_id)]:
            return False
        self._replan(o, now, {resource_id: f"command_rejected ({reason})"})
        return True

    def _handle_queued_refusals(self, now: datetime) -> None:
        with self._lock:
            for did, rid, reason in self.store.take_refusals(list(self._open), now):
                o = self._open.get(did)
                if o is not None:
                    self._refused(o, rid, reason, now)

    def _set_status(self, record: DispatchRecord, status: DispatchStatus, now: datetime) -> None:
        record.status = status
        record.updated_at = now
        self.store.set_status(record.dispatch_id, status, now)
        if self.metrics:
            self.metrics.status_changed(status)

    def _follow(self, o: _Open, now: datetime) -> None:
        point = (now.timestamp() - o.start_ts) / 60.0
        i = min(int(point), o.kw.shape[1] - 1)
        dropped: dict[str, str] = {}
        for j, rid in enumerate(o.ids):
            if not np.any(o.kw[j, i:] != 0) or o.released[j]:
                continue  # its part is done, or it is already being released
            live = self.state.live(rid, now, duration_minutes=1.0)
            if live is None:
                dropped[rid] = "deactivated"
            elif live.availability_reason in (
                "unplugged",
                "stale_telemetry",
                "suspended",
                "no_telemetry",
            ):
                dropped[rid] = live.availability_reason
            elif o.record.target_kw > 0 and live.discharge_locked:
                dropped[rid] = "safety_lockout"
            elif live.soc_pct is not None and abs(live.soc_pct - o.soc[j, i]) > self.soc_tolerance:
                dropped[rid] = f"soc_off_plan ({live.soc_pct:.1f} % vs {o.soc[j, i]:.1f} % planned)"
        followed = [
            j
            for j, rid in enumerate(o.ids)
            if rid not in dropped and not o.released[j] and np.any(o.kw[j, i:] != 0)
        ]
        dropped.update(self._broken_rules(o, i, followed))
        if dropped:
            self._replan(o, now, dropped)

    def _broken_rules(self, o: _Open, i: int, rows: list[int]) -> dict[str, str]:
        """Resources whose plan from point `i` on breaks a rule as the rule stands now: a tighter
        minimum SoC, a new trip or departure, lower power limits or capacity, a status. The one
        check through which every rule change reaches a running dispatch. The plan is checked
        from its own SoC at `i` (telemetry drift is the SoC tolerance's business above), by the
        same independent checker every new schedule passes."""
        if not rows:
            return {}
        at = datetime.fromtimestamp(o.start_ts + i * STEP_MIN * 60.0, tz=UTC)
        direction = 1 if o.record.target_kw > 0 else -1
        inputs, _ = self.state.dispatch_inputs(
            at, at, direction=direction, resource_ids=[o.ids[j] for j in rows]
        )
        if not inputs.resource_ids:
            return {}
        index = {rid: j for j, rid in enumerate(o.ids)}
        sel = [index[rid] for rid in inputs.resource_ids]
        setpoints = o.kw[sel, i:]
        inputs = replace(inputs, soc_pct=o.soc[sel, i].copy(), power_kw=setpoints[:, 0].copy())
        problem = DispatchProblem(
            inputs, o.record.target_kw, setpoints.shape[1] - 1, self.ramp, self.rte
        )
        broken: dict[str, str] = {}
        for v in check_rows(problem, np.arange(len(sel)), setpoints, self.ramp):
            broken.setdefault(v.resource_id, f"rules_changed ({v.rule}: {v.detail})")
        return broken

    def resources_changed(self, resource_ids: list[str]) -> None:
        """A registry change (PATCH, suspend, delete, lockout...): the open dispatches holding
        any of these resources are checked against the rules as they now stand, at once."""
        changed = set(resource_ids)
        now = self.clock()
        with self._lock:
            for did, o in list(self._open.items()):
                if changed.isdisjoint(o.ids):
                    continue
                if o.record.start.timestamp() <= now.timestamp() < o.window_end_ts:
                    try:
                        self._follow(o, now)
                    except Exception:
                        log.exception("re-checking dispatch %s after a change failed", did)

    def _replan(self, o: _Open, now: datetime, dropped: dict[str, str]) -> None:
        did = o.record.dispatch_id
        try:
            with self.store.planning_lock():
                self._replan_now(o, now, dropped)
        except NotFollowedHereError:
            log.warning("dispatch %s is followed by another process now; let go here", did)
            self._open.pop(did, None)
        except PlanningBusyError as exc:
            log.warning("re-plan of %s waits for the next tick: %s", did, exc)
        self.publish_pending()

    def _replan_now(self, o: _Open, now: datetime, dropped: dict[str, str]) -> None:
        """Re-plan the rest of the window without the dropped resources; the others keep ramping
        from where their plan has them now."""
        r = o.record
        point = (now.timestamp() - o.start_ts) / 60.0
        current = {
            rid: float(np.interp(point, np.arange(o.kw.shape[1]), o.kw[j]))
            for j, rid in enumerate(o.ids)
        }
        remaining = math.floor((o.window_end_ts - now.timestamp()) / 60.0)
        others_busy = self.busy_everywhere(now, r.end_at, exclude=r.dispatch_id)
        allocations: list[AllocationRecord] = []
        outcome: Outcome | None = None
        if remaining >= 1:
            scope = dict(r.scope)
            keep = {k: v for k, v in current.items() if k not in dropped}
            problem, _, outcome = self._plan(
                r.target_kw,
                remaining,
                now,
                now,
                scope,
                busy=[*others_busy, *dropped],
                power_override=keep,
                charge_ceiling_pct=scope.get("charge_ceiling_pct"),
            )
            allocations = self._allocations(problem, outcome, now)
        # Dropped resources (and any no longer used) ramp down from their planned power.
        used = {a.resource_id for a in allocations}
        for rid, kw in current.items():
            if rid not in used and abs(kw) > 1e-9:
                allocations.append(self._ramp_down(rid, kw, now, o, dropped.get(rid, "not needed")))
        r.revision += 1
        r.allocations = allocations
        r.updated_at = now
        if outcome is not None:
            r.allocated_kw = round(outcome.allocated_kw, 3)
            r.shortfall_kw = round(outcome.shortfall_kw, 3)
            r.shortfall_reasons = [{"rule": x.rule, "detail": x.detail} for x in outcome.reasons]
            offset = round((now.timestamp() - r.start.timestamp()) / 60.0)
            r.plan_kw = r.plan_kw[:offset] + [round(float(x), 3) for x in outcome.fleet_kw]
            if r.status is DispatchStatus.ACTIVE and outcome.shortfall_kw != 0:
                r.status = DispatchStatus.PARTIAL
        last = max(
            (a.schedule_start + timedelta(minutes=len(a.schedule_kw) - 1) for a in allocations),
            default=now,
        )
        r.end_at = max(last, now)
        commands = self._commands(r, now)
        detail = {"dropped": dropped, "resources": len(allocations)}
        self.store.revise(r, "redispatch", detail, commands, now, owner=self.owner)
        log.info("dispatch %s re-planned (revision %d): %s", r.dispatch_id, r.revision, dropped)
        drawn = o.drawn_by(now.timestamp())
        self._track(r)
        if r.dispatch_id in self._open:
            self._open[r.dispatch_id].drawn_pct = drawn

    def _ramp_down(
        self, rid: str, kw: float, now: datetime, o: _Open, why: str
    ) -> AllocationRecord:
        steps = math.ceil(abs(kw) / self.ramp)
        sched = [
            round(math.copysign(max(abs(kw) - self.ramp * i, 0.0), kw), 3) for i in range(steps + 1)
        ]
        j = o.ids.index(rid) if rid in o.ids else -1
        live = self.state.live(rid, now)
        soc = (
            live.soc_pct
            if live and live.soc_pct is not None
            else (float(o.soc[j, 0]) if j >= 0 else 0.0)
        )
        row = int(self.state.rows_of([rid])[0])
        kind = "BESS" if row >= 0 and bool(self.state.is_bess[row]) else "EV"
        if row < 0:  # deactivated since: keep the type it was allocated with
            kind = next(
                (a.resource_type for a in o.record.allocations if a.resource_id == rid), "EV"
            )
        release = AllocationRecord(
            resource_id=rid,
            resource_type=kind,
            charge_point_id=self.state.charge_point(rid),
            setpoint_kw=0.0,
            schedule_start=now,
            schedule_kw=sched,
            start_soc_pct=round(soc, 3),
            expected_end_soc_pct=round(soc, 3),
            binding_constraint=f"released: {why}",
        )
        broken = self._release_objections(release, o.record.dispatch_id)
        if broken:
            release.binding_constraint += f"; safety check: {', '.join(broken)}"
        return release

    def _release_objections(self, release: AllocationRecord, dispatch_id: str) -> list[str]:
        """The rules the safety checker finds a ramp-down breaking, checked like every schedule
        against the resource as it stands. An objection does not hold the ramp-down back
        (docs/safety.md, "Ramp-downs"): it already reaches zero as fast as the ramp limit allows,
        so any other schedule would break the same rules for longer; hence it is logged loudly."""
        rid, kw = release.resource_id, np.array([release.schedule_kw])
        at, sign = release.schedule_start, 1 if kw[0, 0] >= 0 else -1
        inputs, _ = self.state.dispatch_inputs(at, at, direction=sign, resource_ids=[rid])
        if not inputs.resource_ids:
            log.warning(
                "ramp-down of deleted resource %s (%s): nothing left to check", rid, dispatch_id
            )
            return []
        inputs = replace(inputs, soc_pct=np.array([release.start_soc_pct]), power_kw=kw[:, 0])
        violations = check_schedules(
            inputs, kw, ramp_kw_per_min=self.ramp, round_trip_efficiency=self.rte
        )
        broken = list(dict.fromkeys(v.rule for v in violations))
        if broken:
            log.error(
                "safety check objects to the ramp-down of %s in %s (%s); published anyway at the "
                "ramp limit, the fastest way back to zero: %s",
                rid,
                dispatch_id,
                ", ".join(broken),
                violations[:3],
            )
        return broken

    # ----------------------------------------------------------------- operator actions
    def cancel(self, dispatch_id: str) -> DispatchRecord:
        now = self.clock()
        with self._lock, self.store.planning_lock():
            record = self.store.get(dispatch_id)
            if record is None:
                raise DispatchNotFoundError(dispatch_id)
            if record.status not in OPEN_STATUSES:
                raise DispatchConflictError(
                    f"Dispatch {dispatch_id} is {record.status.value}; only scheduled, "
                    "active or partial dispatches can be cancelled."
                )
            o = self._open.get(dispatch_id)
            if o is None or o.record.revision != record.revision:
                # Followed by another process (or moved on): this one takes it over to ramp it
                # down; the other lets go when it next renews its claim.
                taken = self.store.take_over(dispatch_id, self.owner, self.clock() + self.lease)
                if taken is not None:
                    record = taken
                    self._track(record)
                    o = self._open.get(dispatch_id)
            allocations: list[AllocationRecord] = []
            drawn = o.drawn_by(now.timestamp()) if o is not None else {}
            if o is not None and now.timestamp() >= o.start_ts:
                point = (now.timestamp() - o.start_ts) / 60.0
                for j, rid in enumerate(o.ids):
                    kw = float(np.interp(point, np.arange(o.kw.shape[1]), o.kw[j]))
                    if abs(kw) > 1e-9:
                        allocations.append(self._ramp_down(rid, kw, now, o, "cancelled"))
            elif o is not None:  # not started: release every resource at zero
                allocations = [
                    AllocationRecord(
                        rid,
                        "",
                        self.state.charge_point(rid),
                        0.0,
                        now,
                        [0.0],
                        0.0,
                        0.0,
                        "released: cancelled",
                    )
                    for rid in o.ids
                ]
            record.status = DispatchStatus.CANCELLED
            record.revision += 1
            record.allocations = allocations
            record.updated_at = now
            record.end_at = max(
                (a.schedule_start + timedelta(minutes=len(a.schedule_kw) - 1) for a in allocations),
                default=now,
            )
            try:
                self.store.revise(
                    record,
                    "cancelled",
                    {"ramping_down": len(allocations)},
                    self._commands(record, now),
                    now,
                    owner=self.owner,
                )
            except NotFollowedHereError:
                raise DispatchConflictError(
                    f"Dispatch {dispatch_id} changed while it was being cancelled; try again."
                ) from None
            self._open.pop(dispatch_id, None)
        self.publish_pending()
        if self.metrics:
            self.metrics.status_changed(DispatchStatus.CANCELLED)
        self._schedule_recharge(record, now, drawn)
        return record

    def get(self, dispatch_id: str) -> tuple[DispatchRecord, DeliveryView, list[RevisionRecord]]:
        record = self.store.get(dispatch_id)
        if record is None:
            raise DispatchNotFoundError(dispatch_id)
        return record, self.delivery(record), self.store.revisions(dispatch_id)

    def delivery(self, record: DispatchRecord) -> DeliveryView:
        now = self.clock()
        planned = 0.0
        delivered = 0.0
        reporting = 0
        for a in record.allocations:
            point = (now.timestamp() - a.schedule_start.timestamp()) / 60.0
            if 0 <= point <= len(a.schedule_kw) - 1:
                planned += float(np.interp(point, np.arange(len(a.schedule_kw)), a.schedule_kw))
            live = self.state.live(a.resource_id, now, duration_minutes=1.0)
            if (
                live is not None
                and live.power_kw is not None
                and live.availability_reason != "stale_telemetry"
                and live.telemetry_at is not None
                and live.telemetry_at >= record.start
            ):
                delivered += live.power_kw
                reporting += 1
        return DeliveryView(
            round(planned, 3), round(delivered, 3) if reporting else None, reporting
        )

    def list(
        self,
        *,
        status: str | None = None,
        source: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> tuple[list[DispatchRecord], int]:
        # A partial dispatch is running too, only short of its target: "active" includes it.
        statuses: tuple[str, ...] = ()
        if status == DispatchStatus.ACTIVE.value:
            statuses = (DispatchStatus.ACTIVE.value, DispatchStatus.PARTIAL.value)
        elif status:
            statuses = (status,)
        return self.store.list(status=statuses, source=source, limit=limit, offset=offset)

    # ----------------------------------------------------------------- BESS coordinator
    def _schedule_recharge(
        self, record: DispatchRecord, now: datetime, drawn_pct: dict[str, float]
    ) -> DispatchRecord | None:
        """After a discharge, give its batteries back what it took (never more than up to the
        recharge target) at the cheapest time. A discharge cancelled before it ran took nothing."""
        if record.target_kw <= 0 or record.source == "bess_recharge" or self.tariff is None:
            return None
        ceilings: dict[str, float] = {}
        power = hours = 0.0
        for rid in sorted(drawn_pct):
            live = self.state.live(rid, now)
            row = self.state.rows_of([rid])[0]
            if live is None or live.soc_pct is None or row < 0 or not self.state.is_bess[row]:
                continue
            cap, pc = float(self.state.capacity_kwh[row]), float(self.state.max_charge_kw[row])
            taken = min(self.recharge_target - live.soc_pct, drawn_pct.get(rid, 0.0))
            short = taken / 100.0 * cap / math.sqrt(self.rte)
            if short > 0.5:
                ceilings[rid] = live.soc_pct + taken
                power += pc
                hours = max(hours, short / pc)
        if not ceilings:
            return None
        duration = min(MAX_DURATION_MIN, max(15, int(math.ceil(hours * 60 / 15) * 15)))
        begin = self.tariff.cheapest_start(
            now + timedelta(minutes=1), now + timedelta(hours=24), timedelta(minutes=duration)
        )
        req = DispatchRequest(
            target_kw=-power,
            duration_minutes=duration,
            start=begin,
            resource_ids=tuple(ceilings),
            source="bess_recharge",
            reference=record.dispatch_id,
            idempotency_key=f"recharge-after-{record.dispatch_id}",
            charge_ceiling_pct=ceilings,
        )
        try:
            recharge, _ = self.create(req)
        except (DispatchRejectedError, DispatchConflictError) as exc:
            log.warning("could not schedule the recharge after %s: %s", record.dispatch_id, exc)
            return None
        log.info(
            "recharge %s scheduled for %s (%d batteries)",
            recharge.dispatch_id,
            begin.isoformat(),
            len(ceilings),
        )
        return recharge


def _until_stopped(schedule_kw: NDArray[np.float64]) -> list[float]:
    """A schedule up to the point its resource is back at zero for good: the tail after that
    holds nothing, and keeping it would keep the resource from other dispatches for minutes."""
    moving = np.flatnonzero(schedule_kw)
    return [float(x) for x in schedule_kw[: int(moving[-1]) + 2 if moving.size else 1]]


def _initial_status(
    outcome: Outcome, start: datetime, now: datetime, energy_goal: bool = False
) -> DispatchStatus:
    if not outcome.allocations:
        return DispatchStatus.REJECTED
    if outcome.shortfall_kw != 0 and not energy_goal:
        return DispatchStatus.PARTIAL
    return (
        DispatchStatus.SCHEDULED if start > now + timedelta(seconds=30) else DispatchStatus.ACTIVE
    )


def _override_power(inputs: ResourceInputs, power: dict[str, float]) -> ResourceInputs:
    """Resources already in this dispatch start from their planned power, not their last report."""
    kw = inputs.power_kw.copy()
    for i, rid in enumerate(inputs.resource_ids):
        if rid in power:
            kw[i] = power[rid]
    return replace(inputs, power_kw=kw)
