"""Fast allocator: one vectorised pass over time, drawing on resources in priority order.

At each point every resource has a band it may move in: at most `ramp` up or down from its
last setpoint, within its power limit, zero by its departure, ramping down after the window,
and never so high that it could not ramp back to zero without crossing its floor (solved in
closed form: the ramp-down energy is quadratic in the setpoint). The fleet first takes every
lower bound (a ramp cannot stop instantly), then fills the gap to the target through the
priority order with one cumulative sum.
"""

from __future__ import annotations

import numpy as np

from vpp_aggregator.domain.dispatch.problem import DispatchProblem, Solution


def solve_fast(problem: DispatchProblem) -> Solution:
    p = problem
    horizon, window, r = p.horizon, p.duration_min, p.ramp_kw_per_min
    q = np.zeros((p.n, horizon + 1), dtype=np.float64)
    prio = p.priority()
    order = prio[p.eligible[prio]]
    m = order.size
    if m == 0:
        return Solution(q, "fast")
    max_kw = p.max_kw[order]
    k, k_opp = p.k_dir[order], p.k_opp[order]
    lead_q = p.lead_q[order]
    lead_end = p.lead_end[order]
    last_point = p.last_point[order]
    lo_final = p.lo_final[order]
    a = k / (2.0 * r)
    b = k / 2.0
    reserve = k * r / 8.0  # a ramp-down in whole minutes uses up to r/8 kW·min more than q²/2r
    q_prev = np.where(lead_end > 0, lead_q[:, 0], p.q0[order])
    y_prev = p.y0[order].copy()
    out = np.empty((m, horizon + 1), dtype=np.float64)
    out[:, 0] = q_prev
    target = p.target_abs_kw
    any_lead = bool((lead_end > 0).any())
    for t in range(1, horizon + 1):
        lb = np.maximum(q_prev - r, 0.0)
        if t > window:
            q_t = lb  # after the window: back to zero at the ramp limit
        else:
            ub = np.minimum(np.minimum(max_kw, q_prev + r), r * np.maximum(last_point - t + 1, 0))
            c = y_prev - b * np.maximum(q_prev, 0.0) - lo_final - reserve
            q_energy = (-b + np.sqrt(b * b + 4.0 * a * np.maximum(c, 0.0))) / (2.0 * a)
            ub = np.maximum(np.minimum(ub, q_energy), lb)
            if any_lead:
                in_lead = t <= lead_end
                lb = np.where(in_lead, lead_q[:, t], lb)
                ub = np.where(in_lead, lead_q[:, t], ub)
            need = target - lb.sum()
            if need > 0:
                room = ub - lb
                before = np.cumsum(room) - room
                q_t = lb + np.clip(need - before, 0.0, room)
            else:
                q_t = lb
        avg = 0.5 * (q_prev + q_t)
        y_prev = y_prev - (np.where(avg >= 0, avg * k, avg * k_opp) if any_lead else avg * k)
        out[:, t] = q_t
        q_prev = q_t
    q[order] = out
    return Solution(q, "fast")
