"""A test VTN written from the OpenADR 3.1.1 definition (tests/data/openadr/spec): the
`/auth/server` and `/auth/token` endpoints (OAuth2 client credentials, form-encoded) and
`GET /events` with `skip`/`limit`, in memory, on loopback in a thread. Tests create, modify and
delete events on it as a utility would, and revoke tokens."""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from devservices.ports import free_port


class TestVtn:
    __test__ = False  # not a pytest class

    def __init__(self, client_id: str = "ven_client_99", client_secret: str = "ven_secret_99"):
        self.client_id, self.client_secret = client_id, client_secret
        self.events: dict[str, dict[str, Any]] = {}
        self.tokens: set[str] = set()
        self.token_requests: list[dict[str, list[str]]] = []
        self.expires_in = 3600
        self.app = self._app()
        self.url = ""

    def _now(self) -> str:
        return datetime.now(UTC).isoformat().replace("+00:00", "Z")

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        """POST /events as a business logic client would: the VTN adds its metadata."""
        now = self._now()
        event = {
            **body,
            "id": f"event-{len(self.events) + 1}",
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
            return listed[skip : skip + min(limit, 50)]

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
