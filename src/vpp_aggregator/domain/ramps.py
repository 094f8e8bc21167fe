"""The ramp rule, in one place: power changes by at most the ramp limit per minute, so power that
has to stop (a release, a cancel, a vehicle charging against a discharge, power above a new
limit) comes down linearly to zero at that limit and no faster. Both solvers' fixed leads and
forced bounds, and the ramp-downs the service publishes, are this profile."""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike, NDArray

F8 = NDArray[np.float64]


def toward_zero_kw(kw_now: ArrayLike, ramp_kw_per_min: float, minutes: ArrayLike) -> F8:
    """Signed power `minutes` after starting to ramp from `kw_now` to zero at the limit
    (broadcasts: a fleet now against a grid of minutes)."""
    kw = np.asarray(kw_now, dtype=np.float64)
    left = np.maximum(np.abs(kw) - ramp_kw_per_min * np.asarray(minutes, dtype=np.float64), 0.0)
    return np.asarray(np.sign(kw) * left + 0.0)


def ramp_down_kw(kw_now: float, ramp_kw_per_min: float) -> F8:
    """One point per minute from `kw_now` until zero, at the ramp limit."""
    steps = math.ceil(abs(kw_now) / ramp_kw_per_min)
    return toward_zero_kw(kw_now, ramp_kw_per_min, np.arange(steps + 1))
