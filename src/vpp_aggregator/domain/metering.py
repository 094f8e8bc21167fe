"""Energy per interval from telemetry samples: the one sample-and-hold rule that settlement,
baselines and the aggregate telemetry all measure with.

Each sample's power holds until the next sample, for at most `hold_s`; time no sample covers
is unknown and counts as no energy (and is reported as uncovered)."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray


def _cumulative(
    ts: NDArray[np.float64], values: NDArray[np.float64], at: NDArray[np.float64], hold_s: float
) -> NDArray[np.float64]:
    """∫ held value dt from the first sample up to each instant of `at` (value-seconds)."""
    held_until = np.minimum(np.r_[ts[1:], np.inf], ts + hold_s)
    span = held_until - ts
    before = np.r_[0.0, np.cumsum(values * span)]  # up to the start of each sample
    k = np.searchsorted(ts, at, side="right") - 1  # the sample under way at each instant
    inside = np.clip(at - ts[np.maximum(k, 0)], 0.0, span[np.maximum(k, 0)])
    out = before[np.maximum(k, 0)] + values[np.maximum(k, 0)] * inside
    return np.where(k < 0, 0.0, out)


def interval_energy(
    ts: NDArray[np.float64],
    power_kw: NDArray[np.float64],
    edges_s: NDArray[np.float64],
    hold_s: float,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """kWh and covered seconds in each interval [edges[i], edges[i+1]) from one resource's
    samples (epoch seconds, sorted)."""
    n = max(0, edges_s.size - 1)
    if ts.size == 0 or n == 0:
        return np.zeros(n), np.zeros(n)
    energy = np.diff(_cumulative(ts, power_kw, edges_s, hold_s)) / 3600.0
    covered = np.diff(_cumulative(ts, np.ones_like(power_kw), edges_s, hold_s))
    return energy, covered
