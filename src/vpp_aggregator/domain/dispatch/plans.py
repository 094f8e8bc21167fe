"""Which plan the fast allocator keeps when the hold plan falls short: a small search.

Two knobs, each a family of whole passes (see fast.py), the best inside the window kept:

- shift: the planned ramp-downs end `shift` points after the window's end (None: the hold
  plan). Late enough, every battery still holds a little power at the end, so the fleet holds
  the target longer for a little energy spent after the window, spread over all of them.
- landing: the fleet's cap approaches the target at `slope` ramp limits, meeting it `delay` points
  after the hold plan first reached it. Rushing to the target makes batteries ramp far beyond
  their plan while the fleet is short; once it is met they can only ramp back down slowly, and
  the cap then pushes off vehicles that have energy to spare, which they never get back.

Neither is unimodal, but close: coarse grids first, then around the best (up to 29 passes).
The search is bounded by work (rows times points of the hold plan): all of it on a small fleet,
where one battery's choice weighs (30 resources: room for over 50 passes), a pass or two on
1,000 resources over 240 min, only the shift-0 plan on 100k. On big fleets the greedy pass is
already close: the whole search gained nothing there and took 10x the time.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numpy.typing import NDArray

F8 = NDArray[np.float64]
Plan = tuple[F8, NDArray[np.bool_]]
Key = tuple[int | None, int, int]  # shift, landing slope (in ramp limits), landing delay

SEARCH_ROW_POINTS = 300_000  # work of all extra passes together, at least one pass
SHIFT_GRID = (0, 2, 4, 7, 11, 16, 24)
SHIFT_REFINE = 3  # rounds halving the gaps around the best shift
# (slope in ramp limits, delay in points): a gentle landing a few points late
LANDINGS = ((1, 1), (1, 2), (1, 3), (1, 4), (1, 6), (2, 2), (2, 3), (2, 4), (3, 3), (3, 4))


def best_plan(
    run: Callable[[int | None, F8], Plan],
    score: Callable[[Plan], float],
    hold: Plan,
    cap: F8,
    reach: int,
    top_shift: int,
    ramp_kw_per_min: float,
) -> Plan:
    """The plan delivering most among `hold` and the searched ones; `run(shift, cap)` makes a
    plan, `reach` is the point where `hold` first met the target."""
    passes = max(1, SEARCH_ROW_POINTS // max(hold[0].size, 1))
    best, best_score = hold, score(hold)
    found: dict[Key, float] = {(None, 0, 0): best_score}
    points = np.arange(cap.size)

    def tried(shift: int | None, slope: int, delay: int) -> None:
        nonlocal best, best_score
        key = (shift, slope, delay)
        if len(found) > passes or key in found:
            return
        if shift is not None and not 0 <= shift <= top_shift:
            return
        landed = cap - np.maximum(slope * ramp_kw_per_min * (reach + delay - points), 0.0)
        plan = run(shift, landed)
        found[key] = score(plan)
        if found[key] > best_score:
            best, best_score = plan, found[key]

    for shift in (*SHIFT_GRID, top_shift):
        tried(shift, 0, 0)
    for _ in range(SHIFT_REFINE):
        shifts = sorted(k[0] for k in found if k[0] is not None)
        at = shifts.index(_best_key(found)[0] or 0)
        low, high = shifts[max(at - 1, 0)], shifts[min(at + 1, len(shifts) - 1)]
        if high - low <= 2:
            break
        tried((low + shifts[at]) // 2, 0, 0)
        tried((shifts[at] + high + 1) // 2, 0, 0)
    base = _best_key(found)[0]
    for slope, delay in LANDINGS:
        tried(base, slope, delay)
    _, slope, delay = _best_key(found)
    if slope and base is not None:
        for near in (-2, -1, 1, 2):
            tried(base + near, slope, delay)
    return best


def _best_key(found: dict[Key, float]) -> Key:
    return max(found, key=found.__getitem__)
