"""Reference solver: the dispatch as one time-stepped linear programme, solved exactly by HiGHS.

Variables: the setpoint q[i,t] of every eligible resource i at every point t (dispatch
direction). Rows: ramp bands, the fleet cap at the target, and one energy row per resource.
Bounds carry power limits, departures and fixed leads.

One energy row is exact, not a relaxation: after its lead a resource only moves the level one
way, and every floor it must respect is at most the floor at the end of its hold (floors only
rise toward a departure), so "the level at the end of the hold is above that floor" implies
"above the floor at every point". The objective maximises energy
delivered inside the window; tiny costs break ties the way the fast allocator does (priority
order, sooner rather than later, least energy spent after the window), so both answer the same
question.
"""

from __future__ import annotations

import highspy
import numpy as np
from numpy.typing import NDArray

from vpp_aggregator.domain.dispatch.problem import DispatchProblem, Solution, empty_solution
from vpp_aggregator.domain.ramps import toward_zero_kw

INF = highspy.kHighsInf
TIE_BREAK = 1e-4
LONG_POINTS = 240  # dispatches longer than this many points are solved by primal simplex...
FEW_RESOURCES = 10  # ...and so are those of at most this many resources
PRIMAL_SIMPLEX = 4  # HiGHS's `simplex_strategy` for it


class LPError(RuntimeError):
    """HiGHS did not reach an optimum (time limit or an infeasible model)."""


def solve_lp(problem: DispatchProblem, time_limit_s: float = 30.0) -> Solution:
    p = problem
    H, T, r = p.horizon, p.duration_min, p.ramp_kw_per_min
    prio = p.priority()
    order = prio[p.eligible[prio]]
    m = order.size
    if m == 0:
        return empty_solution(p, "lp")
    P = H  # points 1..H are variables per resource
    nq = m * P

    # column of q[j, t] (t = 1..H)
    def qi(j: NDArray[np.int64], t: NDArray[np.int64]) -> NDArray[np.int64]:
        return j * P + (t - 1)

    grid_j, grid_t = np.meshgrid(np.arange(m), np.arange(1, H + 1), indexing="ij")
    jj, tt = grid_j.ravel(), grid_t.ravel()
    max_kw = p.max_kw[order]
    lead_end = p.lead_end[order]
    last_point = p.last_point[order]
    q0 = p.q0[order]
    k = p.k_dir[order]
    k_opp = p.k_opp[order]

    # Bounds of q.
    q_lo = np.zeros(nq)
    q_hi = np.repeat(max_kw, P)
    q_hi = np.where(tt > last_point[jj], 0.0, q_hi)
    q_hi = np.where(tt == H, 0.0, q_hi)
    # Power above the limit right now can only come down at the ramp rate.
    q_hi = np.maximum(q_hi, np.where(tt <= last_point[jj], q0[jj] - r * tt, 0.0))
    # Bounds the ramp rows imply anyway (up from the present power, down to zero at the end):
    # explicit, they spare the simplex many steps.
    q_hi = np.minimum(q_hi, np.maximum(q0[jj], 0.0) + r * tt)
    q_hi = np.minimum(q_hi, r * (np.minimum(last_point[jj], H) + 1 - tt))
    q_hi = np.maximum(q_hi, 0.0)
    fixed = tt <= lead_end[jj]
    lead = p.lead_rows(order[jj], tt)
    q_lo = np.where(fixed, lead, q_lo)
    q_hi = np.where(fixed, lead, q_hi)
    rows_i: list[NDArray[np.int64]] = []
    cols_i: list[NDArray[np.int64]] = []
    vals_i: list[NDArray[np.float64]] = []
    row_lo: list[NDArray[np.float64]] = []
    row_hi: list[NDArray[np.float64]] = []
    n_rows = 0

    def add(rows: NDArray[np.int64], cols: NDArray[np.int64], vals: NDArray[np.float64]) -> None:
        rows_i.append(rows)
        cols_i.append(cols)
        vals_i.append(vals)

    # Energy: sum over steps of kk*(q[t-1] + q[t])/2 <= y0 - lo_final, where a step inside a
    # lead moves the level with the opposite-direction efficiency. q[t] closes step t and opens
    # step t+1; q[0] is a constant.
    kk = np.where(tt <= lead_end[jj], k_opp[jj], k[jj])
    kk_next = np.where(tt < H, np.where(tt + 1 <= lead_end[jj], k_opp[jj], k[jj]), 0.0)
    add(n_rows + jj, qi(jj, tt), (kk + kk_next) / (2.0 * k[jj]))
    first_step = np.where(lead_end >= 1, k_opp, k)
    row_lo.append(np.full(m, -INF))
    row_hi.append((p.y0[order] - p.lo_final[order] - first_step * q0 / 2.0) / k)
    n_rows += m
    prev = tt > 1

    # Ramp: -r <= q[t] - q[t-1] <= r (q[0] constant folds into the bounds).
    base = n_rows + np.arange(nq)
    add(base, qi(jj, tt), np.ones(nq))
    add(base[prev], qi(jj[prev], tt[prev] - 1), -np.ones(int(prev.sum())))
    first = np.where(prev, 0.0, q0[jj])
    row_lo.append(first - r)
    row_hi.append(first + r)
    n_rows += nq

    # After the window a resource only ramps down.
    tail = (tt > T + 1) | ((tt == T + 1) & (T >= 1))
    tail &= (tt > 1) & (tt - 1 >= lead_end[jj])
    nt = int(tail.sum())
    base = n_rows + np.arange(nt)
    add(base, qi(jj[tail], tt[tail]), np.ones(nt))
    add(base, qi(jj[tail], tt[tail] - 1), -np.ones(nt))
    row_lo.append(np.full(nt, -INF))
    row_hi.append(np.zeros(nt))
    n_rows += nt

    # Fleet: sum_i q[i, t] <= target at every point of the window.
    inside = tt <= T
    add(n_rows + (tt[inside] - 1), qi(jj[inside], tt[inside]), np.ones(int(inside.sum())))
    row_lo.append(np.full(T, -INF))
    # Power already flowing beyond the target can only come down at the ramp rate.
    forced = np.maximum(
        toward_zero_kw(p.q0[order][:, None], r, np.arange(1, T + 1)[None, :]), 0.0
    ).sum(axis=0)
    row_hi.append(np.maximum(p.target_abs_kw, forced))
    n_rows += T

    # Objective (minimise): -delivered energy inside the window (trapezoid weights) plus tie-breaks.
    weight = np.where(tt < T, 1.0, np.where(tt == T, 0.5, 0.0))
    rank = np.arange(m, dtype=np.float64) / max(m, 1)
    # Sooner is slightly cheaper, so energy that cannot be held is delivered as one smooth
    # burst (ramp up, hold, ramp down) rather than whichever jumpy vertex HiGHS meets first.
    sooner = TIE_BREAK * tt / (H + 1)
    cost_q = -weight + TIE_BREAK * (1.0 + rank[jj]) + np.where(tt > T, TIE_BREAK, 0.0) + sooner
    cost = cost_q

    lp = highspy.HighsLp()
    lp.num_col_ = nq
    lp.num_row_ = n_rows
    lp.col_cost_ = cost
    lp.col_lower_ = q_lo
    lp.col_upper_ = q_hi
    lp.row_lower_ = np.concatenate(row_lo)
    lp.row_upper_ = np.concatenate(row_hi)
    rows = np.concatenate(rows_i)
    cols = np.concatenate(cols_i)
    vals = np.concatenate(vals_i)
    order_c = np.lexsort((rows, cols))
    rows, cols, vals = rows[order_c], cols[order_c], vals[order_c]
    start = np.searchsorted(cols, np.arange(nq + 1))
    lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    lp.a_matrix_.start_ = start.astype(np.int32)
    lp.a_matrix_.index_ = rows.astype(np.int32)
    lp.a_matrix_.value_ = vals
    h = highspy.Highs()  # type: ignore[no-untyped-call]
    h.setOptionValue("output_flag", False)
    h.setOptionValue("time_limit", float(time_limit_s))
    if P > LONG_POINTS or m <= FEW_RESOURCES:
        # A long dispatch (a replayed morning's award: 4 resources x 750 points) solved 3.5
        # times faster by primal simplex without presolve than by HiGHS's default, to the same
        # optimum, and a replayed week's hour-long re-plans of 3 to 10 resources 2 to 3 times;
        # an hour's dispatch of 20 to 200 resources was slower so (BENCHMARKS.md).
        h.setOptionValue("simplex_strategy", PRIMAL_SIMPLEX)
        h.setOptionValue("presolve", "off")
    h.passModel(lp)
    h.run()
    status = h.getModelStatus()
    if status != highspy.HighsModelStatus.kOptimal:
        raise LPError(f"HiGHS finished with {h.modelStatusToString(status)}")
    x = np.asarray(h.getSolution().col_value)[:nq].reshape(m, P)
    out = np.empty((m, H + 1))
    out[:, 0] = q0
    out[:, 1:] = x
    # Clean solver round-off so exact zeros stay zeros.
    out[np.abs(out) < 1e-7] = 0.0
    used = np.flatnonzero(np.abs(out).max(axis=1) > 0)
    return Solution(order[used], out[used], "lp")
