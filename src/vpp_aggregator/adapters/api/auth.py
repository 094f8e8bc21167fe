"""Who is asking: bearer JWTs (HS256 secret or a public key) with roles and an optional fleet.

Roles rise viewer < operator < admin. A token with `fleet_id` sees and acts on that fleet's
resources only; fleet-wide views (forecast, market, audit) need a token without one. Without a
configured secret or key the service runs in the documented dev mode: every caller is a
fleet-wide admin named `dev`. Each token also gets a request budget per minute, and so does
each client address for the requests no valid token pays for (failed authentication, /metrics).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Annotated

import jwt
from fastapi import Depends, HTTPException, Request, status

from vpp_aggregator.config import ConfigError, Settings

ROLES = ("viewer", "operator", "admin")
MIN_SECRET_BYTES = 32
TOP_STRENGTH_SCORE = 4  # zxcvbn scores 0 (guessed at once) to 4 (more than 1e10 guesses)


def secret_weakness(secret: str) -> str | None:
    """Why an HS256 secret is too weak to guard an admin API, or None. Anyone who guesses it can
    mint admin tokens offline, so length alone is not enough: a long phrase of dictionary words
    or repeats must also survive a password-strength estimator."""
    size = len(secret.encode())
    if size < MIN_SECRET_BYTES:
        return f"{size} bytes, fewer than {MIN_SECRET_BYTES}"
    from zxcvbn import zxcvbn  # loads its word lists only when a secret is configured

    # zxcvbn cost grows with length; its verdict on the first 100 characters is the one that
    # matters (a weak prefix followed by random bytes still scores 4).
    score = int(zxcvbn(secret[:100])["score"])
    if score < TOP_STRENGTH_SCORE:
        return f"strength score {score} of {TOP_STRENGTH_SCORE} (guessable words, repeats or sequences)"
    return None


@dataclass(frozen=True, slots=True)
class Principal:
    subject: str
    role: str
    fleet_id: str | None
    dev_mode: bool = False

    def allows(self, role: str) -> bool:
        return ROLES.index(self.role) >= ROLES.index(role)


Caller = tuple[str, str]  # ("token", subject) or ("address", client address)
IDLE_FULL_SECONDS = 60.0  # a bucket left this long has refilled: the same as no bucket


class RateLimiter:
    """A token bucket per caller: `per_minute` requests, refilled continuously.

    A caller is a token's subject, or a client address for requests no valid token pays for,
    so bad tokens sent from one address spend that address's budget and nobody else's. Buckets
    idle for a minute are dropped, so memory follows the callers of the last minute however
    many addresses send.
    """

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self._lock = threading.Lock()
        self._buckets: dict[Caller, tuple[float, float]] = {}  # caller -> (tokens, last refill)
        self._swept = time.monotonic()

    def take(self, caller: Caller) -> float | None:
        """None when allowed; otherwise seconds until a request would be."""
        if self.per_minute <= 0:
            return None
        now = time.monotonic()
        rate = self.per_minute / 60.0
        with self._lock:
            if now - self._swept >= IDLE_FULL_SECONDS:
                self._buckets = {
                    c: b for c, b in self._buckets.items() if now - b[1] < IDLE_FULL_SECONDS
                }
                self._swept = now
            tokens, last = self._buckets.get(caller, (float(self.per_minute), now))
            tokens = min(float(self.per_minute), tokens + (now - last) * rate)
            if tokens < 1.0:
                self._buckets[caller] = (tokens, now)
                return (1.0 - tokens) / rate
            self._buckets[caller] = (tokens - 1.0, now)
            return None

    def __len__(self) -> int:
        return len(self._buckets)


class Authenticator:
    def __init__(self, settings: Settings) -> None:
        self.secret = settings.jwt_secret or None
        self.public_key = settings.jwt_public_key or None
        self.audience = settings.jwt_audience or None
        self.issuer = settings.jwt_issuer or None
        self.dev_mode = self.secret is None and self.public_key is None
        self.limiter = RateLimiter(settings.rate_limit_per_minute)
        weakness = secret_weakness(self.secret) if self.secret is not None else None
        if weakness is not None:
            raise ConfigError(
                f"VPP_JWT_SECRET is weak ({weakness}): use at least {MIN_SECRET_BYTES} random "
                "bytes, e.g. `openssl rand -hex 32`"
            )

    def principal(self, authorization: str | None) -> Principal:
        if self.dev_mode:
            return Principal("dev", "admin", None, dev_mode=True)
        if not authorization or not authorization.lower().startswith("bearer "):
            raise _unauthorized("a bearer token is required (Authorization: Bearer <JWT>)")
        token = authorization.split(" ", 1)[1].strip()
        key = self.public_key or self.secret or ""
        algorithms = ["RS256", "ES256"] if self.public_key else ["HS256"]
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=algorithms,
                audience=self.audience,
                issuer=self.issuer,
                options={"require": ["exp", "sub"], "verify_aud": self.audience is not None},
            )
        except jwt.PyJWTError as exc:
            raise _unauthorized(f"invalid token: {exc}") from None
        role = claims.get("role")
        if role is None and isinstance(claims.get("roles"), list):
            held = [r for r in claims["roles"] if r in ROLES]
            role = max(held, key=ROLES.index) if held else None
        if role not in ROLES:
            raise HTTPException(status.HTTP_403_FORBIDDEN, f"token has no role of {ROLES}")
        if "fleet_id" not in claims:
            return Principal(str(claims["sub"]), role, None)
        fleet = claims["fleet_id"]
        if not isinstance(fleet, str) or not fleet.strip():
            # An empty or null fleet must not read as "no fleet", which sees every fleet.
            raise HTTPException(
                status.HTTP_403_FORBIDDEN, "token's fleet_id is empty or not a string"
            )
        return Principal(str(claims["sub"]), role, fleet)


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED, detail, headers={"WWW-Authenticate": "Bearer"}
    )


def _charge(request: Request, caller: Caller) -> None:
    """429 with Retry-After once `caller` has spent its budget for the minute."""
    limiter: RateLimiter = request.app.state.auth.limiter
    wait = limiter.take(caller)
    if wait is not None:
        whose = "this token" if caller[0] == "token" else "this address (no valid token)"
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            f"rate limit of {limiter.per_minute} requests per minute reached for {whose}",
            headers={"Retry-After": str(max(1, round(wait)))},
        )


def client_address(request: Request) -> str | None:
    """Where a request came from (rate limits, audit): the peer, or the X-Forwarded-For address
    when uvicorn trusts the proxy it came through."""
    return request.client.host if request.client is not None else None


def _address(request: Request) -> str:
    return client_address(request) or "unknown"


async def by_address(request: Request) -> None:
    """A dependency for open endpoints worth throttling (/metrics): the caller's address pays."""
    _charge(request, ("address", _address(request)))


async def _principal(request: Request) -> Principal:
    auth: Authenticator = request.app.state.auth
    try:
        who = auth.principal(request.headers.get("authorization"))
    except HTTPException:  # a failed attempt is paid for by the address it came from
        _charge(request, ("address", _address(request)))
        raise
    if not who.dev_mode:
        _charge(request, ("token", who.subject))
    request.state.principal = who
    return who


def require(role: str) -> object:
    """A dependency: the caller, who must hold at least `role`."""

    async def check(who: Annotated[Principal, Depends(_principal)]) -> Principal:
        if not who.allows(role):
            raise HTTPException(
                status.HTTP_403_FORBIDDEN, f"needs the {role} role (token has {who.role})"
            )
        return who

    return Depends(check)


Viewer = Annotated[Principal, require("viewer")]
Operator = Annotated[Principal, require("operator")]
Admin = Annotated[Principal, require("admin")]


def fleet_scope(who: Principal, requested: str | None) -> str | None:
    """The fleet a request may see: the token's own, whatever was asked for."""
    if who.fleet_id is None:
        return requested
    if requested is not None and requested != who.fleet_id:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN, f"this token acts on fleet {who.fleet_id!r} only"
        )
    return who.fleet_id


def fleet_wide(who: Principal) -> None:
    if who.fleet_id is not None:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN, "a fleet-wide view: needs a token without fleet_id"
        )
