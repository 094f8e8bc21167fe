"""Real-time capacity."""

from __future__ import annotations

from typing import Annotated

import orjson
from fastapi import APIRouter, Query, Response

from vpp_aggregator.adapters.api.deps import AggDep
from vpp_aggregator.adapters.api.schemas import CapacityOut, ErrorOut

router = APIRouter(prefix="/capacity", tags=["capacity"])


@router.get("/available", response_model=CapacityOut, responses={422: {"model": ErrorOut}})
async def available(
    agg: AggDep,
    duration_minutes: Annotated[float, Query(gt=0, le=24 * 60, description="Window length h")] = 60,
    grid_node: Annotated[str | None, Query(max_length=128)] = None,
    fleet_id: Annotated[str | None, Query(max_length=128)] = None,
) -> Response:
    """Power and energy the fleet can give (discharge, up) or absorb (charge, down) over the window."""
    answer = agg.capacity.available(duration_minutes, grid_node or None, fleet_id or None)
    # Built to CapacityOut's shape by the use case (tests hold it to the schema); not re-validated per request.
    return Response(orjson.dumps(answer), media_type="application/json")
