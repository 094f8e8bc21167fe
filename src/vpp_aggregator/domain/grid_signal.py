"""What a demand-response event from the grid-signal service (L2) asks of the fleet.

Events arrive in the platform's shape (docs/kafka-contracts.md, "grid_signals"): an optional `der_control.set_point_kw`,
OpenADR 3 `intervals` whose payloads may carry a `DISPATCH_SETPOINT` (kW, positive = export),
and `v2g_requested` for events that want V2G without saying how much. Each interval with a power
figure becomes one request; an event that wants V2G without a figure becomes one request whose
target the caller's policy fills in.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

POWER_PAYLOADS = ("DISPATCH_SETPOINT",)
_DURATION = re.compile(
    r"^P(?:(?P<d>\d+(?:\.\d+)?)D)?(?:T(?:(?P<h>\d+(?:\.\d+)?)H)?(?:(?P<m>\d+(?:\.\d+)?)M)?(?:(?P<s>\d+(?:\.\d+)?)S)?)?$"
)


class InvalidSignalError(ValueError):
    """The event cannot be read; the reason goes to the dead-letter topic."""


@dataclass(frozen=True, slots=True)
class DemandResponse:
    key: str  # event id and interval: the same key never dispatches twice
    event_id: str
    target_kw: float | None  # None: the event wants V2G and names no figure (policy decides)
    start: datetime | None  # None: now
    duration: timedelta | None  # None: the configured default
    site: str | None
    grid_nodes: tuple[str, ...]  # OpenADR targets naming grid nodes, if any


def iso_duration(text: str) -> timedelta:
    match = _DURATION.match(text.strip()) if isinstance(text, str) else None
    if match is None or text.strip() in ("P", "PT"):
        raise InvalidSignalError(f"duration {text!r} is not an ISO-8601 duration like PT1H")
    part = {k: float(v) if v else 0.0 for k, v in match.groupdict().items()}
    return timedelta(days=part["d"], hours=part["h"], minutes=part["m"], seconds=part["s"])


def _period(raw: Any, where: str) -> tuple[datetime | None, timedelta | None]:
    if raw is None:
        return None, None
    if not isinstance(raw, dict):
        raise InvalidSignalError(f"{where}.intervalPeriod must be an object")
    start = None
    if raw.get("start") is not None:
        try:
            start = datetime.fromisoformat(str(raw["start"]))
        except ValueError as exc:
            raise InvalidSignalError(f"{where}.intervalPeriod.start: {exc}") from None
        if start.tzinfo is None:
            raise InvalidSignalError(f"{where}.intervalPeriod.start needs a time zone offset")
    duration = iso_duration(raw["duration"]) if raw.get("duration") is not None else None
    return start, duration


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidSignalError(f"{where} must be a number")
    return float(value)


def read_event(event: Any) -> list[DemandResponse]:
    """The dispatch requests an event makes (empty: it asks nothing of V2G)."""
    if not isinstance(event, dict):
        raise InvalidSignalError("event must be a JSON object")
    event_id = event.get("event_id")
    if not isinstance(event_id, str) or not event_id:
        raise InvalidSignalError("event_id must be a non-empty string")
    site = event.get("site_id") if isinstance(event.get("site_id"), str) else None
    nodes: list[str] = []
    for i, target in enumerate(event.get("targets") or []):
        if not isinstance(target, dict):
            raise InvalidSignalError(f"targets[{i}] must be an object")
        if str(target.get("type", "")).upper() == "GRID_NODE":
            nodes += [str(v) for v in target.get("values") or []]
    ev_start, ev_duration = _period(event.get("intervalPeriod"), "event")
    out: list[DemandResponse] = []
    intervals = event.get("intervals") or []
    if not isinstance(intervals, list):
        raise InvalidSignalError("intervals must be a list")
    for i, interval in enumerate(intervals):
        if not isinstance(interval, dict):
            raise InvalidSignalError(f"intervals[{i}] must be an object")
        start, duration = _period(interval.get("intervalPeriod"), f"intervals[{i}]")
        for payload in interval.get("payloads") or []:
            if not isinstance(payload, dict) or payload.get("type") not in POWER_PAYLOADS:
                continue
            values = payload.get("values") or []
            if not values:
                raise InvalidSignalError(f"intervals[{i}] {payload['type']} has no value")
            out.append(
                DemandResponse(
                    key=f"{event_id}:{interval.get('id', i)}",
                    event_id=event_id,
                    target_kw=_number(values[0], f"intervals[{i}].payloads.values[0]"),
                    start=start or ev_start,
                    duration=duration or ev_duration,
                    site=site,
                    grid_nodes=tuple(nodes),
                )
            )
    if out:
        return out
    control = event.get("der_control")
    if isinstance(control, dict) and control.get("set_point_kw") is not None:
        target = _number(control["set_point_kw"], "der_control.set_point_kw")
        return [
            DemandResponse(event_id, event_id, target, ev_start, ev_duration, site, tuple(nodes))
        ]
    if event.get("v2g_requested") is True:
        return [DemandResponse(event_id, event_id, None, ev_start, ev_duration, site, tuple(nodes))]
    return []
