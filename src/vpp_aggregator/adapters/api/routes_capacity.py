"""Real-time capacity."""

from __future__ import annotations

from typing import Annotated

import orjson
from fastapi import APIRouter, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from vpp_aggregator.adapters.api.auth import Viewer, fleet_scope, fleet_wide
from vpp_aggregator.adapters.api.deps import AggDep
from vpp_aggregator.adapters.api.schemas import CapacityOut, ErrorOut
from vpp_aggregator.adapters.api.schemas_forecast import ForecastOut

router = APIRouter(prefix="/capacity", tags=["capacity"])


@router.get("/available", response_model=CapacityOut, responses={422: {"model": ErrorOut}})
async def available(
    request: Request,
    agg: AggDep,
    who: Viewer,
    duration_minutes: Annotated[
        float, Query(ge=1, le=24 * 60, description="Window length in minutes (1 to 1440)")
    ] = 60,
    grid_node: Annotated[str | None, Query(max_length=128)] = None,
    fleet_id: Annotated[str | None, Query(max_length=128)] = None,
) -> Response:
    """Power and energy the fleet can give (discharge, up) or absorb (charge, down) over the window."""
    fleet = fleet_scope(who, fleet_id or None)
    at_once = agg.capacity.available_at_once(duration_minutes, grid_node or None, fleet)
    # None: it would wait for the live state's lock, or go over its rows; not on the event loop
    answer = (
        at_once
        if at_once is not None
        else await run_in_threadpool(
            agg.capacity.available, duration_minutes, grid_node or None, fleet
        )
    )
    shared = request.app.state.shared
    age = shared.follower.stale_seconds() if shared is not None else None
    body = {**answer, "shared_state_age_seconds": None if age is None else round(age, 3)}
    # Built to CapacityOut's shape by the use case (tests hold it to the schema); not re-validated per request.
    return Response(orjson.dumps(body), media_type="application/json")


@router.get("/forecast", response_model=ForecastOut, responses={422: {"model": ErrorOut}})
def capacity_forecast(
    agg: AggDep,
    who: Viewer,
    horizon_hours: Annotated[int, Query(ge=1, le=24 * 14)] = 72,
    interval_minutes: Annotated[int, Query(ge=1, le=1440)] = 60,
    grid_node: Annotated[str | None, Query(max_length=128)] = None,
) -> Response:
    """P5, P10, P20, P30, P50 and P90 of available vehicles and of discharge kW/kWh and charge
    kW per interval (non-decreasing across the levels; offers are made at one of them).

    Served by the documented fallback (a per-resource seasonal profile from stored telemetry,
    driver schedules applied), marked `model.fallback = true`."""
    fleet_wide(who)
    answer = agg.forecast.capacity_forecast(horizon_hours, interval_minutes, grid_node or None)
    return Response(orjson.dumps(answer), media_type="application/json")
