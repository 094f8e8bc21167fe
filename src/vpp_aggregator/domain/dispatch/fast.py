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
    out = _pass(p, order, lead_pos, cap)  # time-major: (points, rows in priority order)
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
            out = _pass(p, order, lead_pos, cap)
    used = np.flatnonzero((out != 0).any(axis=0))
    q = out.T if used.size == out.shape[1] else out[:, used].T
    return Solution(order[used], q, "fast")


@dataclass(frozen=True, slots=True)
class _Rows:
    """Per-resource constants of one pass, in priority order, worked out once instead of at
    every point (the per-point work is the hot loop: ~45 array operations over the prefix)."""

    max_kw: NDArray[np.float64]
    k: NDArray[np.float64]
    inv_k: NDArray[np.float64]
    lo_final: NDArray[np.float64]
    stop_kw: NDArray[np.float64]  # r * (last_point + 1): the ramp-down bound is stop_kw - r*t
    hold_end: NDArray[np.float64]  # min(window, last_point) + 1: minutes left are hold_end - t


def _pass(
    p: DispatchProblem,
    order: NDArray[np.int64],
    lead_pos: NDArray[np.int64],
    cap: NDArray[np.float64],
) -> NDArray[np.float64]:
    """Setpoints, time-major: (points, as many rows of `order` as were ever touched)."""
    horizon, window, r = p.horizon, p.duration_min, p.ramp_kw_per_min
    m = order.size
    k, k_opp = p.k_dir[order], p.k_opp[order]
    last_point = p.last_point[order].astype(np.float64)
    rows = _Rows(
        max_kw=p.max_kw[order],
        k=k,
        inv_k=1.0 / k,
        lo_final=p.lo_final[order],
        stop_kw=r * (last_point + 1.0),
        hold_end=np.minimum(float(window), last_point) + 1.0,
    )
    lead_end = p.lead_end[order]
    q_prev = p.q0[order].copy()
    y_prev = p.y0[order].copy()
    lead_q0 = p.q0[order][lead_pos]
    active = _touched(q_prev)
    width = active
    # Written in place, one row per point, as wide as the rows worked on so far (grown by
    # doubling): a modest dispatch on a huge fleet does not reserve points x fleet.
    out = np.zeros((horizon + 1, min(m, max(active, FIRST_PREFIX))))
    out[0, :active] = q_prev[:active]
    for t in range(1, horizon + 1):
        leading = lead_pos[lead_end[lead_pos] >= t]
        lead_now = np.minimum(0.0, lead_q0[lead_end[lead_pos] >= t] + r * t)
        if leading.size:
            active = max(active, int(leading[-1]) + 1)
        if t > window:
            sl = slice(0, active)
            q_t = np.maximum(
                q_prev[sl] - r, 0.0
            )  # after the window: back to zero at the ramp limit
            q_t[leading] = lead_now
        else:
            size = max(active, min(m, FIRST_PREFIX))
            while True:
                sl = slice(0, size)
                q_t, done = _step(t, r, cap[t], q_prev[sl], y_prev[sl], rows, sl, leading, lead_now)
                if done or size >= m:
                    break
                size = min(m, size * 4)
        qp = q_prev[sl]
        avg = 0.5 * (qp + q_t)
        y_prev[sl] -= (
            np.where(avg >= 0, avg * k[sl], avg * k_opp[sl]) if lead_pos.size else avg * k[sl]
        )
        q_prev[sl] = q_t
        if q_t.size > out.shape[1]:
            wider = np.zeros((horizon + 1, min(m, max(q_t.size, 2 * out.shape[1]))))
            wider[:, : out.shape[1]] = out
            out = wider
        out[t, : q_t.size] = q_t
        active = _touched(q_t)
        width = max(width, active)
    return out[:, :width]


def _touched(q: NDArray[np.float64]) -> int:
    """One past the last non-zero setpoint (0 when all are zero)."""
    nz = q != 0
    return int(q.size - np.argmax(nz[::-1])) if nz.any() else 0


def _step(
    t: int,
    r: float,
    cap_t: float,
    q_prev: NDArray[np.float64],
    y_prev: NDArray[np.float64],
    rows: _Rows,
    sl: slice,
    leading: NDArray[np.int64],
    lead_now: NDArray[np.float64],
) -> tuple[NDArray[np.float64], bool]:
    """Setpoints of one point for a prefix of rows; `done` when the prefix could meet the cap."""
    lb = q_prev - r
    np.maximum(lb, 0.0, out=lb)
    ub = q_prev + r
    np.minimum(ub, rows.max_kw[sl], out=ub)
    # Ramp-down bound before the resource must stop; below zero it is lifted to lb further down.
    np.minimum(ub, rows.stop_kw[sl] - r * t, out=ub)
    # Highest q whose minute plus the quickest ramp back to zero (q-r, q-2r, ..., 0) fits in
    # what is left above the floor: that energy g(q) is piecewise linear in q and
    # g(j*r) = r*j*(j+1)/2, so it inverts exactly.
    budget = y_prev - rows.lo_final[sl]
    budget *= rows.inv_k[sl]
    budget -= 0.5 * np.maximum(q_prev, 0.0)
    np.maximum(budget, 0.0, out=budget)
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
    np.minimum(ub, q_energy, out=ub)
    np.maximum(ub, lb, out=ub)
    lb[leading] = 0.0
    ub[leading] = 0.0
    need = cap_t - float(lb.sum())
    done = True
    if need > 0:
        # First at most the rate each resource can hold until it must stop (window end or
        # departure) and still ramp down, so energy is not spent early that power will be
        # missing for later; only then beyond it, in priority order.
        minutes_left = rows.hold_end[sl] - t
        np.maximum(minutes_left, 1.0, out=minutes_left)
        sustain = budget * (2.0 / r)
        sustain += minutes_left * minutes_left
        np.sqrt(sustain, out=sustain)
        sustain -= minutes_left
        sustain *= r
        np.maximum(sustain, lb, out=sustain)
        np.minimum(sustain, ub, out=sustain)
        room1 = sustain - lb
        total1 = float(room1.sum())
        if total1 >= need:
            q_t = _fill(lb, room1, need)
        else:
            done = False
            q_t = _fill(sustain, ub - sustain, need - total1)
    else:
        q_t = lb
    q_t[leading] = lead_now
    return q_t, done


def _fill(base: NDArray[np.float64], room: NDArray[np.float64], need: float) -> NDArray[np.float64]:
    """`base` plus `room` taken in order until `need` is met."""
    before = np.cumsum(room)
    before -= room
    np.subtract(need, before, out=before)
    np.clip(before, 0.0, room, out=before)
    before += base
    return before
