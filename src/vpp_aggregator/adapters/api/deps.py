"""Request-scoped access to the one Aggregator the app was built with.

Async on purpose: FastAPI runs plain `def` dependencies in its thread pool, a thread hop per request.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from vpp_aggregator.adapters.api.metrics import Metrics
from vpp_aggregator.app.aggregator import Aggregator


async def _agg(request: Request) -> Aggregator:
    agg: Aggregator = request.app.state.aggregator
    return agg


async def _metrics(request: Request) -> Metrics:
    m: Metrics = request.app.state.metrics
    return m


AggDep = Annotated[Aggregator, Depends(_agg)]
MetricsDep = Annotated[Metrics, Depends(_metrics)]
