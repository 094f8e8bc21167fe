"""Every error answer in one shape, `{"detail", "errors": [{"field", "message"}]}`, whatever raised
it: validation, the services' refusals, a database that is down, Starlette's own 404/405."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError, StatementError
from starlette.exceptions import HTTPException as StarletteHTTPException

from vpp_aggregator.adapters.store.telemetry_partitions import LOCK_WAIT_S, PartitionBusyError
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

log = logging.getLogger(__name__)


def _field(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or "body"


def field_errors(found: Sequence[Any]) -> list[dict[str, str]]:
    """pydantic's errors in our shape: each with the field at fault and what is wrong."""
    errors = []
    for e in found:
        msg, field = e["msg"], _field(tuple(e["loc"]))
        if e["type"] == "json_invalid":
            msg, field = (
                "Body is not valid JSON: " + str(e.get("ctx", {}).get("error", msg)),
                "body",
            )
        elif e["type"] == "extra_forbidden":
            msg = "Unknown field; check the spelling against /docs"
        errors.append({"field": field, "message": msg})
    return errors


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = field_errors(exc.errors())
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

    @app.exception_handler(PartitionBusyError)
    async def _partition_busy(_: Request, exc: PartitionBusyError) -> JSONResponse:
        log.warning("%s", exc)
        return JSONResponse(
            {"detail": f"{exc}. Nothing of the batch was stored.", "errors": []},
            status_code=503,
            headers={"Retry-After": str(LOCK_WAIT_S)},  # a retry waits that long again
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


def _out_of_range(exc: Exception) -> JSONResponse:
    """Dates past what calendars and databases hold (year 9999 at -14:00, say) are bad input."""
    return JSONResponse(
        {
            "detail": "A date or number is out of range",
            "errors": [{"field": "request", "message": str(exc)[:200]}],
        },
        status_code=422,
    )
