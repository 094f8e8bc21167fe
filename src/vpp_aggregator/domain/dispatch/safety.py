"""An independent check of a schedule against the safety rules (docs/safety.md).

It shares nothing with the solvers but the problem's inputs: it recomputes SoC trajectories
from the setpoints with sign-aware efficiency and checks every point of every schedule.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from vpp_aggregator.domain.dispatch.problem import STEP_MIN, DispatchProblem

TOL_KW = 1e-6
TOL_PCT = 1e-6


@dataclass(frozen=True, slots=True)
class SafetyViolation:
    resource_id: str
    rule: str
    point: int
    detail: str


def soc_trajectory(
    soc_pct: NDArray[np.float64],
    capacity_kwh: NDArray[np.float64],
    round_trip_efficiency: float,
    setpoints_kw: NDArray[np.float64],
) -> NDArray[np.float64]:
    """SoC (%) at each point from signed setpoints (+ discharge), linear between points."""
    eta = np.sqrt(round_trip_efficiency)
    avg = 0.5 * (setpoints_kw[:, 1:] + setpoints_kw[:, :-1])
    kwh = avg * STEP_MIN / 60.0
    delta_kwh = np.where(kwh > 0, -kwh / eta, -kwh * eta)
    soc = np.empty_like(setpoints_kw)
    soc[:, 0] = soc_pct
    soc[:, 1:] = soc_pct[:, None] + np.cumsum(delta_kwh, axis=1) / capacity_kwh[:, None] * 100.0
    return soc


def soc_path(problem: DispatchProblem, setpoints_kw: NDArray[np.float64]) -> NDArray[np.float64]:
    """SoC (%) of every resource of the problem at each point."""
    inp = problem.inputs
    return soc_trajectory(
        inp.soc_pct, inp.capacity_kwh, problem.round_trip_efficiency, setpoints_kw
    )


def check(
    problem: DispatchProblem,
    setpoints_kw: NDArray[np.float64],
    ramp_kw_per_min: float,
    bess_min_soc_pct: float,
) -> list[SafetyViolation]:
    """Every rule broken by any scheduled resource (rows that are all zero are not scheduled)."""
    scheduled = np.flatnonzero(np.abs(setpoints_kw[:, 1:]).max(axis=1, initial=0.0) > TOL_KW)
    return check_rows(
        problem, scheduled, setpoints_kw[scheduled], ramp_kw_per_min, bess_min_soc_pct
    )


def check_rows(
    problem: DispatchProblem,
    scheduled: NDArray[np.int64],
    sp: NDArray[np.float64],
    ramp_kw_per_min: float,
    bess_min_soc_pct: float,
) -> list[SafetyViolation]:
    """`check` for the schedules `sp` of the resources `scheduled` only."""
    inp = problem.inputs
    out: list[SafetyViolation] = []
    if scheduled.size == 0:
        return out
    ids = [inp.resource_ids[i] for i in scheduled.tolist()]
    soc = soc_trajectory(
        inp.soc_pct[scheduled], inp.capacity_kwh[scheduled], problem.round_trip_efficiency, sp
    )
    n_points = sp.shape[1]
    t = np.arange(n_points, dtype=np.float64) * STEP_MIN

    def report(mask: NDArray[np.bool_], rule: str, what: str) -> None:
        for row, point in zip(*np.nonzero(mask), strict=True):
            out.append(SafetyViolation(ids[row], rule, int(point), what))

    # A resource already moving against the dispatch, or beyond its limits, must first ramp at
    # the ramp limit: those points are forced by rule 4, not chosen, so power limits and floors
    # are not held against them. The ramp itself always is.
    d = 1.0 if problem.target_kw >= 0 else -1.0
    now_kw = np.nan_to_num(inp.power_kw[scheduled])
    own_limit = np.where(now_kw > 0, inp.max_discharge_kw[scheduled], inp.max_charge_kw[scheduled])
    allowed_now = np.where(d * now_kw > 0, own_limit, 0.0)
    forced_until = np.ceil(np.maximum(np.abs(now_kw) - allowed_now, 0.0) / ramp_kw_per_min)
    chosen = np.arange(n_points)[None, :] > forced_until[:, None]

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
        (later > inp.max_discharge_kw[scheduled, None] + TOL_KW) & chosen,
        "discharge_power",
        "above max_discharge_kw",
    )
    report(
        (-later > inp.max_charge_kw[scheduled, None] + TOL_KW) & chosen,
        "charge_power",
        "above max_charge_kw",
    )
    report(
        ~inp.available[scheduled, None] & (np.abs(later) > TOL_KW),
        "unavailable",
        "unavailable resource scheduled",
    )
    bess = inp.is_bess[scheduled]
    floor = np.where(
        bess, np.maximum(inp.floor_pct[scheduled], bess_min_soc_pct), inp.floor_pct[scheduled]
    )
    # SoC may only be below the floor if it started there and falls no further.
    change = np.diff(soc, axis=1, prepend=soc[:, :1])
    falling, rising = change < -TOL_PCT, change > TOL_PCT
    below = (soc < floor[:, None] - TOL_PCT) & falling & chosen
    report(below & bess[:, None], "bess_min_soc", "BESS below its minimum SoC")
    report(below & ~bess[:, None], "driver_min_soc", "vehicle below the driver's minimum SoC")
    report(
        (soc > inp.ceiling_pct[scheduled, None] + TOL_PCT) & rising & chosen,
        "max_soc",
        "above the maximum SoC",
    )
    dep = inp.departure_min[scheduled]
    report(
        (t[None, :] >= dep[:, None]) & (np.abs(later) > TOL_KW),
        "after_departure",
        "scheduled after the vehicle leaves",
    )
    # Departures: the schedule may not leave a driver worse off than charging at full power
    # from now on would (a vehicle that could not make it anyway is not made to fail by us).
    eta_c = np.sqrt(problem.round_trip_efficiency)
    pct_per_h = eta_c * inp.max_charge_kw[scheduled] / inp.capacity_kwh[scheduled] * 100.0
    need = inp.departure_soc_pct[scheduled]
    rows = np.arange(len(ids))
    inside = np.isfinite(dep) & (dep <= t[-1])
    dep_point = np.minimum(np.ceil(np.where(inside, dep, 0.0)).astype(np.int64), n_points - 1)
    free_at_dep = np.minimum(soc[:, 0] + pct_per_h * np.where(inside, dep, 0.0) / 60.0, 100.0)
    short = inside & (soc[rows, dep_point] < np.minimum(need, free_at_dep) - TOL_PCT)
    for row in np.flatnonzero(short).tolist():
        out.append(
            SafetyViolation(
                ids[row], "departure_soc", int(dep_point[row]), "leaves below its required SoC"
            )
        )
    future = np.isfinite(dep) & (dep > t[-1])
    hours_after = np.where(future, (dep - t[-1]) / 60.0, 0.0)
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
