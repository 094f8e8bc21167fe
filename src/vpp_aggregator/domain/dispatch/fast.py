"""Fast allocator: one vectorised pass over time, drawing on resources in priority order.

At each point every resource has a band it may move in: at most `ramp` up or down from its
last setpoint, within its power limit, zero by its departure, ramping down after the window,
and never so high that it could not ramp back to zero without crossing its floor (solved in
closed form). The fleet first takes every lower bound (a ramp cannot stop instantly), then
fills the gap to the fleet cap in priority order: first up to the rate each resource can hold
until it must stop, then beyond it.

Only a prefix of the priority order is worked on: rows past it are idle and stay idle until
the fill reaches them, so a modest target on a huge fleet costs little.

Resources still ramping out of opposite power (leads) pull the fleet below target for a few
minutes; others cover for them, but whoever covers must be able to ramp back down as the leads
end. When a pass overshoots for that reason the cap before the overshoot is lowered and the pass
repeated (a few times at most, and only when there are leads).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from vpp_aggregator.domain.dispatch.problem import DispatchProblem, Solution, empty_solution
from vpp_aggregator.domain.ramps import toward_zero_kw

MAX_PASSES = 8
FIRST_PREFIX = 1024
FILL_BLOCK = 512


def solve_fast(problem: DispatchProblem) -> Solution:
    p = problem
    prio = p.priority()
    order = prio[p.eligible[prio]]
    if order.size == 0:
        return empty_solution(p, "fast")
    window, r = p.duration_min, p.ramp_kw_per_min
    points = np.arange(p.horizon + 1)
    lead_pos = np.flatnonzero(p.lead_end[order] > 0)
    lead_total = (
        p.lead_rows(order[lead_pos][:, None], points[None, :]).sum(axis=0)
        if lead_pos.size
        else np.zeros(points.size)
    )
    cap = (
        p.target_abs_kw - lead_total
    )  # what the others may give so that the fleet meets the target
    out, used = _pass(p, order, lead_pos, cap)  # time-major: (points, rows in priority order)
    if lead_pos.size:
        for attempt in range(MAX_PASSES):
            over = out[: window + 1].sum(axis=1) - p.target_abs_kw
            over[0] = 0.0
            late = np.flatnonzero(over > 1e-9)
            if late.size == 0:
                break
            # Power already flowing above the target may only come down at the ramp rate.
            pushing = p.q0[order][p.q0[order] > 0]
            forced = toward_zero_kw(pushing[:, None], r, late[None, :]).sum(axis=0)
            over_t = over[late] - np.maximum(forced - p.target_abs_kw, 0.0)
            late, over_t = late[over_t > 1e-9], over_t[over_t > 1e-9]
            if late.size == 0:
                break
            # Lower earlier caps by the overshoot, doubling with each pass: lower-priority
            # resources absorb a small cut while the one that overshoots keeps its power.
            for t, amount in zip(late.tolist(), over_t.tolist(), strict=True):
                cut = amount * 2.0**attempt
                cap[1:t] = np.maximum(cap[1:t] - cut, p.target_abs_kw + lead_total[1:t])
            out, used = _pass(p, order, lead_pos, cap)
    rows = np.flatnonzero(used)
    q = out.T if rows.size == out.shape[1] else out[:, rows].T
    return Solution(order[rows], q, "fast")


@dataclass(frozen=True, slots=True)
class _Rows:
    """Per-resource constants of one pass, in priority order, worked out once instead of at
    every point (the per-point work is the hot loop: ~30 array operations over the prefix)."""

    max_kw: NDArray[np.float64]
    inv_k: NDArray[np.float64]
    stop_kw: NDArray[np.float64]  # r * (last_point + 1): the ramp-down bound is stop_kw - r*t
    hold_end: NDArray[np.float64]  # min(window, last_point) + 1: minutes left are hold_end - t
    # Only rows with less energy than this can be held back by it: the energy of a minute at q
    # and the ramp back to zero (`_energy_kw`) is at most q^2/(2r) + q/2 + r/8, and q <= max_kw.
    near_floor_kwmin: NDArray[np.float64]
    # Operations the whole pass can skip: nobody must stop inside the window, everybody holds
    # until its end, nobody is moving against the dispatch.
    stops: bool
    same_hold_end: bool
    leads: bool


def _pass(
    p: DispatchProblem,
    order: NDArray[np.int64],
    lead_pos: NDArray[np.int64],
    cap: NDArray[np.float64],
) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """Setpoints, time-major: (points, as many rows of `order` as were ever touched), and which
    of those rows were ever non-zero."""
    horizon, window, r = p.horizon, p.duration_min, p.ramp_kw_per_min
    k = p.k_dir[order]
    last_point = p.last_point[order].astype(np.float64)
    max_kw = p.max_kw[order]
    stop_kw = r * (last_point + 1.0)
    hold_end = np.minimum(float(window), last_point) + 1.0
    rows = _Rows(
        max_kw=max_kw,
        inv_k=1.0 / k,
        stop_kw=stop_kw,
        hold_end=hold_end,
        near_floor_kwmin=max_kw * (max_kw * (0.5 / r) + 1.0) + r,
        stops=bool((stop_kw - r * window < max_kw).any()),
        same_hold_end=bool((hold_end == window + 1.0).all()),
        leads=lead_pos.size > 0,
    )
    # Energy left above the floor, in kW·min in the dispatch direction (a minute moving against
    # it gives back k_opp/k of a kW·min per kW).
    energy = (p.y0[order] - p.lo_final[order]) * rows.inv_k
    opp_ratio = p.k_opp[order] * rows.inv_k
    lead_end = p.lead_end[order]
    q_prev = p.q0[order].copy()
    lead_q0 = q_prev[lead_pos]
    active = _touched(q_prev)
    # One row of setpoints per point, only as wide as the rows worked on then: a modest
    # dispatch on a huge fleet never holds points x fleet.
    steps = [q_prev[:active].copy()]
    used = q_prev != 0
    for t in range(1, horizon + 1):
        in_lead = lead_end[lead_pos] >= t
        leading = lead_pos[in_lead]
        lead_now = np.minimum(0.0, lead_q0[in_lead] + r * t)
        if leading.size:
            active = max(active, int(leading[-1]) + 1)
        if t > window:
            # After the window: back to zero at the ramp limit.
            q_t = q_prev[:active] - r
            np.maximum(q_t, 0.0, out=q_t)
            q_t[leading] = lead_now
        else:
            q_t = _point(t, r, cap[t], q_prev, energy, rows, active, leading, lead_now)
        size = q_t.size
        avg = q_prev[:size] + q_t
        avg *= 0.5
        if rows.leads:
            avg = np.where(avg >= 0, avg, avg * opp_ratio[:size])
        energy[:size] -= avg
        q_prev[:size] = q_t
        steps.append(q_t)
        nz = q_t != 0
        active = _last_true(nz)
        if t <= window:
            used[:size] |= nz
    width = _last_true(used)
    out = np.zeros((horizon + 1, width))
    for t, q_t in enumerate(steps):
        n_t = min(q_t.size, width)
        out[t, :n_t] = q_t[:n_t]
    return out, used[:width]


def _touched(q: NDArray[np.float64]) -> int:
    """One past the last non-zero setpoint (0 when all are zero)."""
    return _last_true(q != 0)


def _last_true(flags: NDArray[np.bool_]) -> int:
    """One past the last true flag (0 when none is)."""
    if flags.size == 0:
        return 0
    back = int(np.argmax(flags[::-1]))
    return flags.size - back if flags[flags.size - 1 - back] else 0


def _point(
    t: int,
    r: float,
    cap_t: float,
    q_prev: NDArray[np.float64],
    energy: NDArray[np.float64],
    rows: _Rows,
    active: int,
    leading: NDArray[np.int64],
    lead_now: NDArray[np.float64],
) -> NDArray[np.float64]:
    """Setpoints of one point inside the window, for as short a prefix of rows as meets the cap.

    Rows past the prefix are idle; when the prefix cannot meet the cap at the rates its rows
    can hold, the bands of the next rows are added to it (not worked out again for the rows
    already there), since idle rows holding their rate come before anyone exceeding theirs."""
    m = q_prev.size
    size = max(active, min(m, FIRST_PREFIX))
    lb, sustain, ub = _bands(t, r, q_prev, energy, rows, 0, size)
    lb[leading] = 0.0
    sustain[leading] = 0.0
    ub[leading] = 0.0
    while True:
        need = cap_t - float(lb.sum())
        if need <= 0:
            q_t = lb
            break
        room = sustain - lb
        total = float(room.sum())
        if total >= need:
            # First at most the rate each resource can hold until it must stop (window end
            # or departure) and still ramp down, so energy is not spent early that power will
            # be missing for later; only then beyond it, in priority order.
            q_t = _fill(lb, room, sustain, need)
            break
        if size >= m:
            q_t = _fill(sustain, ub - sustain, ub, need - total)
            break
        grown = min(m, size * 4)
        more = _bands(t, r, q_prev, energy, rows, size, grown)
        lb, sustain, ub = (
            np.concatenate((a, b)) for a, b in zip((lb, sustain, ub), more, strict=True)
        )
        size = grown
    q_t[leading] = lead_now
    return q_t


def _bands(
    t: int,
    r: float,
    q_prev: NDArray[np.float64],
    energy: NDArray[np.float64],
    rows: _Rows,
    start: int,
    stop: int,
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Lowest, sustainable and highest setpoint at point `t` of rows start..stop."""
    sl = slice(start, stop)
    qp = q_prev[sl]
    lb = qp - r
    np.maximum(lb, 0.0, out=lb)
    ub = qp + r
    np.minimum(ub, rows.max_kw[sl], out=ub)
    if rows.stops:
        # Ramp-down bound before the resource must stop; below zero it is lifted to lb below.
        np.minimum(ub, rows.stop_kw[sl] - r * t, out=ub)
    budget = (np.maximum(qp, 0.0) if rows.leads else qp) * -0.5
    budget += energy[sl]
    np.maximum(budget, 0.0, out=budget)
    rows_near = np.flatnonzero(budget < rows.near_floor_kwmin[sl])
    if rows_near.size:
        ub[rows_near] = np.minimum(ub[rows_near], _energy_kw(budget[rows_near], r))
    np.maximum(ub, lb, out=ub)
    # The rate it can hold until it must stop (window end or departure) and still ramp down.
    if rows.same_hold_end:
        minutes_left: NDArray[np.float64] | float = max(float(rows.hold_end[0]) - t, 1.0)
    else:
        minutes_left = rows.hold_end[sl] - t
        np.maximum(minutes_left, 1.0, out=minutes_left)
    sustain = budget
    sustain *= 2.0 / r
    sustain += minutes_left * minutes_left
    np.sqrt(sustain, out=sustain)
    sustain -= minutes_left
    sustain *= r
    np.maximum(sustain, lb, out=sustain)
    np.minimum(sustain, ub, out=sustain)
    return lb, sustain, ub


def _energy_kw(budget: NDArray[np.float64], r: float) -> NDArray[np.float64]:
    """Highest q whose minute plus the quickest ramp back to zero (q-r, q-2r, ..., 0) fits in
    `budget` kW·min: that energy g(q) is piecewise linear in q and g(j*r) = r*j*(j+1)/2, so it
    inverts exactly."""
    j1 = budget * (8.0 / r)
    j1 += 1.0
    np.sqrt(j1, out=j1)
    j1 += 1.0
    j1 *= 0.5
    np.floor(j1, out=j1)  # j + 1
    q_energy = j1 - 1.0
    q_energy *= j1
    q_energy *= 0.5 * r
    q_energy += budget
    q_energy /= j1
    q_energy *= 1.0 - 1e-12
    return q_energy


def _fill(
    base: NDArray[np.float64], room: NDArray[np.float64], top: NDArray[np.float64], need: float
) -> NDArray[np.float64]:
    """`base` raised to `top` (= base + room) in order until `need` is met; `base` is reused.

    The row where the running total of `room` reaches `need` is found by block sums first and
    a running total inside one block only: a full running total is the slowest array operation
    of the point."""
    full_blocks = room.size // FILL_BLOCK
    sums = room[: full_blocks * FILL_BLOCK].reshape(full_blocks, FILL_BLOCK).sum(axis=1)
    ends = np.cumsum(sums)
    block = int(np.searchsorted(ends, need))  # the block where the running total reaches need
    first = block * FILL_BLOCK
    inside = np.cumsum(room[first : first + FILL_BLOCK])
    before_block = float(ends[block - 1]) if block else 0.0
    inside += before_block
    full = first + int(np.searchsorted(inside, need))  # rows raised all the way
    base[:full] = top[:full]
    if full < base.size:
        base[full] += need - (float(inside[full - first - 1]) if full > first else before_block)
    return base
