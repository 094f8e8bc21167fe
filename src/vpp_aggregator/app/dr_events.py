"""Demand-response events from the grid-signal service (L2): what each asks, as dispatches.

The event arrives read (`adapters/openadr`: OpenADR 3.1 or 3.0.1 on the wire; `domain/dr_event`
and `domain/dr_asks` in plain terms); here it meets the fleet (docs/openadr.md).
- Back-to-back windows that ask the same direction of the same resources are one dispatch (a
  "run"): it starts with the first window's figure and is retargeted, as a revision of itself,
  when each later window begins (`follow`). An open-ended one is extended as time passes.
- The same run of the same version never dispatches twice (the idempotency key).
- A later version (`modificationDateTime`) re-plans the runs it still has, in place; a run it
  no longer has ramps down; a change of direction is a new dispatch. An earlier version arriving
  late is `superseded` and changes nothing.
- A cancelled event (User Guide §7.9) ramps its running dispatches down.
The event, as last received, is stored: later windows are read from it, and the dashboard shows
what each event was read as.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from vpp_aggregator.app.dispatch import DispatchRejectedError, DispatchRequest
from vpp_aggregator.app.dispatch_ports import DispatchConflictError
from vpp_aggregator.app.dispatch_records import DispatchRecord, NotFollowedHereError
from vpp_aggregator.app.dr_base import KEY, MAX_MINUTES, event_version, is_older, run_key_of, runs
from vpp_aggregator.app.dr_charge_state import charge_to
from vpp_aggregator.app.dr_follow import DrFollowThrough, caps_of
from vpp_aggregator.app.dr_priority import yield_to
from vpp_aggregator.app.dr_read_as import windows_read_as
from vpp_aggregator.app.dr_store import SOURCE
from vpp_aggregator.app.message_fields import InvalidMessageError
from vpp_aggregator.app.outcome import Outcome
from vpp_aggregator.app.reaction import PLAN, enter
from vpp_aggregator.app.request_status import RequestStatus, dispatch_status
from vpp_aggregator.domain.dr_asks import (
    FleetAsk,
    Reading,
    Scope,
    UnsupportedTargetsError,
    read_event,
    target_scope,
)
from vpp_aggregator.domain.dr_caps import short_of_departure
from vpp_aggregator.domain.dr_event import DrEvent

log = logging.getLogger(__name__)


class DemandResponseEvents(DrFollowThrough):
    def handle(self, event: DrEvent, body: Any = None) -> list[Outcome]:
        if event.departures:
            log.info("event %s departs from OpenADR 3.1: %s", event.event_id, event.departures)
        enter(PLAN)  # read: what it asks is worked out from here
        with self._serial:  # one event or follow-through at a time: they touch the same runs
            return self._handle(event, body)

    def _handle(self, event: DrEvent, body: Any) -> list[Outcome]:
        now = self.clock()
        version = event_version(event, body)
        stored = self.store.get(event.event_id)
        if stored is not None and is_older(version, stored["version"]):
            return [Outcome("superseded", f"{event.event_id}: version {version} is older")]
        try:
            scope, why = target_scope(event, self.target_names, self.grid_nodes())
        except UnsupportedTargetsError as exc:
            raise InvalidMessageError(str(exc)) from None
        every_open = self._open_dispatches()  # this event's runs, and the others it may meet
        open_runs = {
            run_key_of(d.idempotency_key): d for d in every_open if d.reference == event.event_id
        }
        others = [d for d in every_open if d.reference != event.event_id]
        reading = read_event(event, now, self.default, self.signal_policy)
        if event.cancelled:
            out = self._cancel(list(open_runs.values()), f"event {event.event_id} cancelled")
            out = out or [
                Outcome("ignored", f"event {event.event_id} cancelled; nothing of it was running")
            ]
        else:
            out = self._act(event, reading, scope, why, version, open_runs, others, now)
        read_as = {
            "cancelled": event.cancelled,
            "windows": [] if event.cancelled else windows_read_as(event, reading),
            "departures": list(event.departures),
            "outcomes": [
                {"outcome": o.outcome, "detail": o.detail, "reason": o.reason} for o in out
            ],
        }
        if stored is not None and stored["version"] == version:
            if "reported" in stored["read_as"]:
                read_as["reported"] = stored["read_as"]["reported"]  # not a new report either
            if out and all(o.outcome == "duplicate" for o in out):
                # A redelivery (every poll of a VTN, say): what the event became stays shown.
                read_as["outcomes"] = stored["read_as"].get("outcomes", read_as["outcomes"])
        self.store.save(event.event_id, version, now, body if body is not None else {}, read_as)
        same = stored is not None and stored["version"] == version  # its limits are as they were
        if not same and self._keep_caps(event.event_id, caps_of(event, scope, reading)):
            self.dispatch.respect_limits()  # running dispatches keep to a new or changed limit
        return out

    def _act(
        self,
        event: DrEvent,
        reading: Reading,
        scope: Scope | None,
        why: str,
        version: str,
        open_runs: dict[str, DispatchRecord],
        others: list[DispatchRecord],
        now: datetime,
    ) -> list[Outcome]:
        out = []
        for run in runs(reading.every):  # named by their first window, ended or not
            active = [
                replace(a, start=max(a.start, now)) for a in run if a.end is None or a.end > now
            ]
            if not active:
                ended = f"event {run[0].key} ended at {run[-1].end}"
                out.append(Outcome(RequestStatus.EXPIRED.value, ended))
                continue
            if scope is None:
                out.append(Outcome("ignored", why))
                break
            existing = open_runs.pop(run[0].key, None)
            out.append(self._run(event, run[0].key, active, scope, version, existing, others, now))
        gone = f"event {event.event_id} updated to {version or 'a new version'}"
        out += self._cancel(list(open_runs.values()), gone)
        unread = Counter((u.payload_type, u.reason) for u in reading.unread)
        out += [
            Outcome("ignored", f"{kind} in {n} interval(s): {reason}")
            for (kind, reason), n in unread.items()
        ]
        if reading.caps:
            out.append(Outcome("applied", f"{len(reading.caps)} site limit(s) on dispatches"))
            out += self._departures_at_risk(reading, scope, now)
        if reading.prices:
            bought = sum(1 for p in reading.prices if not p.export)
            out.append(
                Outcome("applied", f"{len(reading.prices)} price(s) kept; {bought} for recharges")
            )
        return out or [Outcome("ignored", "the event asks nothing of V2G")]

    def _run(
        self,
        event: DrEvent,
        run_key: str,
        run: list[FleetAsk],
        scope: Scope,
        version: str,
        existing: DispatchRecord | None,
        others: list[DispatchRecord],
        now: datetime,
    ) -> Outcome:
        """The part of one run still to come (`run`, the current window first), named `run_key`
        (its first window, ended or not); `others`: other events' open dispatches."""
        event_id = event.event_id
        first = run[0]
        start = first.start
        end = self._end(run, start)
        if end <= now + timedelta(minutes=1):
            return Outcome(
                RequestStatus.EXPIRED.value, f"event {run_key} ended at {end.isoformat()}"
            )
        key = f"{KEY}{run_key}@{version}"
        if existing is not None and existing.idempotency_key == key:
            return Outcome("duplicate", existing.dispatch_id)
        if first.charge_state is not None:
            if existing is not None:
                self._cancel([existing], f"event {event_id} updated to {version}")
            winner, _ = yield_to(
                event, scope, start, end, others, self.dispatch, self.store, self.read_wire
            )
            if winner is not None:
                return Outcome("ignored", winner)
            requests = charge_to(event_id, first, scope, start, end, key, now, self.batteries)
            if isinstance(requests, Outcome):
                return requests
            made = [self._create(r) for r in requests]
            return (
                made[0]
                if len(made) == 1
                else Outcome(made[0].outcome, " ".join(m.detail for m in made), made[0].reason)
            )
        target, why = self._target(first, scope)
        if existing is not None and target is not None:
            try:
                record = self.dispatch.retarget(
                    existing.dispatch_id, target, end, f"event updated to {version}", key
                )
                _, reason = dispatch_status(record)
                return Outcome("replanned", record.dispatch_id, reason or None)
            except (DispatchConflictError, DispatchRejectedError, NotFollowedHereError) as exc:
                log.info("event %s: %s; a new dispatch replaces it", event_id, exc)
        if existing is not None:
            self._cancel([existing], f"event {event_id} updated to {version}")
        if target is None:
            return Outcome("ignored", why)
        winner, free_from = yield_to(
            event, scope, start, end, others, self.dispatch, self.store, self.read_wire
        )
        if winner is not None:
            return Outcome("ignored", winner)
        start = max(start, free_from)  # after the dispatches it displaced have ramped down
        request = DispatchRequest(
            target_kw=target,
            duration_minutes=min(MAX_MINUTES, math.ceil((end - start).total_seconds() / 60.0)),
            start=None if start <= now else start,
            grid_node=scope.grid_node,
            fleet_id=scope.fleet_id,
            resource_ids=scope.resource_ids,
            source=SOURCE,
            reference=event_id,
            idempotency_key=key,
        )
        return self._create(request)

    def deleted(self, event_id: str) -> list[Outcome]:
        """The event was deleted at the VTN (UG 7.9: "the VEN should discard the event and no
        longer act on it"): its dispatches ramp down, and it is kept as cancelled."""
        with self._serial:
            out = self._cancel(self._open_dispatches(event_id), f"event {event_id} deleted")
            stored = self.store.get(event_id)
            if stored is not None:
                read_as = {**stored["read_as"], "cancelled": True, "deleted": True}
                outcomes = [
                    {"outcome": o.outcome, "detail": o.detail, "reason": o.reason} for o in out
                ]
                read_as["outcomes"] = outcomes
                self.store.save(event_id, stored["version"], self.clock(), stored["body"], read_as)
            if self._keep_caps(event_id, []):  # its limits are lifted
                self.dispatch.respect_limits()
            return out

    def _departures_at_risk(
        self, reading: Reading, scope: Scope | None, now: datetime
    ) -> list[Outcome]:
        """Vehicles an import limit keeps from their departure's state of charge: said, with
        by how much, so that the operator can act (the limit itself stands)."""
        if scope is None:
            return []
        vehicles = self.departures(scope, now)
        out = []
        for cap in reading.caps:
            for v, kwh in short_of_departure(cap, vehicles, now, self.charge_efficiency):
                why = (
                    f"{v.resource_id} cannot reach {v.required_soc_pct:g} % by "
                    f"{v.leaves.isoformat()} inside the {cap.kw:g} kW import limit: "
                    f"{kwh:g} kWh short"
                )
                out.append(Outcome("at_risk", v.resource_id, why))
        return out

    def _create(self, request: DispatchRequest) -> Outcome:
        """The dispatch, or `refused` with why (one run's refusal leaves the others standing)."""
        if request.duration_minutes < 1:
            return Outcome("refused", "no time left in the window once displaced ones ramp down")
        try:
            record, created = self.dispatch.create(request)
        except DispatchRejectedError as exc:
            return Outcome("refused", f"dispatch refused: {exc}")
        if not created:
            return Outcome("duplicate", record.dispatch_id)
        status, reason = dispatch_status(record)
        return Outcome(status.value, record.dispatch_id, reason or None)
