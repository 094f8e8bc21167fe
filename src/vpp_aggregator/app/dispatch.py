"""Dispatch lifecycle: plan, check, persist, command; follow through; re-plan when the fleet moves.

A dispatch is planned on the live fleet state with one of two solvers behind one problem
definition (the HiGHS LP for small fleets, the vectorised allocator for large ones), checked by
the independent safety checker before anything leaves, persisted together with its control
commands (transactional outbox) and then published. While it runs, every allocated resource is
watched: one that unplugs, goes stale, is locked out or drifts off its planned SoC is dropped and
the rest of the window is re-planned on what is left, each time as a recorded revision.
"""

from __future__ import annotations

import numpy as np

from vpp_aggregator.app.dispatch_ports import (
    Bus,
    DeliveryView,
    DispatchConflictError,
    DispatchNotFoundError,
    DispatchRejectedError,
    DispatchRequest,
    DispatchStore,
)
from vpp_aggregator.app.dispatch_records import (
    DispatchRecord,
    DispatchStatus,
    RevisionRecord,
)
from vpp_aggregator.app.dispatch_retarget import DispatchRetarget
from vpp_aggregator.domain.capacity import Unavailable

__all__ = [
    "Bus",
    "DeliveryView",
    "DispatchConflictError",
    "DispatchNotFoundError",
    "DispatchRejectedError",
    "DispatchRequest",
    "DispatchService",
    "DispatchStore",
]


class DispatchService(DispatchRetarget):
    """The dispatch service as callers see it: create (planner, commands), follow through,
    cancel, retarget, and read; the layers below build on each other in that order."""

    def get(self, dispatch_id: str) -> tuple[DispatchRecord, DeliveryView, list[RevisionRecord]]:
        record = self.store.get(dispatch_id)
        if record is None:
            raise DispatchNotFoundError(dispatch_id)
        return record, self.delivery(record), self.store.revisions(dispatch_id)

    def delivery(self, record: DispatchRecord) -> DeliveryView:
        now = self.clock()
        planned = 0.0
        delivered = 0.0
        reporting = 0
        states = self.state.live_many([a.resource_id for a in record.allocations], now, 1.0)
        for a, live in zip(record.allocations, states, strict=True):
            point = (now.timestamp() - a.schedule_start.timestamp()) / 60.0
            if 0 <= point <= len(a.schedule_kw) - 1:
                planned += float(np.interp(point, np.arange(len(a.schedule_kw)), a.schedule_kw))
            if (
                live is not None
                and live.power_kw is not None
                and live.availability_reason is not Unavailable.STALE_TELEMETRY
                and live.telemetry_at is not None
                and live.telemetry_at >= record.start
            ):
                delivered += live.power_kw
                reporting += 1
        return DeliveryView(
            round(planned, 3), round(delivered, 3) if reporting else None, reporting
        )

    def list(
        self,
        *,
        status: str | None = None,
        source: str | None = None,
        reference: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> tuple[list[DispatchRecord], int]:
        # A partial dispatch is running too, only short of its target: "active" includes it.
        statuses: tuple[str, ...] = ()
        if status == DispatchStatus.ACTIVE.value:
            statuses = (DispatchStatus.ACTIVE.value, DispatchStatus.PARTIAL.value)
        elif status:
            statuses = (status,)
        return self.store.list(
            status=statuses, source=source, reference=reference, limit=limit, offset=offset
        )
