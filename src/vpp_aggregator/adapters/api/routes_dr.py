"""Demand-response events: what each was read as and what it became; and a way in over HTTP for
a utility's server (VTN) or an operator, beside the `grid_signals` topic."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Query
from fastapi.responses import JSONResponse

from vpp_aggregator.adapters.api.audit import AuditDep
from vpp_aggregator.adapters.api.auth import Operator, Viewer, fleet_wide
from vpp_aggregator.adapters.api.deps import AggDep
from vpp_aggregator.adapters.openadr import read_event
from vpp_aggregator.app.message_fields import InvalidMessageError

router = APIRouter(prefix="/dr", tags=["demand response"])


@router.get("/events")
def dr_events(
    agg: AggDep, who: Viewer, limit: Annotated[int, Query(ge=1, le=500)] = 50
) -> dict[str, Any]:
    """Events as last received, newest first: each window as read (payload, kW in our signs,
    interval), the departures from the OpenADR schema that were tolerated, and the outcomes
    (the dispatch each became). docs/openadr.md says how events are read."""
    fleet_wide(who)
    items = [
        {
            "event_id": e["event_id"],
            "version": e["version"] or None,
            "received_at": e["received_at"].isoformat(),
            **e["read_as"],
        }
        for e in agg.demand_response.recent(limit)
    ]
    return {"items": items, "count": len(items)}


@router.post("/events")
def post_dr_event(
    agg: AggDep, who: Operator, audit: AuditDep, event: Annotated[Any, Body()]
) -> Any:
    """An OpenADR 3 event (3.1 or 3.0.1), read and acted on exactly as on the `grid_signals`
    topic: the answer is each outcome (`dispatched`, `replanned`, `cancelled`, `expired`,
    `duplicate`, `superseded`, `ignored` with the reason). An event that cannot be read is a
    422 naming every field at fault."""
    fleet_wide(who)
    try:
        with agg.reactions.trace("http"):
            outcomes = agg.demand_response.handle(read_event(event), event)
    except InvalidMessageError as exc:
        return JSONResponse(
            {"detail": "Event is invalid", "errors": [{"field": "event", "message": str(exc)}]},
            status_code=422,
        )
    for o in outcomes:
        if o.outcome in ("dispatched", "rejected", "replanned", "cancelled"):
            audit.record(f"dr_event.{o.outcome}", o.detail, {"reason": o.reason})
    return {
        "outcomes": [
            {"outcome": o.outcome, "detail": o.detail, "reason": o.reason} for o in outcomes
        ]
    }
