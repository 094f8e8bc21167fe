"""Side effects are event handlers, subscribed once (`bootstrap.subscribe_handlers`): a service
publishes what happened and does not know who follows. A failing side effect is logged and
leaves the others and the fact itself alone; the audit trail is required and fails its caller."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api_helpers import bess_body, sample
from conftest import Clock
from vpp_aggregator.adapters.api.app import create_app
from vpp_aggregator.app.events import EventBus, ResourcesChanged, TelemetryAccepted
from vpp_aggregator.config import load_settings


@pytest.fixture
def client(tmp_path: Any, clock: Clock) -> Iterator[TestClient]:
    settings = load_settings(DATABASE_URL=f"sqlite:///{tmp_path / 'e.db'}")
    with TestClient(create_app(settings, clock=clock)) as c:
        yield c


def test_each_side_effect_is_subscribed_once(client: TestClient) -> None:
    table = client.app.state.aggregator.events.table()  # type: ignore[attr-defined]
    assert table == {
        "TelemetryAccepted": ["forecast history"],
        "ResourcesChanged": ["re-check running dispatches"],
        "DispatchEnded": ["battery recharge"],
        "MessageHandled": ["audit"],
    }  # Redis adds its two sharing handlers when VPP_REDIS_URL is set (test_redis_replicas)


def test_a_failing_side_effect_leaves_the_others_and_the_telemetry_alone(
    client: TestClient, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    events: EventBus = client.app.state.aggregator.events  # type: ignore[attr-defined]
    seen: list[list[str]] = []

    def broken(_: Any) -> None:
        raise ConnectionError("redis went away")

    events.subscribe(TelemetryAccepted, "broken sharing", broken)
    events.subscribe(TelemetryAccepted, "after it", lambda e: seen.append(e.resource_ids))
    client.post("/resources/register", json=bess_body("bess-1")).raise_for_status()
    with caplog.at_level(logging.WARNING):
        answer = client.post("/telemetry", json={"samples": [sample("bess-1", clock.now, 70.0)]})
    assert answer.status_code == 200 and answer.json()["accepted"] == 1
    assert client.get("/resources/bess-1").json()["telemetry"]["soc_pct"] == 70.0
    assert seen == [["bess-1"]]
    assert "broken sharing after TelemetryAccepted failed: ConnectionError" in caplog.text


def test_a_required_handler_fails_its_publisher() -> None:
    events = EventBus()
    events.subscribe(ResourcesChanged, "audit", lambda e: 1 / 0, required=True)
    with pytest.raises(ZeroDivisionError):
        events.publish(ResourcesChanged(["ev-1"]))
