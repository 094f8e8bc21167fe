"""The dispatch problem both solvers answer, on a one-minute grid.

Everything is expressed in the dispatch's direction: `q = d * p` with d = +1 for a discharge
target and -1 for a charge target, so one formulation serves both. A resource's "level" `y` is
its SoC seen from that direction (`soc` when discharging, `-soc` when charging); each kW·min in
the dispatch direction lowers `y` by `k` percentage points, and `y` may never fall below `lo[t]`
(the floor, raised ahead of a departure so the vehicle can still recharge in time, charging
losses included; or minus the
ceiling when charging). Setpoints are defined at grid points and are linear between them.

Points 0..T cover the window; after it each resource ramps back to zero at the ramp limit
(the "tail"), so no setpoint ever jumps. A resource whose power is currently opposite to the
dispatch first ramps to zero at full ramp rate (its "lead"); those points are fixed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

F8 = NDArray[np.float64]
B1 = NDArray[np.bool_]

STEP_MIN = 1.0
EPS_KW = 1e-6


@dataclass(frozen=True, slots=True)
class ResourceInputs:
    """Per-resource inputs (arrays of equal length)."""

    resource_ids: list[str]
    is_bess: B1
    capacity_kwh: F8
    soc_pct: F8
    floor_pct: F8  # static floor: BESS max(VPP_BESS_MIN_SOC, own), EV driver minimum
    ceiling_pct: F8
    max_discharge_kw: F8
    max_charge_kw: F8
    power_kw: F8  # current power, + = discharging
    departure_min: F8  # minutes from the dispatch start to the next departure; inf if none
    departure_soc_pct: F8
    available: B1  # may take part (available, not locked out in this direction)


@dataclass(frozen=True, slots=True)
class DispatchProblem:
    inputs: ResourceInputs
    target_kw: float  # signed: + discharge, - charge
    duration_min: int
    ramp_kw_per_min: float
    round_trip_efficiency: float = 0.9
    prefer_bess: bool = True
    # derived (filled in __post_init__)
    direction: int = field(init=False)
    n: int = field(init=False)
    horizon: int = field(init=False)  # index of the last point (window + tail)
    max_kw: F8 = field(init=False)  # power limit in the dispatch direction
    k_dir: F8 = field(init=False)  # level change per kW·min in the dispatch direction
    k_opp: F8 = field(init=False)  # level change per kW·min opposite (negative q)
    q0: F8 = field(init=False)  # current power in dispatch direction
    lead_q: NDArray[np.float64] = field(
        init=False
    )  # (n, horizon+1) fixed negative lead, 0 elsewhere
    lead_end: NDArray[np.int64] = field(init=False)  # first point the solver may move
    last_point: NDArray[np.int64] = field(init=False)  # last point a resource may be non-zero
    y0: F8 = field(init=False)
    lo: NDArray[np.float64] = field(init=False)  # (n, horizon+1) lowest allowed level
    eligible: B1 = field(init=False)
    lo_final: F8 = field(init=False)  # the highest floor met while the dispatch holds the resource

    def __post_init__(self) -> None:
        inp = self.inputs
        d = 1 if self.target_kw >= 0 else -1
        n = len(inp.resource_ids)
        r = self.ramp_kw_per_min
        max_kw = np.where(d > 0, inp.max_discharge_kw, inp.max_charge_kw).astype(np.float64)
        q0 = d * np.nan_to_num(inp.power_kw)
        eta = math.sqrt(self.round_trip_efficiency)
        kwmin_to_pct = STEP_MIN / 60.0 * 100.0 / inp.capacity_kwh  # % per kW held one minute
        # Discharging draws kWh/eta from the cells; charging stores kWh*eta.
        k_dis, k_ch = kwmin_to_pct / eta, kwmin_to_pct * eta
        k_dir = k_dis if d > 0 else k_ch
        k_opp = k_ch if d > 0 else k_dis
        tail = math.ceil(float(np.max(np.maximum(max_kw, np.abs(q0)), initial=0.0)) / r) + 1
        horizon = self.duration_min + tail
        t = np.arange(horizon + 1, dtype=np.float64)
        # Lead: opposite power ramps to zero at full rate; fixed, counted as it really is.
        lead_q = np.minimum(0.0, q0[:, None] + r * t[None, :])
        lead_end = np.ceil(np.maximum(-q0, 0.0) / r).astype(np.int64)
        # Departure: nothing scheduled from the departure point on.
        dep = inp.departure_min
        last_point = np.where(np.isfinite(dep), np.floor(dep) - 1, horizon).astype(np.int64)
        last_point = np.minimum(last_point, horizon)
        if d > 0:
            y0 = inp.soc_pct.astype(np.float64)
            hours_left = np.where(
                np.isfinite(dep)[:, None], np.maximum(dep[:, None] - t[None, :], 0.0) / 60.0, np.inf
            )
            with np.errstate(invalid="ignore"):
                raised = (
                    inp.departure_soc_pct[:, None]
                    - eta
                    * inp.max_charge_kw[:, None]
                    * hours_left
                    / inp.capacity_kwh[:, None]
                    * 100.0
                )
            raised = np.where(np.isfinite(hours_left), raised, -np.inf)
            lo = np.maximum(inp.floor_pct[:, None], raised)
        else:
            y0 = -inp.soc_pct.astype(np.float64)
            lo = np.broadcast_to(-inp.ceiling_pct[:, None], (n, horizon + 1)).copy()
        # The level may not dip below the floor at any point the dispatch holds the resource, and
        # while held (even at zero) a vehicle does not charge: the binding floor is the last one.
        final_point = np.where(
            np.isfinite(dep), np.minimum(np.ceil(np.nan_to_num(dep, posinf=0.0)), horizon), horizon
        )
        lo_final = lo[np.arange(n), final_point.astype(np.int64)]
        # It must at least be able to bring its present power back to zero above the floor.
        q_now = np.maximum(q0, 0.0)
        j = np.floor(q_now / r)
        e = q_now - j * r
        stop_kwmin = j * j * r / 2.0 + j * e + e / 2.0
        eligible = (
            inp.available
            & (max_kw > EPS_KW)
            & (y0 - k_dir * stop_kwmin > lo_final + 1e-9)
            & (last_point > lead_end)
            & (q_now <= r * (last_point + 1))  # and have stopped by the time it leaves
        )
        object.__setattr__(self, "direction", d)
        object.__setattr__(self, "n", n)
        object.__setattr__(self, "horizon", horizon)
        object.__setattr__(self, "max_kw", max_kw)
        object.__setattr__(self, "k_dir", k_dir)
        object.__setattr__(self, "k_opp", k_opp)
        object.__setattr__(self, "q0", q0)
        object.__setattr__(self, "lead_q", lead_q)
        object.__setattr__(self, "lead_end", lead_end)
        object.__setattr__(self, "last_point", last_point)
        object.__setattr__(self, "y0", y0)
        object.__setattr__(self, "lo", lo)
        object.__setattr__(self, "eligible", eligible)
        object.__setattr__(self, "lo_final", lo_final)

    @property
    def target_abs_kw(self) -> float:
        return abs(self.target_kw)

    def lead_total(self) -> F8:
        """Fleet power of the fixed leads at each point (negative or zero)."""
        return np.asarray(self.lead_q.sum(axis=0), dtype=np.float64)

    def priority(self) -> NDArray[np.int64]:
        """Order in which resources are drawn on: BESS first when preferred, then most headroom."""
        frac = np.clip(
            (self.y0 - self.lo[:, 0]) / 100.0, 0, 1
        )  # share of the battery above its floor
        key_bess = (
            (~self.inputs.is_bess).astype(np.float64) if self.prefer_bess else np.zeros(self.n)
        )
        return np.lexsort((-frac, key_bess)).astype(np.int64)


@dataclass(slots=True)
class Solution:
    """Setpoints in the dispatch direction at every point (n, horizon+1), including fixed leads."""

    q: NDArray[np.float64]
    solver: str

    def setpoints_kw(self, problem: DispatchProblem) -> NDArray[np.float64]:
        """Signed setpoints (+ discharge)."""
        return problem.direction * self.q


def levels(problem: DispatchProblem, q: NDArray[np.float64]) -> NDArray[np.float64]:
    """Level path implied by setpoints q (n, horizon+1); trapezoidal energy, sign-aware efficiency."""
    avg = 0.5 * (q[:, 1:] + q[:, :-1])
    pos, neg = np.maximum(avg, 0.0), np.minimum(avg, 0.0)
    drop = pos * problem.k_dir[:, None] + neg * problem.k_opp[:, None]
    y = np.empty_like(q)
    y[:, 0] = problem.y0
    y[:, 1:] = problem.y0[:, None] - np.cumsum(drop, axis=1)
    return y


def fleet_power(problem: DispatchProblem, q: NDArray[np.float64]) -> NDArray[np.float64]:
    """Fleet power in the dispatch direction at every point (kW)."""
    return np.asarray(q[problem.eligible].sum(axis=0), dtype=np.float64)


def delivered_kwh(problem: DispatchProblem, q: NDArray[np.float64]) -> float:
    """Energy delivered in the dispatch direction inside the window (trapezoid, kWh)."""
    fleet = fleet_power(problem, q)[: problem.duration_min + 1]
    return float(0.5 * (fleet[1:] + fleet[:-1]).sum() * STEP_MIN / 60.0)
