"""The simulator as a client of the service: register, post telemetry, and follow open dispatches
so the simulated chargers obey them."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import numpy as np
import orjson

from vpp_aggregator.demo.constants import (
    DISPATCH_STATUSES,
    DISPATCH_TIMEOUT_S,
    MAX_BATCH,
    MAX_DISPATCHES,
    SETPOINT_STALE_S,
    FloatArray,
)
from vpp_aggregator.demo.drivers import build_fleet, default_data_dir

log = logging.getLogger(__name__)


def _state_loaded(client: httpx.Client) -> bool:
    ready = client.get("/health/ready")
    if ready.status_code == 404:  # a service from before readiness said so
        return True
    live = ready.json().get("dependencies", {}).get("live_state", {})
    return bool(live.get("ok", True))


def _wait_healthy(client: httpx.Client, timeout_s: float) -> None:
    """Until the service is alive with its live state loaded (a start loads it in the background)."""
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while True:
        try:
            resp = client.get("/health")
            if resp.status_code == 200 and _state_loaded(client):
                return
            last = f"HTTP {resp.status_code}"
        except httpx.HTTPError as exc:
            last = f"{type(exc).__name__}: {exc}"
        if time.monotonic() >= deadline:
            raise TimeoutError(
                f"{client.base_url}health not healthy after {timeout_s:g} s ({last})"
            )
        time.sleep(0.5)


def _register(client: httpx.Client, body: dict[str, Any], attempts: int = 3) -> bool:
    """True when the resource exists afterwards (201 created, or 409 already there)."""
    for attempt in range(attempts):
        try:
            resp = client.post("/resources/register", json=body)
        except httpx.HTTPError as exc:
            log.warning("register %s: %s (attempt %d)", body["resource_id"], exc, attempt + 1)
        else:
            if resp.status_code in (200, 201, 409):
                return True
            if resp.status_code < 500:
                log.warning(
                    "register %s refused: HTTP %d %s",
                    body["resource_id"],
                    resp.status_code,
                    resp.text[:300],
                )
                return False
            log.warning(
                "register %s: HTTP %d (attempt %d)",
                body["resource_id"],
                resp.status_code,
                attempt + 1,
            )
        time.sleep(0.5 * 2**attempt)
    return False


def _post_samples(client: httpx.Client, samples: list[dict[str, Any]]) -> int:
    """POST in batches of at most 10,000; returns how many the service accepted.

    HTTP errors and rejections are logged, never raised: one bad tick must not end a demo.
    """
    accepted = 0
    for lo in range(0, len(samples), MAX_BATCH):
        chunk = samples[lo : lo + MAX_BATCH]
        try:
            resp = client.post(
                "/telemetry",
                content=orjson.dumps({"samples": chunk}),
                headers={"content-type": "application/json"},
            )
        except httpx.HTTPError as exc:
            log.warning("telemetry post failed: %s", exc)
            continue
        if resp.status_code >= 300:
            log.warning("telemetry post: HTTP %d %s", resp.status_code, resp.text[:300])
            continue
        try:
            answer = resp.json()
        except ValueError:
            log.warning("telemetry post: answer is not JSON: %s", resp.text[:300])
            continue
        accepted += int(answer.get("accepted", 0)) if isinstance(answer, dict) else 0
        rejected = answer.get("rejected") if isinstance(answer, dict) else None
        if rejected:
            first = rejected[0] if isinstance(rejected, list) else rejected
            log.warning("telemetry: %d sample(s) rejected, e.g. %s", len(rejected), first)
    return accepted


def parse_schedule(points: Sequence[Mapping[str, Any]]) -> tuple[FloatArray, FloatArray]:
    """A dispatch allocation's `schedule` as (UTC epoch seconds, kW) arrays sorted by time.

    Raises KeyError, TypeError or ValueError on a malformed point. A time without an offset is
    taken as UTC (the service always sends one).
    """
    rows: list[tuple[float, float]] = []
    for point in points:
        t = datetime.fromisoformat(str(point["t"]))
        if t.tzinfo is None:
            t = t.replace(tzinfo=UTC)
        kw = float(point["setpoint_kw"])
        if not math.isfinite(kw):
            raise ValueError(f"setpoint_kw must be finite, not {kw!r}")
        rows.append((t.timestamp(), kw))
    rows.sort()
    arr = np.array(rows, dtype=np.float64).reshape(-1, 2)
    return arr[:, 0].copy(), arr[:, 1].copy()


def schedule_setpoint_kw(times_s: FloatArray, kw: FloatArray, at_s: float) -> float:
    """The setpoint at `at_s`: linear between schedule points, 0 before the first and after
    the last (an empty schedule is 0 throughout)."""
    if times_s.size == 0:
        return 0.0
    return float(np.interp(at_s, times_s, kw, left=0.0, right=0.0))


@dataclass(slots=True)
class _Plan:
    """One dispatch revision as the simulator follows it."""

    revision: int | None
    allocations: list[tuple[str, FloatArray, FloatArray]]  # (resource id, times, kW)
    confirmed_at: float  # monotonic time the service last listed it at this revision


class DispatchFollower:
    """Turns the service's open dispatches into per-resource setpoints, as chargers obey them.

    Each call lists the open dispatches (active, partial, and scheduled ones whose start has
    come but that the service has not flipped to active yet), fetches the detail of at most
    `max_dispatches` of them only when their revision changed, and interpolates every
    allocation at `now`. A resource whose schedule has not begun is left to its own behaviour;
    one past its last point is held at 0 while the dispatch is open; a resource in several
    dispatches gets the sum. When the service cannot be asked, the plans last confirmed within
    `stale_s` seconds are still followed (at the current time), then dropped.
    """

    def __init__(
        self,
        client: httpx.Client,
        max_dispatches: int = MAX_DISPATCHES,
        stale_s: float = SETPOINT_STALE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._max = max_dispatches
        self._stale_s = stale_s
        self._clock = clock
        self._plans: dict[str, _Plan] = {}
        self._failing = False
        self._truncated = False

    def setpoints(self, now: datetime) -> dict[str, float]:
        """Resource id -> kW (+ = discharge) for every resource an open dispatch allocates."""
        mono = self._clock()
        listed = self._list_open(now)
        if listed is not None:
            plans: dict[str, _Plan] = {}
            for dispatch_id, revision in listed:
                plan = self._plans.get(dispatch_id)
                if plan is not None and revision is not None and plan.revision == revision:
                    plan.confirmed_at = mono
                else:
                    fresh = self._fetch(dispatch_id, mono)
                    if fresh is not None:
                        plan = fresh
                if plan is not None:  # a failed re-fetch keeps the old plan until it is stale
                    plans[dispatch_id] = plan
            self._plans = plans
        out: dict[str, float] = {}
        at_s = now.timestamp()
        for plan in self._plans.values():
            if mono - plan.confirmed_at > self._stale_s:
                continue
            for rid, times_s, kw in plan.allocations:
                if times_s.size == 0 or at_s < times_s[0]:
                    continue  # not started: the resource keeps its own behaviour until then
                out[rid] = out.get(rid, 0.0) + schedule_setpoint_kw(times_s, kw, at_s)
        return out

    def _get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        resp = self._client.get(path, params=params, timeout=DISPATCH_TIMEOUT_S)
        resp.raise_for_status()
        return resp.json()

    def _list_open(self, now: datetime) -> list[tuple[str, int | None]] | None:
        """(dispatch id, revision) of the dispatches to follow, or None when the service failed."""
        found: dict[str, int | None] = {}
        try:
            for status in DISPATCH_STATUSES:
                body = self._get("/dispatch", {"status": status, "limit": 500})
                for item in body["items"]:
                    if status == "scheduled":
                        start = datetime.fromisoformat(str(item["start"]))
                        if start.tzinfo is None:
                            start = start.replace(tzinfo=UTC)
                        if start > now:
                            continue
                    revision = item.get("revision")
                    found.setdefault(
                        str(item["dispatch_id"]), revision if isinstance(revision, int) else None
                    )
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            if not self._failing:
                log.warning(
                    "dispatch list failed (%s: %s); following the last known plans for up to %g s",
                    type(exc).__name__,
                    exc,
                    self._stale_s,
                )
            self._failing = True
            return None
        if self._failing:
            log.info("dispatch list answers again")
        self._failing = False
        if len(found) > self._max and not self._truncated:
            log.warning("%d open dispatches; following the first %d", len(found), self._max)
        self._truncated = len(found) > self._max
        return list(found.items())[: self._max]

    def _fetch(self, dispatch_id: str, mono: float) -> _Plan | None:
        try:
            body = self._get(f"/dispatch/{quote(dispatch_id, safe='')}")
        except (httpx.HTTPError, ValueError) as exc:
            log.warning("dispatch %s: %s: %s", dispatch_id, type(exc).__name__, exc)
            return None
        revision = body.get("revision") if isinstance(body, dict) else None
        revision = revision if isinstance(revision, int) else None
        try:
            if body["status"] not in ("active", "partial", "scheduled"):
                return _Plan(revision, [], mono)  # ended since it was listed: nothing to hold
            allocations = [
                (str(a["resource_id"]), *parse_schedule(a["schedule"])) for a in body["allocations"]
            ]
        except (KeyError, TypeError, ValueError) as exc:
            # Remembered (by revision) as empty, so a malformed dispatch is not fetched each tick.
            log.warning(
                "dispatch %s: malformed detail (%s: %s)", dispatch_id, type(exc).__name__, exc
            )
            return _Plan(revision, [], mono)
        return _Plan(revision, allocations, mono)


def run_simulation(
    base_url: str,
    ev_count: int,
    bess_count: int,
    interval_s: float = 2.0,
    duration_s: float | None = None,
    speed: float = 60.0,
    data_dir: Path | None = None,
    seed: int = 7,
    on_tick: Callable[[int, int], None] | None = None,
    follow_dispatch: bool = True,
) -> None:
    """Register a simulated fleet with a running service and stream telemetry to it.

    Waits up to ~30 s for GET /health, registers every resource (409 = already there), then
    every `interval_s` wall seconds advances the fleet `interval_s * speed` pattern seconds and
    posts the samples. Runs for `duration_s` (None: until Ctrl-C). HTTP trouble is logged and
    the loop goes on; `on_tick(accepted, rejected)` is called after each tick, where
    `rejected` counts every sample sent that tick and not accepted (refused or lost).

    With `follow_dispatch`, each tick the fleet first obeys the service's open dispatches:
    every allocated resource runs at its schedule's setpoint for the current real time (see
    `DispatchFollower`), so the telemetry shows the dispatch being delivered.
    """
    if interval_s <= 0 or speed <= 0:
        raise ValueError("interval_s and speed must be > 0")
    fleet = build_fleet(ev_count, bess_count, data_dir or default_data_dir(), seed=seed)
    with httpx.Client(base_url=base_url.rstrip("/"), timeout=httpx.Timeout(30.0)) as client:
        _wait_healthy(client, timeout_s=30.0)
        registered = {
            body["resource_id"] for body in fleet.registrations() if _register(client, body)
        }
        if not registered:
            raise RuntimeError("no simulated resource could be registered; see the log")
        log.info("simulating %d resources (%d EV, %d BESS)", len(registered), ev_count, bess_count)
        follower = DispatchFollower(client) if follow_dispatch else None
        start = last = time.monotonic()
        tick = 0
        try:
            while True:
                t = time.monotonic()
                dt_pattern = (t - last) * speed if tick else 0.0
                last = t
                now = datetime.now(UTC)
                if follower is not None:
                    fleet.set_setpoints(follower.setpoints(now))
                wall = dt_pattern / speed
                samples = [
                    s for s in fleet.step(now, dt_pattern, wall) if s["resource_id"] in registered
                ]
                accepted = _post_samples(client, samples)
                if on_tick is not None:
                    on_tick(accepted, len(samples) - accepted)
                tick += 1
                next_at = start + tick * interval_s
                if duration_s is not None and next_at - start > duration_s:
                    break
                time.sleep(max(0.0, next_at - time.monotonic()))
        except KeyboardInterrupt:
            log.info("simulation stopped after %d ticks", tick)
