"""Creating a dispatch: plan it, persist it together with its device commands (a transactional
outbox), then publish what is stored; commands are the device gateway's format."""

from __future__ import annotations

import logging
import time
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

    def publish_pending(self) -> int:
        """Outbox relay: publish stored commands not yet published; safe to call any time."""
        with self._relay_lock:  # one relay per process; the store's row locks cover the rest
            return self.store.relay_commands(self._send, self.clock())

    def _send(self, payloads: list[dict[str, Any]]) -> list[bool]:
        acked = self.bus.publish_many(self.topic, [(str(p["chargePointId"]), p) for p in payloads])
        if any(acked):
            commands_sent()  # a traced event's first commands are at the broker
        return acked
