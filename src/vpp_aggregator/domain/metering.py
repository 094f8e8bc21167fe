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


def energy_in(
    ts: NDArray[np.float64],
    power_kw: NDArray[np.float64],
    starts_s: NDArray[np.float64],
    ends_s: NDArray[np.float64],
    hold_s: float,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """kWh and covered seconds in each window [starts[i], ends[i]) (arrays of any one shape)
    from one resource's samples (epoch seconds, sorted)."""
    if ts.size == 0:
        return np.zeros(starts_s.shape), np.zeros(starts_s.shape)
    ones = np.ones_like(power_kw)
    energy = _cumulative(ts, power_kw, ends_s, hold_s) - _cumulative(ts, power_kw, starts_s, hold_s)
    covered = _cumulative(ts, ones, ends_s, hold_s) - _cumulative(ts, ones, starts_s, hold_s)
    return energy / 3600.0, covered


def interval_energy(
    ts: NDArray[np.float64],
    power_kw: NDArray[np.float64],
    edges_s: NDArray[np.float64],
    hold_s: float,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """kWh and covered seconds in each interval [edges[i], edges[i+1])."""
    return energy_in(ts, power_kw, edges_s[:-1], edges_s[1:], hold_s)
