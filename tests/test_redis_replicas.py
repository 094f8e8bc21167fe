"""Replicas on one PostgreSQL and Redis answer from the same fleet; Redis away, they keep answering."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta

import pytest
import redis
from fastapi.testclient import TestClient

from api_helpers import bess_body, ev_body, sample
from conftest import Clock
from vpp_aggregator.adapters.api.app import create_app
from vpp_aggregator.config import load_settings


def wait_until(check: Callable[[], bool], what: str, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.fixture
def prefix(redis_url: str) -> Iterator[str]:
    name = f"vpptest-{uuid.uuid4().hex[:8]}"
    yield name
    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter(f"{name}:*"):
        client.delete(key)


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_two_replicas_answer_the_same_capacity(
    database_url: str, prefix: str, redis_url: str, clock: Clock
) -> None:
    settings = load_settings(
        DATABASE_URL=database_url,
        REDIS_URL=redis_url,
        VPP_REDIS_PREFIX=prefix,
        VPP_DISPATCH_TICK_SECONDS="0.2",
    )
    with (
        TestClient(create_app(settings, clock=clock)) as a,
        TestClient(create_app(settings, clock=clock)) as b,
    ):
        for i in range(20):
            body = (
                ev_body(f"ev-{i}", grid_node=f"NODE_{i % 3}")
                if i % 4
                else bess_body(f"bess-{i}", grid_node=f"NODE_{i % 3}")
            )
            assert a.post("/resources/register", json=body).status_code == 201
        ids = [f"ev-{i}" if i % 4 else f"bess-{i}" for i in range(20)]
        half = [
            sample(rid, clock.now - timedelta(seconds=5), 40 + i, plugged=i % 5 != 0)
            for i, rid in enumerate(ids)
        ]
        assert a.post("/telemetry", json={"samples": half[:10]}).json()["accepted"] == 10
        assert b.post("/telemetry", json={"samples": half[10:]}).json()["accepted"] == 10

        def figures(c: TestClient) -> dict[str, object]:
            doc = c.get("/capacity/available").json()
            age = doc.pop("shared_state_age_seconds")
            assert age is not None and 0 <= age < 5  # each replica hears the shared state
            return dict(doc)

        def same() -> bool:
            return figures(a) == figures(b)

        wait_until(same, "both replicas to see every sample")
        cap = a.get("/capacity/available").json()
        assert cap["resource_count"] == 20 and cap["available_resource_count"] == 16
        # A change made on one replica reaches the other.
        assert a.patch("/resources/ev-1", json={"status": "suspended"}).status_code == 200
        wait_until(
            lambda: b.get("/resources/ev-1").json()["availability_reason"] == "suspended",
            "the change",
        )
        wait_until(same, "capacity to agree after the change")
        # The market gateway's keys follow the fleet.
        client = redis.Redis.from_url(redis_url)
        wait_until(
            lambda: (
                client.get(f"{prefix}:capacity:available") is not None
                and float(client.get(f"{prefix}:capacity:available") or 0)
                == pytest.approx(a.get("/capacity/available").json()["discharge"]["kwh"], abs=1e-3)
            ),
            "vpp:capacity:available",
        )
        regional = json.loads(client.get(f"{prefix}:capacity:regional") or b"{}")
        assert set(regional) == {"NODE_0", "NODE_1", "NODE_2"}
        ready = b.get("/health/ready").json()
        assert ready["status"] == "ready" and ready["dependencies"]["redis"]["ok"] is True


def test_without_redis_the_api_answers_and_readiness_says_why(tmp_path, clock: Clock) -> None:  # type: ignore[no-untyped-def]
    settings = load_settings(
        DATABASE_URL=f"sqlite:///{tmp_path / 'r.db'}",
        REDIS_URL="redis://127.0.0.1:1/0",  # nothing listens there
    )
    with TestClient(create_app(settings, clock=clock)) as c:
        assert c.post("/resources/register", json=bess_body()).status_code == 201
        assert (
            c.post("/telemetry", json={"samples": [sample("bess-1", clock.now, 60)]}).json()[
                "accepted"
            ]
            == 1
        )
        assert c.get("/capacity/available").json()["available_resource_count"] == 1
        ready = c.get("/health/ready")
        assert ready.status_code == 503 and ready.json()["down"] == ["redis"]
        assert ready.json()["dependencies"]["redis"]["detail"]


def test_a_follower_that_fell_behind_the_trimmed_stream_reloads_instead_of_skipping(
    prefix: str, redis_url: str
) -> None:
    import numpy as np

    from vpp_aggregator.adapters.cache.redis_state import RedisFollower, RedisSharedState

    publisher, mine = RedisSharedState(redis_url, prefix), RedisSharedState(redis_url, prefix)
    seen: dict[str, float] = {}

    def apply(ids, ts, soc, plugged, power) -> None:  # type: ignore[no-untyped-def]
        seen.update(zip(ids, np.asarray(soc).tolist(), strict=True))

    def publish(rid: str, soc: float) -> None:
        one = np.array([time.time()])
        publisher.publish_samples([rid], one, np.array([soc]), np.array([True]), np.array([0.0]))

    follower = RedisFollower(mine, apply, lambda rid: None)
    publish("ev-1", 50.0)
    follower.poll_once(block_ms=10)  # starts from the hash
    assert seen == {"ev-1": 50.0}
    for i in range(2, 7):
        publish(f"ev-{i}", 40.0 + i)
    # More than the stream keeps arrived while this process was away: only the newest is left.
    mine.client.xtrim(mine.changes_key, maxlen=1, approximate=False)
    time.sleep(1.05)  # the follower looks at the stream's start at most once a second
    follower.poll_once(block_ms=10)
    assert follower.reloads == 1
    assert seen == {"ev-1": 50.0, **{f"ev-{i}": 40.0 + i for i in range(2, 7)}}
    time.sleep(1.05)
    follower.poll_once(block_ms=10)
    assert follower.reloads == 1  # caught up: no reload again


def test_shared_samples_come_back_exactly_from_the_hash_and_the_stream(
    prefix: str, redis_url: str
) -> None:
    """The hash and the stream are written in RESP by hand (`redis_wire`): what a follower reads
    back, by either way, is what was published, ids beyond ASCII included; a value in the
    former JSON form (plugged as true/false) still reads; a process skips its own entries."""
    import numpy as np
    import orjson

    from vpp_aggregator.adapters.cache.redis_state import RedisFollower, RedisSharedState

    publisher, other = RedisSharedState(redis_url, prefix), RedisSharedState(redis_url, prefix)
    seen: dict[str, tuple[float, float, bool, float]] = {}

    def apply(ids, ts, soc, plugged, power) -> None:  # type: ignore[no-untyped-def]
        rows = zip(ts.tolist(), soc.tolist(), plugged.tolist(), power.tolist(), strict=True)
        seen.update(zip(ids, rows, strict=True))

    def publish(ids: list[str], soc: list[float], plugged: list[bool], power: list[float]) -> None:
        ts = np.full(len(ids), 1_764_072_000.125)
        publisher.publish_samples(ids, ts, np.array(soc), np.array(plugged), np.array(power))

    publish(["ev-ü1", "ev-2", "bess-東"], [50.5, 7.25, 100.0], [True, False, True], [1.5, -2, 0])
    publisher.client.hset(
        publisher.latest_key, "ev-old", orjson.dumps([1_764_071_000.0, 60.0, True, 0.0])
    )
    follower = RedisFollower(other, apply, lambda rid: None)
    follower.poll_once(block_ms=10)  # from the hash
    t = 1_764_072_000.125
    assert seen == {
        "ev-ü1": (t, 50.5, True, 1.5),
        "ev-2": (t, 7.25, False, -2.0),
        "bess-東": (t, 100.0, True, 0.0),
        "ev-old": (1_764_071_000.0, 60.0, True, 0.0),
    }
    own_seen: list[str] = []
    own = RedisFollower(publisher, lambda ids, *_: own_seen.extend(ids), lambda rid: None)
    own.poll_once(block_ms=10)  # bootstraps from the hash (its own samples included)
    own_seen.clear()
    seen.clear()
    publish(["ev-2", "ev-ü1"], [8.0, 51.0], [True, False], [0.0, 3.0])
    follower.poll_once(block_ms=100)  # from the stream
    assert seen == {"ev-2": (t, 8.0, True, 0.0), "ev-ü1": (t, 51.0, False, 3.0)}
    own.poll_once(block_ms=100)
    assert own_seen == []  # its own entry: skipped
    assert orjson.loads(publisher.client.hget(publisher.latest_key, "ev-ü1")) == [t, 51.0, 0.0, 3.0]
