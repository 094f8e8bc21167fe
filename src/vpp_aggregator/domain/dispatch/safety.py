"""The one independent check of a schedule against the safety rules (docs/safety.md).

Every plan and every ramp-down passes it before it is published, and the benchmarks and tests
read the service's answers back through it, so a rule is checked the same way wherever a schedule
is looked at. It shares nothing with the solvers but the problem's inputs: it recomputes SoC
trajectories from the setpoints with sign-aware efficiency and checks every point. Floors arrive
with the resource's facts as `Resource.floor_pct` makes them from `VPP_BESS_MIN_SOC`; the checker
has no floor of its own that could drift from that one formula.

The rules a violation can name: `ramp`, `discharge_power`, `charge_power`, `unavailable`,
`bess_min_soc`, `driver_min_soc`, `max_soc`, `after_departure`, `departure_soc` and, on the wire,
`point_spacing`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np
from numpy.typing import NDArray

from vpp_aggregator.domain.dispatch.problem import STEP_MIN, DispatchProblem, ResourceInputs
from vpp_aggregator.domain.floors import static_floor_pct
from vpp_aggregator.domain.resources import Resource, ResourceType
from vpp_aggregator.domain.schedule import next_departure

F8 = NDArray[np.float64]
TOL_KW = 1e-6
TOL_PCT = 1e-6
TOL_PATH_KW = 1e-3  # setpoints go out in whole watts (`round_toward_safety`)
TOL_SPACING_S = 1e-3  # wire times carry microseconds; a millisecond off is still on the grid


@dataclass(frozen=True, slots=True)
class SafetyViolation:
    resource_id: str
    rule: str
    point: int
    detail: str


@dataclass(frozen=True, slots=True)
class ResourceFacts:
    """What the checker must know of one resource to check a schedule of it read off the wire."""

    resource_id: str
    is_bess: bool
    capacity_kwh: float
    floor_pct: float  # `Resource.floor_pct`: for a BESS at least VPP_BESS_MIN_SOC
    ceiling_pct: float
    max_discharge_kw: float
    max_charge_kw: float
    departure: datetime | None = None  # its next departure, if it has one
    departure_soc_pct: float = 0.0
    available: bool = True

    @classmethod
    def of(cls, resource: Resource, bess_min_soc_pct: float, after: datetime) -> ResourceFacts:
        """The facts of a registered resource, its next departure counted from `after`."""
        leaves = next_departure(resource.departure_schedule, resource.trips, after)
        return cls(
            resource_id=resource.resource_id,
            is_bess=resource.resource_type is ResourceType.BESS,
            capacity_kwh=resource.battery_capacity_kwh,
            floor_pct=float(
                static_floor_pct(
                    resource.resource_type is ResourceType.BESS,
                    resource.min_soc_pct,
                    bess_min_soc_pct,
                )
            ),
            ceiling_pct=resource.max_soc_pct,
            max_discharge_kw=resource.max_discharge_kw,
            max_charge_kw=resource.max_charge_kw,
            departure=leaves.at if leaves else None,
            departure_soc_pct=leaves.required_soc_pct if leaves else 0.0,
        )


def soc_trajectory(
    soc_pct: F8, capacity_kwh: F8, round_trip_efficiency: float, setpoints_kw: F8
) -> F8:
    """SoC (%) at each point from signed setpoints (+ discharge), linear between points."""
    eta = np.sqrt(round_trip_efficiency)
    avg = 0.5 * (setpoints_kw[:, 1:] + setpoints_kw[:, :-1])
    kwh = avg * STEP_MIN / 60.0
    delta_kwh = np.where(kwh > 0, -kwh / eta, -kwh * eta)
    soc = np.empty_like(setpoints_kw)
    soc[:, 0] = soc_pct
    soc[:, 1:] = soc_pct[:, None] + np.cumsum(delta_kwh, axis=1) / capacity_kwh[:, None] * 100.0
    return soc


def soc_path(problem: DispatchProblem, setpoints_kw: F8) -> F8:
    """SoC (%) of every resource of the problem at each point."""
    inp = problem.inputs
    return soc_trajectory(
        inp.soc_pct, inp.capacity_kwh, problem.round_trip_efficiency, setpoints_kw
    )


def check(
    problem: DispatchProblem, setpoints_kw: F8, ramp_kw_per_min: float
) -> list[SafetyViolation]:
    """Every rule broken by any scheduled resource (rows that are all zero are not scheduled)."""
    scheduled = np.flatnonzero(np.abs(setpoints_kw[:, 1:]).max(axis=1, initial=0.0) > TOL_KW)
    return check_rows(problem, scheduled, setpoints_kw[scheduled], ramp_kw_per_min)


def check_rows(
    problem: DispatchProblem,
    scheduled: NDArray[np.int64],
    sp: F8,
    ramp_kw_per_min: float,
) -> list[SafetyViolation]:
    """`check` for the schedules `sp` of the resources `scheduled` only."""
    direction = np.full(scheduled.size, 1.0 if problem.target_kw >= 0 else -1.0)
    return check_setpoints(
        problem.inputs,
        scheduled,
        sp,
        direction,
        ramp_kw_per_min=ramp_kw_per_min,
        round_trip_efficiency=problem.round_trip_efficiency,
    )


def check_wire(
    facts: ResourceFacts,
    start_soc_pct: float,
    points: Sequence[tuple[datetime, float]],
    *,
    ramp_kw_per_min: float,
    round_trip_efficiency: float,
) -> list[SafetyViolation]:
    """One resource's schedule as it goes on the wire (an API answer, a device command): its
    (time, setpoint kW) points from `start_soc_pct`, point 0 being the power it has as the
    schedule starts. Devices and the SoC arithmetic read the points as one minute apart, so
    points off that grid break `point_spacing`; the other rules are checked as if they were on it,
    by `check_schedules`."""
    if not points:
        return []
    out: list[SafetyViolation] = []
    for i in range(1, len(points)):
        gap_s = (points[i][0] - points[i - 1][0]).total_seconds()
        if abs(gap_s - STEP_MIN * 60.0) > TOL_SPACING_S:
            detail = f"{gap_s / 60.0:g} min after the point before it, not {STEP_MIN:g}"
            out.append(SafetyViolation(facts.resource_id, "point_spacing", i, detail))
    kw = np.array([[p[1] for p in points]], dtype=np.float64)
    start = points[0][0]
    dep = (facts.departure - start).total_seconds() / 60.0 if facts.departure else np.inf
    inputs = ResourceInputs(
        resource_ids=[facts.resource_id],
        is_bess=np.array([facts.is_bess]),
        capacity_kwh=np.array([facts.capacity_kwh]),
        soc_pct=np.array([start_soc_pct], dtype=np.float64),
        floor_pct=np.array([facts.floor_pct]),
        ceiling_pct=np.array([facts.ceiling_pct]),
        max_discharge_kw=np.array([facts.max_discharge_kw]),
        max_charge_kw=np.array([facts.max_charge_kw]),
        power_kw=kw[:, 0].copy(),
        departure_min=np.array([dep]),
        departure_soc_pct=np.array([facts.departure_soc_pct]),
        available=np.array([facts.available]),
        early_departures=np.zeros(1, dtype=np.int64),  # orders a plan; no bearing on its safety
    )
    out += check_schedules(
        inputs, kw, ramp_kw_per_min=ramp_kw_per_min, round_trip_efficiency=round_trip_efficiency
    )
    return out


def check_schedules(
    inp: ResourceInputs, sp: F8, *, ramp_kw_per_min: float, round_trip_efficiency: float
) -> list[SafetyViolation]:
    """Every rule broken by each resource of `inp` following its row of setpoints `sp` from its
    `soc_pct` (point 0 its present power) when no dispatch says which way it goes: the direction
    is that of its largest setpoint, so a lead or a ramp-down from its present power is held to
    the rules no more loosely than the dispatch's own setpoints."""
    largest = sp[np.arange(sp.shape[0]), np.argmax(np.abs(sp), axis=1)]
    return check_setpoints(
        inp,
        np.arange(sp.shape[0]),
        sp,
        np.where(largest < 0, -1.0, 1.0),
        ramp_kw_per_min=ramp_kw_per_min,
        round_trip_efficiency=round_trip_efficiency,
    )


def check_setpoints(
    inp: ResourceInputs,
    rows: NDArray[np.int64],
    sp: F8,
    direction: F8,
    *,
    ramp_kw_per_min: float,
    round_trip_efficiency: float,
) -> list[SafetyViolation]:
    """Every rule broken by the resources `rows` of `inp` following the setpoints `sp` (one row
    each, point 0 their present power), each dispatched in `direction` (+1 discharge, -1 charge)."""
    out: list[SafetyViolation] = []
    if rows.size == 0:
        return out
    ids = [inp.resource_ids[i] for i in rows.tolist()]
    soc = soc_trajectory(inp.soc_pct[rows], inp.capacity_kwh[rows], round_trip_efficiency, sp)

    def report(mask: NDArray[np.bool_], rule: str, what: str) -> None:
        for row, point in zip(*np.nonzero(mask), strict=True):
            out.append(SafetyViolation(ids[row], rule, int(point), what))

    # A resource already moving against the dispatch, or beyond its limits, must first ramp at
    # the ramp limit: those points are forced by rule 4, not chosen, so power limits and floors
    # are not held against them. The ramp itself always is, and so is the way down: a point that
    # stays further from zero than ramping at the limit would have brought it is chosen.
    t = np.arange(sp.shape[1], dtype=np.float64) * STEP_MIN
    now_kw = np.nan_to_num(inp.power_kw[rows])
    own_limit = np.where(now_kw > 0, inp.max_discharge_kw[rows], inp.max_charge_kw[rows])
    allowed_now = np.where(direction * now_kw > 0, own_limit, 0.0)
    forced_min = np.ceil(np.maximum(np.abs(now_kw) - allowed_now, 0.0) / ramp_kw_per_min)
    path_kw = np.maximum(np.abs(now_kw)[:, None] - ramp_kw_per_min * t[None, :], 0.0)
    on_path = (sp * np.sign(now_kw)[:, None] >= -TOL_KW) & (np.abs(sp) <= path_kw + TOL_PATH_KW)
    chosen = ~((t[None, :] <= forced_min[:, None]) & on_path)

    step = np.zeros_like(sp)
    step[:, 1:] = np.abs(np.diff(sp, axis=1))
    report(
        step > ramp_kw_per_min * STEP_MIN + TOL_KW,
        "ramp",
        "setpoint changes faster than the ramp limit",
    )
    later = sp.copy()
    later[:, 0] = 0.0  # point 0 is the resource's present power, not a setpoint
    report(
        (later > inp.max_discharge_kw[rows, None] + TOL_KW) & chosen,
        "discharge_power",
        "above max_discharge_kw",
    )
    report(
        (-later > inp.max_charge_kw[rows, None] + TOL_KW) & chosen,
        "charge_power",
        "above max_charge_kw",
    )
    report(
        ~inp.available[rows, None] & (np.abs(later) > TOL_KW),
        "unavailable",
        "unavailable resource scheduled",
    )
    bess = inp.is_bess[rows]
    # SoC may only be below the floor if it started there and falls no further.
    change = np.diff(soc, axis=1, prepend=soc[:, :1])
    falling, rising = change < -TOL_PCT, change > TOL_PCT
    below = (soc < inp.floor_pct[rows, None] - TOL_PCT) & falling & chosen
    report(below & bess[:, None], "bess_min_soc", "BESS below its minimum SoC")
    report(below & ~bess[:, None], "driver_min_soc", "vehicle below the driver's minimum SoC")
    report(
        (soc > inp.ceiling_pct[rows, None] + TOL_PCT) & rising & chosen,
        "max_soc",
        "above the maximum SoC",
    )
    report(
        (t[None, :] >= inp.departure_min[rows, None]) & (np.abs(later) > TOL_KW),
        "after_departure",
        "scheduled after the vehicle leaves",
    )
    out += _departure_shortfalls(inp, rows, soc, round_trip_efficiency)
    return out


def _departure_shortfalls(
    inp: ResourceInputs, rows: NDArray[np.int64], soc: F8, round_trip_efficiency: float
) -> list[SafetyViolation]:
    """A schedule may not leave a driver worse off than charging at full power from now on would
    (a vehicle that could not make it anyway is not made to fail by us)."""
    ids = [inp.resource_ids[i] for i in rows.tolist()]
    n_points = soc.shape[1]
    t_end = (n_points - 1) * STEP_MIN
    dep = inp.departure_min[rows]
    eta_c = np.sqrt(round_trip_efficiency)
    pct_per_h = eta_c * inp.max_charge_kw[rows] / inp.capacity_kwh[rows] * 100.0
    need = inp.departure_soc_pct[rows]
    out: list[SafetyViolation] = []
    # Leaving inside the schedule: the SoC at the point it leaves.
    inside = np.isfinite(dep) & (dep <= t_end)
    dep_point = np.minimum(np.ceil(np.where(inside, dep, 0.0)).astype(np.int64), n_points - 1)
    free_at_dep = np.minimum(soc[:, 0] + pct_per_h * np.where(inside, dep, 0.0) / 60.0, 100.0)
    at_dep = soc[np.arange(len(ids)), dep_point]
    short = inside & (at_dep < np.minimum(need, free_at_dep) - TOL_PCT)
    for row in np.flatnonzero(short).tolist():
        point = int(dep_point[row])
        out.append(
            SafetyViolation(ids[row], "departure_soc", point, "leaves below its required SoC")
        )
    # Leaving after it: what charging at full power from its end can still reach.
    future = np.isfinite(dep) & (dep > t_end)
    hours_after = np.where(future, (dep - t_end) / 60.0, 0.0)
    planned = np.minimum(soc[:, -1] + pct_per_h * hours_after, 100.0)
    free = np.minimum(soc[:, 0] + pct_per_h * np.where(future, dep, 0.0) / 60.0, 100.0)
    bad = future & (planned < np.minimum(need, free) - TOL_PCT)
    for row in np.flatnonzero(bad).tolist():
        out.append(
            SafetyViolation(
                ids[row],
                "departure_soc",
                n_points - 1,
                "cannot recharge to its required SoC before leaving",
            )
        )
    return out
