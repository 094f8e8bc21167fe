"""The audit log: every registration, change, dispatch and cancel, newest first."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from vpp_aggregator.adapters.api.auth import Admin

router = APIRouter(tags=["operations"])


@router.get("/audit")
def audit_log(
    request: Request,
    who: Admin,
    since: datetime | None = None,
    action: Annotated[str | None, Query(max_length=64)] = None,
    actor: Annotated[str | None, Query(max_length=200)] = None,
    before_id: Annotated[int | None, Query(ge=1)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    """Who did what, when and from where; a fleet's admin sees its own fleet's entries.
    Page back with `before_id` = the last `entry_id` seen."""
    items = request.app.state.audit.entries(
        since=since,
        action=action,
        actor=actor,
        fleet_id=who.fleet_id,
        limit=limit,
        before_id=before_id,
    )
    return {"items": items, "count": len(items)}
