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


def minutes_to_move(energy_kwh: float, max_kw: float, ramp_kw_per_min: float) -> float:
    """Minutes of a window in which one resource, starting at zero, moves `energy_kwh` at no
    more than `max_kw`, ramping up at the limit (its ramp back down comes after the window).
    A window sized at full power from the first minute leaves a ramp-limited resource short:
    a battery recharging at 250 kW needs 25 minutes to reach it at 10 kW/min."""
    if energy_kwh <= 0:
        return 0.0
    kwmin = energy_kwh * 60.0
    ramp_kwmin = max_kw * max_kw / (2.0 * ramp_kw_per_min)  # moved while ramping up
    if kwmin <= ramp_kwmin:  # it never reaches full power
        return math.sqrt(2.0 * kwmin / ramp_kw_per_min)
    return max_kw / ramp_kw_per_min + (kwmin - ramp_kwmin) / max_kw
