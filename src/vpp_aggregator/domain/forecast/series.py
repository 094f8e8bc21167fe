"""Hourly plugged-in vehicles from charging sessions, with gaps in the data marked, not zeroed."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from vpp_aggregator.domain.forecast.history import FULL

HOUR = 3600.0


@dataclass(frozen=True, slots=True)
class HourlySeries:
    """One value per UTC hour from `start_ts` on; `gap` hours are unknown (no data), not zero."""

    start_ts: float  # epoch seconds of the first hour (a whole UTC hour)
    plugged: NDArray[np.float64]  # time-weighted mean number of vehicles connected in the hour
    arrivals: NDArray[np.float64]
    gap: NDArray[np.bool_]

    def __len__(self) -> int:
        return int(self.plugged.size)

    @property
    def hours_ts(self) -> NDArray[np.float64]:
        return np.asarray(self.start_ts + HOUR * np.arange(self.plugged.size), dtype=np.float64)


def hourly_from_sessions(
    connect_ts: NDArray[np.float64],
    disconnect_ts: NDArray[np.float64],
    utc_offset_hours: NDArray[np.float64] | None = None,
) -> HourlySeries:
    """Time-weighted occupancy per hour (vectorised: per-session first/last partial hours plus a
    difference array for the whole hours in between)."""
    ok = np.isfinite(connect_ts) & np.isfinite(disconnect_ts) & (disconnect_ts > connect_ts)
    s, e = connect_ts[ok], disconnect_ts[ok]
    h0 = np.floor(s.min() / HOUR) * HOUR
    n = int(np.ceil((e.max() - h0) / HOUR)) + 1
    ia = ((s - h0) // HOUR).astype(np.int64)
    ib = ((e - h0) // HOUR).astype(np.int64)
    occ = np.zeros(n + 1)
    same = ia == ib
    np.add.at(occ, ia[same], (e[same] - s[same]) / HOUR)
    d = ~same
    np.add.at(occ, ia[d], (h0 + (ia[d] + 1) * HOUR - s[d]) / HOUR)  # first partial hour
    np.add.at(occ, ib[d], (e[d] - (h0 + ib[d] * HOUR)) / HOUR)  # last partial hour
    full = np.zeros(n + 2)
    np.add.at(full, ia[d] + 1, 1.0)
    np.add.at(full, ib[d], -1.0)
    occ[:n] += np.cumsum(full)[:n] * (1.0)
    # whole hours strictly between first and last: cumsum counts from ia+1 up to ib-1
    occ = occ[:n]
    arrivals = np.bincount(ia, minlength=n).astype(np.float64)[:n]
    return HourlySeries(float(h0), occ, arrivals, find_gaps(arrivals, float(h0), utc_offset_hours))


def find_gaps(
    arrivals: NDArray[np.float64],
    start_ts: float,
    utc_offset_hours: NDArray[np.float64] | None = None,
    min_typical: float = 2.0,
) -> NDArray[np.bool_]:
    """Days with no arrival at all while the site normally sees several a day are missing data
    (an outage or an export cut), so their hours are marked as gaps rather than taught as zero."""
    n = arrivals.size
    offset = 0.0 if utc_offset_hours is None else float(np.median(utc_offset_hours))
    local_day = ((start_ts + HOUR * np.arange(n) + offset * HOUR) // 86_400).astype(np.int64)
    days, inverse = np.unique(local_day, return_inverse=True)
    per_day = np.bincount(inverse, weights=arrivals, minlength=days.size)
    # What a normal day looks like around it: the median of the days that did see arrivals, so
    # a long outage does not make "nothing" look normal.
    busy = per_day > 0
    typical = np.zeros(days.size)
    for i in range(days.size):
        window = per_day[max(0, i - 60) : i + 61][busy[max(0, i - 60) : i + 61]]
        typical[i] = float(np.median(window)) if window.size else 0.0
    empty_day = (per_day == 0) & (typical >= min_typical)
    gap = empty_day[inverse]
    return np.asarray(gap, dtype=np.bool_)


def totals_series(
    start_hour: int, reported: NDArray[np.int64], plugged_full: NDArray[np.int64]
) -> HourlySeries | None:
    """Hourly plugged-in vehicles of the fleet, from per-hour totals over its vehicles (added up
    part by part): how many reported each hour, and their shares plugged in summed, in FULL
    units. From the first hour any vehicle reported; hours none did are gaps (None when none
    ever did)."""
    seen = reported > 0
    if not seen.any():
        return None
    first = int(np.argmax(seen))
    plugged = np.asarray(plugged_full[first:] / FULL, dtype=np.float64)
    gap = np.asarray(np.logical_not(seen)[first:], dtype=np.bool_)
    return HourlySeries(float((start_hour + first) * 3600), plugged, np.zeros(plugged.size), gap)
