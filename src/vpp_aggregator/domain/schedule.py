"""When does a vehicle next leave, and with how much charge? Driver routines and one-off trips."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from vpp_aggregator.domain.resources import WEEKDAYS, RecurringDeparture, Trip


@dataclass(frozen=True, slots=True)
class Departure:
    at: datetime
    required_soc_pct: float


def _local_departures(
    entry: RecurringDeparture, after: datetime, days_ahead: int
) -> list[datetime]:
    zone = ZoneInfo(entry.timezone)
    hour, minute = (int(p) for p in entry.departure.split(":"))
    start: date = after.astimezone(zone).date() - timedelta(days=1)
    wanted = {WEEKDAYS.index(d) for d in entry.days}
    out = []
    for offset in range(days_ahead + 2):
        day = start + timedelta(days=offset)
        if day.weekday() in wanted:
            out.append(datetime.combine(day, time(hour, minute), tzinfo=zone))
    return out


def next_departure(
    schedule: tuple[RecurringDeparture, ...], trips: tuple[Trip, ...], after: datetime
) -> Departure | None:
    """The earliest departure strictly after `after`; when two coincide the higher SoC need wins."""
    candidates: list[Departure] = []
    for entry in schedule:
        for local in _local_departures(entry, after, days_ahead=7):
            if local > after:
                candidates.append(Departure(local, entry.required_soc_pct))
                break
    candidates.extend(
        Departure(t.departure, t.required_soc_pct) for t in trips if t.departure > after
    )
    if not candidates:
        return None
    first = min(c.at for c in candidates)
    need = max(c.required_soc_pct for c in candidates if c.at == first)
    return Departure(first, need)


def away_intervals(
    schedule: tuple[RecurringDeparture, ...],
    trips: tuple[Trip, ...],
    start: datetime,
    end: datetime,
) -> list[tuple[float, float]]:
    """Known absences (epoch seconds) overlapping [start, end): routine days from departure to
    return (overnight returns roll to the next day), and one-off trips with a return."""
    out: list[tuple[float, float]] = []
    days = max(1, int((end - start).total_seconds() // 86_400) + 2)
    for entry in schedule:
        if entry.return_ is None:
            continue
        zone = ZoneInfo(entry.timezone)
        rh, rm = (int(p) for p in entry.return_.split(":"))
        for dep in _local_departures(entry, start - timedelta(days=1), days):
            ret = datetime.combine(dep.date(), time(rh, rm), tzinfo=zone)
            if ret <= dep:
                ret += timedelta(days=1)
            if ret > start and dep < end:
                out.append((dep.timestamp(), ret.timestamp()))
    for trip in trips:
        if trip.return_ is not None and trip.return_ > start and trip.departure < end:
            out.append((trip.departure.timestamp(), trip.return_.timestamp()))
    return out
