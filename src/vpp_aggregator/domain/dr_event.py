"""A utility's demand-response event in plain terms, and what it asks of the fleet.

The wire form is OpenADR 3 (3.1, and 3.0.1 from older servers), read by `adapters/openadr`. What
the words mean is the standard's: the OpenADR 3.1 User Guide, section 7.3 for time, 7.9 for
cancellation, and the payload types' definitions. `docs/openadr.md` has the table of what each
payload makes the fleet do. Signs here are ours: positive kW is discharge to the grid.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from vpp_aggregator.domain.instants import LATEST

BEGINNING = datetime(1, 1, 1, tzinfo=UTC)  # §7.3: start "0001-01-01", "the beginning of time"
FOREVER = timedelta(days=9000 * 365)  # §7.3: "P9999Y" is infinity; any span this long is one
MAX_SPREAD = timedelta(days=1)  # randomizeStart beyond this is taken as this
REPEAT_AHEAD = timedelta(days=2)  # repeated intervals are made this far ahead (read again later)


@dataclass(frozen=True, slots=True)
class Period:
    """An `intervalPeriod`: each part None when not given."""

    start: datetime | None = None
    duration: timedelta | None = None
    randomize_start: timedelta | None = None


@dataclass(frozen=True, slots=True)
class Payload:
    type: str
    values: tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class EventInterval:
    id: str
    period: Period | None
    payloads: tuple[Payload, ...]


@dataclass(frozen=True, slots=True)
class DrEvent:
    """One event as read from the wire: OpenADR's fields, and the platform's own V2G request
    (`set_point_kw`, positive = export, and `v2g_requested`)."""

    event_id: str
    version: datetime | None = None  # modificationDateTime: a later one replaces the event
    priority: int | None = None  # lower wins; 0 is the highest
    period: Period | None = None  # the event's default for every interval
    duration: timedelta | None = None  # the event's own span (User Guide §7.3, event.duration)
    intervals: tuple[EventInterval, ...] = ()
    units: Mapping[str, str] = field(default_factory=dict)  # payload type -> its units
    currency: Mapping[str, str] = field(default_factory=dict)  # payload type -> its currency
    targets: tuple[str, ...] = ()  # 3.1 target names (and 3.0.1 values, type aside)
    grid_nodes: tuple[str, ...] = ()  # targets that name grid nodes (3.0.1 GRID_NODE objects)
    site: str | None = None
    set_point_kw: float | None = None
    v2g_requested: bool = False
    departures: tuple[str, ...] = ()  # where the message departs from the standard's schema

    @property
    def cancelled(self) -> bool:
        """§7.9: an event is cancelled by setting its start and duration to the minimal values
        ("0001-01-01" and "PT0S")."""
        p = self.period
        return p is not None and p.start == BEGINNING and p.duration == timedelta(0)


@dataclass(frozen=True, slots=True)
class Window:
    interval: EventInterval
    start: datetime
    end: datetime | None  # None: open-ended ("P9999Y")


def _end(start: datetime, span: timedelta) -> datetime | None:
    """A window's end; None (open-ended) for "P9999Y", and for any end past the instants the
    service takes (`domain/instants`), which no dispatch reaches anyway."""
    if span >= FOREVER:
        return None
    try:
        end = start + span
    except OverflowError:
        return None
    return None if end >= LATEST else end


def _shift(spread: timedelta | None, seed: str) -> timedelta:
    """§7.3 randomizeStart: a uniform shift within ±spread, the same in every process that reads
    the same event (seeded by its id and version), so that replicas agree. A spread of more than
    a day is taken as a day."""
    if spread is None or spread <= timedelta(0):
        return timedelta(0)
    spread = min(spread, MAX_SPREAD)
    digest = hashlib.sha256(seed.encode()).digest()
    fraction = int.from_bytes(digest[:8], "big") / 2.0**64  # [0, 1)
    return spread * (2.0 * fraction - 1.0)


def _intervals(event: DrEvent) -> tuple[EventInterval, ...]:
    """The platform's events may carry no intervals, only the event's period: one window."""
    return event.intervals or (EventInterval(event.event_id, None, ()),)


def windows(
    event: DrEvent,
    default: timedelta,
    now: datetime,
    ven: str = "",
    horizon: datetime | None = None,
) -> list[Window]:
    """Each interval's absolute window, by §7.3.

    - The event's `intervalPeriod` is the default of every interval; an interval's own wins,
      field by field.
    - The first interval starts at its own start, else the event's ("0001-01-01" on the first
      interval means the event's start when it has one). Every later interval without a start of
      its own, or with "0001-01-01", starts where the one before ended.
    - "P9999Y" (any duration of 9,000 years or more) is open-ended: nothing follows it.
    - "0001-01-01" with an open-ended duration is the standard's "do it now": the window began
      before now and runs on (`active_windows` starts it now). With a finite duration it ended
      long ago.
    - No duration anywhere: `default` (the platform's configured event length). No start
      anywhere (the platform's events may leave it out): `now`.
    - randomizeStart shifts every start by one seeded amount; an interval with its own shifts
      from there on by its own.
    - The event's own `duration` (when a server sends one) cuts the intervals at its end, or,
      longer than they are, repeats them to its end ("P9999Y": indefinitely, "P7D": for a
      week); repeats are named `<interval id>#<n>` and made up to `horizon` (`REPEAT_AHEAD`
      from now unless given).
    """
    base = event.period or Period()
    # Every replica of this VEN draws the same shift; another VEN (`ven`) draws its own.
    seed = f"{ven}/{event.event_id}@{event.version.isoformat() if event.version else ''}"
    shift = _shift(base.randomize_start, seed)
    out: list[Window] = []
    previous_end: datetime | None = None
    for i, interval in enumerate(_intervals(event)):
        own = interval.period or Period()
        duration = own.duration if own.duration is not None else base.duration
        span = default if duration is None else duration
        if own.randomize_start is not None:
            shift = _shift(own.randomize_start, f"{seed}:{interval.id}")
        start: datetime | None
        if i == 0:
            start = own.start if own.start not in (None, BEGINNING) else base.start
            start = start or own.start
            absolute = start not in (None, BEGINNING)
            start = start or now
        else:
            absolute = own.start not in (None, BEGINNING)
            start = own.start if absolute else previous_end
        if start is None:
            break  # it follows an open-ended interval: it never begins
        if absolute:  # a contiguous one follows the shifted end before it
            start += shift
        end = _end(start, span)
        out.append(Window(interval, start, end))
        previous_end = end
    if event.duration is not None and out and out[0].start != BEGINNING:
        out = _repeated(out, event.duration, horizon or now + REPEAT_AHEAD)
    stop = _end(out[0].start, event.duration) if event.duration is not None and out else None
    if stop is not None and out[0].start != BEGINNING:
        out = [
            Window(w.interval, w.start, stop if w.end is None else min(w.end, stop))
            for w in out
            if w.start < stop
        ]
    return out


def _repeated(out: list[Window], duration: timedelta, horizon: datetime) -> list[Window]:
    """UG 7.3 event.duration: "P9999Y" indicates the set of intervals repeat indefinitely; "24
    hourly price intervals with duration = "P7D" repeats the prices for a week"."""
    first, last = out[0].start, out[-1].end
    if last is None or last <= first:
        return out
    period = last - first
    until = _end(first, duration)
    until = horizon if until is None else min(until, horizon)
    repeats, n = list(out), 1
    while first + n * period < until:
        shift = n * period
        repeats += [
            Window(
                EventInterval(f"{w.interval.id}#{n}", w.interval.period, w.interval.payloads),
                w.start + shift,
                None if w.end is None else w.end + shift,
            )
            for w in out
        ]
        n += 1
    return repeats


def active_windows(event: DrEvent, now: datetime, default: timedelta) -> list[Window]:
    """The windows still to come or under way at `now`; one under way starts now (§7.3, "the
    client skips ahead to the interval corresponding to 'now'")."""
    if event.cancelled:
        return []
    return [
        Window(w.interval, max(w.start, now), w.end)
        for w in windows(event, default, now)
        if w.end is None or w.end > now
    ]
