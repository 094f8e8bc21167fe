"""A test VTN written from the OpenADR 3.1.1 definition (tests/data/openadr/spec): the
`/auth/server` and `/auth/token` endpoints (OAuth2 client credentials, form-encoded) and
`GET /events` with `skip`/`limit`, in memory, on loopback in a thread. Tests create, modify and
delete events on it as a utility would, and revoke tokens."""

from __future__ import annotations

import itertools
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import jsonschema_rs
import uvicorn
import yaml
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from devservices.ports import free_port


class _NoDates(yaml.SafeLoader):
    """YAML as JSON Schema reads it: the examples' timestamps stay text."""


_NoDates.yaml_implicit_resolvers = {
    k: [r for r in v if r[0] != "tag:yaml.org,2002:timestamp"]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
SPEC_FILE = Path(__file__).parent / "data" / "openadr" / "spec" / "openadr3-3.1.1.yaml"
SPEC: dict[str, Any] = yaml.load(SPEC_FILE.read_text(), Loader=_NoDates)


def validator(schema: str) -> Any:
    """A validator for one of the definition's schemas (`event`, `reportRequest`, ...)."""
    return jsonschema_rs.validator_for(
        {"$ref": f"#/components/schemas/{schema}", "components": SPEC["components"]}
    )


class TestVtn:
    __test__ = False  # not a pytest class

    def __init__(self, client_id: str = "ven_client_99", client_secret: str = "ven_secret_99"):
        self.client_id, self.client_secret = client_id, client_secret
        self.events: dict[str, dict[str, Any]] = {}
        self._ids = itertools.count(1)
        self.reports: list[dict[str, Any]] = []
        self.vens: dict[str, dict[str, Any]] = {}
        self.resources: dict[str, dict[str, Any]] = {}
        self.refused_reports: list[list[str]] = []
        self.tokens: set[str] = set()
        self.token_requests: list[dict[str, list[str]]] = []
        self.expires_in = 3600
        self.page_cap = 50  # a VTN may serve fewer per page than asked
        self.app = self._app()
        self.url = ""

    def _now(self) -> str:
        return datetime.now(UTC).isoformat().replace("+00:00", "Z")

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        """POST /events as a business logic client would: the VTN adds its metadata."""
        now = self._now()
        event = {
            **body,
            "id": f"event-{next(self._ids)}",
            "createdDateTime": now,
            "modificationDateTime": now,
            "objectType": "EVENT",
        }
        self.events[event["id"]] = event
        return event

    def modify(self, event_id: str, **changes: Any) -> dict[str, Any]:
        """PUT /events/{id}: the VTN sets a new modificationDateTime."""
        time.sleep(0.01)  # modification times are distinct
        event = {**self.events[event_id], **changes, "modificationDateTime": self._now()}
        self.events[event_id] = event
        return event

    def delete(self, event_id: str) -> None:
        del self.events[event_id]

    def _app(self) -> FastAPI:
        app = FastAPI()

        @app.get("/auth/server")
        def auth_server(request: Request) -> dict[str, str]:
            return {"tokenURL": str(request.base_url) + "auth/token"}

        @app.post("/auth/token")
        async def token(request: Request) -> Any:
            if request.headers.get("content-type", "").split(";")[0] != (
                "application/x-www-form-urlencoded"
            ):
                return JSONResponse({"title": "form-encoded body required"}, 400)
            form = parse_qs((await request.body()).decode())
            self.token_requests.append(form)
            if (
                form.get("grant_type") != ["client_credentials"]
                or form.get("client_id") != [self.client_id]
                or form.get("client_secret") != [self.client_secret]
            ):
                return JSONResponse({"title": "bad credentials"}, 401)
            issued = secrets.token_hex(16)
            self.tokens.add(issued)
            return {"access_token": issued, "token_type": "Bearer", "expires_in": self.expires_in}

        @app.get("/events")
        def events(request: Request, skip: int = 0, limit: int = 50) -> Any:
            bearer = request.headers.get("authorization", "").removeprefix("Bearer ")
            if bearer not in self.tokens:
                return JSONResponse({"title": "unauthorized"}, 401)
            listed = sorted(self.events.values(), key=lambda e: e["id"])
            return listed[skip : skip + min(limit, self.page_cap)]

        def stored(body: dict[str, Any], kind: str, table: dict[str, dict[str, Any]]) -> Any:
            now = self._now()
            made = {**body, "id": f"{kind.lower()}-{len(table) + 1}", "createdDateTime": now,
                    "modificationDateTime": now, "objectType": kind}  # fmt: skip
            table[made["id"]] = made
            return JSONResponse(made, 201)

        def unauthorized(request: Request) -> Any:
            bearer = request.headers.get("authorization", "").removeprefix("Bearer ")
            return None if bearer in self.tokens else JSONResponse({"title": "unauthorized"}, 401)

        def checked(request: Request, schema: str, body: Any) -> Any:
            if (refused := unauthorized(request)) is not None:
                return refused
            problems = [e.message for e in validator(schema).iter_errors(body)]
            if problems:
                return JSONResponse({"title": "bad request", "detail": "; ".join(problems)}, 400)
            return None

        @app.get("/events/{event_id}")
        def one_event(request: Request, event_id: str) -> Any:
            if (refused := unauthorized(request)) is not None:
                return refused
            found = self.events.get(event_id)
            return found if found is not None else JSONResponse({"title": "not found"}, 404)

        @app.get("/vens")
        def vens(request: Request, venName: str | None = None) -> Any:
            listed = [v for v in self.vens.values() if venName in (None, v["venName"])]
            return unauthorized(request) or listed

        @app.post("/vens")
        async def post_ven(request: Request) -> Any:
            body = await request.json()
            return checked(request, "VenVenRequest", body) or stored(body, "VEN", self.vens)

        @app.get("/resources")
        def resources(request: Request, venID: str | None = None) -> Any:
            listed = [r for r in self.resources.values() if venID in (None, r["venID"])]
            return unauthorized(request) or listed

        @app.post("/resources")
        async def post_resource(request: Request) -> Any:
            body = await request.json()
            return checked(request, "VenResourceRequest", body) or stored(
                body, "RESOURCE", self.resources
            )

        @app.post("/reports")
        async def post_report(request: Request) -> Any:
            bearer = request.headers.get("authorization", "").removeprefix("Bearer ")
            if bearer not in self.tokens:
                return JSONResponse({"title": "unauthorized"}, 401)
            body = await request.json()
            problems = [e.message for e in validator("reportRequest").iter_errors(body)]
            if problems:  # a VTN refuses what its definition does not allow
                self.refused_reports.append(problems)
                return JSONResponse({"title": "bad report", "detail": "; ".join(problems)}, 400)
            now = self._now()
            report = {**body, "id": f"report-{len(self.reports) + 1}", "createdDateTime": now,
                      "modificationDateTime": now, "objectType": "REPORT"}  # fmt: skip
            self.reports.append(report)
            return JSONResponse(report, 201)

        return app

    @contextmanager
    def running(self) -> Iterator[TestVtn]:
        port = free_port()
        server = uvicorn.Server(
            uvicorn.Config(self.app, host="127.0.0.1", port=port, log_level="warning")
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 60
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        assert server.started, "test VTN did not start"
        self.url = f"http://127.0.0.1:{port}/"
        try:
            yield self
        finally:
            server.should_exit = True
            thread.join(timeout=30)
