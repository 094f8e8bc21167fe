"""Dispatch endpoints: ask the fleet for power, follow it, cancel it."""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, HTTPException, Query, Response, status
from starlette.concurrency import run_in_threadpool

from vpp_aggregator.adapters.api.audit import AuditDep
from vpp_aggregator.adapters.api.auth import Operator, Principal, Viewer, fleet_scope
from vpp_aggregator.adapters.api.deps import AggDep
from vpp_aggregator.adapters.api.schemas import ErrorOut
from vpp_aggregator.adapters.api.schemas_dispatch import (
    DispatchDetailOut,
    DispatchIn,
    DispatchList,
    DispatchOut,
    DispatchSummary,
)
from vpp_aggregator.app.dispatch import DeliveryView, DispatchRequest
from vpp_aggregator.app.dispatch_records import DispatchRecord, RevisionRecord, schedule_points

router = APIRouter(prefix="/dispatch", tags=["dispatch"])
ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorOut},
    409: {"model": ErrorOut},
    422: {"model": ErrorOut},
}


def dispatch_body(r: DispatchRecord) -> dict[str, Any]:
    return {
        "dispatch_id": r.dispatch_id,
        "status": r.status.value,
        "source": r.source,
        "reference": r.reference,
        "target_kw": r.target_kw,
        "start": r.start.isoformat(),
        "duration_minutes": r.duration_minutes,
        "end_at": r.end_at.isoformat(),
        "allocated_kw": r.allocated_kw,
        "shortfall_kw": r.shortfall_kw,
        "shortfall_reasons": r.shortfall_reasons,
        "ramp_complete_at": r.ramp_complete_at.isoformat() if r.ramp_complete_at else None,
        "solver": r.solver,
        "revision": r.revision,
        "resource_count": len(r.allocations),
        "allocations": [
            {
                "resource_id": a.resource_id,
                "resource_type": a.resource_type,
                "chargePointId": a.charge_point_id,
                "setpoint_kw": a.setpoint_kw,
                "schedule": schedule_points(a),
                "start_soc_pct": a.start_soc_pct,
                "expected_end_soc_pct": a.expected_end_soc_pct,
                "binding_constraint": a.binding_constraint,
            }
            for a in r.allocations
        ],
        "response_time_ms": round(r.response_time_ms, 3),
    }


def detail_body(
    r: DispatchRecord, view: DeliveryView, revisions: list[RevisionRecord]
) -> dict[str, Any]:
    return {
        **dispatch_body(r),
        "planned_kw_now": view.planned_kw,
        "delivered_kw": view.delivered_kw,
        "reporting_resources": view.reporting_resources,
        "plan_kw": r.plan_kw,
        "revisions": [
            {"revision": x.revision, "at": x.at.isoformat(), "reason": x.reason, "detail": x.detail}
            for x in revisions
        ],
    }


def _json(body: dict[str, Any], code: int = 200) -> Response:
    # Built to the declared schema by the functions above (tests hold it); large schedules are
    # serialised once, without a second validation pass.
    return Response(orjson.dumps(body), status_code=code, media_type="application/json")


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=DispatchOut,
    responses={
        200: {"model": DispatchOut, "description": "Same idempotency key: the existing dispatch"},
        **ERRORS,
    },
)
async def create_dispatch(
    body: DispatchIn, agg: AggDep, who: Operator, audit: AuditDep
) -> Response:
    """Split `target_kw` over the fleet for `duration_minutes`, ramp-limited and safe; a target the
    fleet cannot meet comes back as `partial` with the shortfall and the rules that bound it."""
    received = time.perf_counter()
    req = DispatchRequest(
        target_kw=body.target_kw,
        duration_minutes=body.duration_minutes,
        start=body.start,
        grid_node=body.grid_node,
        fleet_id=fleet_scope(who, body.fleet_id),
        resource_ids=tuple(body.resource_ids) if body.resource_ids is not None else None,
        source=body.source,
        reference=body.reference,
        idempotency_key=body.idempotency_key,
    )
    record, created = await run_in_threadpool(agg.dispatch.create, req, received)
    if created:
        audit.record(
            "dispatch.create",
            record.dispatch_id,
            {"target_kw": record.target_kw, "source": record.source, "scope": record.scope},
            req.fleet_id,
        )
    return _json(dispatch_body(record), 201 if created else 200)


@router.get("", response_model=DispatchList, responses={422: {"model": ErrorOut}})
def list_dispatches(
    agg: AggDep,
    who: Viewer,
    status: Literal["scheduled", "active", "completed", "cancelled", "partial", "rejected"]
    | None = None,
    source: Annotated[str | None, Query(max_length=32)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> DispatchList:
    items, total = agg.dispatch.list(status=status, source=source, limit=limit, offset=offset)
    if who.fleet_id is not None:  # a fleet sees the dispatches scoped to it
        items = [r for r in items if r.scope.get("fleet_id") == who.fleet_id]
        total = len(items)
    return DispatchList(
        items=[
            DispatchSummary(
                dispatch_id=r.dispatch_id,
                status=r.status.value,
                source=r.source,
                reference=r.reference,
                target_kw=r.target_kw,
                allocated_kw=r.allocated_kw,
                shortfall_kw=r.shortfall_kw,
                start=r.start,
                duration_minutes=r.duration_minutes,
                end_at=r.end_at,
                revision=r.revision,
                created_at=r.created_at,
            )
            for r in items
        ],
        total=total,
        limit=limit,
        offset=offset,
    )


@router.get("/{dispatch_id}", response_model=DispatchDetailOut, responses=ERRORS)
def get_dispatch(dispatch_id: str, agg: AggDep, who: Viewer) -> Response:
    """The dispatch, its current plan, the power delivered so far (from telemetry) and its revisions."""
    record, view, revisions = agg.dispatch.get(dispatch_id)
    _visible(who, record)
    return _json(detail_body(record, view, revisions))


@router.post("/{dispatch_id}/cancel", response_model=DispatchOut, responses=ERRORS)
def cancel_dispatch(dispatch_id: str, agg: AggDep, who: Operator, audit: AuditDep) -> Response:
    """Stop: every resource ramps back to zero within the ramp limit."""
    record, _, _ = agg.dispatch.get(dispatch_id)
    _visible(who, record)
    cancelled = agg.dispatch.cancel(dispatch_id)
    audit.record("dispatch.cancel", dispatch_id, {"status": cancelled.status.value})
    return _json(dispatch_body(cancelled))


def _visible(who: Principal, record: DispatchRecord) -> None:
    if who.fleet_id is not None and record.scope.get("fleet_id") != who.fleet_id:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"No dispatch with id {record.dispatch_id}")
