"""FastAPI application factory: the HTTP adapter over one process (`bootstrap`), its metrics,
and errors every client can read."""

from __future__ import annotations

import logging
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from vpp_aggregator import SERVICE_NAME, __version__
from vpp_aggregator.adapters.api import (
    docs_pages,
    routes_audit,
    routes_capacity,
    routes_dispatch,
    routes_dr,
    routes_forecast,
    routes_market,
    routes_ops,
    routes_regulation,
    routes_resources,
    routes_telemetry,
)
from vpp_aggregator.adapters.api.errors import install_error_handlers
from vpp_aggregator.adapters.api.limits import BodyLimitMiddleware
from vpp_aggregator.adapters.api.loading import LoadingGateMiddleware
from vpp_aggregator.adapters.api.metrics import (
    LatencyMiddleware,
    Metrics,
    SchedulerCollector,
    TransportCollector,
)
from vpp_aggregator.adapters.api.openapi_doc import openapi_document
from vpp_aggregator.app.aggregator import utc_now
from vpp_aggregator.bootstrap import Service, build
from vpp_aggregator.config import Settings, load_settings

log = logging.getLogger(__name__)
STATIC = Path(__file__).resolve().parent / "static"
# The periodic jobs (offers, snapshots, forecasts) run on threads beside the event loop. While one
# computes, CPython hands the GIL to the waiting loop only after the switch interval, 5 ms by
# default, and a request waits for it at each hand-off: a capacity read that takes 0.1 ms took
# tens of ms during a market interval's offers. 0.5 ms bounds that wait; the jobs lose little.
GIL_SWITCH_INTERVAL_S = 0.0005


def create_app(
    settings: Settings | None = None,
    clock: Callable[[], datetime] = utc_now,
    run_migrations: bool = True,
    service: Service | None = None,
) -> FastAPI:
    """The HTTP API over one process (`bootstrap.build`): given one, or built here from the
    settings (with KAFKA_BROKERS it talks to the other layers over Kafka and, with
    VPP_KAFKA_CONSUME, consumes their topics; the `worker` command builds a consuming one)."""
    if service is None:
        service = build(settings or load_settings(), clock, run_migrations=run_migrations)
    settings = service.settings
    aggregator, kafka, shared = service.aggregator, service.kafka, service.shared
    metrics = Metrics(aggregator)
    metrics.registry.register(TransportCollector(kafka, shared, service.ven))
    metrics.registry.register(SchedulerCollector(service.scheduler))

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
        service.start()
        try:
            yield
        finally:  # waits for runs under way: off the event loop
            await run_in_threadpool(service.stop)

    app = FastAPI(
        title="VPP Aggregator",
        version=__version__,
        summary=f"{SERVICE_NAME}: V2G EVs and batteries as one dispatchable resource (FERC Order 2222)",
        description="Units: kW, kWh, SoC in %. Positive kW = discharge to the grid (up), negative = charge (down). "
        "Timestamps are timezone-aware ISO-8601.",
        lifespan=lifespan,
        docs_url=None,  # served by docs_pages with local files instead of a CDN's
        redoc_url=None,
    )
    app.state.aggregator = aggregator
    app.state.auth = service.auth
    app.state.audit = service.audit
    app.state.kafka = kafka
    app.state.shared = shared
    app.state.ven = service.ven
    app.state.metrics = metrics
    install_error_handlers(app)
    for module in (
        routes_ops,
        routes_resources,
        routes_telemetry,
        routes_capacity,
        routes_dispatch,
        routes_dr,
        routes_forecast,
        routes_market,
        routes_regulation,
        routes_audit,
    ):
        app.include_router(module.router)
    app.openapi = lambda: openapi_document(app)  # type: ignore[method-assign]
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    docs_pages.install(app)

    @app.get("/", include_in_schema=False)
    async def dashboard() -> FileResponse:
        """The operator dashboard (static page; it reads this API)."""
        return FileResponse(STATIC / "index.html")

    app.add_middleware(LatencyMiddleware, metrics=metrics)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(LoadingGateMiddleware, progress=aggregator.loader.progress)
    return app
