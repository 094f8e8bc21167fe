"""What the demand-response handler and its follow-through share: the runs an event's windows
make, versions, and turning one ask into a target (`app/dr_events`)."""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from vpp_aggregator.app.dispatch import DispatchService
from vpp_aggregator.app.dispatch_ports import DispatchConflictError
from vpp_aggregator.app.dispatch_records import DispatchRecord
from vpp_aggregator.app.dr_store import SOURCE, DrEventStore
from vpp_aggregator.app.outcome import Outcome
from vpp_aggregator.domain.dr_asks import (
    Battery,
    FleetAsk,
    Policy,
    Scope,
)
from vpp_aggregator.domain.dr_caps import Departure, SiteCap
from vpp_aggregator.domain.dr_event import DrEvent

log = logging.getLogger(__name__)
MAX_MINUTES = 24 * 60  # the longest dispatch; an open-ended run is extended before it ends
CAPS_FRESH = timedelta(seconds=30)  # site limits stored by other processes are read this often...
EXTEND_BEFORE = timedelta(hours=1)
KEY = "grid_signal:"


def run_key_of(idempotency_key: str | None) -> str:
    """A dispatch's run (event id and first interval), from its idempotency key."""
    return (idempotency_key or "").removeprefix(KEY).rsplit("@", 1)[0]


def version_of_key(idempotency_key: str | None) -> str:
    key = idempotency_key or ""
    return key.rsplit("@", 1)[1] if "@" in key else ""


def event_version(event: DrEvent, body: Any) -> str:
    """The event's version: its `modificationDateTime` in UTC; an event without one (the
    platform's) is versioned by its content, so a changed event is an update and a redelivered
    one a duplicate."""
    if event.version is not None:
        return event.version.astimezone(UTC).isoformat()
    text = json.dumps(body, sort_keys=True, default=str) if body is not None else repr(event)
    return "content-" + hashlib.sha256(text.encode()).hexdigest()[:12]


def is_older(version: str, stored: str) -> bool:
    """Only two modification times can be older or newer; a content version always counts."""
    dated = not version.startswith("content-") and not stored.startswith("content-")
    return dated and version < stored


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


class DrEventsBase:
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
        batteries: Callable[[Scope, datetime, int], list[Battery]] | None = None,
        departures: Callable[[Scope, datetime], list[Departure]] | None = None,
        charge_efficiency: float = 1.0,
        peer_poll_seconds: float = 0.0,
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
        # Batteries in a scope that can move now in a direction (-1 charge, +1 discharge).
        self.batteries = batteries or (lambda scope, now, direction: [])
        self.departures = departures or (lambda scope, now: [])  # plugged vehicles that leave
        self.charge_efficiency = charge_efficiency
        self._caps: list[SiteCap] | None = None
        self._caps_read: datetime | None = None
        # ...or as seldom as the process looks for what other processes stored
        self.caps_fresh = max(CAPS_FRESH, timedelta(seconds=peer_poll_seconds))
        self._caps_changes = 0  # events that changed `_caps` in place (`DrFollowThrough`)
        self._applied: dict[str, str] = {}  # dispatch id -> the window it was last set for
        self._serial = threading.RLock()  # from the stored events; refreshed as they come

    # ------------------------------------------------------------------ a message
    def _open_dispatches(self, event_id: str | None = None) -> list[DispatchRecord]:
        """The open dispatches of demand-response events (of `event_id`'s alone when given),
        newest first, in one read of the store; summaries (no allocations, plan or shortfall
        reasons): what is done to one reads it in full."""
        records = self.dispatch.store.open_dispatches(SOURCE)
        return [r for r in records if event_id is None or r.reference == event_id]

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
            return None, f"{ask.meaning}: 0 kW, nothing to dispatch"
        return target, ""

    @staticmethod
    def _end(run: list[FleetAsk], start: datetime) -> datetime:
        last = run[-1].end
        longest = start + timedelta(minutes=MAX_MINUTES)
        return longest if last is None else min(last, longest)
