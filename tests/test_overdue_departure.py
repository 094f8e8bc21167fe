"""A vehicle still plugged in after the departure its driver gave is overdue: the driver may
leave any minute, so it keeps its trip's need as its floor and is neither counted nor dispatched
until it unplugs (docs/concepts.md, "Floors"). In the Caltech replay every missed departure was
a driver who stayed hours past the time they gave, was discharged overnight as if free, and
left short."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api_helpers import ev_body, sample
from conftest import Clock
from vpp_aggregator.adapters.api.app import create_app
from vpp_aggregator.config import load_settings


@pytest.fixture
def client(tmp_path: Any, clock: Clock) -> Iterator[TestClient]:
    settings = load_settings(DATABASE_URL=f"sqlite:///{tmp_path / 'o.db'}")
    with TestClient(create_app(settings, clock=clock)) as c:
        yield c


def ev_discharge_kw(client: TestClient) -> float:
    cap = client.get("/capacity/available", params={"duration_minutes": 30}).json()
    return float(cap["by_type"]["EV"]["discharge"]["kw"]) if "EV" in cap["by_type"] else 0.0


def test_an_overdue_vehicle_is_not_discharged_until_it_unplugs(
    client: TestClient, clock: Clock
) -> None:
    leaves = clock.now + timedelta(hours=1)
    trip = {"departure": leaves.isoformat(), "required_soc_pct": 80}
    client.post("/resources/register", json=ev_body("ev-1", trips=[trip])).raise_for_status()
    client.post("/telemetry", json={"samples": [sample("ev-1", clock.now, 90.0)]})
    assert ev_discharge_kw(client) > 0  # free to serve before its trip (it can recharge in time)

    clock.advance(hours=2)  # an hour past the departure it gave, still plugged in
    client.post("/telemetry", json={"samples": [sample("ev-1", clock.now, 90.0)]})
    assert ev_discharge_kw(client) == 0.0
    d = client.post("/dispatch", json={"target_kw": 30, "duration_minutes": 30})
    assert d.status_code == 201, d.text
    assert [a["resource_id"] for a in d.json()["allocations"]] == []

    clock.advance(minutes=1)  # it leaves...
    client.post("/telemetry", json={"samples": [sample("ev-1", clock.now, 90.0, plugged=False)]})
    clock.advance(hours=1)  # ...and comes back: no trip left, free to serve again
    client.post("/telemetry", json={"samples": [sample("ev-1", clock.now, 85.0)]})
    assert ev_discharge_kw(client) > 0
