"""Letting go: a released or cancelled resource ramps to zero at the ramp limit, checked by the
safety checker first; a cancel releases every resource of the dispatch."""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import datetime, timedelta

import numpy as np

from vpp_aggregator.app.dispatch_core import OpenDispatch
from vpp_aggregator.app.dispatch_ports import (
    DispatchConflictError,
    DispatchNotFoundError,
    DispatchRequest,
)
from vpp_aggregator.app.dispatch_recharge import DispatchRecharges
from vpp_aggregator.app.dispatch_records import (
    HELD_AFTER,
    OPEN_STATUSES,
    RECHARGE_SOURCE,
    AllocationRecord,
    DispatchRecord,
    DispatchStatus,
    NotFollowedHereError,
    device_commands,
)
from vpp_aggregator.app.events import DispatchEnded
from vpp_aggregator.app.reaction import OUTBOX, PUBLISH, stage
from vpp_aggregator.domain.capacity import Unavailable
from vpp_aggregator.domain.dispatch.safety import check_schedules
from vpp_aggregator.domain.ramps import ramp_down_kw

log = logging.getLogger(__name__)


class DispatchReleases(DispatchRecharges):
    def create(
        self, req: DispatchRequest, received: float | None = None
    ) -> tuple[DispatchRecord, bool]:
        record, created = super().create(req, received)
        if created and req.source != RECHARGE_SOURCE and record.allocations:
            self._give_way(record, self.clock())
        return record, created

    def _give_way(self, record: DispatchRecord, now: datetime) -> None:
        """Recharges not begun that hold a battery this dispatch took (in its window and
        `HELD_AFTER` it, as planning counts it: `busy_for`) are cancelled: a booked recharge
        must not keep a battery from a demand-response event or an award. A discharge books
        its own recharge to the target when it ends; after a charge the battery holds more."""
        taken = {a.resource_id for a in record.allocations}
        until = record.end_at + HELD_AFTER
        for r in self.store.open_dispatches(RECHARGE_SOURCE):
            if r.start <= now or r.start >= until or r.end_at <= record.start:
                continue
            full = self.store.get(r.dispatch_id)
            if full is None or taken.isdisjoint(a.resource_id for a in full.allocations):
                continue
            try:
                self.cancel(r.dispatch_id)
            except (DispatchConflictError, DispatchNotFoundError):
                continue  # ended or cancelled meanwhile
            log.info("recharge %s gave way to dispatch %s", r.dispatch_id, record.dispatch_id)

    def _ramp_down(
        self, rid: str, kw: float, now: datetime, o: OpenDispatch, why: str
    ) -> AllocationRecord:
        j = o.ids.index(rid) if rid in o.ids else -1
        live = self.state.live(rid, now)
        if (
            live is not None
            and live.power_kw is not None
            and live.availability_reason is not Unavailable.STALE_TELEMETRY
        ):
            # From where the device is, not where its plan has it: a battery that stopped at
            # its floor while planned at 40 kW was sent 30, 20, 10 kW below it.
            kw = live.power_kw
        sched = [round(float(x), 3) for x in ramp_down_kw(kw, self.ramp)]
        soc = (
            live.soc_pct
            if live and live.soc_pct is not None
            else (float(o.soc[j, 0]) if j >= 0 else 0.0)
        )
        row = int(self.state.rows_of([rid])[0])
        kind = "BESS" if row >= 0 and bool(self.state.is_bess[row]) else "EV"
        if row < 0:  # deactivated since: keep the type it was allocated with
            kind = next(
                (a.resource_type for a in o.record.allocations if a.resource_id == rid), "EV"
            )
        release = AllocationRecord(
            resource_id=rid,
            resource_type=kind,
            charge_point_id=self.state.charge_point(rid),
            setpoint_kw=0.0,
            schedule_start=now,
            schedule_kw=sched,
            start_soc_pct=round(soc, 3),
            expected_end_soc_pct=round(soc, 3),
            binding_constraint=f"released: {why}",
        )
        broken = self._release_objections(release, o.record.dispatch_id)
        if broken:
            release.binding_constraint += f"; safety check: {', '.join(broken)}"
        return release

    def _release_objections(self, release: AllocationRecord, dispatch_id: str) -> list[str]:
        """The rules the safety checker finds a ramp-down breaking, checked like every schedule
        against the resource as it stands. An objection does not hold the ramp-down back
        (docs/safety.md, "Ramp-downs"): it already reaches zero as fast as the ramp limit allows,
        so any other schedule would break the same rules for longer; hence it is logged loudly."""
        rid, kw = release.resource_id, np.array([release.schedule_kw])
        at, sign = release.schedule_start, 1 if kw[0, 0] >= 0 else -1
        inputs, _ = self.state.dispatch_inputs(at, at, direction=sign, resource_ids=[rid])
        if not inputs.resource_ids:
            log.warning(
                "ramp-down of deleted resource %s (%s): nothing left to check", rid, dispatch_id
            )
            return []
        inputs = replace(inputs, soc_pct=np.array([release.start_soc_pct]), power_kw=kw[:, 0])
        violations = check_schedules(
            inputs, kw, ramp_kw_per_min=self.ramp, round_trip_efficiency=self.rte
        )
        broken = list(dict.fromkeys(v.rule for v in violations))
        if broken:
            log.error(
                "safety check objects to the ramp-down of %s in %s (%s); published anyway at the "
                "ramp limit, the fastest way back to zero: %s",
                rid,
                dispatch_id,
                ", ".join(broken),
                violations[:3],
            )
        return broken

    def cancel(self, dispatch_id: str) -> DispatchRecord:
        now = self.clock()
        with self._lock, self.store.planning_lock():
            record = self.store.get(dispatch_id)
            if record is None:
                raise DispatchNotFoundError(dispatch_id)
            if record.status not in OPEN_STATUSES:
                raise DispatchConflictError(
                    f"Dispatch {dispatch_id} is {record.status.value}; only scheduled, "
                    "active or partial dispatches can be cancelled."
                )
            o = self._open.get(dispatch_id)
            if o is None or o.record.revision != record.revision:
                # Followed by another process (or moved on): this one takes it over to ramp it
                # down; the other lets go when it next renews its claim.
                taken = self.store.take_over(dispatch_id, self.owner, self.clock() + self.lease)
                if taken is not None:
                    record = taken
                    self._track(record)
                    o = self._open.get(dispatch_id)
            allocations: list[AllocationRecord] = []
            drawn = self._drawn(o, now) if o is not None else {}
            if o is not None and now.timestamp() >= o.start_ts:
                point = (now.timestamp() - o.start_ts) / 60.0
                for j, rid in enumerate(o.ids):
                    kw = float(np.interp(point, np.arange(o.kw.shape[1]), o.kw[j]))
                    if abs(kw) > 1e-9:
                        allocations.append(self._ramp_down(rid, kw, now, o, "cancelled"))
            elif o is not None:  # not started: release every resource at zero
                allocations = [
                    AllocationRecord(
                        rid,
                        "",
                        self.state.charge_point(rid),
                        0.0,
                        now,
                        [0.0],
                        0.0,
                        0.0,
                        "released: cancelled",
                    )
                    for rid in o.ids
                ]
            record.status = DispatchStatus.CANCELLED
            record.revision += 1
            record.allocations = allocations
            record.updated_at = now
            record.end_at = max(
                (a.schedule_start + timedelta(minutes=len(a.schedule_kw) - 1) for a in allocations),
                default=now,
            )
            try:
                with stage(OUTBOX):
                    self.store.revise(
                        record,
                        "cancelled",
                        {"ramping_down": len(allocations)},
                        device_commands(record, now),
                        now,
                        owner=self.owner,
                    )
            except NotFollowedHereError:
                raise DispatchConflictError(
                    f"Dispatch {dispatch_id} changed while it was being cancelled; try again."
                ) from None
            self._open.pop(dispatch_id, None)
        with stage(PUBLISH):
            self.publish_pending()
        if self.metrics:
            self.metrics.status_changed(DispatchStatus.CANCELLED)
        self.events.publish(DispatchEnded(record, now, drawn))
        return record
