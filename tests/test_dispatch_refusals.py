"""A device that refuses a command is left out of the dispatch for a while, then asked again:
a passing refusal must not leave a dispatch short for the rest of a long window."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api_helpers import bess_body, sample
from conftest import Clock
from vpp_aggregator.adapters.api.app import create_app
from vpp_aggregator.app.dispatch_refusals import MAX_REFUSALS, RETRY_AFTER_S
from vpp_aggregator.app.integration import MessageKind
from vpp_aggregator.config import load_settings


@pytest.fixture
def client(database_url: str, clock: Clock) -> Iterator[TestClient]:
    with TestClient(create_app(load_settings(DATABASE_URL=database_url), clock=clock)) as c:
        yield c


def _aggregator(client: TestClient) -> Any:
    return client.app.state.aggregator  # type: ignore[attr-defined]


def _refuse(client: TestClient, dispatch_id: str, resource_id: str) -> None:
    ack = {"dispatch_id": dispatch_id, "resource_id": resource_id, "status": "Rejected"}
    [outcome] = _aggregator(client).integration.handle(
        MessageKind.COMMAND_ACK, {**ack, "reason": "charger busy"}
    )
    assert outcome.outcome == "replanned", outcome


class Batteries:
    """The two batteries as devices: they follow the dispatch's schedules and report their SoC."""

    def __init__(self, client: TestClient, clock: Clock, did: str) -> None:
        self.client, self.clock, self.did = client, clock, did
        self.soc = {"bess-0": 80.0, "bess-1": 80.0}

    def tick_after(self, seconds: float) -> dict[str, Any]:
        """Time passes; each battery moves as its schedule says and reports; the service ticks.
        Returns the dispatch as it is then."""
        doc = self.client.get(f"/dispatch/{self.did}").json()
        start = self.clock.now.timestamp()
        for a in doc["allocations"]:
            points = a["schedule"]
            t0 = datetime.fromisoformat(points[0]["t"]).timestamp()
            kw = [p["setpoint_kw"] for p in points]
            for k in range(int(seconds)):  # a second at a time, at the schedule's power then
                i = int((start + k - t0) // 60)
                if 0 <= i < len(kw):
                    self.soc[a["resource_id"]] -= kw[i] / 3600 / 500 * 100  # 500 kWh each
        self.clock.advance(seconds=seconds)
        samples = [sample(rid, self.clock.now, soc) for rid, soc in self.soc.items()]
        self.client.post("/telemetry", json={"samples": samples})
        _aggregator(self.client).dispatch.tick()
        return self.client.get(f"/dispatch/{self.did}").json()


def _taking_part(doc: dict[str, Any]) -> set[str]:
    return {
        a["resource_id"]
        for a in doc["allocations"]
        if not a["binding_constraint"].startswith("released")
    }


@pytest.fixture
def dispatch(client: TestClient, clock: Clock) -> dict[str, Any]:
    """400 kW for an hour from two 250 kW batteries: it needs both."""
    for i in range(2):
        client.post("/resources/register", json=bess_body(f"bess-{i}"))
    client.post(
        "/telemetry", json={"samples": [sample(f"bess-{i}", clock.now, 80) for i in range(2)]}
    )
    d = client.post("/dispatch", json={"target_kw": 400, "duration_minutes": 60}).json()
    assert _taking_part(d) == {"bess-0", "bess-1"} and d["status"] == "active", d
    return d


def test_a_battery_that_refused_is_asked_again_once_its_refusal_is_old_enough(
    client: TestClient, clock: Clock, dispatch: dict[str, Any]
) -> None:
    did = dispatch["dispatch_id"]
    batteries = Batteries(client, clock, did)
    batteries.tick_after(10)
    _refuse(client, did, "bess-0")
    doc = client.get(f"/dispatch/{did}").json()
    assert _taking_part(doc) == {"bess-1"} and doc["status"] == "partial"
    # Left out for a while: a re-plan meanwhile (the award's target moved) does not take it back.
    batteries.tick_after(120)
    end = datetime.fromisoformat(dispatch["start"]) + timedelta(minutes=60)
    _aggregator(client).dispatch.retarget(did, 390.0, end, "award tracking")
    doc = batteries.tick_after(RETRY_AFTER_S - 180)
    assert [r["reason"] for r in doc["revisions"]][1:] == ["redispatch", "award tracking"]
    assert _taking_part(doc) == {"bess-1"}
    doc = batteries.tick_after(60)
    assert doc["revisions"][-1]["reason"] == "asked again after refusing: bess-0"
    assert _taking_part(doc) == {"bess-0", "bess-1"}
    assert doc["status"] == "active" and doc["allocated_kw"] == pytest.approx(390, abs=0.5)
    # Once per refusal: later ticks do not plan again.
    doc = batteries.tick_after(RETRY_AFTER_S)
    assert doc["revision"] == 4


def test_a_battery_that_keeps_refusing_is_not_asked_again(
    client: TestClient, clock: Clock, dispatch: dict[str, Any]
) -> None:
    did = dispatch["dispatch_id"]
    batteries = Batteries(client, clock, did)
    for refusal in range(1, MAX_REFUSALS + 1):
        batteries.tick_after(10)
        _refuse(client, did, "bess-0")
        doc = batteries.tick_after(RETRY_AFTER_S)
        if refusal < MAX_REFUSALS:
            assert _taking_part(doc) == {"bess-0", "bess-1"}, refusal
    assert _taking_part(doc) == {"bess-1"} and doc["status"] == "partial"
    doc = batteries.tick_after(2 * RETRY_AFTER_S)
    assert _taking_part(doc) == {"bess-1"}
