"""Health and Prometheus metrics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from vpp_aggregator import SERVICE_NAME, __version__
from vpp_aggregator.adapters.api.auth import by_address
from vpp_aggregator.adapters.api.deps import AggDep, MetricsDep
from vpp_aggregator.adapters.api.schemas import ErrorOut, HealthOut

router = APIRouter(tags=["operations"])


@router.get("/health", response_model=HealthOut)
def health(agg: AggDep, response: Response) -> HealthOut:
    """Healthy when the database answers; degraded (503) otherwise."""
    try:
        agg.store.ping()
    except Exception:
        response.status_code = 503
        return HealthOut(status="degraded", service=SERVICE_NAME, version=__version__)
    return HealthOut(status="healthy", service=SERVICE_NAME, version=__version__)


@router.get("/health/ready")
def ready(agg: AggDep, request: Request, response: Response) -> dict[str, Any]:
    """Ready when the live state is loaded and every configured dependency answers; 503 naming
    the ones that do not (a start's load says how far it is)."""
    deps: dict[str, dict[str, Any]] = {}
    try:
        agg.store.ping()
        deps["database"] = {"ok": True, "detail": None}
    except Exception as exc:
        deps["database"] = {"ok": False, "detail": f"{type(exc).__name__}: {exc}"}
    deps["live_state"] = {"ok": agg.loaded, "detail": agg.loader.progress.detail()}
    kafka = getattr(request.app.state, "kafka", None)
    deps["kafka"] = (
        kafka.status()
        if kafka is not None
        else {"ok": True, "detail": "not configured (in-process bus)"}
    )
    shared = getattr(request.app.state, "shared", None)
    deps["redis"] = (
        shared.status()
        if shared is not None
        else {"ok": True, "detail": "not configured (state in this process)"}
    )
    ven = getattr(request.app.state, "ven", None)
    if ven is not None:  # said, but never "not ready": a VTN that is down stops nothing here
        deps["openadr_vtn"] = {
            "ok": True,
            "reachable": ven.last_error is None and ven.polls > 0,
            "detail": ven.last_error or f"{ven.polls} polls, {len(ven.known)} events",
        }
    down = sorted(name for name, d in deps.items() if not d["ok"])
    if down:
        response.status_code = 503
    return {"status": "not_ready" if down else "ready", "down": down, "dependencies": deps}


@router.get(
    "/metrics",
    response_class=Response,
    dependencies=[Depends(by_address)],
    responses={
        200: {"content": {"text/plain": {}}},
        429: {
            "model": ErrorOut,
            "description": "Over VPP_RATE_LIMIT_PER_MINUTE for this address (see Retry-After)",
        },
    },
)
def metrics(m: MetricsDep) -> Response:
    """Prometheus text. Open like the probes, but charged to the caller's address: a scraper
    polling in a loop is throttled instead of computing capacity for every request."""
    return Response(generate_latest(m.registry), media_type=CONTENT_TYPE_LATEST)
