"""What every part of the dispatch service shares: its settings and collaborators, and the
book of open dispatches it follows through (`OpenDispatch`, one per dispatch, rebuilt from the record
at each revision)."""

from __future__ import annotations

import logging
import math
import socket
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from numpy.typing import NDArray

from vpp_aggregator.app.dispatch_ports import (
    Bus,
    DispatchMetricsPort,
    DispatchRequest,
    DispatchStore,
)
from vpp_aggregator.app.dispatch_records import (
    HELD_AFTER,
    OPEN_STATUSES,
    RECHARGE_SOURCE,
    DispatchRecord,
    DispatchStatus,
)
from vpp_aggregator.app.dispatch_refusals import Refusals
from vpp_aggregator.app.events import EventBus
from vpp_aggregator.domain.dispatch.safety import soc_trajectory
from vpp_aggregator.domain.fleet_state import FleetState
from vpp_aggregator.domain.tariff import PriceCurve

log = logging.getLogger(__name__)


@dataclass(slots=True)
class OpenDispatch:
    """A dispatch in flight, as the closed loop follows it."""

    record: DispatchRecord
    start_ts: float
    window_end_ts: float
    ids: list[str]
    kw: NDArray[np.float64]  # (resources, points) signed setpoints
    soc: NDArray[np.float64]  # planned SoC at each point
    released: list[bool]  # ramping down after being dropped or cancelled: not followed again
    # SoC (%) each resource gave up under earlier revisions of this dispatch (kept in memory):
    # a battery that gave anything is recharged to the target when the dispatch ends
    drawn_pct: dict[str, float] = field(default_factory=dict)
    # SoC (%) each resource had as its part in this dispatch began (its first revision that had
    # begun): what it gave is measured from there too, however the revisions and devices went.
    before_pct: dict[str, float] = field(default_factory=dict)
    planned_ts: float = 0.0  # when this revision was planned

    def drawn_by(self, now_ts: float) -> dict[str, float]:
        """SoC (%) each resource has given up to this dispatch so far, by its plan: nothing
        before the dispatch starts."""
        drawn = dict(self.drawn_pct)
        point = (now_ts - self.start_ts) / 60.0
        if point <= 0:
            return drawn
        grid = np.arange(self.soc.shape[1])
        for j, rid in enumerate(self.ids):
            taken = float(self.soc[j, 0] - np.interp(point, grid, self.soc[j]))
            drawn[rid] = drawn.get(rid, 0.0) + max(taken, 0.0)
        return drawn


# (scope, discharge?, start, end) -> the tightest limit in kW over [start, end), its words, and
# the site (scope) it is for.
PowerLimit = Callable[
    [Mapping[str, Any], bool, datetime, datetime], tuple[float | None, str, dict[str, Any]]
]


class DispatchCore:
    def __init__(
        self,
        state: FleetState,
        store: DispatchStore,
        bus: Bus,
        clock: Callable[[], datetime],
        *,
        ramp_kw_per_min: float,
        round_trip_efficiency: float = 0.9,
        prefer_bess: bool = True,
        lp_max_resources: int = 40,
        max_target_kw: float = 1e7,
        soc_tolerance_pct: float = 5.0,
        recharge_target_soc_pct: float = 80.0,
        tariff: PriceCurve | None = None,
        command_topic: str = "migrid.l3.v2g",
        metrics: DispatchMetricsPort | None = None,
        lease_seconds: float = 30.0,
        peer_poll_seconds: float = 0.0,
        events: EventBus,
        power_limit: PowerLimit | None = None,
    ) -> None:
        self.state = state
        # Each open dispatch is followed through by one process, which renews its claim once a
        # third of it has run (a tick or two missed cannot lose it); another process takes over
        # a dispatch whose claim has lapsed.
        self.owner = f"{socket.gethostname()[:40]}-{uuid.uuid4().hex[:12]}"
        self.lease = timedelta(seconds=lease_seconds)
        self._renewed_at: datetime | None = None
        # refusals queued by other processes are taken at most this often (0: every tick)
        self.peer_poll = timedelta(seconds=peer_poll_seconds)
        self._refusals_read: datetime | None = None
        self.store = store
        self.bus = bus
        self.clock = clock
        self.ramp = ramp_kw_per_min
        self.rte = round_trip_efficiency
        self.prefer_bess = prefer_bess
        self.lp_max = lp_max_resources
        self.max_target_kw = max_target_kw
        self.soc_tolerance = soc_tolerance_pct
        self.recharge_target = recharge_target_soc_pct
        self.tariff = tariff
        self.topic = command_topic
        self.metrics = metrics
        self.events = events  # `DispatchEnded`: recharges
        # Site limits from utilities' events (OpenADR capacity limits), by scope and direction.
        self.power_limit = power_limit
        self._lock = threading.RLock()
        self._relay_lock = threading.Lock()
        self._open: dict[str, OpenDispatch] = {}
        self.refusals = Refusals()  # resources that refused a dispatch's command, by dispatch

    def _track(self, record: DispatchRecord) -> None:
        if record.status not in OPEN_STATUSES or not record.allocations:
            self._open.pop(record.dispatch_id, None)
            return
        width = max(len(a.schedule_kw) for a in record.allocations)
        kw = np.zeros((len(record.allocations), width))
        for j, a in enumerate(record.allocations):
            kw[j, : len(a.schedule_kw)] = a.schedule_kw
        ids = [a.resource_id for a in record.allocations]
        start_ts = record.allocations[0].schedule_start.timestamp()
        rows = self.state.rows_of(ids)
        cap = np.array([self.state.capacity_kwh[r] if r >= 0 else 1.0 for r in rows.tolist()])
        soc0 = np.array([a.start_soc_pct for a in record.allocations])
        before = {a.resource_id: a.start_soc_pct for a in record.allocations}
        known = self._open.get(record.dispatch_id)
        if known is not None and known.planned_ts >= known.start_ts - 60.0:
            # planned as it began or later, not the day before: its figures stand
            before |= known.before_pct
        self._open[record.dispatch_id] = OpenDispatch(
            record=record,
            start_ts=start_ts,
            window_end_ts=record.start.timestamp() + record.duration_minutes * 60.0,
            ids=ids,
            kw=kw,
            soc=soc_trajectory(soc0, cap, self.rte, kw),
            released=[a.binding_constraint.startswith("released") for a in record.allocations],
            before_pct=before,
            planned_ts=record.updated_at.timestamp(),
        )

    def _drawn(self, o: OpenDispatch, now: datetime) -> dict[str, float]:
        """SoC (%) each resource gave to this dispatch: by its plans, or as measured from where
        it began to where it reports now when that is more (commands refused or late, revisions
        the plans lost track of)."""
        drawn = o.drawn_by(now.timestamp())
        ids = sorted(o.before_pct)
        for rid, live in zip(ids, self.state.live_many(ids, now), strict=True):
            if live is not None and live.soc_pct is not None:
                measured = o.before_pct[rid] - live.soc_pct
                drawn[rid] = max(drawn.get(rid, 0.0), measured)
        return drawn

    def _set_status(self, record: DispatchRecord, status: DispatchStatus, now: datetime) -> None:
        record.status = status
        record.updated_at = now
        self.store.set_status(record.dispatch_id, status, now)
        if self.metrics:
            self.metrics.status_changed(status)

    def first_start_ts(self) -> float:
        """When the earliest dispatch this process follows begins (epoch s; past once it runs,
        until it ends): from then on each tick has work to do. Infinite when it follows none."""
        with self._lock:
            return min(
                (min(o.start_ts, o.record.start.timestamp()) for o in self._open.values()),
                default=math.inf,
            )

    def held_resources(
        self, start: datetime | None = None, end: datetime | None = None, exclude: str | None = None
    ) -> list[str]:
        """Resources in open dispatches whose time overlaps [start, end] (all when not given)."""
        with self._lock:
            out = []
            for did, o in self._open.items():
                if did == exclude:
                    continue
                if (
                    start is not None
                    and end is not None
                    and (o.record.end_at <= start or o.record.start >= end)
                ):
                    continue
                out.extend(o.ids)
            return out

    def busy_everywhere(
        self,
        start: datetime,
        end: datetime,
        exclude: str | None = None,
        recharges_from: datetime | None = None,
    ) -> list[str]:
        """Held by any process of the deployment: every dispatch is in the store, this process's
        own included (stored before it is followed). With `recharges_from`, recharges not begun
        by then are not counted: they give way (`DispatchReleases._give_way`)."""
        return self.store.held_resources(start, end, exclude, recharges_from)

    def busy_for(self, req: DispatchRequest, start: datetime, now: datetime) -> list[str]:
        """What a new dispatch may not take: held in its window and `HELD_AFTER` it, but for
        recharges not begun, which give way; a recharge itself takes nothing held."""
        end = start + timedelta(minutes=req.duration_minutes) + HELD_AFTER
        return self.busy_everywhere(
            start, end, recharges_from=None if req.source == RECHARGE_SOURCE else now
        )
