"""An OpenADR 3 event as servers send it, read into the domain's plain `DrEvent`.

Lenient where real servers and the specification's own examples depart from the schema
(`openadr3.yaml`), and each departure is named on the event (`DrEvent.departures`, logged and
shown on the dashboard); README, "OpenADR 3", lists them:
- a payload descriptor without `objectType`, or with `payLoadType` for `payloadType`;
- a date-only start "0001-01-01", a start with a space for the "T";
- 3.0.1's `{type, values}` targets where 3.1 has plain strings;
- the platform's `event_id` for `id`, and its V2G fields (`der_control`, `v2g_requested`,
  `site_id`) beside the standard's;
- an event-level `duration` (User Guide §7.3, "event.duration"; not in 3.1.1's schema).
Everything else is read as the schema says; a message that cannot be read is refused with every
field at fault (and dead-lettered)."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta
from typing import Annotated, Any

from pydantic import (
    AliasChoices,
    BaseModel,
    BeforeValidator,
    Field,
    PlainValidator,
    StrictInt,
    StrictStr,
)

from vpp_aggregator.app.message_fields import (
    InvalidMessageError,
    IsoDuration,
    Number,
    StringOrAbsent,
    Text,
    fail,
)
from vpp_aggregator.app.messages import read
from vpp_aggregator.domain.dr_event import (
    BEGINNING,
    DrEvent,
    EventInterval,
    Payload,
    Period,
)
from vpp_aggregator.domain.instants import instant_problem


def _start(value: Any) -> datetime:
    """A `dateTime`: with an offset, or one of the standard's forms of "the beginning of time"."""
    if not isinstance(value, str) or not value.strip():
        fail("must be a date-time string, e.g. 2026-11-25T12:00:00Z")
    text = value.strip()
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        fail(f"{value!r} is not an ISO-8601 date-time")
    if at.replace(tzinfo=None) == datetime(1, 1, 1) and at.utcoffset() in (None, timedelta(0)):
        return BEGINNING  # "0001-01-01", with or without a time, seconds, fraction or Z
    if at.tzinfo is None or at.utcoffset() is None:
        fail("needs a time zone offset, e.g. 2026-11-25T12:00:00Z")
    problem = instant_problem(at)
    if problem is not None:
        fail(problem)
    return at


Start = Annotated[datetime, PlainValidator(_start)]


def _list(value: Any) -> Any:
    if not isinstance(value, list):
        fail("must be a list")
    return value


def _none_if_falsy(value: Any) -> Any:
    return value or []


class WirePeriod(BaseModel):
    start: Start | None = None
    duration: IsoDuration | None = None
    randomizeStart: IsoDuration | None = None

    def period(self) -> Period:
        return Period(self.start, self.duration, self.randomizeStart)


class WireValues(BaseModel):
    """`valuesMap`: a payload's type and its values."""

    type: StrictStr
    values: Annotated[list[Any], BeforeValidator(_list)]


class WireInterval(BaseModel):
    id: StrictInt | StrictStr | None = None  # None (the platform's events): its position
    intervalPeriod: WirePeriod | None = None
    payloads: Annotated[list[WireValues], BeforeValidator(_none_if_falsy)] = []


class WireDescriptor(BaseModel):
    objectType: StringOrAbsent = None
    payloadType: StringOrAbsent = Field(
        None, validation_alias=AliasChoices("payloadType", "payLoadType")
    )
    units: StringOrAbsent = None
    currency: StringOrAbsent = None


class WireTarget(BaseModel):
    """3.0.1's target: `{"type": "GRID_NODE", "values": [...]}`."""

    type: StringOrAbsent = None
    values: Annotated[list[StrictStr | StrictInt], BeforeValidator(_list)]


def _target(value: Any) -> str | WireTarget:
    if isinstance(value, str) and value:
        return value
    if isinstance(value, dict):
        try:
            return read(WireTarget, value, "target")
        except InvalidMessageError as exc:
            fail(str(exc))
    fail("must be a target name (3.1) or a {type, values} object (3.0.1)")


class WireDerControl(BaseModel):
    set_point_kw: Number | None = None


class WireEvent(BaseModel):
    """An event: OpenADR 3.1's fields we read, 3.0.1's targets, and the platform's own."""

    id: Text | None = Field(None, validation_alias=AliasChoices("id", "event_id"))
    priority: Annotated[StrictInt, Field(ge=0)] | None = None
    targets: Annotated[
        list[Annotated[str | WireTarget, PlainValidator(_target)]], BeforeValidator(_none_if_falsy)
    ] = []
    payloadDescriptors: Annotated[list[WireDescriptor], BeforeValidator(_none_if_falsy)] = []
    intervalPeriod: WirePeriod | None = None
    intervals: Annotated[list[WireInterval], BeforeValidator(_none_if_falsy)] = []
    modificationDateTime: Start | None = None
    duration: IsoDuration | None = None  # User Guide §7.3 "event.duration"
    site_id: StringOrAbsent = None
    v2g_requested: Annotated[bool, BeforeValidator(lambda v: v is True)] = False
    der_control: Annotated[
        WireDerControl | None, BeforeValidator(lambda v: v if isinstance(v, dict) else None)
    ] = None


def _departures(raw: dict[str, Any], event: WireEvent) -> list[str]:
    found = []
    if "event_id" in raw and "id" not in raw:
        found.append("event_id for id (the platform's name)")
    if not event.id:
        found.append("no id (a request body): named by its content")
    for i, d in enumerate(raw.get("payloadDescriptors") or []):
        if isinstance(d, dict) and "objectType" not in d:
            found.append(f"payloadDescriptors[{i}] has no objectType")
        if isinstance(d, dict) and "payLoadType" in d:
            found.append(f"payloadDescriptors[{i}] spells payloadType payLoadType")
    periods = [("intervalPeriod", raw.get("intervalPeriod"))] + [
        (f"intervals[{i}].intervalPeriod", x.get("intervalPeriod"))
        for i, x in enumerate(raw.get("intervals") or [])
        if isinstance(x, dict)
    ]
    for where, p in periods:
        start = p.get("start") if isinstance(p, dict) else None
        if isinstance(start, str) and "T" not in start:
            found.append(f"{where}.start {start!r} is not a date-time (T missing)")
    if any(isinstance(t, WireTarget) for t in event.targets):
        found.append("targets as 3.0.1 {type, values} objects")
    if "duration" in raw:
        found.append("an event-level duration (not in the 3.1.1 schema)")
    return found


def _content_id(message: Any) -> str:
    """A POST body (the User Guide's examples) has no id yet: it is named by its content, so a
    redelivery is still the same event (an update of it, though, is a new one)."""
    text = json.dumps(message, sort_keys=True, separators=(",", ":"), default=str)
    return "content-" + hashlib.sha256(text.encode()).hexdigest()[:16]


def read_event(message: Any) -> DrEvent:
    """The message as a `DrEvent`, or an `InvalidMessageError` naming every field at fault."""
    wire = read(WireEvent, message, "event")
    event_id = wire.id or _content_id(message)
    names: list[str] = []
    nodes: list[str] = []
    for t in wire.targets:
        if isinstance(t, str):
            names.append(t)
        elif (t.type or "").upper() == "GRID_NODE":
            nodes.extend(str(v) for v in t.values)
        else:
            names.extend(str(v) for v in t.values)
    return DrEvent(
        event_id=event_id,
        version=wire.modificationDateTime,
        priority=wire.priority,
        period=wire.intervalPeriod.period() if wire.intervalPeriod else None,
        duration=wire.duration,
        intervals=tuple(
            EventInterval(
                str(i if x.id is None else x.id),
                x.intervalPeriod.period() if x.intervalPeriod else None,
                tuple(Payload(p.type, tuple(p.values)) for p in x.payloads),
            )
            for i, x in enumerate(wire.intervals)
        ),
        units={
            d.payloadType: d.units for d in wire.payloadDescriptors if d.payloadType and d.units
        },
        currency={
            d.payloadType: d.currency
            for d in wire.payloadDescriptors
            if d.payloadType and d.currency
        },
        targets=tuple(names),
        grid_nodes=tuple(nodes),
        site=wire.site_id,
        set_point_kw=wire.der_control.set_point_kw if wire.der_control else None,
        v2g_requested=wire.v2g_requested,
        departures=tuple(_departures(message, wire)),
    )
