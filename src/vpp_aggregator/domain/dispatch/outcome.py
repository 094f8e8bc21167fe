"""What a solution means for an operator: per-resource allocations, the fleet's delivery,
shortfall and which rules bound it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from vpp_aggregator.domain.dispatch.problem import DispatchProblem, Solution
from vpp_aggregator.domain.dispatch.safety import soc_trajectory

TOLERANCE = 0.005  # within 0.5 % of the target counts as meeting it


@dataclass(frozen=True, slots=True)
class Allocation:
    row: int
    resource_id: str
    is_bess: bool
    setpoint_kw: (
        float  # the setpoint it mostly holds inside the window (median of non-zero), signed
    )
    schedule_kw: NDArray[np.float64]  # signed setpoint at each point
    start_soc_pct: float
    expected_end_soc_pct: float
    binding_constraint: str


@dataclass(frozen=True, slots=True)
class Shortfall:
    rule: str
    detail: str


@dataclass(frozen=True, slots=True)
class Outcome:
    allocations: list[Allocation]
    allocated_kw: float  # signed: sustained fleet power once ramped
    shortfall_kw: float  # signed like the target, 0 when met
    reasons: list[Shortfall]
    ramp_complete_min: float | None  # minutes after start when the fleet reached the target
    delivered_kwh: float
    fleet_kw: NDArray[np.float64]  # signed fleet power at each point


def summarise(problem: DispatchProblem, solution: Solution, unavailable: int) -> Outcome:
    p, d = problem, problem.direction
    window = p.duration_min
    rows = solution.rows
    q = solution.q
    fleet = q.sum(axis=0) if rows.size else np.zeros(p.horizon + 1)
    target = p.target_abs_kw
    inside = fleet[1 : window + 1]
    reached = np.flatnonzero(inside >= target * (1 - TOLERANCE))
    ramp_complete = float(reached[0] + 1) if reached.size else None
    # Allocated: the level the fleet holds from the end of its ramp to the end of the window; a
    # plan that holds nothing that long (a burst before vehicles leave) is worth its average.
    top = min(target, float(inside.max(initial=0.0)))
    up = np.flatnonzero(inside >= top * (1 - TOLERANCE))
    held = float(inside[up[0] :].min()) if up.size and top > 0 else 0.0
    average = abs(solution.delivered_kwh(p)) * 60.0 / max(window, 1)
    sustained = max(0.0, min(max(held, average), target))
    shortfall = target - sustained if sustained < target * (1 - TOLERANCE) else 0.0

    allocations: list[Allocation] = []
    if rows.size:
        dense_soc = _soc_rows(p, rows, d * q)
        for i, row in enumerate(rows.tolist()):
            sched = d * q[i] + 0.0  # + 0.0: no negative zeros on the wire
            body = q[i, 1 : window + 1]
            peak = float(body.max()) if body.size else 0.0
            giving = body[body > 1e-9]
            steady = float(np.median(giving)) if giving.size else 0.0  # not a ramp
            allocations.append(
                Allocation(
                    row=row,
                    resource_id=p.inputs.resource_ids[row],
                    is_bess=bool(p.inputs.is_bess[row]),
                    setpoint_kw=d * steady + 0.0,
                    schedule_kw=sched,
                    start_soc_pct=float(p.inputs.soc_pct[row]),
                    expected_end_soc_pct=float(dense_soc[i, -1]),
                    binding_constraint=_binding(p, row, q[i], dense_soc[i], peak, shortfall > 0),
                )
            )
    reasons = _reasons(p, solution, shortfall, ramp_complete, unavailable)
    return Outcome(
        allocations=allocations,
        allocated_kw=d * sustained + 0.0,
        shortfall_kw=d * shortfall + 0.0,
        reasons=reasons,
        ramp_complete_min=ramp_complete,
        delivered_kwh=d * solution.delivered_kwh(p),
        fleet_kw=d * fleet + 0.0,
    )


def _soc_rows(
    p: DispatchProblem, rows: NDArray[np.int64], setpoints: NDArray[np.float64]
) -> NDArray[np.float64]:
    inp = p.inputs
    return soc_trajectory(
        inp.soc_pct[rows], inp.capacity_kwh[rows], p.round_trip_efficiency, setpoints
    )


def _binding(
    p: DispatchProblem,
    row: int,
    q: NDArray[np.float64],
    soc: NDArray[np.float64],
    peak: float,
    short: bool,
) -> str:
    """The rule that kept this resource from giving more."""
    if np.isfinite(p.inputs.departure_min[row]) and p.inputs.departure_min[row] <= p.duration_min:
        return "departure"
    if peak >= p.max_kw[row] - 1e-6:
        return "power_limit"
    floor_like = p.lo_final[row] if p.direction > 0 else -p.lo_final[row]
    if p.direction > 0 and soc[-1] <= floor_like + 0.05:
        return (
            "bess_min_soc"
            if p.inputs.is_bess[row]
            else ("departure_soc" if np.isfinite(p.inputs.departure_min[row]) else "driver_min_soc")
        )
    if p.direction < 0 and soc[-1] >= floor_like - 0.05:
        return "max_soc"
    if short:
        return "ramp_limit"
    return "target"


def _reasons(
    p: DispatchProblem, s: Solution, shortfall: float, ramp_complete: float | None, unavailable: int
) -> list[Shortfall]:
    if shortfall <= 0:
        return []
    out: list[Shortfall] = []
    eligible = p.eligible
    power = float(p.max_kw[eligible].sum())
    if power < p.target_abs_kw:
        out.append(
            Shortfall(
                "power_limit",
                f"eligible resources can give at most {power:.1f} kW "
                f"against {p.target_abs_kw:.1f} kW asked",
            )
        )
    energy_kwmin = float(((p.y0[eligible] - p.lo_final[eligible]) / p.k_dir[eligible]).sum())
    need_kwmin = p.target_abs_kw * p.duration_min
    if energy_kwmin < need_kwmin:
        rule = "max_soc" if p.direction < 0 else "min_soc"
        out.append(
            Shortfall(
                rule,
                f"{energy_kwmin / 60:.1f} kWh available above floors (below ceilings "
                f"when charging) against {need_kwmin / 60:.1f} kWh asked",
            )
        )
    if ramp_complete is None and power >= p.target_abs_kw and energy_kwmin >= need_kwmin:
        out.append(
            Shortfall(
                "ramp_limit",
                f"{p.ramp_kw_per_min:g} kW/min per resource keeps the fleet "
                "from reaching the target inside the window",
            )
        )
    departing = int(
        (
            np.isfinite(p.inputs.departure_min)
            & (p.inputs.departure_min <= p.duration_min)
            & p.inputs.available
        ).sum()
    )
    if departing:
        out.append(Shortfall("departure", f"{departing} vehicle(s) leave during the window"))
    if unavailable:
        out.append(
            Shortfall(
                "availability",
                f"{unavailable} resource(s) in scope are unavailable "
                "(stale telemetry, unplugged, suspended, locked or busy)",
            )
        )
    if not p.include_opposite and int(((p.q0 < 0) & p.inputs.available).sum()):
        out.append(Shortfall("opposite_power", "some resources are moving the other way right now"))
    if not out:
        out.append(
            Shortfall(
                "ramp_limit", "ramp and energy limits together keep delivery below the target"
            )
        )
    return out
