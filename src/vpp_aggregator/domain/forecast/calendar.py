"""Local time of the fleet's hours: hour of day, day of week, public holidays, hour of week.

The forecast's features and the seasonal profile both read local time; it is worked out here once
(holidays from the `holidays` package, offsets from the IANA zone, DST switches included).
"""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache
from zoneinfo import ZoneInfo

import holidays
import numpy as np
from numpy.typing import NDArray

from vpp_aggregator.domain.forecast.features import Calendar
from vpp_aggregator.domain.forecast.series import HourlySeries


def local_calendar(
    series: HourlySeries, timezone: str, country: str = "US", subdivision: str | None = "CA"
) -> Calendar:
    zone = ZoneInfo(timezone)
    ts = series.hours_ts
    local = [datetime.fromtimestamp(float(t), zone) for t in ts]
    years = sorted({d.year for d in local})
    days = holidays.country_holidays(country, subdiv=subdivision, years=years)
    return Calendar(
        hour_local=np.array([d.hour for d in local], dtype=np.int64),
        dow_local=np.array([d.weekday() for d in local], dtype=np.int64),
        holiday=np.array([d.date() in days for d in local], dtype=np.bool_),
    )


def extended_calendar(
    series: HourlySeries, extra_hours: int, timezone: str, country: str, subdivision: str | None
) -> Calendar:
    """The calendar of a series and the `extra_hours` after it (a forecast's horizon)."""
    size = len(series) + extra_hours
    ext = HourlySeries(series.start_ts, np.zeros(size), np.zeros(size), np.zeros(size, dtype=bool))
    return local_calendar(ext, timezone, country, subdivision)


def hour_of_week(ts: NDArray[np.float64], zone: ZoneInfo) -> NDArray[np.int64]:
    """Local hour of week (Monday 00:00 = 0) for epoch seconds, using each instant's UTC offset."""
    if ts.size == 0:
        return np.zeros(0, dtype=np.int64)
    # Offsets change only at DST switches: look them up once per hour.
    hours = np.floor(ts / 3600.0).astype(np.int64)
    uniq, inv = np.unique(hours, return_inverse=True)
    offs = np.array([_hour_offset_s(zone, h) for h in uniq.tolist()])
    local = ts + offs[inv]
    days = np.floor(local / 86_400).astype(np.int64)
    dow = (days + 3) % 7  # 1970-01-01 was a Thursday
    return np.asarray(dow * 24 + np.floor((local % 86_400) / 3600).astype(np.int64), dtype=np.int64)


@lru_cache(maxsize=1 << 16)
def _hour_offset_s(zone: ZoneInfo, hour: int) -> float:
    """Each forecast asks again for the weeks of hours the one before asked for."""
    return offset_s(zone, hour * 3600)


def offset_s(zone: ZoneInfo, epoch_s: int) -> float:
    offset = datetime.fromtimestamp(epoch_s, zone).utcoffset()
    return offset.total_seconds() if offset is not None else 0.0
