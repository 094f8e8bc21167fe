"""Features of a direct multi-horizon forecast: one row per (origin, horizon).

Everything a row sees is known at its origin: lags reach back at least to the hour before the
origin, and calendar, holidays and (given) weather belong to the target hour. That is what the
leakage test checks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from vpp_aggregator.domain.forecast.series import HourlySeries

WEEK = 168
FEATURES = (
    "horizon_h",
    "hour_local",
    "dow_local",
    "how_local",
    "holiday",
    "lag_week_holiday",
    "lag_week",
    "lag_2week",
    "mean_4week_same_hour",
    "recent_same_daytype_hour",
    "persistence_24",
    "last_hour",
    "mean_last_24",
    "mean_last_168",
    "trend_week",
    "temperature",
    "precipitation",
)


@dataclass(frozen=True, slots=True)
class Calendar:
    """Local-time facts per hour of the series (computed once, outside the maths)."""

    hour_local: NDArray[np.int64]
    dow_local: NDArray[np.int64]
    holiday: NDArray[np.bool_]


@dataclass(frozen=True, slots=True)
class Weather:
    """Hourly weather aligned with the series; NaN where unknown."""

    temperature: NDArray[np.float64]
    precipitation: NDArray[np.float64]


def design(
    series: HourlySeries,
    cal: Calendar,
    weather: Weather | None,
    origins: NDArray[np.int64],
    horizons: int,
) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """Feature matrix (len(origins)*horizons, len(FEATURES)) and the target hour of each row.

    `origins` are hour indexes of the first hour not yet known. Targets past the series end get
    index -1.
    """
    y = np.where(series.gap, np.nan, series.plugged)
    n = y.size
    o = np.repeat(origins, horizons)
    h = np.tile(np.arange(1, horizons + 1), origins.size)
    t = o + h - 1
    valid_t = t < n
    tc = np.minimum(t, n - 1)

    def at(idx: NDArray[np.int64]) -> NDArray[np.float64]:
        out = np.full(idx.shape, np.nan)
        ok = (idx >= 0) & (idx < n)
        out[ok] = y[idx[ok]]
        return out

    def window_mean(end: NDArray[np.int64], length: int) -> NDArray[np.float64]:
        # mean of y[end-length:end] ignoring gaps, via prefix sums
        filled = np.nan_to_num(y)
        csum = np.concatenate([[0.0], np.cumsum(filled)])
        cnt = np.concatenate([[0.0], np.cumsum(~np.isnan(y))])
        a = np.clip(end - length, 0, n)
        b = np.clip(end, 0, n)
        num = csum[b] - csum[a]
        den = cnt[b] - cnt[a]
        return np.where(den > 0, num / np.maximum(den, 1), np.nan)

    lag_week = at(tc - WEEK)
    lag_2week = at(tc - 2 * WEEK)
    same_hour = np.stack([at(tc - k * WEEK) for k in range(1, 5)])
    seen = (~np.isnan(same_hour)).sum(axis=0)
    mean_4w = np.where(seen > 0, np.nansum(same_hour, axis=0) / np.maximum(seen, 1), np.nan)
    recent = recent_same_daytype(y, cal, o, tc)
    persistence = at(tc - 24 * np.ceil(h / 24).astype(np.int64))
    last_hour = at(o - 1)
    m24 = window_mean(o, 24)
    m168 = window_mean(o, WEEK)
    m_prev = window_mean(o - WEEK, WEEK)
    with np.errstate(invalid="ignore", divide="ignore"):
        trend = np.where(m_prev > 0, m168 / m_prev, np.nan)
    lagged_hol = np.where(tc - WEEK >= 0, cal.holiday[np.maximum(tc - WEEK, 0)], False)
    temp = weather.temperature[tc] if weather is not None else np.full(tc.shape, np.nan)
    rain = weather.precipitation[tc] if weather is not None else np.full(tc.shape, np.nan)
    X = np.column_stack(
        [
            h,
            cal.hour_local[tc],
            cal.dow_local[tc],
            cal.dow_local[tc] * 24 + cal.hour_local[tc],
            cal.holiday[tc],
            lagged_hol,
            lag_week,
            lag_2week,
            mean_4w,
            recent,
            persistence,
            last_hour,
            m24,
            m168,
            trend,
            temp,
            rain,
        ]
    ).astype(np.float64)
    return X, np.where(valid_t, t, -1)


def recent_same_daytype(
    y: NDArray[np.float64],
    cal: Calendar,
    origin: NDArray[np.int64],
    target: NDArray[np.int64],
    days: int = 5,
    look_back_days: int = 21,
) -> NDArray[np.float64]:
    """Mean at the target's hour of day over the last `days` days before the origin of the same
    kind (working day, or weekend/holiday): more recent than a weekly lag, and five samples."""
    n = y.size
    off_day = (cal.dow_local >= 5) | cal.holiday
    kind = off_day[np.minimum(target, n - 1)]
    back = target[None, :] - 24 * np.arange(1, look_back_days + 1)[:, None]  # (days, rows)
    inside = (back >= 0) & (back < origin[None, :])
    safe = np.clip(back, 0, n - 1)
    value = np.where(inside, y[safe], np.nan)
    same = inside & (off_day[safe] == kind[None, :])
    usable = same & ~np.isnan(value)
    take = usable & (np.cumsum(usable, axis=0) <= days)
    count = take.sum(axis=0)
    total = np.where(take, value, 0.0).sum(axis=0)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def seasonal_naive_168(series: HourlySeries, targets: NDArray[np.int64]) -> NDArray[np.float64]:
    y = np.where(series.gap, np.nan, series.plugged)
    idx = targets - WEEK
    return np.where(idx >= 0, y[np.maximum(idx, 0)], np.nan)


def persistence_24(
    series: HourlySeries, origins: NDArray[np.int64], targets: NDArray[np.int64]
) -> NDArray[np.float64]:
    """The same hour on the last day before the origin."""
    y = np.where(series.gap, np.nan, series.plugged)
    h = targets - origins + 1
    idx = targets - 24 * np.ceil(h / 24).astype(np.int64)
    return np.where(idx >= 0, y[np.maximum(idx, 0)], np.nan)
