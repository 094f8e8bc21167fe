"""Creating a dispatch: plan it, persist it together with its device commands (a transactional
outbox), then publish what is stored; commands are the device gateway's format."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from vpp_aggregator.app.dispatch_planner import DispatchPlanner
from vpp_aggregator.app.dispatch_ports import (
    DispatchConflictError,
    DispatchRejectedError,
    DispatchRequest,
)
from vpp_aggregator.app.dispatch_records import (
    DispatchRecord,
)
from vpp_aggregator.app.outbound import V2GCommand
from vpp_aggregator.app.reaction import OUTBOX, PUBLISH, commands_sent, stage

log = logging.getLogger(__name__)


class DispatchCommands(DispatchPlanner):
    def create(
        self, req: DispatchRequest, received: float | None = None
    ) -> tuple[DispatchRecord, bool]:
        """Plan and emit a dispatch; the same idempotency key returns the first one (created=False).

        The key is not looked up first: its unique index refuses the second insert, and the
        first dispatch is read then. A repeat costs a plan; every new dispatch saves a round
        trip to the store before its commands go out."""
        t0 = received if received is not None else time.perf_counter()
        now = self.clock()
        start = req.start or now
        try:
            self._validate(req, now, start)
        except DispatchRejectedError:  # a repeat is answered as before, whatever it now asks
            if req.idempotency_key and (first := self.store.find_by_key(req.idempotency_key)):
                return first, False
            raise
        with self._lock, self.store.planning_lock():
            record, commands = self._plan_record(req, now, start)
            if req.ramp_in:
                record, commands = self._ramped_in(req, now, start, record, commands)
            record.response_time_ms = (time.perf_counter() - t0) * 1e3
            try:
                with stage(OUTBOX):
                    self.store.insert(
                        record,
                        commands,
                        now,
                        owner=self.owner,
                        lease_until=self.clock() + self.lease,
                    )
            except Exception as exc:
                if req.idempotency_key and (again := self.store.find_by_key(req.idempotency_key)):
                    return again, False
                raise DispatchConflictError(str(exc)) from exc
            self._track(record)
        with stage(PUBLISH):
            self.publish_pending()
        record.response_time_ms = (time.perf_counter() - t0) * 1e3
        if self.metrics:
            self.metrics.observe(record)
        return record, True

    def _ramped_in(
        self,
        req: DispatchRequest,
        now: datetime,
        start: datetime,
        record: DispatchRecord,
        commands: list[V2GCommand],
    ) -> tuple[DispatchRecord, list[V2GCommand]]:
        """The plan made again from as many whole minutes before `start` as its fleet needs to
        reach the target (never before now), so the target holds from `start` on. The window
        keeps its end. A plan that never reaches the target in its window gives no ramp time:
        its resources are taken to ramp together at the limit. The plan from `start` stays when
        an early one would hold less."""
        room = math.floor((start - now).total_seconds() / 60.0)
        best, lead = (record, commands), 0
        for _ in range(3):  # a plan made earlier may take other resources, and so other times
            done = best[0].ramp_complete_at
            if done is not None and done <= start:
                break
            if done is not None:
                more = math.ceil((done - start).total_seconds() / 60.0 - 1e-9)
            else:
                fleet_ramp = self.ramp * max(1, len(best[0].allocations))
                more = max(1, math.ceil(abs(req.target_kw) / fleet_ramp - 1e-9))
            if lead + more > room:
                break
            lead += more
            early = start - timedelta(minutes=lead)
            sooner = replace(req, start=early, duration_minutes=req.duration_minutes + lead)
            again = self._plan_record(sooner, now, early)
            if abs(again[0].allocated_kw) + 1e-6 < abs(record.allocated_kw):
                break
            best = again
        return best

    def publish_pending(self) -> int:
        """Outbox relay: publish stored commands not yet published; safe to call any time."""
        with self._relay_lock:  # one relay per process; the store's row locks cover the rest
            return self.store.relay_commands(self._send, self.clock())

    def _send(self, payloads: list[dict[str, Any]]) -> list[bool]:
        acked = self.bus.publish_many(self.topic, [(str(p["chargePointId"]), p) for p in payloads])
        if any(acked):
            commands_sent()  # a traced event's first commands are at the broker
        return acked
