"""Dispatch records as the use cases and the store exchange them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from functools import lru_cache
from typing import Any

from vpp_aggregator.app.outbound import SchedulePoint, V2GCommand


class DispatchStatus(StrEnum):
    SCHEDULED = "scheduled"
    ACTIVE = "active"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    PARTIAL = "partial"
    REJECTED = "rejected"


OPEN_STATUSES = (DispatchStatus.SCHEDULED, DispatchStatus.ACTIVE, DispatchStatus.PARTIAL)


@dataclass(slots=True)
class AllocationRecord:
    resource_id: str
    resource_type: str
    charge_point_id: str
    setpoint_kw: float
    schedule_start: datetime
    schedule_kw: list[float]  # one point per minute from schedule_start, linear between
    start_soc_pct: float
    expected_end_soc_pct: float
    binding_constraint: str


@dataclass(slots=True)
class DispatchRecord:
    dispatch_id: str
    status: DispatchStatus
    source: str
    reference: str | None
    idempotency_key: str | None
    target_kw: float
    start: datetime
    duration_minutes: int
    end_at: datetime  # end of the last ramp-down
    scope: dict[str, Any]
    solver: str
    allocated_kw: float
    shortfall_kw: float
    shortfall_reasons: list[dict[str, str]]
    ramp_complete_at: datetime | None
    response_time_ms: float
    revision: int
    plan_kw: list[float]  # planned fleet power per minute from start (signed)
    created_at: datetime
    updated_at: datetime
    allocations: list[AllocationRecord] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class RevisionRecord:
    revision: int
    at: datetime
    reason: str
    detail: dict[str, Any]


@lru_cache(maxsize=64)
def point_times(start: datetime, count: int) -> tuple[str, ...]:
    """ISO times of a schedule's one-minute points; shared by every allocation of a dispatch."""
    return tuple((start + timedelta(minutes=i)).isoformat() for i in range(count))


def schedule_points(a: AllocationRecord) -> list[SchedulePoint]:
    """An allocation's schedule as the device gateway and the API show it."""
    times = point_times(a.schedule_start, len(a.schedule_kw))
    return [{"t": t, "setpoint_kw": kw} for t, kw in zip(times, a.schedule_kw, strict=True)]


def read_schedule_points(points: Sequence[SchedulePoint]) -> list[tuple[datetime, float]]:
    """`schedule_points` read back, as a reader of the API or of a device command sees them: what
    the safety checker takes (`safety.check_wire`)."""
    return [(datetime.fromisoformat(p["t"]), float(p["setpoint_kw"])) for p in points]


class NotFollowedHereError(Exception):
    """The dispatch moved on in the store (another process follows it now, or wrote a newer
    revision); this process's copy is stale and must not be written."""


class PlanningBusyError(Exception):
    """Another process held the deployment's planning lock for too long; try again shortly."""


PLANNED_AHEAD = timedelta(minutes=5)  # a plan older than this at its start is made again then
RECHARGE_SOURCE = "bess_recharge"  # the dispatches the service books itself after a discharge
# A new dispatch takes nothing held in its window or this long after it (its ramp down, the
# next dispatch's ramp in); recharges not begun give way instead (`DispatchReleases._give_way`)
HELD_AFTER = timedelta(minutes=60)


def device_commands(
    record: DispatchRecord,
    at: datetime,
    allocations: Sequence[AllocationRecord] | None = None,
) -> list[V2GCommand]:
    """Commands in the device gateway's format, one per allocation (a release carries limit 0).
    None yet for a dispatch planned more than `PLANNED_AHEAD` before its start: it is planned again
    as it starts, from the fleet as it is then, and its devices get that plan. A day-old plan
    starts from a SoC the resource no longer has (another dispatch may still be drawing on it),
    and a device left with it would follow it from wherever it is."""
    out: list[V2GCommand] = []
    if record.start - at > PLANNED_AHEAD:
        return out
    for a in allocations if allocations is not None else record.allocations:
        direction = 1.0 if record.target_kw > 0 else -1.0
        # The limit in the dispatch's direction; a release carries 0 (it only ramps down).
        peak = max((direction * x for x in a.schedule_kw), default=0.0)
        if a.binding_constraint.startswith("released"):
            peak = 0.0
        out.append(
            {
                "chargePointId": a.charge_point_id,
                "timestamp": at.isoformat(),
                "mode": "Discharge" if record.target_kw > 0 else "Charge",
                "limitKw": round(max(peak, 0.0), 3),
                "v2xProfile": True,
                "dispatch_id": record.dispatch_id,
                "revision": record.revision,
                "resource_id": a.resource_id,
                "schedule": schedule_points(a),
            }
        )
    return out
