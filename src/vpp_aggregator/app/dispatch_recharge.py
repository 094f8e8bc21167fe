"""After a discharge, its batteries are recharged to the recharge target at the cheapest time
by the tariff.

The target is a level, not the amount the discharge took: a recharge that gave back what was
taken, to where the battery began, ended each cycle a little short of it (the planner keeps a
latency reserve below every ceiling; a window can end first), the next cycle began from there,
and over a replayed year the batteries ran down until nothing was offered."""

from __future__ import annotations

import logging
import math
from datetime import datetime, timedelta

from vpp_aggregator.app.dispatch_commands import DispatchCommands
from vpp_aggregator.app.dispatch_ports import (
    MAX_DURATION_MIN,
    DispatchConflictError,
    DispatchRejectedError,
    DispatchRequest,
)
from vpp_aggregator.app.dispatch_records import (
    RECHARGE_SOURCE,
    DispatchRecord,
)
from vpp_aggregator.domain.efficiency import one_way_efficiency
from vpp_aggregator.domain.ramps import minutes_to_move

log = logging.getLogger(__name__)
QUARTER = timedelta(minutes=15)  # the step `cheapest_start` prices a block in
MIN_RECHARGE_KWH = 0.5  # less given (or missing) than this books no recharge


class DispatchRecharges(DispatchCommands):
    def recharge_after(
        self, record: DispatchRecord, now: datetime, drawn_pct: dict[str, float]
    ) -> DispatchRecord | None:
        """After a discharge, recharge each battery it drew from to the recharge target (one
        above it is left alone) at the cheapest time. A discharge cancelled before it gave
        anything (less than `MIN_RECHARGE_KWH` from a battery) books no recharge for it."""
        if record.target_kw <= 0 or record.source == RECHARGE_SOURCE or self.tariff is None:
            return None
        ceilings: dict[str, float] = {}
        power = hours = 0.0
        ids = sorted(drawn_pct)
        rows = self.state.rows_of(ids).tolist()
        for rid, row, live in zip(ids, rows, self.state.live_many(ids, now), strict=True):
            if live is None or live.soc_pct is None or row < 0 or not self.state.is_bess[row]:
                continue
            cap, pc = float(self.state.capacity_kwh[row]), float(self.state.max_charge_kw[row])
            if drawn_pct.get(rid, 0.0) / 100.0 * cap < MIN_RECHARGE_KWH:
                continue
            short = (
                (self.recharge_target - live.soc_pct) / 100.0 * cap / one_way_efficiency(self.rte)
            )
            if short > MIN_RECHARGE_KWH:
                ceilings[rid] = self.recharge_target
                power += pc
                # up at the ramp limit, then down again inside the window: the plan ends there
                minutes = minutes_to_move(short, pc, self.ramp) + pc / self.ramp
                hours = max(hours, minutes / 60.0)
        if not ceilings:
            return None
        duration = min(MAX_DURATION_MIN, max(15, int(math.ceil(hours * 60 / 15) * 15)))
        wanted = set(ceilings)
        held: dict[datetime, bool] = {}

        def blocked(at: datetime) -> bool:
            """A quarter hour in which another dispatch holds any of these batteries: a
            recharge booked over tomorrow's award took the batteries the award was sold on,
            and its charging counted against the award."""
            if at not in held:
                held[at] = not wanted.isdisjoint(self.store.held_resources(at, at + QUARTER))
            return held[at]

        begin = self.tariff.cheapest_start(
            now + timedelta(minutes=1),
            now + timedelta(hours=24),
            timedelta(minutes=duration),
            QUARTER,
            blocked,
        )
        req = DispatchRequest(
            target_kw=-power,
            duration_minutes=duration,
            start=begin,
            resource_ids=tuple(ceilings),
            source=RECHARGE_SOURCE,
            reference=record.dispatch_id,
            idempotency_key=f"recharge-after-{record.dispatch_id}",
            charge_ceiling_pct=ceilings,
        )
        try:
            recharge, _ = self.create(req)
        except (DispatchRejectedError, DispatchConflictError) as exc:
            log.warning("could not schedule the recharge after %s: %s", record.dispatch_id, exc)
            return None
        log.info(
            "recharge %s scheduled for %s (%d batteries)",
            recharge.dispatch_id,
            begin.isoformat(),
            len(ceilings),
        )
        return recharge
