"""FastAPI application factory: one Aggregator, its metrics, and errors every client can read."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy.exc import OperationalError, StatementError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from vpp_aggregator import SERVICE_NAME, __version__
from vpp_aggregator.adapters import native_heap
from vpp_aggregator.adapters.api import (
    docs_pages,
    routes_audit,
    routes_capacity,
    routes_dispatch,
    routes_forecast,
    routes_market,
    routes_ops,
    routes_resources,
    routes_telemetry,
)
from vpp_aggregator.adapters.api.auth import Authenticator
from vpp_aggregator.adapters.api.limits import BodyLimitMiddleware
from vpp_aggregator.adapters.api.metrics import LatencyMiddleware, Metrics, TransportCollector
from vpp_aggregator.adapters.api.schemas import ErrorOut
from vpp_aggregator.adapters.bus.kafka import KafkaParts
from vpp_aggregator.adapters.bus.memory import InProcessBus
from vpp_aggregator.adapters.cache.redis_state import RedisParts
from vpp_aggregator.adapters.store.audit_repository import AuditRepository
from vpp_aggregator.adapters.store.database import make_engine, migrate
from vpp_aggregator.adapters.store.dispatch_repository import DispatchRepository
from vpp_aggregator.adapters.store.market_repository import MarketRepository
from vpp_aggregator.adapters.store.repository import Repository
from vpp_aggregator.app.aggregator import Aggregator, utc_now
from vpp_aggregator.app.dispatch import (
    DispatchConflictError,
    DispatchNotFoundError,
    DispatchRejectedError,
)
from vpp_aggregator.app.dispatch_records import PlanningBusyError
from vpp_aggregator.app.errors import (
    RegistrationRejectedError,
    ResourceExistsError,
    ResourceNotFoundError,
)
from vpp_aggregator.app.forecast_inputs import ForecastRejectedError
from vpp_aggregator.config import Settings, load_settings

log = logging.getLogger(__name__)
STATIC = Path(__file__).resolve().parent / "static"


def _field(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or "body"


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = []
        for e in exc.errors():
            msg, field = e["msg"], _field(tuple(e["loc"]))
            if e["type"] == "json_invalid":
                msg, field = (
                    "Body is not valid JSON: " + str(e.get("ctx", {}).get("error", msg)),
                    "body",
                )
            elif e["type"] == "extra_forbidden":
                msg = "Unknown field; check the spelling against /docs"
            errors.append({"field": field, "message": msg})
        detail = f"Request is invalid: {len(errors)} problem{'s' if len(errors) != 1 else ''}"
        return JSONResponse({"detail": detail, "errors": errors}, status_code=422)

    @app.exception_handler(RegistrationRejectedError)
    async def _rejected(_: Request, exc: RegistrationRejectedError) -> JSONResponse:
        errors = [{"field": v.field, "message": v.message} for v in exc.violations]
        n = len(errors)
        detail = f"Registration rejected: {n} requirement{'s' if n != 1 else ''} not met"
        return JSONResponse({"detail": detail, "errors": errors}, status_code=422)

    @app.exception_handler(ResourceExistsError)
    async def _exists(_: Request, exc: ResourceExistsError) -> JSONResponse:
        return JSONResponse(
            {
                "detail": f"Resource {exc} is already registered",
                "errors": [{"field": "resource_id", "message": "already registered"}],
            },
            status_code=409,
        )

    @app.exception_handler(ResourceNotFoundError)
    async def _missing(_: Request, exc: ResourceNotFoundError) -> JSONResponse:
        return JSONResponse({"detail": f"No resource with id {exc}", "errors": []}, status_code=404)

    @app.exception_handler(DispatchRejectedError)
    async def _bad_dispatch(_: Request, exc: DispatchRejectedError) -> JSONResponse:
        errors = [{"field": f, "message": m} for f, m in exc.errors]
        return JSONResponse(
            {"detail": "Dispatch request is invalid", "errors": errors}, status_code=422
        )

    @app.exception_handler(ForecastRejectedError)
    async def _bad_forecast(_: Request, exc: ForecastRejectedError) -> JSONResponse:
        errors = [{"field": f, "message": m} for f, m in exc.errors]
        return JSONResponse(
            {"detail": "Forecast request is invalid", "errors": errors}, status_code=422
        )

    @app.exception_handler(DispatchNotFoundError)
    async def _no_dispatch(_: Request, exc: DispatchNotFoundError) -> JSONResponse:
        return JSONResponse({"detail": f"No dispatch with id {exc}", "errors": []}, status_code=404)

    @app.exception_handler(DispatchConflictError)
    async def _dispatch_conflict(_: Request, exc: DispatchConflictError) -> JSONResponse:
        return JSONResponse({"detail": str(exc), "errors": []}, status_code=409)

    @app.exception_handler(PlanningBusyError)
    async def _planning_busy(_: Request, exc: PlanningBusyError) -> JSONResponse:
        return JSONResponse(
            {
                "detail": f"Dispatch planning is busy ({exc}); nothing was stored. Retry shortly.",
                "errors": [],
            },
            status_code=503,
            headers={"Retry-After": "2"},
        )

    @app.exception_handler(OverflowError)
    async def _overflow(_: Request, exc: OverflowError) -> JSONResponse:
        return _out_of_range(exc)

    @app.exception_handler(StatementError)
    async def _statement(_: Request, exc: StatementError) -> JSONResponse:
        if isinstance(exc.orig, OverflowError):  # a date the database cannot hold
            return _out_of_range(exc.orig)
        raise exc

    @app.exception_handler(OperationalError)
    async def _database_down(_: Request, exc: OperationalError) -> JSONResponse:
        # The database is away (restart, network): nothing was stored, the client should retry.
        log.warning("database unavailable: %s", str(exc).splitlines()[0][:200])
        return JSONResponse(
            {
                "detail": "The database is unavailable; nothing was stored. Retry shortly.",
                "errors": [],
            },
            status_code=503,
            headers={"Retry-After": "2"},
        )

    @app.exception_handler(StarletteHTTPException)  # also what Starlette raises (404, 405, 400)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400:  # a body that cannot be parsed: invalid like any other (422)
            return JSONResponse(
                {
                    "detail": "Body is not valid JSON",
                    "errors": [{"field": "body", "message": str(exc.detail)}],
                },
                status_code=422,
            )
        return JSONResponse(
            {"detail": str(exc.detail), "errors": []},
            status_code=exc.status_code,
            headers=exc.headers,
        )


OPEN_PATHS = {"/health", "/health/ready", "/metrics"}
COMMON_ERRORS = {
    "503": "The database is unavailable; nothing was stored (see Retry-After)",
    "401": "No, an invalid or an expired bearer token (when authentication is on)",
    "403": "The token's role or fleet does not allow this",
    "413": "Body over VPP_MAX_BODY_BYTES",
    "429": "Over VPP_RATE_LIMIT_PER_MINUTE for this token, or for this address when the token "
    "is missing or invalid (see Retry-After)",
}


def _out_of_range(exc: Exception) -> JSONResponse:
    """Dates past what calendars and databases hold (year 9999 at -14:00, say) are bad input."""
    return JSONResponse(
        {
            "detail": "A date or number is out of range",
            "errors": [{"field": "request", "message": str(exc)[:200]}],
        },
        status_code=422,
    )


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's schema, with the errors this service really returns: every 422 in our
    `{"detail", "errors"}` shape, and the auth and limit answers every protected route can give."""
    if app.openapi_schema:
        return app.openapi_schema
    from fastapi.openapi.utils import get_openapi

    doc = get_openapi(
        title=app.title,
        version=app.version,
        summary=app.summary,
        description=app.description,
        routes=app.routes,
    )
    ref = {"$ref": "#/components/schemas/ErrorOut"}
    error = {"content": {"application/json": {"schema": ref}}}
    for path, methods in doc.get("paths", {}).items():
        for op in methods.values():
            responses = op.setdefault("responses", {})
            if "422" in responses:
                responses["422"] = {
                    "description": responses["422"].get("description", "Invalid request"),
                    **error,
                }
            if path not in OPEN_PATHS:
                for code, text in COMMON_ERRORS.items():
                    responses.setdefault(code, {"description": text, **error})
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    _hoist_defs(doc.get("paths", {}), schemas)
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    if "ErrorOut" not in schemas:
        schemas.update(
            ErrorOut.model_json_schema(ref_template="#/components/schemas/{model}").pop("$defs", {})
        )
        schemas["ErrorOut"] = ErrorOut.model_json_schema(
            ref_template="#/components/schemas/{model}"
        )
    app.openapi_schema = doc
    return doc


def _hoist_defs(node: Any, schemas: dict[str, Any]) -> None:
    """A schema written by hand from a model (POST /telemetry's body) carries its nested models
    under `$defs` while its refs point at components: move them there, or ReDoc refuses the
    whole document over the dangling reference."""
    if isinstance(node, dict):
        schemas.update(node.pop("$defs", {}))
        for value in node.values():
            _hoist_defs(value, schemas)
    elif isinstance(node, list):
        for value in node:
            _hoist_defs(value, schemas)


def create_app(
    settings: Settings | None = None,
    clock: Callable[[], datetime] = utc_now,
    run_migrations: bool = True,
    consume: bool = False,
) -> FastAPI:
    """The service; with KAFKA_BROKERS it talks to the other layers over Kafka and consumes
    their topics when VPP_KAFKA_CONSUME is on or `consume` is set (the `worker` command)."""
    settings = settings or load_settings()
    native_heap.configure(settings.malloc_arena_max)  # before the request threads exist
    auth = Authenticator(settings)  # refuses a weak secret before anything starts
    if auth.dev_mode:
        log.warning("no VPP_JWT_SECRET or VPP_JWT_PUBLIC_KEY: dev mode, every caller is an admin")
    engine = make_engine(settings.database_url)
    if run_migrations:
        migrate(engine)
    kafka = KafkaParts.connect(settings) if settings.kafka_brokers else None
    aggregator = Aggregator(
        settings,
        Repository(engine),
        DispatchRepository(engine),
        MarketRepository(engine),
        kafka.bus if kafka is not None else InProcessBus(),
        clock,
    )
    shared = (
        RedisParts.connect(settings.redis_url, settings.redis_prefix, aggregator)
        if settings.redis_url
        else None
    )
    aggregator.load()
    metrics = Metrics(aggregator)
    metrics.registry.register(TransportCollector(kafka, shared))

    async def snapshot_loop() -> None:
        while True:
            await asyncio.sleep(settings.telemetry_snapshot_seconds)
            try:
                await run_in_threadpool(aggregator.snapshotter.flush)
            except Exception:  # the database may be away for a while; the rows stay dirty
                log.exception("telemetry snapshot failed; will retry")

    async def dispatch_loop() -> None:
        while True:
            await asyncio.sleep(settings.dispatch_tick_seconds)
            try:
                await run_in_threadpool(aggregator.dispatch.tick)
                await run_in_threadpool(aggregator.dispatch.publish_pending)
                await run_in_threadpool(aggregator.forecast.track_accuracy)
                await run_in_threadpool(aggregator.market.relay)
            except Exception:
                log.exception("dispatch follow-through failed; will retry")
            if shared is not None:
                try:
                    capacity = await run_in_threadpool(aggregator.capacity.available, 60)
                    await run_in_threadpool(shared.write_capacity, capacity)
                except Exception as exc:  # readiness reports Redis; keep answering meanwhile
                    log.warning("capacity keys not written to Redis: %s", exc)

    async def market_loop() -> None:
        """Offers once per market interval (and at start), settlement once an interval is over."""
        offered_for = -1
        while True:
            step = settings.offer_interval_minutes * 60
            interval = int(aggregator.clock().timestamp() // step)
            try:
                now = aggregator.clock()
                ahead = now + timedelta(hours=settings.offer_horizon_hours)
                # Each interval, and whenever nothing is on offer yet (a fleet that just arrived).
                nothing = not await run_in_threadpool(aggregator.market.offers, now, ahead, None)
                if interval != offered_for or nothing:
                    await run_in_threadpool(aggregator.market.generate_offers)
                    offered_for = interval
                await run_in_threadpool(aggregator.market.settle_due)
            except Exception:
                log.exception("market offers or settlement failed; will retry")
            await asyncio.sleep(settings.market_tick_seconds)

    async def trim_loop() -> None:
        """Freed native memory back to the system (see native_heap): ~6 ms, ~50 ms with 190 MB free."""
        while True:
            await asyncio.sleep(settings.malloc_trim_seconds)
            await run_in_threadpool(native_heap.trim)

    async def retrain_loop() -> None:
        while True:
            await asyncio.sleep(settings.forecast_retrain_hours * 3600)
            await run_in_threadpool(aggregator.forecast.models.start_training)  # returns at once

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        tasks = [
            asyncio.create_task(snapshot_loop()),
            asyncio.create_task(dispatch_loop()),
        ]
        if settings.market_enabled:
            tasks.append(asyncio.create_task(market_loop()))
        if settings.forecast_retrain_hours > 0:
            tasks.append(asyncio.create_task(retrain_loop()))
        if settings.malloc_trim_seconds > 0:
            tasks.append(asyncio.create_task(trim_loop()))
        if shared is not None:
            shared.start()
        if kafka is not None and (settings.kafka_consume or consume):
            kafka.start_consumer(settings, aggregator.integration, app.state.audit.append)
        try:
            yield
        finally:
            if kafka is not None:
                kafka.stop()
            if shared is not None:
                shared.stop()
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            try:  # another process takes over our dispatches at once, not after the lease
                aggregator.dispatch.release()
            except Exception:
                log.exception("could not hand over the dispatches this process followed")
            try:
                aggregator.snapshotter.flush()
            except Exception:
                log.exception(
                    "final telemetry snapshot failed; start-up will replay history instead"
                )
            engine.dispose()

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
    app.state.auth = auth
    app.state.audit = AuditRepository(engine)
    app.state.kafka = kafka
    app.state.shared = shared
    app.state.metrics = metrics
    _install_error_handlers(app)
    for module in (
        routes_ops,
        routes_resources,
        routes_telemetry,
        routes_capacity,
        routes_dispatch,
        routes_forecast,
        routes_market,
        routes_audit,
    ):
        app.include_router(module.router)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    docs_pages.install(app)

    @app.get("/", include_in_schema=False)
    async def dashboard() -> FileResponse:
        """The operator dashboard (static page; it reads this API)."""
        return FileResponse(STATIC / "index.html")

    app.add_middleware(LatencyMiddleware, metrics=metrics)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    return app
