"""Ramp-downs (a cancel, a resource released by a re-plan) pass the safety checker like every
schedule that leaves the service. A ramp-down is already the fastest way back to zero the ramp
limit allows, so an objection does not hold it back: it is published at the ramp limit, the
broken rule is named on the allocation and logged as an error (docs/safety.md, "Ramp-downs")."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api_helpers import ev_body, sample
from conftest import Clock
from safety_helpers import violations
from vpp_aggregator.adapters.api.app import create_app
from vpp_aggregator.config import load_settings

EV = {"battery_capacity_kwh": 100.0, "max_charge_kw": 20.0, "max_discharge_kw": 20.0}


@pytest.fixture
def client(tmp_path: Any, clock: Clock) -> Iterator[TestClient]:
    settings = load_settings(DATABASE_URL=f"sqlite:///{tmp_path / 'r.db'}")
    with TestClient(create_app(settings, clock=clock)) as c:
        yield c


def two_vehicles_at_full_power(client: TestClient, clock: Clock) -> str:
    """ev-1 and ev-2 (100 kWh, 20 kW, minimum 20 %) at 80 %, dispatched 40 kW; returns three
    minutes in, both at 20 kW."""
    for rid in ("ev-1", "ev-2"):
        client.post("/resources/register", json=ev_body(rid, min_soc_pct=20, **EV))
    samples = [sample(r, clock.now, 80) for r in ("ev-1", "ev-2")]
    client.post("/telemetry", json={"samples": samples}).raise_for_status()
    d = client.post("/dispatch", json={"target_kw": 40, "duration_minutes": 60})
    assert d.status_code == 201, d.text
    clock.advance(minutes=3)
    return str(d.json()["dispatch_id"])


def released(answer: dict[str, Any], rid: str) -> dict[str, Any]:
    (a,) = [a for a in answer["allocations"] if a["resource_id"] == rid]
    return a


def test_a_cancel_ramp_down_that_breaks_a_floor_is_named_and_still_ramps_at_the_limit(
    client: TestClient, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    did = two_vehicles_at_full_power(client, clock)
    # ev-1 now reports 20.05 %: ramping down from 20 kW takes it to about 19.7 %, below its 20 %.
    now = clock.now
    samples = [sample("ev-1", now, 20.05, power=20.0), sample("ev-2", now, 79.0, power=20.0)]
    client.post("/telemetry", json={"samples": samples}).raise_for_status()
    with caplog.at_level(logging.ERROR, logger="vpp_aggregator.app.dispatch"):
        answer = client.post(f"/dispatch/{did}/cancel").json()
    near, fine = released(answer, "ev-1"), released(answer, "ev-2")
    for a in (near, fine):
        assert [p["setpoint_kw"] for p in a["schedule"]] == [20.0, 10.0, 0.0]  # at the limit
    assert near["binding_constraint"] == "released: cancelled; safety check: driver_min_soc"
    assert fine["binding_constraint"] == "released: cancelled"
    objections = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(objections) == 1 and "ev-1" in objections[0] and "driver_min_soc" in objections[0]
    # The service's verdict is the checker's, read back from the answer.
    resource = client.get("/resources/ev-1").json()
    assert {v.rule for v in violations(client, near, resource)} == {"driver_min_soc"}


def test_a_released_resource_ramp_down_on_a_replan_is_checked_too(
    client: TestClient, clock: Clock
) -> None:
    did = two_vehicles_at_full_power(client, clock)
    client.post("/telemetry", json={"samples": [sample("ev-1", clock.now, 79.9, power=20.0)]})
    # A minimum of 79.8 % releases ev-1; its ramp-down from 20 kW ends near 79.55 %.
    assert client.patch("/resources/ev-1", json={"min_soc_pct": 79.8}).status_code == 200
    a = released(client.get(f"/dispatch/{did}").json(), "ev-1")
    assert a["binding_constraint"].startswith("released: rules_changed")
    assert a["binding_constraint"].endswith("; safety check: driver_min_soc")
    assert [p["setpoint_kw"] for p in a["schedule"]] == [20.0, 10.0, 0.0]
