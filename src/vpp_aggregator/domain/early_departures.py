"""Drivers who unplug well before the departure they gave, remembered per vehicle over its last
stays.

A departure floor keeps what a driver needs for the moment they said they would leave; one who
leaves hours earlier takes what the vehicle held then. Replayed on real sessions, every missed
departure was such a driver, and many of them had left early before. So the dispatch draws on a
vehicle whose driver often leaves early only after those whose drivers keep to their word
(`DispatchProblem.priority`), and a vehicle keeps its next trip's whole need as its floor
(`floors.early_leaver_floor_pct`): by default every vehicle, since a driver's first early leave
cannot be foreseen; an operator may keep it to drivers seen leaving early
(`VPP_NEED_FLOOR_EARLY_LEAVES`). Learnt from the fleet's own telemetry: the
moment a vehicle is seen unplugged, against the departure it was plugged in for.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

EARLY_S = 3600.0  # unplugged more than an hour before the stated departure: left early
STAYS_REMEMBERED = 10  # one bit per stay, newest lowest
# From this many early leaves a vehicle keeps its next trip's need (0: every vehicle, from its
# first stay: drivers first). Replayed, 2 still missed first-time early leavers (Caltech's year:
# 16 of 7,187), and with the offers keeping back what arriving vehicles draw beyond the baseline
# (`domain/makeup`), drivers first also sold more (docs/replay.md).
EARLY_FLOOR_FROM = 0
MAX_COUNTED = 5  # five early leaves in ten stays and more rank alike (half the time or worse)
_MASK = (1 << STAYS_REMEMBERED) - 1


def remember(bits: NDArray[np.uint16], left_early: NDArray[np.bool_]) -> NDArray[np.uint16]:
    """The record after one more stay ended: early (1) or not (0); the oldest stay drops out."""
    return ((bits.astype(np.uint32) << 1 | left_early) & _MASK).astype(np.uint16)


def left_early(
    departure_ts: NDArray[np.float64], unplugged_ts: NDArray[np.float64]
) -> NDArray[np.bool_]:
    """Whether each stay ended more than `EARLY_S` before its stated departure."""
    return np.asarray(departure_ts - unplugged_ts > EARLY_S)


def early_count(bits: NDArray[np.uint16]) -> NDArray[np.int64]:
    """How many of the remembered stays ended early, counted up to `MAX_COUNTED`."""
    return np.minimum(np.bitwise_count(bits), MAX_COUNTED).astype(np.int64)
