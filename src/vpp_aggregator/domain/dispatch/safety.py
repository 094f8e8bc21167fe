"""An independent check of a schedule against the safety rules of DESIGN §4.

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


def soc_path(problem: DispatchProblem, setpoints_kw: NDArray[np.float64]) -> NDArray[np.float64]:
    """SoC (%) at each point from signed setpoints, linear between points."""
    inp = problem.inputs
    eta = np.sqrt(problem.round_trip_efficiency)
    avg = 0.5 * (setpoints_kw[:, 1:] + setpoints_kw[:, :-1])  # kW over each minute, + = discharge
    kwh = avg * STEP_MIN / 60.0
    delta_kwh = np.where(kwh > 0, -kwh / eta, -kwh * eta)
    soc = np.empty_like(setpoints_kw)
    soc[:, 0] = inp.soc_pct
    soc[:, 1:] = (
        inp.soc_pct[:, None] + np.cumsum(delta_kwh, axis=1) / inp.capacity_kwh[:, None] * 100.0
    )
    return soc


def check(
    problem: DispatchProblem,
    setpoints_kw: NDArray[np.float64],
    ramp_kw_per_min: float,
    bess_min_soc_pct: float,
) -> list[SafetyViolation]:
    """Every rule broken by any scheduled resource (rows that are all zero are not scheduled)."""
    inp = problem.inputs
    out: list[SafetyViolation] = []
    scheduled = np.flatnonzero(np.abs(setpoints_kw[:, 1:]).max(axis=1, initial=0.0) > TOL_KW)
    if scheduled.size == 0:
        return out
    sp = setpoints_kw[scheduled]
    ids = [inp.resource_ids[i] for i in scheduled.tolist()]
    soc = soc_path(problem, setpoints_kw)[scheduled]
    n_points = sp.shape[1]
    t = np.arange(n_points, dtype=np.float64) * STEP_MIN

    def report(mask: NDArray[np.bool_], rule: str, what: str) -> None:
        for row, point in zip(*np.nonzero(mask), strict=True):
            out.append(SafetyViolation(ids[row], rule, int(point), what))

    report(
        np.abs(np.diff(sp, axis=1)) > ramp_kw_per_min * STEP_MIN + TOL_KW,
        "ramp",
        "setpoint changes faster than the ramp limit",
    )
    body = sp[:, 1:]
    report(
        body > inp.max_discharge_kw[scheduled, None] + TOL_KW,
        "discharge_power",
        "above max_discharge_kw",
    )
    report(
        -body > inp.max_charge_kw[scheduled, None] + TOL_KW, "charge_power", "above max_charge_kw"
    )
    if not inp.available[scheduled].all():
        report(
            np.broadcast_to(~inp.available[scheduled, None], body.shape),
            "unavailable",
            "unavailable resource scheduled",
        )
    bess = inp.is_bess[scheduled]
    floor = np.where(
        bess, np.maximum(inp.floor_pct[scheduled], bess_min_soc_pct), inp.floor_pct[scheduled]
    )
    # SoC may only fall below the floor if it started there and never falls further (no discharge).
    below = (soc < floor[:, None] - TOL_PCT) & (np.diff(soc, axis=1, prepend=soc[:, :1]) < -TOL_PCT)
    # A resource already moving against the dispatch must first ramp to zero at the ramp limit;
    # those points are forced by rule 4, not chosen, so they are not held against the floor.
    opposite = np.maximum(
        -np.sign(problem.target_kw or 1.0) * np.nan_to_num(inp.power_kw[scheduled]), 0.0
    )
    forced_until = np.ceil(opposite / ramp_kw_per_min)
    below &= np.arange(n_points)[None, :] > forced_until[:, None]
    report(below & bess[:, None], "bess_min_soc", "BESS below its minimum SoC")
    report(below & ~bess[:, None], "driver_min_soc", "vehicle below the driver's minimum SoC")
    report(soc > inp.ceiling_pct[scheduled, None] + TOL_PCT, "max_soc", "above the maximum SoC")
    dep = inp.departure_min[scheduled]
    after = t[None, :] >= dep[:, None]
    report(after & (np.abs(sp) > TOL_KW), "after_departure", "scheduled after the vehicle leaves")
    # Leaving with the required charge: either already there, or recharging at full power
    # from the schedule's end still gets there.
    has_dep = np.isfinite(dep) & (dep <= t[-1])
    if has_dep.any():
        dep_point = np.minimum(np.ceil(np.where(has_dep, dep, 0.0)).astype(np.int64), n_points - 1)
        soc_at_dep = soc[np.arange(len(ids)), dep_point]
        need = inp.departure_soc_pct[scheduled]
        short = has_dep & (soc_at_dep < need - TOL_PCT) & (soc_at_dep < soc[:, 0] - TOL_PCT)
        for row in np.flatnonzero(short).tolist():
            out.append(
                SafetyViolation(
                    ids[row], "departure_soc", int(dep_point[row]), "leaves below its required SoC"
                )
            )
    # Ahead of a departure beyond the schedule, the remaining time must allow recharging.
    future = np.isfinite(dep) & (dep > t[-1])
    if future.any():
        hours = (dep - t[-1]) / 60.0
        eta_c = np.sqrt(problem.round_trip_efficiency)
        gain = eta_c * inp.max_charge_kw[scheduled] * hours / inp.capacity_kwh[scheduled] * 100.0
        lost = (
            soc[:, -1] < soc[:, 0] - TOL_PCT
        )  # only a dispatch that took charge can strand a driver
        bad = future & lost & (soc[:, -1] + gain < inp.departure_soc_pct[scheduled] - TOL_PCT)
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
