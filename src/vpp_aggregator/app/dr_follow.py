"""Demand-response events as time passes: later windows of a run take their figures, runs that
outlast their dispatch are extended, orphaned dispatches ramp down; and what the stored events
say about site limits and prices (`app/dr_events`)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from vpp_aggregator.app.dispatch import DispatchRejectedError
from vpp_aggregator.app.dispatch_ports import DispatchConflictError
from vpp_aggregator.app.dispatch_records import DispatchRecord, NotFollowedHereError
from vpp_aggregator.app.dr_base import (
    EXTEND_BEFORE,
    DrEventsBase,
    run_key_of,
    runs,
    version_of_key,
)
from vpp_aggregator.app.dr_store import SOURCE
from vpp_aggregator.app.message_fields import InvalidMessageError
from vpp_aggregator.domain.dr_asks import (
    Reading,
    Scope,
    UnsupportedTargetsError,
    read_event,
    target_scope,
)
from vpp_aggregator.domain.dr_caps import SiteCap, tightest
from vpp_aggregator.domain.dr_event import REPEAT_AHEAD, DrEvent
from vpp_aggregator.domain.dr_prices import PriceWindow

log = logging.getLogger(__name__)


class DrFollowThrough(DrEventsBase):
    # ------------------------------------------------------------------ as time passes
    def follow(self) -> int:
        """Call periodically: a run's dispatch takes each later window's figure once, when that
        window begins; a run that outlasts its dispatch (open-ended, or longer than a day) is
        extended before the dispatch ends; a dispatch its event no longer has (cancelled, or
        not in the stored version) ramps down. Returns how many dispatches changed."""
        now = self.clock()
        if self._caps_read is None or now - self._caps_read > self.caps_fresh:
            self._refresh_caps(now)  # other processes may have stored events meanwhile
        with self._serial:
            done = self.dispatch.respect_limits()
            followed = [r.dispatch_id for r in self.dispatch.followed_here(SOURCE)]
        for dispatch_id in followed:
            # One dispatch at a time under the lock: an event waits for one, not for all.
            with self._serial:
                record = self.dispatch.followed_record(dispatch_id)  # as it is now
                if record is not None:
                    done += self._follow(record, now)
        return done

    def _follow(self, record: DispatchRecord, now: datetime) -> int:
        stored = self.store.get(record.reference or "")
        if stored is None:
            return 0
        if (
            stored["read_as"].get("cancelled")
            or version_of_key(record.idempotency_key) != stored["version"]
        ):
            orphan = f"event {record.reference} no longer has it"
            return len(self._cancel([record], orphan))  # a cancel or update that did not reach it
        try:
            event = self.read_wire(stored["body"])
            scope, _ = target_scope(event, self.target_names, self.grid_nodes())
        except (InvalidMessageError, UnsupportedTargetsError):
            return 0
        # The runs as they were read when the event came, named as this dispatch's was.
        reading = read_event(
            event,
            stored["received_at"],
            self.default,
            self.signal_policy,
            horizon=now + REPEAT_AHEAD,  # an event that repeats goes on being read ahead
        )
        key = run_key_of(record.idempotency_key)
        run = next((r for r in runs(reading.every) if r[0].key == key), None)
        if run is None or scope is None:
            return 0
        current = next((a for a in run if a.start <= now and (a.end is None or now < a.end)), None)
        if current is None or current.charge_state is not None:
            return 0  # between windows, or an energy goal (no power to follow)
        applied = self._applied.get(record.dispatch_id)
        self._applied[record.dispatch_id] = current.key
        # First seen here: a set figure is compared with the dispatch's; a share of what is
        # available is taken as it was planned (it moves with the fleet, not with the window).
        begins = applied != current.key if applied is not None else current.share is None
        target = record.target_kw
        if begins:
            target = self._target(current, scope)[0] or record.target_kw
        window_end = record.start + timedelta(minutes=record.duration_minutes)
        run_end = run[-1].end
        extend = (run_end is None or run_end > window_end) and window_end - now < EXTEND_BEFORE
        if not (extend or (begins and abs(target - record.target_kw) > 1e-3)):
            return 0
        reason = f"{current.meaning} begins" if begins else "event outlasts its dispatch: extended"
        try:
            self.dispatch.retarget(record.dispatch_id, target, self._end(run, now), reason)
        except (DispatchConflictError, DispatchRejectedError, NotFollowedHereError) as exc:
            log.warning(
                "event %s: could not retarget %s: %s", record.reference, record.dispatch_id, exc
            )
            return 0
        return 1

    def limit(
        self, scope: Mapping[str, Any], discharge: bool, start: datetime, end: datetime
    ) -> tuple[float | None, str, dict[str, Any]]:
        """The tightest site limit (OpenADR capacity limits) on a dispatch: `DispatchCore`'s
        `power_limit`."""
        if self._caps is None:
            self._caps, self._caps_read = self._site_caps(), self.clock()
        return tightest(self._caps, scope, discharge, start, end)

    def _stored(self, limit: int = 200) -> list[tuple[DrEvent, Scope | None, Reading]]:
        """The stored events that still stand (newest first), each read as when it came."""
        out = []
        nodes: set[str] | None = None  # once, if any event is stored: a scan of the fleet
        for stored in self.store.recent(limit):
            if stored["read_as"].get("deleted"):
                continue
            if nodes is None:
                nodes = self.grid_nodes()
            try:
                event = self.read_wire(stored["body"])
                scope, _ = target_scope(event, self.target_names, nodes)
            except (InvalidMessageError, UnsupportedTargetsError):
                continue
            if not event.cancelled:
                at = stored["received_at"]
                out.append((event, scope, read_event(event, at, self.default, self.signal_policy)))
        return out

    def _site_caps(self) -> list[SiteCap]:
        """Every stored event's site limits, newest event first."""
        return [
            c for event, scope, reading in self._stored() for c in caps_of(event, scope, reading)
        ]

    def _refresh_caps(self, now: datetime) -> None:
        """Read every stored event's limits on the tick, outside the lock, so that no event
        waits for it; kept unless an event changed the limits meanwhile (read again next tick)."""
        seen = self._caps_changes
        caps = self._site_caps()
        with self._serial:
            if self._caps_changes == seen:
                self._caps, self._caps_read = caps, now

    def _keep_caps(self, event_id: str, caps: list[SiteCap]) -> bool:
        """The limits in force with this event's as it now stands (none: cancelled or deleted),
        without reading every stored event again. False when no limit can have changed for any
        dispatch: the event's are as they were, and there are none at all."""
        if self._caps is not None and [c for c in self._caps if c.event_id == event_id] == caps:
            return bool(self._caps)
        self._caps_changes += 1  # a full read begun before this one is out of date
        if self._caps is not None:
            self._caps = caps + [c for c in self._caps if c.event_id != event_id]  # newest first
        return True  # (with none in memory: read in full when next needed)

    def price_windows(self) -> list[PriceWindow]:
        """Prices the stored events carry (`PRICE`, `EXPORT_PRICE`), oldest event first, so that
        a later one wins where two overlap."""
        return [p for _, _, reading in reversed(self._stored()) for p in reading.prices]

    def recent(self, limit: int = 50) -> list[dict[str, Any]]:
        return self.store.recent(limit)


def caps_of(event: DrEvent, scope: Scope | None, reading: Reading) -> list[SiteCap]:
    """The site limits an event sets, each with the resources it is for."""
    if scope is None or event.cancelled:
        return []
    return [
        SiteCap(w, scope.grid_node, scope.fleet_id, scope.resource_ids, event.event_id)
        for w in reading.caps
    ]
