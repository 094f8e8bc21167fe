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
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from vpp_aggregator.app.dispatch import DispatchRejectedError, DispatchRequest, DispatchService
from vpp_aggregator.app.dispatch_ports import DispatchConflictError
from vpp_aggregator.app.dispatch_records import OPEN_STATUSES, DispatchRecord
from vpp_aggregator.app.dr_charge_state import charge_to
from vpp_aggregator.app.dr_priority import yield_to
from vpp_aggregator.app.dr_read_as import windows_read_as
from vpp_aggregator.app.dr_store import SOURCE, DrEventStore
from vpp_aggregator.app.message_fields import InvalidMessageError
from vpp_aggregator.app.outcome import Outcome
from vpp_aggregator.app.request_status import RequestStatus, dispatch_status
from vpp_aggregator.domain.dr_asks import (
    Battery,
    FleetAsk,
    Policy,
    Reading,
    Scope,
    UnsupportedTargetsError,
    read_event,
    target_scope,
)
from vpp_aggregator.domain.dr_caps import SiteCap, tightest
from vpp_aggregator.domain.dr_event import DrEvent
from vpp_aggregator.domain.dr_prices import PriceWindow

log = logging.getLogger(__name__)
MAX_MINUTES = 24 * 60  # the longest dispatch; an open-ended run is extended before it ends
EXTEND_BEFORE = timedelta(hours=1)
KEY = "grid_signal:"


def _run_key(idempotency_key: str | None) -> str:
    """A dispatch's run (event id and first interval), from its idempotency key."""
    return (idempotency_key or "").removeprefix(KEY).rsplit("@", 1)[0]


def _version_of(idempotency_key: str | None) -> str:
    key = idempotency_key or ""
    return key.rsplit("@", 1)[1] if "@" in key else ""


def runs(asks: list[FleetAsk]) -> list[list[FleetAsk]]:
    """Asks in order, grouped where each begins as the one before ends, in the same direction
    (a share of available discharge counts as discharge)."""
    out: list[list[FleetAsk]] = []
    for ask in asks:
        last = out[-1][-1] if out else None
        same_way = (
            last is not None
            and _sign(last) == _sign(ask)
            and last.charge_state is None
            and ask.charge_state is None  # a state-of-charge goal is a run of its own
        )
        if last is not None and same_way and last.end is not None and last.end == ask.start:
            out[-1].append(ask)
        else:
            out.append([ask])
    return out


def _sign(ask: FleetAsk) -> int:
    return -1 if ask.target_kw is not None and ask.target_kw < 0 else 1


class DemandResponseEvents:
    def __init__(
        self,
        state_nodes: Callable[[], set[str]],
        dispatch: DispatchService,
        store: DrEventStore,
        read_wire: Callable[[Any], DrEvent],
        available_discharge_kw: Callable[[str | None], float],
        clock: Callable[[], datetime],
        *,
        policy: str = "all_available",
        default_minutes: int = 60,
        target_names: Mapping[str, Mapping[str, Any]] | None = None,
        signal_policy: Policy | None = None,
        batteries: Callable[[Scope, datetime], list[Battery]] | None = None,
    ) -> None:
        self.grid_nodes = state_nodes
        self.dispatch = dispatch
        self.store = store
        self.read_wire = read_wire  # the stored body, read again when a later window begins
        self.available_discharge_kw = available_discharge_kw
        self.clock = clock
        self.policy = policy
        self.default = timedelta(minutes=default_minutes)
        self.target_names = target_names or {}
        self.signal_policy = signal_policy or Policy()
        self.batteries = batteries or (lambda scope, now: [])  # those that can charge now
        self._caps: list[SiteCap] | None = None  # from the stored events; refreshed as they come

    # ------------------------------------------------------------------ a message
    def handle(self, event: DrEvent, body: Any = None) -> list[Outcome]:
        if event.departures:
            log.info("event %s departs from OpenADR 3.1: %s", event.event_id, event.departures)
        now = self.clock()
        version = event.version.astimezone(UTC).isoformat() if event.version else ""
        stored = self.store.get(event.event_id)
        if stored is not None and stored["version"] > version:
            return [
                Outcome("superseded", f"{event.event_id}: version {version or 'none'} is older")
            ]
        try:
            scope, why = target_scope(event, self.target_names, self.grid_nodes())
        except UnsupportedTargetsError as exc:
            raise InvalidMessageError(str(exc)) from None
        open_runs = {_run_key(d.idempotency_key): d for d in self._open_dispatches(event.event_id)}
        if event.cancelled:
            out = self._cancel(list(open_runs.values()), f"event {event.event_id} cancelled")
            out = out or [
                Outcome("ignored", f"event {event.event_id} cancelled; nothing of it was running")
            ]
        else:
            out = self._act(event, scope, why, version, open_runs, now)
        read_as = {
            "cancelled": event.cancelled,
            "windows": []
            if event.cancelled
            else windows_read_as(event, read_event(event, now, self.default, self.signal_policy)),
            "departures": list(event.departures),
            "outcomes": [
                {"outcome": o.outcome, "detail": o.detail, "reason": o.reason} for o in out
            ],
        }
        self.store.save(event.event_id, version, now, body if body is not None else {}, read_as)
        self._caps = None  # read again, with this event's limits
        if not event.cancelled and any(o.outcome != "superseded" for o in out):
            self.dispatch.respect_limits()  # running dispatches keep to a new or changed limit
        return out

    def _act(
        self,
        event: DrEvent,
        scope: Scope | None,
        why: str,
        version: str,
        open_runs: dict[str, DispatchRecord],
        now: datetime,
    ) -> list[Outcome]:
        reading = read_event(event, now, self.default, self.signal_policy)
        out = [
            Outcome(RequestStatus.EXPIRED.value, f"event {key} ended at {end.isoformat()}")
            for key, end in reading.ended
        ]
        for run in runs(reading.asks):
            if scope is None:
                out.append(Outcome("ignored", why))
                break
            existing = open_runs.pop(run[0].key, None)
            out.append(self._run(event, run, scope, version, existing, now))
        gone = f"event {event.event_id} updated to {version or 'a new version'}"
        out += self._cancel(list(open_runs.values()), gone)
        unread = Counter((u.payload_type, u.reason) for u in reading.unread)
        out += [
            Outcome("ignored", f"{kind} in {n} interval(s): {reason}")
            for (kind, reason), n in unread.items()
        ]
        if reading.caps:
            out.append(Outcome("applied", f"{len(reading.caps)} site limit(s) on dispatches"))
        if reading.prices:
            bought = sum(1 for p in reading.prices if not p.export)
            out.append(
                Outcome("applied", f"{len(reading.prices)} price(s) kept; {bought} for recharges")
            )
        return out or [Outcome("ignored", "the event asks nothing of V2G")]

    def _open_dispatches(self, event_id: str) -> list[DispatchRecord]:
        records, _ = self.dispatch.list(source=SOURCE, reference=event_id, limit=500)
        return [r for r in records if r.status in OPEN_STATUSES]

    def _cancel(self, records: list[DispatchRecord], why: str) -> list[Outcome]:
        out = []
        for r in records:
            try:
                self.dispatch.cancel(r.dispatch_id)
            except DispatchConflictError as exc:
                log.warning("%s: could not cancel %s: %s", why, r.dispatch_id, exc)
                continue
            out.append(Outcome("cancelled", r.dispatch_id, why))
        return out

    # ------------------------------------------------------------------ one run
    def _target(self, ask: FleetAsk, scope: Scope) -> tuple[float | None, str]:
        """The ask's kW in our signs, or None and why nothing is dispatched."""
        target = ask.target_kw
        if target is None and ask.share is not None:
            target = ask.share * self.available_discharge_kw(scope.grid_node)
            if target < 1e-6:
                return None, f"{ask.meaning}: nothing to export"
        if target is None:
            if self.policy != "all_available":
                return None, "no power figure and VPP_DR_POLICY=ignore"
            target = self.available_discharge_kw(scope.grid_node)
        if abs(target) < 1e-6:
            return None, f"{ask.meaning}: 0 kW (stopping charging is not commanded yet)"
        return target, ""

    @staticmethod
    def _end(run: list[FleetAsk], start: datetime) -> datetime:
        last = run[-1].end
        longest = start + timedelta(minutes=MAX_MINUTES)
        return longest if last is None else min(last, longest)

    def _run(
        self,
        event: DrEvent,
        run: list[FleetAsk],
        scope: Scope,
        version: str,
        existing: DispatchRecord | None,
        now: datetime,
    ) -> Outcome:
        event_id = event.event_id
        first = run[0]
        start = max(first.start, now)
        end = self._end(run, start)
        if end <= now + timedelta(minutes=1):
            return Outcome(
                RequestStatus.EXPIRED.value, f"event {first.key} ended at {end.isoformat()}"
            )
        key = f"{KEY}{first.key}" + (f"@{version}" if version else "")
        if existing is not None and existing.idempotency_key == key:
            return Outcome("duplicate", existing.dispatch_id)
        if first.charge_state is not None:
            if existing is not None:
                self._cancel([existing], f"event {event_id} updated to {version}")
            request = charge_to(event_id, first, scope, start, end, key, now, self.batteries)
            if isinstance(request, Outcome):
                return request
            return self._create(request)
        target, why = self._target(first, scope)
        if existing is not None and target is not None:
            try:
                record = self.dispatch.retarget(
                    existing.dispatch_id, target, end, f"event updated to {version}", key
                )
                _, reason = dispatch_status(record)
                return Outcome("replanned", record.dispatch_id, reason or None)
            except (DispatchConflictError, DispatchRejectedError) as exc:
                log.info("event %s: %s; a new dispatch replaces it", event_id, exc)
        if existing is not None:
            self._cancel([existing], f"event {event_id} updated to {version}")
        if target is None:
            return Outcome("ignored", why)
        winner, free_from = yield_to(
            event, scope, start, end, self.dispatch, self.store, self.read_wire
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

    def _create(self, request: DispatchRequest) -> Outcome:
        try:
            record, created = self.dispatch.create(request)
        except DispatchRejectedError as exc:
            raise InvalidMessageError(f"dispatch refused: {exc}") from None
        if not created:
            return Outcome("duplicate", record.dispatch_id)
        status, reason = dispatch_status(record)
        return Outcome(status.value, record.dispatch_id, reason or None)

    # ------------------------------------------------------------------ as time passes
    def follow(self) -> int:
        """Call periodically: a run's dispatch takes each later window's figure when that window
        begins, and an open-ended run is extended before its dispatch ends. Returns how many
        dispatches were retargeted."""
        now = self.clock()
        self._caps = None  # other processes may have stored events meanwhile
        done = self.dispatch.respect_limits()
        for record in self.dispatch.followed_here(SOURCE):
            stored = self.store.get(record.reference or "")
            if stored is None or _version_of(record.idempotency_key) != stored["version"]:
                continue
            try:
                event = self.read_wire(stored["body"])
                scope, _ = target_scope(event, self.target_names, self.grid_nodes())
            except (InvalidMessageError, UnsupportedTargetsError):
                continue
            # The runs as they were read when the event came, so that this dispatch's is found.
            received = stored["received_at"]
            reading = read_event(event, received, self.default, self.signal_policy)
            key = _run_key(record.idempotency_key)
            run = next((r for r in runs(reading.asks) if any(a.key == key for a in r)), None)
            if run is None or scope is None:
                continue
            current = next(
                (a for a in run if a.start <= now and (a.end is None or now < a.end)), None
            )
            if current is None or current.charge_state is not None:
                continue  # between windows, or an energy goal (no power to follow)
            target, _ = self._target(current, scope)
            end = self._end(run, now) if run[-1].end is None else run[-1].end
            window_end = record.start + timedelta(minutes=record.duration_minutes)
            changed = target is not None and abs(target - record.target_kw) > 1e-3
            extend = run[-1].end is None and window_end - now < EXTEND_BEFORE
            if target is None or not (changed or extend):
                continue
            reason = "open-ended event extended" if not changed else f"{current.meaning} begins"
            try:
                self.dispatch.retarget(record.dispatch_id, target, end, reason)
                done += 1
            except (DispatchConflictError, DispatchRejectedError) as exc:
                log.warning(
                    "event %s: could not retarget %s: %s", record.reference, record.dispatch_id, exc
                )
        return done

    def limit(
        self, scope: Mapping[str, Any], discharge: bool, start: datetime, end: datetime
    ) -> tuple[float | None, str]:
        """The tightest site limit (OpenADR capacity limits) on a dispatch: `DispatchCore`'s
        `power_limit`."""
        if self._caps is None:
            self._caps = self._site_caps()
        return tightest(self._caps, scope, discharge, start, end)

    def _stored(self, limit: int = 200) -> list[tuple[DrEvent, Scope | None, Reading]]:
        """The stored events that still stand (newest first), each read as when it came."""
        out = []
        for stored in self.store.recent(limit):
            try:
                event = self.read_wire(stored["body"])
                scope, _ = target_scope(event, self.target_names, self.grid_nodes())
            except (InvalidMessageError, UnsupportedTargetsError):
                continue
            if not event.cancelled:
                at = stored["received_at"]
                out.append((event, scope, read_event(event, at, self.default, self.signal_policy)))
        return out

    def _site_caps(self) -> list[SiteCap]:
        return [
            SiteCap(w, scope.grid_node, scope.fleet_id, scope.resource_ids, event.event_id)
            for event, scope, reading in self._stored()
            if scope is not None
            for w in reading.caps
        ]

    def price_windows(self) -> list[PriceWindow]:
        """Prices the stored events carry (`PRICE`, `EXPORT_PRICE`), oldest event first, so that
        a later one wins where two overlap."""
        return [p for _, _, reading in reversed(self._stored()) for p in reading.prices]

    def recent(self, limit: int = 50) -> list[dict[str, Any]]:
        return self.store.recent(limit)
