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

BEGINNING = datetime(1, 1, 1, tzinfo=UTC)  # §7.3: start "0001-01-01", "the beginning of time"
FOREVER = timedelta(days=9000 * 365)  # §7.3: "P9999Y" is infinity; any span this long is one
POWER_UNITS_KW = {"KW": 1.0, "W": 0.001, "MW": 1000.0}  # a descriptor's units, to kW


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


def _shift(spread: timedelta | None, seed: str) -> timedelta:
    """§7.3 randomizeStart: a uniform shift within ±spread, the same in every process that reads
    the same event (seeded by its id and version), so that replicas agree."""
    if spread is None or spread <= timedelta(0):
        return timedelta(0)
    digest = hashlib.sha256(seed.encode()).digest()
    fraction = int.from_bytes(digest[:8], "big") / 2.0**64  # [0, 1)
    return spread * (2.0 * fraction - 1.0)


def _intervals(event: DrEvent) -> tuple[EventInterval, ...]:
    """The platform's events may carry no intervals, only the event's period: one window."""
    return event.intervals or (EventInterval(event.event_id, None, ()),)


def windows(event: DrEvent, default: timedelta, now: datetime) -> list[Window]:
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
    - The event's own `duration` (when a server sends one) cuts the intervals at its end.
    """
    base = event.period or Period()
    seed = f"{event.event_id}@{event.version.isoformat() if event.version else ''}"
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
        end = None if span >= FOREVER else start + span
        out.append(Window(interval, start, end))
        previous_end = end
    if event.duration is not None and event.duration < FOREVER and out:
        stop = out[0].start + event.duration
        out = [
            Window(w.interval, w.start, stop if w.end is None else min(w.end, stop))
            for w in out
            if w.start < stop
        ]
    return out


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


@dataclass(frozen=True, slots=True)
class FleetAsk:
    """What one window asks of the fleet: a power target in our signs, or None when the event
    wants V2G without a figure (the configured policy decides)."""

    key: str  # event id and interval: the same key never dispatches twice
    target_kw: float | None
    start: datetime
    end: datetime | None  # None: open-ended
    meaning: str  # the payload as read, for the operator


@dataclass(frozen=True, slots=True)
class Unread:
    """A payload the fleet does not act on, and why: reported, never guessed."""

    interval_id: str
    payload_type: str
    reason: str


@dataclass(frozen=True, slots=True)
class Reading:
    """Everything the event asks, what it carries that the fleet does not act on, and the
    windows that asked something but are already over (key, end)."""

    asks: list[FleetAsk]
    unread: list[Unread]
    ended: list[tuple[str, datetime]]


def _kw(event: DrEvent, payload: Payload) -> tuple[float | None, str]:
    """A payload's one power figure in kW, from its descriptor's units (KW when none is given)."""
    units = (event.units.get(payload.type) or "KW").upper()
    if units not in POWER_UNITS_KW:
        return None, f"units {units!r} are not power (KW, W, MW)"
    if len(payload.values) != 1:
        return None, f"{len(payload.values)} values where the standard defines one"
    value = payload.values[0]
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None, f"value {value!r} is not a number"
    return float(value) * POWER_UNITS_KW[units], ""


def _asks_of(event: DrEvent, w: Window, unread: list[Unread]) -> list[FleetAsk]:
    key = event.event_id if not event.intervals else f"{event.event_id}:{w.interval.id}"
    asks = []
    for payload in w.interval.payloads:
        if payload.type != "DISPATCH_SETPOINT":
            unread.append(Unread(w.interval.id, payload.type, "not acted on by this fleet"))
            continue
        kw, why = _kw(event, payload)
        if kw is None or kw < 0:
            unread.append(Unread(w.interval.id, payload.type, why or f"{kw:g} kW is below zero"))
            continue
        asks.append(FleetAsk(key, -kw, w.start, w.end, f"DISPATCH_SETPOINT: consume {kw:g} kW"))
    return asks


def read_event(event: DrEvent, now: datetime, default: timedelta) -> Reading:
    """What the event asks of the fleet, window by window.

    - `DISPATCH_SETPOINT` is "the absolute amount of consumption by a resource": the targeted
      resources' total consumption is X kW, so the fleet charges X (a target of −X). A figure
      below zero is no consumption and is reported unread.
    - The platform's `der_control.set_point_kw` (positive = export) and `v2g_requested` ask for
      V2G export in a window that carries no power payload of its own.
    - Any other payload type is reported unread, with the reason.
    """
    unread: list[Unread] = []
    asks: list[FleetAsk] = []
    ended: list[tuple[str, datetime]] = []
    wants_v2g = event.set_point_kw is not None or event.v2g_requested
    if event.cancelled:
        return Reading([], [], [])
    for w in windows(event, default, now):
        found = _asks_of(event, w, unread)
        if not found and wants_v2g and not asks:
            figure = event.set_point_kw
            meaning = "V2G export" + (f" {figure:g} kW" if figure is not None else "")
            found = [FleetAsk(event.event_id, figure, w.start, w.end, meaning)]
        if w.end is not None and w.end <= now:
            ended.extend((a.key, w.end) for a in found)
            continue
        asks.extend(
            FleetAsk(a.key, a.target_kw, max(a.start, now), a.end, a.meaning) for a in found
        )
    return Reading(asks, unread, ended)


@dataclass(frozen=True, slots=True)
class Scope:
    """Which resources an event is for: one grid node, one fleet, named resources, or (all
    None) every resource of the VEN."""

    grid_node: str | None = None
    fleet_id: str | None = None
    resource_ids: tuple[str, ...] | None = None


class UnsupportedTargetsError(ValueError):
    """Targets this service cannot act on as one dispatch (several grid nodes, say)."""


def target_scope(
    event: DrEvent, names: Mapping[str, Mapping[str, Any]], grid_nodes: set[str]
) -> tuple[Scope | None, str]:
    """The event's targets as a scope, or None and why it is not for us.

    3.1 targets are names: the operator's mapping (`VPP_OPENADR_TARGETS`) says what each is (a
    grid node, a fleet, resources); an unmapped name that is a grid node's is that node. 3.0.1
    `GRID_NODE` targets and the platform's `site_id` name grid nodes. No target at all is the
    whole VEN: a server sends a VEN only what is meant for it (User Guide §7.10)."""
    nodes: set[str] = set(event.grid_nodes)
    fleets: set[str] = set()
    resources: list[str] = []
    unknown: list[str] = []
    for name in event.targets:
        meant = names.get(name)
        if meant:
            node, fleet, ids = (
                meant.get("grid_node"),
                meant.get("fleet_id"),
                meant.get("resource_ids"),
            )
            nodes |= {node} if isinstance(node, str) else set()
            fleets |= {fleet} if isinstance(fleet, str) else set()
            resources += [str(r) for r in ids] if isinstance(ids, list) else []
        elif name in grid_nodes:
            nodes.add(name)
        else:
            unknown.append(name)
    if not event.targets and not event.grid_nodes:
        if event.site is None:
            return Scope(), ""
        nodes.add(event.site)
    if not nodes and not fleets and not resources:
        return None, f"targets {', '.join(unknown)} name nothing here (VPP_OPENADR_TARGETS)"
    if sum(map(bool, (nodes, fleets, resources))) > 1 or len(nodes) > 1 or len(fleets) > 1:
        raise UnsupportedTargetsError(
            "events targeting several grid nodes or fleets at once are not supported; "
            "send one per node"
        )
    node = next(iter(nodes), None)
    if node is not None and node not in grid_nodes:
        return None, f"no resource of this aggregator is on {node!r}"
    return Scope(node, next(iter(fleets), None), tuple(dict.fromkeys(resources)) or None), ""
