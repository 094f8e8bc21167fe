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
from collections.abc import Sequence
from dataclasses import dataclass, field, fields

import numpy as np
from numpy.typing import NDArray

from vpp_aggregator.domain.early_departures import MAX_COUNTED
from vpp_aggregator.domain.efficiency import one_way_efficiency
from vpp_aggregator.domain.floors import (
    departure_floor_pct,
    latency_reserve_pct,
    recharge_pct_per_hour,
)
from vpp_aggregator.domain.ramps import toward_zero_kw

F8 = NDArray[np.float64]
B1 = NDArray[np.bool_]
I8 = NDArray[np.int64]

STEP_MIN = 1.0
EPS_KW = 1e-6


@dataclass(frozen=True, slots=True)
class ResourceInputs:
    """Per-resource inputs (arrays of equal length)."""

    resource_ids: list[str]
    is_bess: B1
    capacity_kwh: F8
    soc_pct: F8
    floor_pct: F8  # static floor (floors.static_floor_pct)
    ceiling_pct: F8
    max_discharge_kw: F8
    max_charge_kw: F8
    power_kw: F8  # current power, + = discharging
    departure_min: F8  # minutes from the dispatch start to the next departure; inf if none
    departure_soc_pct: F8
    available: B1  # may take part (available, not locked out in this direction)
    early_departures: I8  # of its last stays, how many the driver left early (early_departures)


def joined_inputs(parts: list[ResourceInputs], keep: Sequence[int] | None = None) -> ResourceInputs:
    """One `ResourceInputs` of the parts, in order; with `keep`, only those positions."""
    if len(parts) == 1 and keep is None:
        return parts[0]
    ids = [rid for p in parts for rid in p.resource_ids]
    arrays = {
        f.name: np.concatenate([getattr(p, f.name) for p in parts])
        for f in fields(ResourceInputs)
        if f.name != "resource_ids"
    }
    if keep is not None:
        arrays = {k: v[keep] for k, v in arrays.items()}
        ids = [ids[i] for i in keep]
    return ResourceInputs(resource_ids=ids, **arrays)


@dataclass(frozen=True, slots=True)
class DispatchProblem:
    inputs: ResourceInputs
    target_kw: float  # signed: + discharge, - charge
    duration_min: int
    ramp_kw_per_min: float
    round_trip_efficiency: float = 0.9
    prefer_bess: bool = True
    # Resources moving against the dispatch (typically EVs charging) first have to ramp through
    # zero; they are drawn on only when asked, so a modest target leaves their charging alone.
    include_opposite: bool = False
    # derived in __post_init__ (per resource; time-dependent quantities are methods, so nothing
    # of size resources x points is built unless a solver asks for it)
    direction: int = field(init=False)
    n: int = field(init=False)
    horizon: int = field(init=False)  # index of the last point (window + tail)
    max_kw: F8 = field(init=False)  # power limit in the dispatch direction
    k_dir: F8 = field(init=False)  # level change per kW·min in the dispatch direction
    k_opp: F8 = field(init=False)  # level change per kW·min opposite (negative q)
    q0: F8 = field(init=False)  # present power in the dispatch direction
    lead_end: NDArray[np.int64] = field(init=False)  # last point of the fixed lead (0: none)
    last_point: NDArray[np.int64] = field(init=False)  # last point a resource may be non-zero
    y0: F8 = field(init=False)
    lo_final: F8 = field(init=False)  # the highest floor met while the dispatch holds the resource
    eligible: B1 = field(init=False)

    def __post_init__(self) -> None:
        inp = self.inputs
        d = 1 if self.target_kw >= 0 else -1
        n = len(inp.resource_ids)
        r = self.ramp_kw_per_min
        max_kw = np.where(d > 0, inp.max_discharge_kw, inp.max_charge_kw).astype(np.float64)
        q0 = d * np.nan_to_num(inp.power_kw)
        eta = one_way_efficiency(self.round_trip_efficiency)
        kwmin_to_pct = STEP_MIN / 60.0 * 100.0 / inp.capacity_kwh  # % per kW held one minute
        # Discharging draws kWh/eta from the cells; charging stores kWh*eta.
        k_dis, k_ch = kwmin_to_pct / eta, kwmin_to_pct * eta
        tail = math.ceil(float(np.max(np.maximum(max_kw, np.abs(q0)), initial=0.0)) / r) + 1
        horizon = self.duration_min + tail
        dep = inp.departure_min
        last_point = np.minimum(
            np.where(np.isfinite(dep), np.floor(np.nan_to_num(dep, posinf=0.0)) - 1, horizon),
            horizon,
        ).astype(np.int64)
        set_ = object.__setattr__
        set_(self, "direction", d)
        set_(self, "n", n)
        set_(self, "horizon", horizon)
        set_(self, "max_kw", max_kw)
        set_(self, "k_dir", k_dis if d > 0 else k_ch)
        set_(self, "k_opp", k_ch if d > 0 else k_dis)
        set_(self, "q0", q0)
        set_(self, "lead_end", np.ceil(np.maximum(-q0, 0.0) / r).astype(np.int64))
        set_(self, "last_point", last_point)
        set_(self, "y0", (inp.soc_pct if d > 0 else -inp.soc_pct).astype(np.float64))
        # While held (even at zero) a vehicle does not charge, so the floor to respect is the one
        # at the end of the hold: at its departure, or at the end of the schedule.
        final_point = np.where(
            np.isfinite(dep), np.minimum(np.ceil(np.nan_to_num(dep, posinf=0.0)), horizon), horizon
        )
        lo_final = self.lo_rows(np.arange(n), final_point)
        set_(self, "lo_final", lo_final)
        # It must at least be able to bring its present power back to zero above that floor,
        # and to have stopped by the time it leaves.
        q_now = np.maximum(q0, 0.0)
        stop_kwmin = _stop_kwmin(q_now, r)
        eligible = (
            inp.available
            & (max_kw > EPS_KW)
            & ((q0 >= -EPS_KW) | self.include_opposite)
            & (self.y0 - self.k_dir * stop_kwmin > lo_final + 1e-9)
            & (last_point > self.lead_end)
            & (q_now <= r * (last_point + 1))
        )
        if d < 0:
            # Charging on the grid's schedule could also slow a vehicle's own charging; one that
            # still needs charge for its next departure is left to charge itself, and so is one
            # discharging now whose ramp down to zero (its lead) would leave it needing charge.
            soc_after_lead = inp.soc_pct - k_dis * _stop_kwmin(np.maximum(-q0, 0.0), r)
            eligible &= ~(np.isfinite(dep) & (soc_after_lead < inp.departure_soc_pct))
        set_(self, "eligible", eligible)

    def lo_rows(
        self, rows: NDArray[np.int64], points: NDArray[np.float64] | NDArray[np.int64]
    ) -> F8:
        """Lowest allowed level of `rows` at `points` (broadcasting): the floor at that point
        (`floors.departure_floor_pct`), or minus the ceiling when charging, with the latency
        reserve (`floors.latency_reserve_pct`) kept on the safe side of either."""
        inp = self.inputs
        reserve = latency_reserve_pct(
            inp.capacity_kwh[rows], self.max_kw[rows], self.round_trip_efficiency
        )
        if self.direction < 0:
            return np.broadcast_to(
                reserve - inp.ceiling_pct[rows], np.broadcast(rows, points).shape
            ).astype(np.float64)
        recharge = recharge_pct_per_hour(
            inp.capacity_kwh[rows], inp.max_charge_kw[rows], self.round_trip_efficiency
        )
        hours_left = (inp.departure_min[rows] - points) / 60.0
        return reserve + departure_floor_pct(
            inp.floor_pct[rows], inp.departure_soc_pct[rows], hours_left, recharge
        )

    def lead_rows(self, rows: NDArray[np.int64], points: NDArray[np.int64] | int) -> F8:
        """Fixed setpoints of a lead (opposite power ramping to zero at full rate); 0 elsewhere."""
        return np.minimum(0.0, toward_zero_kw(self.q0[rows], self.ramp_kw_per_min, points))

    @property
    def target_abs_kw(self) -> float:
        return abs(self.target_kw)

    def priority(self) -> NDArray[np.int64]:
        """Order in which resources are drawn on: BESS first when preferred; then, discharging,
        vehicles whose drivers left early least often in their last stays (`early_departures`);
        then most headroom."""
        frac = np.clip(
            (self.y0 - self.lo_final) / 100.0, 0, 1
        )  # share of the battery above its floor
        key = 1.0 - frac  # in [0, 1]: fuller first
        if self.direction > 0:
            key = key + np.minimum(self.inputs.early_departures, MAX_COUNTED)
        if self.prefer_bess:
            key = key + (MAX_COUNTED + 1.0) * ~self.inputs.is_bess  # batteries before vehicles
        # 16-bit keys (steps of 0.02 % of a battery) sort by radix, five times faster than
        # float keys at 100k resources; closer than that, earlier rows go first.
        scale = 65_535.0 / (2 * MAX_COUNTED + 2)
        return np.argsort((key * scale).astype(np.uint16), kind="stable").astype(np.int64)


@dataclass(slots=True)
class Solution:
    """Setpoints in the dispatch direction for the resources that take part.

    `rows` index the problem's resources; `q` holds their setpoints at every point
    (len(rows), horizon+1), leads included. Resources not listed stay untouched.
    """

    rows: NDArray[np.int64]
    q: NDArray[np.float64]
    solver: str

    def dense_q(self, problem: DispatchProblem) -> NDArray[np.float64]:
        out = np.zeros((problem.n, problem.horizon + 1))
        out[self.rows] = self.q
        return out

    def setpoints_kw(self, problem: DispatchProblem) -> NDArray[np.float64]:
        """Signed setpoints (+ discharge) for every resource of the problem (tests, checks)."""
        return problem.direction * self.dense_q(problem)

    def fleet_power(self) -> NDArray[np.float64]:
        """Fleet power in the dispatch direction at every point (kW)."""
        return np.asarray(self.q.sum(axis=0), dtype=np.float64)

    def delivered_kwh(self, problem: DispatchProblem) -> float:
        """Energy delivered in the dispatch direction inside the window (trapezoid, kWh)."""
        fleet = self.fleet_power()[: problem.duration_min + 1]
        if fleet.size < 2:
            return 0.0
        return float(0.5 * (fleet[1:] + fleet[:-1]).sum() * STEP_MIN / 60.0)


def _stop_kwmin(kw: F8, ramp_kw_per_min: float) -> F8:
    """kW·min delivered while power `kw` (>= 0) ramps to zero at the limit (trapezoids)."""
    j = np.floor(kw / ramp_kw_per_min)
    e = kw - j * ramp_kw_per_min
    return np.asarray(j * j * ramp_kw_per_min / 2.0 + j * e + e / 2.0)


def round_toward_safety(kw: F8, direction: int, decimals: int = 3) -> F8:
    """Signed setpoints rounded to `decimals` against the dispatch's direction: never more
    discharge (when charging, never more charge) than planned, so the rounding on the wire cannot
    carry a battery past the floor (ceiling) the plan just reaches. Flooring on a 1 W grid keeps
    every step within a ramp limit that is itself whole watts."""
    scale = 10.0**decimals
    return np.asarray(direction * np.floor(direction * kw * scale + 1e-6) / scale + 0.0)


def empty_solution(problem: DispatchProblem, solver: str) -> Solution:
    return Solution(np.zeros(0, dtype=np.int64), np.zeros((0, problem.horizon + 1)), solver)
