"""Overlapping demand-response events: which one the resources serve (User Guide 7.1)."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import asdict
from datetime import datetime
from typing import Any

from vpp_aggregator.app.dispatch import DispatchService
from vpp_aggregator.app.dispatch_ports import DispatchConflictError
from vpp_aggregator.app.dispatch_records import OPEN_STATUSES, DispatchRecord
from vpp_aggregator.app.dr_store import DrEventStore
from vpp_aggregator.app.message_fields import InvalidMessageError
from vpp_aggregator.domain.dr_asks import Scope
from vpp_aggregator.domain.dr_caps import scopes_overlap
from vpp_aggregator.domain.dr_event import DrEvent

log = logging.getLogger(__name__)


def _rank(priority: int | None) -> float:
    return math.inf if priority is None else float(priority)


def yield_to(
    event: DrEvent,
    scope: Scope,
    start: datetime,
    end: datetime,
    others: list[DispatchRecord],
    dispatch: DispatchService,
    store: DrEventStore,
    read_wire: Callable[[Any], DrEvent],
) -> tuple[str | None, datetime]:
    """UG 7.1: "Lower numbers have a higher priority, and the highest priority is zero"; an
    event without one ranks below every event with one. Another event's dispatch that
    overlaps this one in time and resources: when it ranks higher, this run yields (the
    reason is returned); when this ranks higher, it ramps down. Equal priorities are "not
    specified by OpenADR": the first keeps its resources. `others` are the other events' open
    dispatches (read once per event); one displaced here leaves the list. Returns why this run
    yields (or None) and when the resources it displaced are free."""
    mine = _rank(event.priority)
    where = asdict(scope)
    rivals = []
    for other in others:
        if other.status not in OPEN_STATUSES or other.reference == event.event_id:
            continue
        if other.end_at <= start or other.start >= end or not scopes_overlap(where, other.scope):
            continue
        stored = store.get(other.reference or "")
        try:
            theirs = _rank(read_wire(stored["body"]).priority if stored else None)
        except InvalidMessageError:
            theirs = _rank(None)
        if theirs < mine:  # it wins: nothing is displaced for a run that yields anyway
            why = (
                f"overlaps event {other.reference} ({other.dispatch_id}), whose priority "
                f"{theirs:g} wins over {event.priority} (lower wins)"
            )
            return why, start
        if mine < theirs:
            rivals.append(other)
    free_from = start
    for other in rivals:
        try:
            ramped = dispatch.cancel(other.dispatch_id)
        except DispatchConflictError as exc:
            log.warning("could not displace %s: %s", other.dispatch_id, exc)
            continue
        log.info("event %s displaces %s", event.event_id, other.dispatch_id)
        others.remove(other)
        free_from = max(free_from, ramped.end_at)
    return None, free_from
