"""Planning a dispatch: check the request, build the problem on the live fleet, solve it (the
HiGHS LP for small fleets, the vectorised allocator for large ones, a held level when energy
binds), pass the independent safety checker, and turn the outcome into a record."""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from numpy.typing import NDArray

from vpp_aggregator.app.dispatch_core import DispatchCore
from vpp_aggregator.app.dispatch_ports import (
    MAX_DURATION_MIN,
    PAST_TOLERANCE,
    DispatchRejectedError,
    DispatchRequest,
)
from vpp_aggregator.app.dispatch_records import (
    OPEN_STATUSES,
    AllocationRecord,
    DispatchRecord,
    DispatchStatus,
    device_commands,
)
from vpp_aggregator.app.outbound import V2GCommand
from vpp_aggregator.app.reaction import SAFETY, stage
from vpp_aggregator.app.site_limits import others_kw
from vpp_aggregator.domain.dispatch.fast import solve_fast
from vpp_aggregator.domain.dispatch.held import plan_held
from vpp_aggregator.domain.dispatch.lp import LPError, solve_lp
from vpp_aggregator.domain.dispatch.outcome import Outcome, Shortfall, summarise
from vpp_aggregator.domain.dispatch.problem import (
    DispatchProblem,
    ResourceInputs,
    Solution,
    round_toward_safety,
)
from vpp_aggregator.domain.dispatch.safety import check_rows
from vpp_aggregator.domain.ramps import toward_zero_kw

log = logging.getLogger(__name__)


class DispatchPlanner(DispatchCore):
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
        exclude: str | None = None,
        discharge_floor_pct: dict[str, float] | None = None,
    ) -> tuple[DispatchProblem, Solution, Outcome]:
        """Plan `target_kw` over the window, within any site limit that applies as it starts
        (the limit used is left in `scope["capacity_limit_kw"]`; what it withholds is a
        shortfall with the reason `capacity_limit`)."""
        limit, why = self.limit_at(scope, target_kw > 0, start, duration_min, exclude)
        scope["capacity_limit_kw"] = limit
        if limit is not None and abs(target_kw) > limit:
            problem, solution, outcome = self._plan_within(
                math.copysign(max(limit, 1e-3), target_kw),
                duration_min,
                now,
                start,
                scope,
                busy,
                power_override,
                charge_ceiling_pct,
                discharge_floor_pct,
            )
            if limit <= 1e-6:  # nothing in this direction: no resource takes part
                solution = Solution(solution.rows[:0], solution.q[:0], solution.solver)
                outcome = replace(
                    outcome,
                    allocations=[],
                    allocated_kw=0.0,
                    delivered_kwh=0.0,
                    fleet_kw=outcome.fleet_kw * 0.0,
                    ramp_complete_min=None,
                )
            held = outcome.allocated_kw
            return (
                problem,
                solution,
                replace(
                    outcome,
                    shortfall_kw=target_kw - held,
                    reasons=[Shortfall("capacity_limit", why), *outcome.reasons],
                ),
            )
        return self._plan_within(
            target_kw,
            duration_min,
            now,
            start,
            scope,
            busy,
            power_override,
            charge_ceiling_pct,
            discharge_floor_pct,
        )

    def limit_at(
        self,
        scope: dict[str, Any],
        discharge: bool,
        start: datetime,
        duration_min: float,
        exclude: str | None = None,
    ) -> tuple[float | None, str]:
        """What is left of the tightest site limit in this direction from `start`, for as long
        as the fleet's largest resource needs to ramp to zero (so that a limit about to begin
        is met when it does), within the window: the limit less what the other dispatches on
        the site (all but `exclude`) plan then."""
        if self.power_limit is None:
            return None, ""
        end = start + timedelta(minutes=duration_min)
        where = self._with_nodes(scope)
        if self.power_limit(where, discharge, start, end)[0] is None:
            return None, ""  # none anywhere in the window (the usual case: no fleet scan)
        largest = float(
            np.max(np.maximum(self.state.max_discharge_kw, self.state.max_charge_kw), initial=0.0)
        )
        lead = min(float(duration_min), math.ceil(largest / self.ramp) + 1.0)
        until = start + timedelta(minutes=lead)
        limit, why, site = self.power_limit(where, discharge, start, until)
        if limit is None:
            return None, ""
        open_ = self.store.list(status=[s.value for s in OPEN_STATUSES], limit=10_000)[0]
        for r in open_:
            r.scope = self._with_nodes(r.scope)
        used = others_kw(open_, site, discharge, start, until, exclude)  # on the same site
        if used <= 1e-6:
            return limit, why
        left = round(max(0.0, limit - used), 3)
        return left, f"{why}, of which other dispatches use {used:g} kW"

    def _with_nodes(self, scope: dict[str, Any]) -> dict[str, Any]:
        """A scope of resources, with the grid nodes they are on (to meet a node's limit)."""
        ids = scope.get("resource_ids")
        if not ids:
            return scope
        return {**scope, "resource_nodes": sorted(set(self.state.grid_nodes_of(ids)))}

    def _plan_within(
        self,
        target_kw: float,
        duration_min: int,
        now: datetime,
        start: datetime,
        scope: dict[str, Any],
        busy: Sequence[str],
        power_override: dict[str, float] | None = None,
        charge_ceiling_pct: dict[str, float] | float | None = None,
        discharge_floor_pct: dict[str, float] | None = None,
    ) -> tuple[DispatchProblem, Solution, Outcome]:
        direction = 1 if target_kw >= 0 else -1
        inputs, unavailable = self.state.dispatch_inputs(
            now,
            start,
            direction=direction,
            grid_node=scope.get("grid_node"),
            fleet_id=scope.get("fleet_id"),
            resource_ids=scope.get("resource_ids"),
            busy=busy,
        )
        lead_min = (start - now).total_seconds() / 60.0
        if lead_min > 0:
            # A battery ramping down from its last dispatch is at rest when this one starts.
            settled = toward_zero_kw(inputs.power_kw, self.ramp, lead_min)
            inputs = replace(inputs, power_kw=np.where(inputs.is_bess, settled, inputs.power_kw))
        if power_override:
            inputs = _override_power(inputs, power_override)
        if isinstance(charge_ceiling_pct, dict):  # per battery (a float: records made before)
            cap = np.array([charge_ceiling_pct.get(r, np.inf) for r in inputs.resource_ids])
            inputs = replace(inputs, ceiling_pct=np.minimum(inputs.ceiling_pct, cap))
        elif charge_ceiling_pct is not None:
            inputs = replace(inputs, ceiling_pct=np.minimum(inputs.ceiling_pct, charge_ceiling_pct))
        if discharge_floor_pct:  # a state-of-charge goal: never below it, on top of the floors
            low = np.array([discharge_floor_pct.get(r, 0.0) for r in inputs.resource_ids])
            inputs = replace(inputs, floor_pct=np.maximum(inputs.floor_pct, low))
        best: tuple[DispatchProblem, Solution, Outcome] | None = None
        refused: str | None = None
        for against in (False, True):  # `include_opposite`: resources moving against the target
            problem = DispatchProblem(
                inputs, target_kw, duration_min, self.ramp, self.rte, self.prefer_bess, against
            )
            if best is not None and np.array_equal(problem.eligible, best[0].eligible):
                break  # none of them can take part: the same problem, the same plan
            solution = self._solve(problem)
            # Never emit an unsafe schedule: every try passes the independent checker first.
            with stage(SAFETY):
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
    ) -> tuple[DispatchRecord, list[V2GCommand]]:
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
            busy=self.busy_for(req, start, now),
            charge_ceiling_pct=req.charge_ceiling_pct,
            discharge_floor_pct=req.discharge_floor_pct,
        )
        # A recharge is an energy goal, not a power obligation: reaching the SoC target early is
        # success, not a shortfall.
        energy_goal = req.charge_ceiling_pct is not None or req.discharge_floor_pct is not None
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
            scope={
                **scope,
                "charge_ceiling_pct": req.charge_ceiling_pct,
                "discharge_floor_pct": req.discharge_floor_pct,
            },
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
        return record, device_commands(record, now)

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
