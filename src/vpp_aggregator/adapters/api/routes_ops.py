"""Health and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from vpp_aggregator import SERVICE_NAME, __version__
from vpp_aggregator.adapters.api.deps import AggDep, MetricsDep
from vpp_aggregator.adapters.api.schemas import HealthOut

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


@router.get("/metrics", response_class=Response, responses={200: {"content": {"text/plain": {}}}})
def metrics(m: MetricsDep) -> Response:
    return Response(generate_latest(m.registry), media_type=CONTENT_TYPE_LATEST)
