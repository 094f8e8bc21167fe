"""Which past days a baseline may look at: day types, the NERC holiday calendar, event days.

ISO baselines compare an event day with "like days": weekdays with weekdays, weekends and
holidays with weekends and holidays (PJM keeps Saturdays apart from Sundays and holidays).
The holidays are NERC's six, not every public holiday: New Year's Day, Memorial Day,
Independence Day, Labor Day, Thanksgiving Day and Christmas Day; one that falls on a Sunday is
kept on the Monday after, one on a Saturday stays on the Saturday (NERC's "additional off-peak
days", now kept by NAESB WEQ). The dates themselves come from the `holidays` package.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from functools import cache, lru_cache
from zoneinfo import ZoneInfo

import holidays
import numpy as np
from numpy.typing import NDArray

NERC_HOLIDAY_NAMES = frozenset(
    {
        "New Year's Day",
        "Memorial Day",
        "Independence Day",
        "Labor Day",
        "Thanksgiving Day",
        "Christmas Day",
    }
)


class DayType(StrEnum):
    WEEKDAY = "weekday"
    WEEKEND_HOLIDAY = "weekend_holiday"  # CAISO: weekends and holidays together
    SATURDAY = "saturday"  # PJM: Saturdays apart ...
    SUNDAY_HOLIDAY = "sunday_holiday"  # ... from Sundays and holidays


@cache
def nerc_holidays(year: int) -> frozenset[date]:
    """The six NERC holidays of a year, a Sunday one moved to the Monday after."""
    us = holidays.country_holidays("US", years=year, observed=False)
    out = set()
    for day, name in us.items():
        if name in NERC_HOLIDAY_NAMES:
            out.add(day + timedelta(days=1) if day.weekday() == 6 else day)
    return frozenset(out)


def is_nerc_holiday(day: date) -> bool:
    return day in nerc_holidays(day.year)


def day_type(day: date, *, saturday_apart: bool) -> DayType:
    """A NERC holiday counts as a weekend day whatever day of the week it falls on."""
    if is_nerc_holiday(day) or day.weekday() == 6:
        return DayType.SUNDAY_HOLIDAY if saturday_apart else DayType.WEEKEND_HOLIDAY
    if day.weekday() == 5:
        return DayType.SATURDAY if saturday_apart else DayType.WEEKEND_HOLIDAY
    return DayType.WEEKDAY


def like_days(
    event_day: date,
    lookback_days: int,
    *,
    saturday_apart: bool,
    event_days: Iterable[date],
    with_data: Iterable[date],
) -> list[date]:
    """The days of the event day's type in the lookback before it, most recent first, leaving
    out other event days and days without measurements."""
    kind = day_type(event_day, saturday_apart=saturday_apart)
    excluded = set(event_days)
    measured = set(with_data)
    out = []
    for back in range(1, lookback_days + 1):
        d = event_day - timedelta(days=back)
        if (
            d in measured
            and d not in excluded
            and day_type(d, saturday_apart=saturday_apart) == kind
        ):
            out.append(d)
    return out


def local_slots(
    days: Sequence[date], tz: ZoneInfo, slot_minutes: int, last_pass: int = 0
) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """Each local day cut by the clock: the instant (epoch s) each interval of local time
    starts, and whether that local time exists. On the day clocks go forward the skipped hour's
    intervals do not exist; on the day they go back the repeated hour is one of its passes: the
    first, or for the last day (the event day) `last_pass` 1, the second. So interval k is the
    same time of day on every day, as day matching needs."""
    rows = [
        _day_slots(d, tz, slot_minutes, last_pass if i == len(days) - 1 else 0)
        for i, d in enumerate(days)
    ]
    return np.array([r[0] for r in rows]), np.array([r[1] for r in rows])


@lru_cache(maxsize=4096)
def _day_slots(
    day: date, tz: ZoneInfo, slot_minutes: int, fold: int = 0
) -> tuple[list[float], list[bool]]:
    starts, exists = [], []
    for k in range(24 * 60 // slot_minutes):
        wall = datetime.combine(day, time(*divmod(k * slot_minutes, 60), fold=fold), tz)
        starts.append(wall.timestamp())
        back = wall.astimezone(UTC).astimezone(tz)
        exists.append(back.replace(tzinfo=None) == wall.replace(tzinfo=None))
    return starts, exists
