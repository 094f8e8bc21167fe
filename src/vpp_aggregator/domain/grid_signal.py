"""What a demand-response event from the grid-signal service (L2) asks of the fleet.

Events arrive in the platform's shape (docs/kafka-contracts.md, "grid_signals"; read into types by
`app/messages.py`): an optional `der_control.set_point_kw`,
OpenADR 3 `intervals` whose payloads may carry a `DISPATCH_SETPOINT` (kW, positive = export),
and `v2g_requested` for events that want V2G without saying how much. Each interval with a power
figure becomes one request; an event that wants V2G without a figure becomes one request whose
target the caller's policy fills in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

POWER_PAYLOADS = ("DISPATCH_SETPOINT",)


class InvalidSignalError(ValueError):
    """A value in the event cannot be read; the reason goes to the dead-letter topic."""


@dataclass(frozen=True, slots=True)
class DemandResponse:
    key: str  # event id and interval: the same key never dispatches twice
    event_id: str
    target_kw: float | None  # None: the event wants V2G and names no figure (policy decides)
    start: datetime | None  # None: now
    duration: timedelta | None  # None: the configured default
    site: str | None
    grid_nodes: tuple[str, ...]  # OpenADR targets naming grid nodes, if any


@dataclass(frozen=True, slots=True)
class Period:
    start: datetime | None  # None: now
    duration: timedelta | None  # None: the configured default


@dataclass(frozen=True, slots=True)
class Setpoint:
    """One power figure an OpenADR interval carries (kW, positive = export)."""

    key: str  # event id and interval
    target_kw: float
    period: Period


def demand_responses(
    event_id: str,
    site: str | None,
    grid_nodes: tuple[str, ...],
    period: Period,
    setpoints: Sequence[Setpoint],
    set_point_kw: float | None,
    v2g_requested: bool,
) -> list[DemandResponse]:
    """The dispatch requests an event makes (empty: it asks nothing of V2G): one per interval
    figure; else the event's one set point; else, when it wants V2G, one with no figure. An
    interval's own period wins over the event's, field by field."""
    if setpoints:
        return [
            DemandResponse(
                key=s.key,
                event_id=event_id,
                target_kw=s.target_kw,
                start=s.period.start or period.start,
                duration=s.period.duration or period.duration,
                site=site,
                grid_nodes=grid_nodes,
            )
            for s in setpoints
        ]
    if set_point_kw is not None or v2g_requested:
        return [
            DemandResponse(
                event_id, event_id, set_point_kw, period.start, period.duration, site, grid_nodes
            )
        ]
    return []
