"""Schemathesis against the service's own OpenAPI: every operation, no 5xx, responses as declared."""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from api_helpers import bess_body, ev_body, sample
from conftest import Clock
from vpp_aggregator.adapters.api.app import create_app
from vpp_aggregator.config import load_settings

EXAMPLES_PER_OPERATION = 100


def _app():  # type: ignore[no-untyped-def]
    """The service on a throwaway SQLite file with a small fleet, so ids can hit real resources."""
    from fastapi.testclient import TestClient

    tmp = Path(tempfile.mkdtemp(prefix="vpp-fuzz-"))
    clock = Clock(datetime.now(UTC).replace(microsecond=0))
    app = create_app(
        load_settings(
            DATABASE_URL=f"sqlite:///{tmp / 'fuzz.db'}",
            VPP_SITE_TIMEZONE="UTC",
            VPP_MODEL_DIR=str(tmp / "models"),
        ),
        clock=clock,
    )
    with TestClient(app) as c:
        c.post("/resources/register", json=bess_body("bess-1"))
        c.post("/resources/register", json=ev_body("ev-1"))
        c.post(
            "/telemetry",
            json={
                "samples": [
                    sample("bess-1", clock.now, 80),
                    sample("ev-1", clock.now - timedelta(seconds=5), 70),
                ]
            },
        )
    return app


schema = schemathesis.openapi.from_asgi("/openapi.json", _app())


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


def _counted(calls: dict[str, int], label: str):  # type: ignore[no-untyped-def]
    def check(case) -> None:  # type: ignore[no-untyped-def]
        calls[label] += 1
        case.call_and_validate(checks=CHECKS)

    return check


def test_every_operation_answers_as_documented() -> None:
    """Each operation of the OpenAPI gets its own generated requests. Checked: no 5xx, and every
    status, content type, header and body as declared. (Business rules beyond the schema, e.g.
    "an event ends after it starts", rightly refuse some schema-valid requests, so positive-data
    acceptance is not among the checks.)"""
    calls: dict[str, int] = {}
    failures: dict[str, str] = {}
    for result in schema.get_all_operations():
        operation = result.ok()
        label = f"{operation.method.upper()} {operation.path}"
        calls[label] = 0

        run = settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
        )(given(case=operation.as_strategy())(_counted(calls, label)))

        try:
            run()
        except Exception as exc:  # gather every operation's finding, then fail once
            failures[label] = str(exc)[:2000]
    total = sum(calls.values())
    print(f"schemathesis: {total} generated requests over {len(calls)} operations")
    assert not failures, "\n\n".join(f"{k}: {v}" for k, v in failures.items())
    assert len(calls) >= 20 and total >= 1000, calls
