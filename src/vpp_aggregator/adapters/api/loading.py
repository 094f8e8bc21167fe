"""While the live state loads (a start), requests that read or change it are answered 503 with
how far the load is, rather than with figures from a half-loaded fleet. Health, readiness, the
docs and the dashboard's static files answer as usual."""

from __future__ import annotations

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

from vpp_aggregator.app.live_state import LoadProgress

OPEN_PREFIXES = ("/health", "/docs", "/redoc", "/openapi.json", "/static")
RETRY_AFTER_S = 5


class LoadingGateMiddleware:
    def __init__(self, app: ASGIApp, progress: LoadProgress) -> None:
        self.app = app
        self.progress = progress

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            self.progress.ready.is_set()
            or scope["type"] != "http"
            or scope["path"] == "/"
            or scope["path"].startswith(OPEN_PREFIXES)
        ):
            await self.app(scope, receive, send)
            return
        body = orjson.dumps(
            {
                "detail": "Not ready: the live state is loading; retry shortly "
                f"({self.progress.detail()})",
                "errors": [],
            }
        )
        await send(
            {
                "type": "http.response.start",
                "status": 503,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"retry-after", str(RETRY_AFTER_S).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
