"""Demand-response events from the grid-signal service (L2): what each asks, as dispatches.

The event arrives read (`adapters/openadr`: OpenADR 3.1 or 3.0.1 on the wire, `domain/dr_event`
in plain terms); here it meets the fleet. Every outcome is one of `app/request_status`'s words
or `duplicate`, `superseded`, `cancelled`, `ignored`, with the reason.
- The same interval of the same version never dispatches twice (the idempotency key).
- A later version (`modificationDateTime`) replaces the dispatches of the earlier one: they
  ramp down and the new figures are dispatched; an earlier version arriving late is
  `superseded` and changes nothing.
- A cancelled event (User Guide §7.9) ramps its running dispatches down.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from vpp_aggregator.app.dispatch import DispatchRejectedError, DispatchRequest, DispatchService
from vpp_aggregator.app.dispatch_ports import DispatchConflictError
from vpp_aggregator.app.dispatch_records import OPEN_STATUSES, DispatchRecord
from vpp_aggregator.app.message_fields import InvalidMessageError
from vpp_aggregator.app.outcome import Outcome
from vpp_aggregator.app.request_status import RequestStatus, dispatch_status
from vpp_aggregator.domain.dr_asks import (
    FleetAsk,
    Policy,
    Scope,
    UnsupportedTargetsError,
    read_event,
    target_scope,
)
from vpp_aggregator.domain.dr_event import DrEvent
from vpp_aggregator.domain.fleet_state import FleetState

log = logging.getLogger(__name__)
MAX_MINUTES = 24 * 60  # the longest dispatch (an open-ended event is cut there)
SOURCE = "dr_event"


def _version_of(key: str | None) -> str:
    """The version a dispatch was made for, from its idempotency key (`…@version`)."""
    return key.rsplit("@", 1)[1] if key and "@" in key else ""


class DemandResponseEvents:
    def __init__(
        self,
        state: FleetState,
        dispatch: DispatchService,
        available_discharge_kw: Callable[[str | None], float],
        clock: Callable[[], datetime],
        *,
        policy: str = "all_available",
        default_minutes: int = 60,
        target_names: Mapping[str, Mapping[str, Any]] | None = None,
        signal_policy: Policy | None = None,
    ) -> None:
        self.state = state
        self.dispatch = dispatch
        self.available_discharge_kw = available_discharge_kw
        self.clock = clock
        self.policy = policy
        self.default = timedelta(minutes=default_minutes)
        self.target_names = target_names or {}
        self.signal_policy = signal_policy or Policy()

    def handle(self, event: DrEvent) -> list[Outcome]:
        if event.departures:
            log.info("event %s departs from OpenADR 3.1: %s", event.event_id, event.departures)
        now = self.clock()
        try:
            scope, why = target_scope(event, self.target_names, self.state.grid_nodes())
        except UnsupportedTargetsError as exc:
            raise InvalidMessageError(str(exc)) from None
        earlier = self._dispatches_of(event.event_id)
        version = event.version.astimezone(UTC).isoformat() if event.version else ""
        newer = [d for d in earlier if _version_of(d.idempotency_key) > version]
        if newer:
            return [
                Outcome("superseded", f"{event.event_id}: version {version or 'none'} is older")
            ]
        if event.cancelled:
            return self._cancel(earlier, f"event {event.event_id} cancelled") or [
                Outcome("ignored", f"event {event.event_id} cancelled; nothing of it was running")
            ]
        replaced = [d for d in earlier if _version_of(d.idempotency_key) != version]
        out = self._cancel(replaced, f"event {event.event_id} updated to {version}")
        reading = read_event(event, now, self.default, self.signal_policy)
        out += [
            Outcome(RequestStatus.EXPIRED.value, f"event {key} ended at {end.isoformat()}")
            for key, end in reading.ended
        ]
        for ask in reading.asks:
            if scope is None:
                out.append(Outcome("ignored", why))
                break
            out.append(self._dispatch(event.event_id, ask, scope, version, now))
        unread = Counter((u.payload_type, u.reason) for u in reading.unread)
        out += [
            Outcome("ignored", f"{kind} in {n} interval(s): {reason}")
            for (kind, reason), n in unread.items()
        ]
        return out or [Outcome("ignored", "the event asks nothing of V2G")]

    def _dispatches_of(self, event_id: str) -> list[DispatchRecord]:
        records, _ = self.dispatch.list(source=SOURCE, reference=event_id, limit=500)
        return records

    def _cancel(self, records: list[DispatchRecord], why: str) -> list[Outcome]:
        out = []
        for r in records:
            if r.status not in OPEN_STATUSES:
                continue
            try:
                self.dispatch.cancel(r.dispatch_id)
            except DispatchConflictError as exc:
                log.warning("%s: could not cancel %s: %s", why, r.dispatch_id, exc)
                continue
            out.append(Outcome("cancelled", r.dispatch_id, why))
        return out

    def _dispatch(
        self, event_id: str, ask: FleetAsk, scope: Scope, version: str, now: datetime
    ) -> Outcome:
        start = max(ask.start, now)
        longest = start + timedelta(minutes=MAX_MINUTES)
        end = longest if ask.end is None else min(ask.end, longest)
        if end <= now + timedelta(minutes=1):
            return Outcome(
                RequestStatus.EXPIRED.value, f"event {ask.key} ended at {end.isoformat()}"
            )
        minutes = min(MAX_MINUTES, math.ceil((end - start).total_seconds() / 60.0))
        target = ask.target_kw
        if target is None and ask.share is not None:
            target = ask.share * self.available_discharge_kw(scope.grid_node)
            if target < 1e-6:
                return Outcome("ignored", f"{ask.meaning}: nothing to export")
        if target is None:
            if self.policy != "all_available":
                return Outcome("ignored", "no power figure and VPP_DR_POLICY=ignore")
            target = self.available_discharge_kw(scope.grid_node)
        if abs(target) < 1e-6:
            return Outcome(
                "ignored", f"{ask.meaning}: 0 kW (stopping charging is not commanded yet)"
            )
        request = DispatchRequest(
            target_kw=target,
            duration_minutes=minutes,
            start=None if start <= now else start,
            grid_node=scope.grid_node,
            fleet_id=scope.fleet_id,
            resource_ids=scope.resource_ids,
            source=SOURCE,
            reference=event_id,
            idempotency_key=f"grid_signal:{ask.key}" + (f"@{version}" if version else ""),
        )
        try:
            record, created = self.dispatch.create(request)
        except DispatchRejectedError as exc:
            raise InvalidMessageError(f"dispatch refused: {exc}") from None
        if not created:
            return Outcome("duplicate", record.dispatch_id)
        status, reason = dispatch_status(record)
        return Outcome(status.value, record.dispatch_id, reason or None)
