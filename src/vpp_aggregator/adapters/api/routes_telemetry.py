"""Telemetry ingest. The body is parsed by hand so one bad sample cannot sink a good batch."""

from __future__ import annotations

import orjson
from fastapi import APIRouter, HTTPException, Request
from starlette.concurrency import run_in_threadpool

from vpp_aggregator.adapters.api.auth import Operator, fleet_wide
from vpp_aggregator.adapters.api.deps import AggDep, MetricsDep
from vpp_aggregator.adapters.api.schemas import ErrorOut, IngestOut, RejectionOut, TelemetryIn
from vpp_aggregator.app.telemetry import parse_samples

router = APIRouter(tags=["telemetry"])


@router.post(
    "/telemetry",
    response_model=IngestOut,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": TelemetryIn.model_json_schema(
                        ref_template="#/components/schemas/{model}"
                    )
                }
            },
        }
    },
    responses={413: {"model": ErrorOut}, 415: {"model": ErrorOut}, 422: {"model": ErrorOut}},
)
async def ingest(request: Request, agg: AggDep, metrics: MetricsDep, who: Operator) -> IngestOut:
    """Accept a batch of up to 10,000 samples; each bad sample is rejected with its index and reason.
    Needs a fleet-wide operator token (the device gateway's)."""
    fleet_wide(who)
    # JSON only, as every other endpoint: a text/plain post needs no CORS preflight, so any web
    # page could otherwise feed fake telemetry to a service its visitor can reach.
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/json" and not kind.endswith("+json"):
        raise HTTPException(415, f"Content-Type must be application/json, not {kind or 'missing'}")
    body = await request.body()
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise HTTPException(422, f"Body is not valid JSON: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("samples"), list):
        raise HTTPException(422, 'Body must be a JSON object with a "samples" list')
    raw = doc["samples"]
    limit = agg.settings.telemetry_max_batch
    if len(raw) > limit:
        raise HTTPException(
            413, f"A batch may hold at most {limit} samples; this one has {len(raw)}. Split it."
        )
    batch, pre_rejected = parse_samples(raw)
    result = await run_in_threadpool(agg.telemetry.ingest, batch, pre_rejected)
    metrics.samples_accepted.inc(result.accepted)
    for r in result.rejected:
        metrics.samples_rejected.labels(r.reason.split(":")[0][:60]).inc()
    return IngestOut(
        accepted=result.accepted,
        rejected=[RejectionOut(index=r.index, reason=r.reason) for r in result.rejected],
    )
