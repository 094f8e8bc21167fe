"""Talking to a utility's VTN as an OpenADR 3 VEN: a bearer token from the VTN's token
endpoint, and its events, page by page.

The token is OAuth2 client credentials: `GET /auth/server` names the token URL, and the request
is form-encoded with `grant_type`, `client_id` and `client_secret` (`clientCredentialRequest`,
"snake case per RFC 6749"). It is renewed a minute before `expires_in` runs out, and once more
when the VTN answers 401 (it may have revoked it early)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urljoin

import httpx

PAGE = 50  # the largest `limit` the specification allows on GET /events
MAX_PAGES = 200
RENEW_BEFORE_S = 60.0


class VtnError(RuntimeError):
    """The VTN could not be reached or refused us; the next poll tries again."""


class VtnClient:
    def __init__(
        self,
        base_url: str,
        client_id: str,
        client_secret: str,
        *,
        http: httpx.Client | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.base_url = base_url.rstrip("/") + "/"
        self.client_id = client_id
        self.client_secret = client_secret
        self.http = http or httpx.Client(timeout=10.0)
        self.monotonic = monotonic
        self._token: str | None = None
        self._expires = 0.0
        self.tokens_fetched = 0

    def _fetch_token(self) -> str:
        server_url = urljoin(self.base_url, "auth/server")
        info = self.http.get(server_url)
        info.raise_for_status()
        about = info.json()
        if not isinstance(about, dict) or not isinstance(about.get("tokenURL"), str):
            raise VtnError("GET auth/server did not name a tokenURL")
        token_url = urljoin(server_url, about["tokenURL"])
        answer = self.http.post(
            token_url,
            data={
                "grant_type": "client_credentials",
                "client_id": self.client_id,
                "client_secret": self.client_secret,
            },
        )
        if answer.status_code != 200:
            raise VtnError(f"token endpoint answered {answer.status_code}: {answer.text[:200]}")
        body = answer.json()
        if not isinstance(body, dict) or not body.get("access_token"):
            raise VtnError("the token endpoint answered no access_token")
        self._token = str(body["access_token"])
        lasts = float(body.get("expires_in") or 3600)
        # Renewed a minute before it runs out, or half-way through a short-lived one.
        self._expires = self.monotonic() + lasts - min(RENEW_BEFORE_S, lasts / 2)
        self.tokens_fetched += 1
        return self._token

    def _bearer(self) -> str:
        if self._token is None or self.monotonic() > self._expires:
            return self._fetch_token()
        return self._token

    def get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        return self._send("GET", path, params=params)

    def post(self, path: str, body: Any) -> Any:
        return self._send("POST", path, json=body)

    def _send(self, method: str, path: str, **request: Any) -> Any:
        """A request with our token; on a 401 a new token and one more try."""
        url = urljoin(self.base_url, path)
        try:
            for attempt in (1, 2):
                headers = {"authorization": f"Bearer {self._bearer()}"}
                answer = self.http.request(method, url, headers=headers, **request)
                if answer.status_code == 401 and attempt == 1:
                    self._token = None  # revoked or expired early: once more with a new one
                    continue
                if answer.status_code not in (200, 201):
                    text = answer.text[:300]
                    raise VtnError(f"{method} {path} answered {answer.status_code}: {text}")
                return answer.json()
        except (httpx.HTTPError, KeyError, TypeError, ValueError) as exc:
            raise VtnError(f"{method} {path}: {type(exc).__name__}: {exc}") from exc
        raise VtnError(f"{method} {path}: 401 twice")

    def events(self) -> list[Any]:
        """Every event the VTN shows this VEN, page by page (`skip`, `limit` ≤ 50), until a
        page is empty or brings nothing new (a VTN may cap pages lower, or ignore `skip`)."""
        out: list[Any] = []
        ids: set[str] = set()
        for _ in range(MAX_PAGES):
            page = self.get("events", {"skip": len(out), "limit": PAGE})
            if not isinstance(page, list):
                raise VtnError("GET events did not answer a list")
            new = [e for e in page if not (isinstance(e, dict) and str(e.get("id")) in ids)]
            if not new:
                return out
            ids |= {str(e.get("id")) for e in new if isinstance(e, dict)}
            out += new
        raise VtnError(f"GET events: more than {MAX_PAGES} pages")

    def gone(self, event_id: str) -> bool:
        """Whether the VTN answers 404 for the event: deleted, not just missing from a list."""
        try:
            self.get(f"events/{event_id}")
        except VtnError as exc:
            return " answered 404" in str(exc)
        return False
