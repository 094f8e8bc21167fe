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

import numpy as np
from numpy.typing import NDArray

from vpp_aggregator.domain.dispatch.problem import DispatchProblem, Solution, empty_solution

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
        for _ in range(MAX_PASSES):
            over = out[: window + 1].sum(axis=1) - p.target_abs_kw
            over[0] = 0.0
            late = np.flatnonzero(over > 1e-9)
            if late.size == 0:
                break
            # Power already flowing above the target may only come down at the ramp rate.
            pushing = p.q0[order][p.q0[order] > 0]
            forced = np.maximum(pushing[:, None] - r * late[None, :], 0.0).sum(axis=0)
            over_t = over[late] - np.maximum(forced - p.target_abs_kw, 0.0)
            late, over_t = late[over_t > 1e-9], over_t[over_t > 1e-9]
            if late.size == 0:
                break
            for t, amount in zip(late.tolist(), over_t.tolist(), strict=True):
                cap[1:t] = np.maximum(cap[1:t] - amount, p.target_abs_kw + lead_total[1:t])
            out = _pass(p, order, lead_pos, cap)
    used = np.flatnonzero(np.abs(out).max(axis=0) > 0)
    q = out.T if used.size == out.shape[1] else out[:, used].T
    return Solution(order[used], q, "fast")


def _pass(
    p: DispatchProblem,
    order: NDArray[np.int64],
    lead_pos: NDArray[np.int64],
    cap: NDArray[np.float64],
) -> NDArray[np.float64]:
    """Setpoints, time-major: (points, as many rows of `order` as were ever touched)."""
    horizon, window, r = p.horizon, p.duration_min, p.ramp_kw_per_min
    m = order.size
    max_kw = p.max_kw[order]
    k, k_opp = p.k_dir[order], p.k_opp[order]
    lead_end = p.lead_end[order]
    last_point = p.last_point[order]
    lo_final = p.lo_final[order]
    q_prev = p.q0[order].copy()
    y_prev = p.y0[order].copy()
    lead_q0 = p.q0[order][lead_pos]
    moving = np.flatnonzero(q_prev != 0)
    active = int(moving[-1]) + 1 if moving.size else 0
    steps: list[NDArray[np.float64]] = [q_prev.copy()]
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
                q_t, done = _step(
                    t,
                    window,
                    r,
                    cap[t],
                    q_prev[sl],
                    y_prev[sl],
                    max_kw[sl],
                    k[sl],
                    last_point[sl],
                    lo_final[sl],
                    leading,
                    lead_now,
                )
                if done or size >= m:
                    break
                size = min(m, size * 4)
        qp = q_prev[sl]
        avg = 0.5 * (qp + q_t)
        y_prev[sl] -= (
            np.where(avg >= 0, avg * k[sl], avg * k_opp[sl])
            if leading.size or lead_pos.size
            else avg * k[sl]
        )
        q_prev[sl] = q_t
        steps.append(q_t)
        nz = np.flatnonzero(q_t)
        active = int(nz[-1]) + 1 if nz.size else 0
    width = max(int(np.flatnonzero(s)[-1]) + 1 if np.any(s) else 0 for s in steps)
    out = np.zeros((horizon + 1, width))
    for t, s in enumerate(steps):
        n = min(s.size, width)
        out[t, :n] = s[:n]
    return out


def _step(
    t: int,
    window: int,
    r: float,
    cap_t: float,
    q_prev: NDArray[np.float64],
    y_prev: NDArray[np.float64],
    max_kw: NDArray[np.float64],
    k: NDArray[np.float64],
    last_point: NDArray[np.int64],
    lo_final: NDArray[np.float64],
    leading: NDArray[np.int64],
    lead_now: NDArray[np.float64],
) -> tuple[NDArray[np.float64], bool]:
    """Setpoints of one point for a prefix of rows; `done` when the prefix could meet the cap."""
    lb = np.maximum(q_prev - r, 0.0)
    ub = np.minimum(np.minimum(max_kw, q_prev + r), r * np.maximum(last_point - t + 1, 0))
    # Highest q whose minute plus the quickest ramp back to zero (q-r, q-2r, ..., 0) fits in
    # what is left above the floor: that energy g(q) is piecewise linear in q and
    # g(j*r) = r*j*(j+1)/2, so it inverts exactly.
    budget = np.maximum((y_prev - lo_final) / k - 0.5 * np.maximum(q_prev, 0.0), 0.0)
    j = np.floor((np.sqrt(1.0 + 8.0 * budget / r) - 1.0) / 2.0)
    q_energy = (budget + 0.5 * r * j * (j + 1.0)) / (j + 1.0) * (1.0 - 1e-12)
    ub = np.maximum(np.minimum(ub, q_energy), lb)
    lb[leading] = 0.0
    ub[leading] = 0.0
    need = cap_t - lb.sum()
    done = True
    if need > 0:
        # First at most the rate each resource can hold until it must stop (window end or
        # departure) and still ramp down, so energy is not spent early that power will be
        # missing for later; only then beyond it, in priority order.
        minutes_left = np.maximum(np.minimum(window, last_point) - t + 1, 1)
        hold = r * (np.sqrt(minutes_left * minutes_left + 2.0 * budget / r) - minutes_left)
        sustain = np.clip(hold, lb, ub)
        room1 = sustain - lb
        total1 = float(room1.sum())
        if total1 >= need:
            before = np.cumsum(room1) - room1
            q_t = lb + np.clip(need - before, 0.0, room1)
        else:
            done = False
            room2 = ub - sustain
            before = np.cumsum(room2) - room2
            q_t = sustain + np.clip(need - total1 - before, 0.0, room2)
    else:
        q_t = lb
    q_t[leading] = lead_now
    return q_t, done
