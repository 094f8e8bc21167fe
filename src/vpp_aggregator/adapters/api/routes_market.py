"""Market access (FERC Order 2222): offers per aggregation, awards, settlement and its CSV."""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response, status
from fastapi.responses import JSONResponse

from vpp_aggregator.adapters.api.audit import AuditDep
from vpp_aggregator.adapters.api.auth import Admin, Operator, Viewer, fleet_wide
from vpp_aggregator.adapters.api.deps import AggDep
from vpp_aggregator.adapters.api.schemas import ErrorOut
from vpp_aggregator.adapters.api.schemas_dispatch import AwardIn
from vpp_aggregator.app.awards import AwardRefusedError
from vpp_aggregator.app.message_fields import InvalidMessageError

router = APIRouter(prefix="/market", tags=["market"])

CSV_COLUMNS = (
    "award_id",
    "aggregation_id",
    "row",  # award (nothing measured) | interval (the aggregation per 5 min) | resource
    "interval_start",
    "interval_end",
    "resource_id",
    "awarded_kwh",
    "baseline_kwh",
    "measured_kwh",
    "delivered_kwh",
    "awarded_kw",
    "delivery_ratio",
    "baseline_method",
    "price_per_mwh",
    "status",
    "reason",
)


def settlement_rows(row: dict[str, Any]) -> list[dict[str, Any]]:
    """One award's CSV rows: its 5-minute intervals, then its resources (one `award` row
    when nothing was measured)."""
    award = {k: row.get(k) for k in CSV_COLUMNS if k in row}
    detail = [{**award, "row": "interval", **i} for i in row.get("intervals") or []]
    detail += [
        {
            **award,
            "row": "resource",
            "resource_id": r["resource_id"],
            "awarded_kwh": "",
            "baseline_kwh": r.get("baseline_kwh", ""),
            "measured_kwh": r.get("measured_kwh", ""),
            "delivered_kwh": r.get("delivered_kwh", ""),
        }
        for r in row.get("resources") or []
    ]
    return detail or [{**award, "row": "award"}]


@router.get("/offers")
def get_offers(
    agg: AggDep,
    who: Viewer,
    aggregation_id: str | None = None,
    market: Annotated[str | None, Query(pattern="^(day_ahead|real_time)$")] = None,
    start: Annotated[datetime | None, Query(alias="from")] = None,
    end: Annotated[datetime | None, Query(alias="to")] = None,
) -> dict[str, Any]:
    """Offers stored and sent to the market gateway, by interval start (default: from an hour
    ago to 48 h ahead, which holds the next operating day's day-ahead offers), of one market
    (`day_ahead`: hourly, `real_time`: 5-minute) or both."""
    fleet_wide(who)
    now = agg.clock()
    begin = start or now - timedelta(hours=1)
    finish = end or now + timedelta(hours=48)
    items = [
        o
        for o in agg.market.offers(begin, finish, aggregation_id)
        if market is None or o.get("market", "day_ahead") == market
    ]
    return {
        "from": begin.isoformat(),
        "to": finish.isoformat(),
        "items": items,
        "total": len(items),
    }


@router.post("/offers/generate")
def generate_offers(agg: AggDep, who: Admin, audit: AuditDep) -> dict[str, Any]:
    """Offer every coming interval not yet offered now (this also runs every market interval)."""
    fleet_wide(who)
    new = agg.market.generate_offers()
    audit.record("market.offers", None, {"created": len(new)})
    return {"created": len(new), "items": new}


AWARD_ANSWERS: dict[int | str, dict[str, Any]] = {
    201: {"description": "Recorded now; `status` says what became of it (see the README)"},
    200: {"description": "Recorded before (the same award id): `outcome` is `duplicate`"},
    422: {"model": ErrorOut},
}


@router.post("/awards", status_code=status.HTTP_201_CREATED, responses=AWARD_ANSWERS)
def post_award(agg: AggDep, who: Operator, audit: AuditDep, award: AwardIn) -> Any:
    """An award as the market gateway sends it on Kafka (`vpp.market.awards`), for the embedded
    mode and for operators; the same award id twice dispatches once. An award must clear one of
    our offers: its interval, up (discharge), more than 0 and at most the quantity offered. The
    answer is the award as recorded: `dispatched`, `rejected` (its dispatch found no resource to
    take it, with the reason) or `expired` (its interval was over)."""
    fleet_wide(who)
    try:
        outcome = agg.market.award(award)
    except InvalidMessageError as exc:
        field, message = (
            (exc.field, exc.message) if isinstance(exc, AwardRefusedError) else ("award", str(exc))
        )
        return JSONResponse(
            {"detail": "Award is invalid", "errors": [{"field": field, "message": message}]},
            status_code=422,
        )
    audit.record("market.award", award.award_id, {"outcome": outcome.outcome})
    code = status.HTTP_200_OK if outcome.outcome == "duplicate" else status.HTTP_201_CREATED
    recorded = agg.market.get_award(award.award_id) or {}
    return JSONResponse(
        {"outcome": outcome.outcome, "detail": outcome.detail, **recorded}, status_code=code
    )


@router.get("/awards/{award_id}", responses={404: {"model": ErrorOut}})
def get_award(award_id: str, agg: AggDep, who: Viewer) -> Any:
    """An award as recorded: its status (`dispatched`, `rejected`, `expired`, then `settled` or
    `not_delivered` once its interval is over), the reason, its dispatch and its settlement."""
    fleet_wide(who)
    found = agg.market.get_award(award_id)
    if found is None:
        return JSONResponse({"detail": f"No award with id {award_id}", "errors": []}, 404)
    return found


@router.get(
    "/settlement",
    response_model=None,
    responses={
        200: {
            "description": "JSON by default; `format=csv`: per award, a row per 5-minute "
            "interval and per resource",
            "content": {
                "application/json": {"schema": {"type": "object"}},
                "text/csv": {"schema": {"type": "string"}},
            },
        }
    },
)
def get_settlement(
    agg: AggDep,
    who: Viewer,
    day: Annotated[date, Query(alias="date", description="UTC day the intervals start on")],
    format: Annotated[str, Query(pattern="^(json|csv)$")] = "json",
) -> dict[str, Any] | Response:
    """Per award: baseline, measured net consumption and delivered energy (baseline − measured)
    per 5-minute interval, per resource and in total, against what was awarded; the baseline is
    the aggregation's method (VPP_BASELINE_METHODS: CAISO 10-in-10, PJM CBL, metered)."""
    fleet_wide(who)
    rows = agg.market.settlements(datetime(day.year, day.month, day.day, tzinfo=UTC))
    if format == "json":
        return {"date": day.isoformat(), "items": rows, "total": len(rows)}
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerows(settlement_rows(row))
    return Response(
        out.getvalue(),
        media_type="text/csv",
        headers={"content-disposition": f'attachment; filename="settlement-{day}.csv"'},
    )
