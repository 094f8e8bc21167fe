"""Reports for a VTN's events (`domain/dr_reports`): made once an event's last interval is over
("-1 indicates generate report at end of last interval", the `startInterval` default), once per
version of the event, from the telemetry of the resources its dispatches used."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from numpy.typing import NDArray

from vpp_aggregator.app.dispatch import DispatchService
from vpp_aggregator.app.dr_store import SOURCE, DrEventStore
from vpp_aggregator.app.message_fields import InvalidMessageError
from vpp_aggregator.domain.dr_event import DrEvent, windows
from vpp_aggregator.domain.dr_reports import ReportWindow, Storage, report_body
from vpp_aggregator.domain.fleet_state import FleetState
from vpp_aggregator.domain.market import delivered_kwh

log = logging.getLogger(__name__)
PowerHistory = Callable[
    [Sequence[str], datetime, datetime],
    Mapping[str, tuple[NDArray[np.float64], NDArray[np.float64]]],
]


class DrReports:
    def __init__(
        self,
        dispatch: DispatchService,
        store: DrEventStore,
        state: FleetState,
        power_history: PowerHistory,
        read_wire: Callable[[Any], DrEvent],
        clock: Callable[[], datetime],
        *,
        client_name: str,
        hold_s: float,
        default_minutes: int,
    ) -> None:
        self.dispatch = dispatch
        self.store = store
        self.state = state
        self.power_history = power_history
        self.read_wire = read_wire
        self.clock = clock
        self.client_name = client_name or "vpp-aggregator"
        self.hold_s = hold_s
        self.default = timedelta(minutes=default_minutes)

    def due(self, raw: Any) -> dict[str, Any] | None:
        """The report this event asks for, when its last interval is over and it has not been
        sent for this version; None otherwise."""
        descriptors = raw.get("reportDescriptors") if isinstance(raw, dict) else None
        if not descriptors:
            return None
        try:
            event = self.read_wire(raw)
        except InvalidMessageError:
            return None
        stored = self.store.get(event.event_id)
        if stored is None or stored["read_as"].get("reported") == stored["version"]:
            return None
        spans = windows(event, self.default, stored["received_at"], self.client_name)
        if not spans or any(w.end is None for w in spans) or event.cancelled:
            return None
        now = self.clock()
        ends = [w.end for w in spans if w.end is not None]
        if max(ends) > now:
            return None  # "at end of last interval"
        # "reports use the interval ids included in the associated event" (numbers; a
        # repeat's `id#n` and a missing id take their position).
        report_windows = [
            ReportWindow(int(w.interval.id) if w.interval.id.isdigit() else i, w.start, w.end)
            for i, w in enumerate(spans)
            if w.end is not None
        ]
        used: list[str] = []
        for record in self.dispatch.list(source=SOURCE, reference=event.event_id, limit=500)[0]:
            full, _, _ = self.dispatch.get(record.dispatch_id)
            used += [a.resource_id for a in full.allocations]
        used = list(dict.fromkeys(used))
        start = min(w.start for w in report_windows) - timedelta(seconds=self.hold_s)
        history = self.power_history(used, start, max(ends)) if used else {}
        body, skipped = report_body(
            event.event_id,
            self.client_name,
            descriptors,
            report_windows,
            history,
            self._storage(used, now),
            lambda ts, kw, s, e: delivered_kwh(ts, kw, s, e, self.hold_s),
        )
        if skipped:
            log.info("event %s asks for reports we do not make: %s", event.event_id, skipped)
        return body

    def _storage(self, resource_ids: list[str], now: datetime) -> dict[str, Storage]:
        out = {}
        rows = self.state.rows_of(resource_ids)
        states = self.state.live_many(resource_ids, now)
        for rid, row, live in zip(resource_ids, rows.tolist(), states, strict=True):
            if row < 0 or live is None or live.soc_pct is None or not self.state.is_bess[row]:
                continue
            cap = float(self.state.capacity_kwh[row])
            floor = float(self.state.floor_pct[row])
            ceiling = float(self.state.ceiling_pct[row])
            out[rid] = Storage(
                # "Usable energy that the storage device can hold when fully charged": its
                # range between the floor and the ceiling it may be charged to.
                usable_kwh=round(max(0.0, ceiling - floor) / 100.0 * cap, 3),
                charge_level=round(live.soc_pct / 100.0, 4),
                max_discharge_kw=float(self.state.max_discharge_kw[row]),
                max_charge_kw=float(self.state.max_charge_kw[row]),
                capacity_kwh=cap,
            )
        return out

    def sent(self, event_id: str) -> None:
        stored = self.store.get(event_id)
        if stored is not None:
            read_as = {**stored["read_as"], "reported": stored["version"]}
            self.store.save(
                event_id, stored["version"], stored["received_at"], stored["body"], read_as
            )
