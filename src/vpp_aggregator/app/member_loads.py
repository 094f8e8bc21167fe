"""An aggregation's members' loads as settlement measures them: per member, per day, per
5-minute interval, in arrays (one row a member), and a day's intervals taken from the stored
series of a day gone from the raw history."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import numpy as np
from numpy.typing import NDArray


@dataclass(frozen=True, slots=True)
class MemberLoads:
    """Per resource (a row of each array, `row` gives it), net consumption (kW) in each local
    interval of each day (NaN where the clock skipped the interval), the seconds its samples
    covered each day, and how they covered each interval of the event day (the last)."""

    days: list[date]
    row: dict[str, int]
    kw: NDArray[np.float64]  # (resources, days, intervals)
    covered_s: NDArray[np.float64]  # (resources, days)
    covered_today: NDArray[np.float64]  # (resources, intervals)
    valid_s: NDArray[np.float64]  # seconds of existing intervals per day

    def rows(self, ids: list[str]) -> list[int]:
        return [self.row[r] for r in ids]

    def summed(self, ids: list[str]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """The resources' load added up, and their share of each day's time covered."""
        rows = self.rows(ids)
        kw = self.kw[rows].sum(axis=0)
        cover = self.covered_s[rows].sum(axis=0)
        return kw, cover / (len(rows) * np.maximum(self.valid_s, 1.0))

    def each(self, ids: list[str]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Each resource's load on its own (resources, days, intervals), and its share of each
        day's time covered (resources, days)."""
        rows = self.rows(ids)
        return self.kw[rows], self.covered_s[rows] / np.maximum(self.valid_s, 1.0)


def from_series(
    series: tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]],
    starts: NDArray[np.float64],
    before_s: float,
    kwh: NDArray[np.float64],
    covered: NDArray[np.float64],
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """The intervals starting before `before_s` taken from a stored series (no energy and
    nothing covered where it has no interval)."""
    at, s_kwh, s_cov = series
    k = np.clip(np.searchsorted(at, starts), 0, max(at.size - 1, 0))
    found = (at[k] == starts) if at.size else np.zeros(starts.shape, bool)
    old = starts < before_s
    return (
        np.where(old, np.where(found, s_kwh[k], 0.0), kwh),
        np.where(old, np.where(found, s_cov[k], 0.0), covered),
    )
