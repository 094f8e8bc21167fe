"""Fast allocator: one vectorised pass over time, drawing on resources in priority order.

At each point every resource has a band it may move in: at most `ramp` up or down from its
last setpoint, within its power limit, zero by its departure, ramping down after the window,
and never so high that it could not ramp back to zero without crossing its floor (solved in
closed form). The fleet first takes every
lower bound (a ramp cannot stop instantly), then fills the gap to the fleet cap through the
priority order with one cumulative sum.

Resources still ramping out of opposite power (leads) pull the fleet below target for a few
minutes; others cover for them, but whoever covers must be able to ramp back down as the leads
end. When a pass overshoots for that reason the cap before the overshoot is lowered and the pass
repeated (at most a few times, and only when there are leads).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from vpp_aggregator.domain.dispatch.problem import DispatchProblem, Solution

MAX_PASSES = 20


def solve_fast(problem: DispatchProblem) -> Solution:
    p = problem
    q = np.zeros((p.n, p.horizon + 1), dtype=np.float64)
    prio = p.priority()
    order = prio[p.eligible[prio]]
    if order.size == 0:
        return Solution(q, "fast")
    window = p.duration_min
    lead_q = p.lead_q[order]
    lead_total = lead_q.sum(axis=0)
    cap = p.target_abs_kw - lead_total  # what the rest may give so the fleet meets the target
    out = _pass(p, order, cap)
    if (p.lead_end[order] > 0).any():
        for _ in range(MAX_PASSES):
            fleet = out[:, : window + 1].sum(axis=0)
            forced = np.maximum(
                p.q0[order][:, None] - p.ramp_kw_per_min * np.arange(window + 1), 0.0
            ).sum(axis=0)
            over = fleet - np.maximum(p.target_abs_kw, forced)
            over[0] = 0.0
            bad = np.flatnonzero(over > 1e-9)
            if bad.size == 0:
                break
            for t in bad.tolist():
                lo_t = 1
                cap[lo_t:t] = np.maximum(
                    cap[lo_t:t] - over[t], p.target_abs_kw + lead_total[lo_t:t]
                )
            out = _pass(p, order, cap)
    q[order] = out
    return Solution(q, "fast")


def _pass(
    p: DispatchProblem, order: NDArray[np.int64], cap: NDArray[np.float64]
) -> NDArray[np.float64]:
    horizon, window, r = p.horizon, p.duration_min, p.ramp_kw_per_min
    m = order.size
    max_kw = p.max_kw[order]
    k, k_opp = p.k_dir[order], p.k_opp[order]
    lead_q = p.lead_q[order]
    lead_end = p.lead_end[order]
    last_point = p.last_point[order]
    lo_final = p.lo_final[order]
    q_prev = np.where(lead_end > 0, lead_q[:, 0], p.q0[order])
    y_prev = p.y0[order].copy()
    out = np.empty((m, horizon + 1), dtype=np.float64)
    out[:, 0] = q_prev
    any_lead = bool((lead_end > 0).any())
    for t in range(1, horizon + 1):
        lb = np.maximum(q_prev - r, 0.0)
        if t > window:
            q_t = lb  # after the window: back to zero at the ramp limit
            if any_lead:
                q_t = np.where(t <= lead_end, lead_q[:, t], q_t)
        else:
            ub = np.minimum(np.minimum(max_kw, q_prev + r), r * np.maximum(last_point - t + 1, 0))
            # Highest q whose minute plus the quickest ramp back to zero (q-r, q-2r, ..., 0) fits
            # in what is left above the floor: that energy g(q) is piecewise linear in q and
            # g(j*r) = r*j*(j+1)/2, so it inverts exactly.
            budget = np.maximum((y_prev - lo_final) / k - 0.5 * np.maximum(q_prev, 0.0), 0.0)
            j = np.floor((np.sqrt(1.0 + 8.0 * budget / r) - 1.0) / 2.0)
            q_energy = (budget + 0.5 * r * j * (j + 1.0)) / (j + 1.0) * (1.0 - 1e-12)
            ub = np.maximum(np.minimum(ub, q_energy), lb)
            if any_lead:
                in_lead = t <= lead_end
                lb = np.where(in_lead, 0.0, lb)
                ub = np.where(in_lead, 0.0, ub)
            need = cap[t] - lb.sum()
            if need > 0:
                # First at most the rate each resource can hold until it must stop (window end or
                # departure) and still ramp down, so energy is not spent early that power will be
                # missing for later; only then beyond it, in priority order.
                minutes_left = np.maximum(np.minimum(window, last_point) - t + 1, 1)
                # s held for the minutes left plus the ramp back to zero (s²/2r) within budget:
                hold = r * (np.sqrt(minutes_left * minutes_left + 2.0 * budget / r) - minutes_left)
                sustain = np.clip(hold, lb, ub)
                room1 = sustain - lb
                total1 = room1.sum()
                if total1 >= need:
                    before = np.cumsum(room1) - room1
                    q_t = lb + np.clip(need - before, 0.0, room1)
                else:
                    room2 = ub - sustain
                    before = np.cumsum(room2) - room2
                    q_t = sustain + np.clip(need - total1 - before, 0.0, room2)
            else:
                q_t = lb
            if any_lead:
                q_t = np.where(t <= lead_end, lead_q[:, t], q_t)
        avg = 0.5 * (q_prev + q_t)
        y_prev = y_prev - (np.where(avg >= 0, avg * k, avg * k_opp) if any_lead else avg * k)
        out[:, t] = q_t
        q_prev = q_t
    return out
