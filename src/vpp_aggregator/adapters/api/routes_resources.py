"""Resource registry endpoints."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, HTTPException, Query, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from vpp_aggregator.adapters.api.audit import AuditDep
from vpp_aggregator.adapters.api.auth import Admin, Principal, Viewer, fleet_scope
from vpp_aggregator.adapters.api.deps import AggDep
from vpp_aggregator.adapters.api.errors import field_errors
from vpp_aggregator.adapters.api.mapping import (
    changes_from_patch,
    resource_from_request,
    resource_out,
)
from vpp_aggregator.adapters.api.schemas import (
    BatchOut,
    ErrorOut,
    PatchIn,
    RegisterIn,
    ResourceList,
    ResourceOut,
)
from vpp_aggregator.domain.resources import Resource

router = APIRouter(prefix="/resources", tags=["resources"])
ERRORS: dict[int | str, dict[str, object]] = {
    404: {"model": ErrorOut, "description": "No such resource"},
    422: {"model": ErrorOut, "description": "Every failed requirement, each with its field"},
}


MAX_BATCH = 10_000
REGISTER_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "oneOf": [
                        {"$ref": "#/components/schemas/RegisterIn"},
                        {
                            "type": "array",
                            "maxItems": MAX_BATCH,
                            "items": {"$ref": "#/components/schemas/RegisterIn"},
                        },
                    ]
                }
            }
        },
    }
}


@router.post(
    "/register",
    status_code=status.HTTP_201_CREATED,
    response_model=None,
    openapi_extra=REGISTER_BODY,
    responses={
        200: {"model": BatchOut, "description": "A list: how many registered, and each refused"},
        201: {"model": ResourceOut, "description": "One resource, registered"},
        409: {"model": ErrorOut, "description": "resource_id already registered"},
        **ERRORS,
    },
)
def register(
    agg: AggDep, who: Admin, audit: AuditDep, body: Annotated[Any, Body()]
) -> ResourceOut | JSONResponse:
    """Enrol an EV or BESS. It must have ≥ 50 kWh, be V2G capable, report telemetry and be
    approved. A JSON list (up to 10,000) enrols a fleet: `200` with how many were registered and,
    for each refused, its index, id and every reason; the rest are registered all the same."""
    if isinstance(body, list):
        return _register_batch(agg, who, audit, body)
    try:
        one = RegisterIn.model_validate(body)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False)) from None
    fleet_scope(who, one.fleet_id)
    resource = agg.registry.register(resource_from_request(one, agg.settings.bess_min_soc_pct))
    audit.record(
        "resource.register",
        resource.resource_id,
        {"resource_type": resource.resource_type.value, "grid_node": resource.grid_node},
        resource.fleet_id,
    )
    now = agg.clock()
    return resource_out(
        resource, agg.state.live(resource.resource_id, now), agg.settings.bess_min_soc_pct
    )


def _register_batch(agg: Any, who: Principal, audit: Any, items: list[Any]) -> JSONResponse:
    if len(items) > MAX_BATCH:
        raise RequestValidationError(
            [
                {
                    "loc": ("body",),
                    "msg": f"at most {MAX_BATCH:,} resources a request, not {len(items):,}",
                    "type": "too_long",
                }
            ]
        )
    readable: list[tuple[int, Resource]] = []
    refused: list[dict[str, Any]] = []
    for index, item in enumerate(items):
        rid = item.get("resource_id") if isinstance(item, dict) else None
        try:
            one = RegisterIn.model_validate(item)
            fleet_scope(who, one.fleet_id)
        except ValidationError as exc:
            refused.append(
                {"index": index, "resource_id": rid, "errors": field_errors(exc.errors())}
            )
            continue
        except HTTPException as exc:
            refused.append(
                {
                    "index": index,
                    "resource_id": rid,
                    "errors": [{"field": "fleet_id", "message": str(exc.detail)}],
                }
            )
            continue
        readable.append((index, resource_from_request(one, agg.settings.bess_min_soc_pct)))
    taken, not_taken = agg.registry.register_batch(readable)
    refused += [
        {
            "index": r.index,
            "resource_id": r.resource_id,
            "errors": [{"field": f, "message": m} for f, m in r.errors],
        }
        for r in not_taken
    ]
    refused.sort(key=lambda r: r["index"])
    audit.record(
        "resource.register_batch",
        None,
        {"registered": len(taken), "rejected": len(refused), "submitted": len(items)},
    )
    return JSONResponse({"registered": len(taken), "rejected": refused})


@router.get("", response_model=ResourceList, responses={422: {"model": ErrorOut}})
def list_resources(
    agg: AggDep,
    who: Viewer,
    resource_type: Literal["EV", "BESS"] | None = None,
    grid_node: Annotated[str | None, Query(max_length=128)] = None,
    fleet_id: Annotated[str | None, Query(max_length=128)] = None,
    status: Literal["active", "suspended", "inactive"] | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> ResourceList:
    items, total = agg.store.list(
        resource_type=resource_type,
        grid_node=grid_node,
        fleet_id=fleet_scope(who, fleet_id),
        status=status,
        limit=limit,
        offset=offset,
    )
    now = agg.clock()
    bess_min = agg.settings.bess_min_soc_pct
    return ResourceList(
        items=[
            resource_out(r, live, bess_min)
            for r, live in zip(
                items, agg.state.live_many([r.resource_id for r in items], now), strict=True
            )
        ],
        total=total,
        limit=limit,
        offset=offset,
    )


@router.get("/{resource_id}", response_model=ResourceOut, responses=ERRORS)
def get_resource(
    resource_id: str,
    agg: AggDep,
    who: Viewer,
    duration_minutes: Annotated[float, Query(ge=1, le=24 * 60)] = 60,
) -> ResourceOut:
    """One resource with its latest telemetry and whether it can respond over the next window."""
    resource = _visible(agg, who, resource_id)
    live = agg.state.live(resource_id, agg.clock(), duration_minutes)
    return resource_out(resource, live, agg.settings.bess_min_soc_pct)


@router.patch("/{resource_id}", response_model=ResourceOut, responses=ERRORS)
def patch_resource(
    resource_id: str, body: PatchIn, agg: AggDep, who: Admin, audit: AuditDep
) -> ResourceOut:
    """Change the driver's minimum SoC, schedule, trips, name, charge point or status."""
    _visible(agg, who, resource_id)
    changes = changes_from_patch(body)
    resource = agg.registry.change(resource_id, changes)
    audit.record(
        "resource.change",
        resource_id,
        {"fields": sorted(body.model_dump(exclude_unset=True))},
        resource.fleet_id,
    )
    return resource_out(
        resource, agg.state.live(resource_id, agg.clock()), agg.settings.bess_min_soc_pct
    )


@router.delete("/{resource_id}", response_model=ResourceOut, responses=ERRORS)
def deactivate_resource(resource_id: str, agg: AggDep, who: Admin, audit: AuditDep) -> ResourceOut:
    """Deactivate: the resource leaves every aggregation; its record and telemetry history are kept."""
    _visible(agg, who, resource_id)
    resource = agg.registry.deactivate(resource_id)
    audit.record("resource.deactivate", resource_id, {}, resource.fleet_id)
    return resource_out(resource, None, agg.settings.bess_min_soc_pct)


def _visible(agg: AggDep, who: Principal, resource_id: str) -> Resource:
    """The resource, or 404 for a fleet token asking about another fleet's (no existence leak)."""
    resource = agg.registry.get(resource_id)
    if who.fleet_id is not None and resource.fleet_id != who.fleet_id:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"No resource with id {resource_id}")
    return resource
