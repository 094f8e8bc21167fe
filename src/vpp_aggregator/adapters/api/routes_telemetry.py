"""Telemetry ingest. The body is parsed by hand so one bad sample cannot sink a good batch."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, HTTPException, Request
from pydantic import TypeAdapter, ValidationError
from starlette.concurrency import run_in_threadpool

from vpp_aggregator.adapters.api.deps import AggDep, MetricsDep
from vpp_aggregator.adapters.api.schemas import (
    ErrorOut,
    IngestOut,
    RejectionOut,
    SampleIn,
    TelemetryIn,
)
from vpp_aggregator.app.telemetry import Rejection, Sample

router = APIRouter(tags=["telemetry"])
_samples = TypeAdapter(list[SampleIn])


def _reason(errors: list[Any]) -> str:
    parts = []
    for e in errors:
        field = ".".join(str(p) for p in e["loc"][1:]) or "sample"
        parts.append(f"{field}: {e['msg']}")
    return "; ".join(parts)


def _parse(raw: list[Any]) -> tuple[list[Sample], list[Rejection]]:
    try:
        parsed = _samples.validate_python(raw)
        bad: dict[int, str] = {}
    except ValidationError as exc:
        by_index: dict[int, list[Any]] = {}
        for e in exc.errors():
            by_index.setdefault(int(e["loc"][0]), []).append(e)
        bad = {i: _reason(errs) for i, errs in by_index.items()}
        parsed = _samples.validate_python([x for i, x in enumerate(raw) if i not in bad])
    samples = [
        Sample(s.resource_id, s.timestamp, s.soc_pct, s.plugged_in, s.power_kw) for s in parsed
    ]
    return samples, [Rejection(i, r) for i, r in sorted(bad.items())]


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
    responses={413: {"model": ErrorOut}, 422: {"model": ErrorOut}},
)
async def ingest(request: Request, agg: AggDep, metrics: MetricsDep) -> IngestOut:
    """Accept a batch of up to 10,000 samples; each bad sample is rejected with its index and reason."""
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
    samples, pre_rejected = _parse(raw)
    result = await run_in_threadpool(agg.telemetry.ingest, samples, pre_rejected)
    metrics.samples_accepted.inc(result.accepted)
    for r in result.rejected:
        metrics.samples_rejected.labels(r.reason.split(":")[0][:60]).inc()
    return IngestOut(
        accepted=result.accepted,
        rejected=[RejectionOut(index=r.index, reason=r.reason) for r in result.rejected],
    )
