"""Hostile or impossible values never reach the solver: telemetry is bounded by the resource's
registration, and a bad value already stored cannot make a request fail."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from api_helpers import bess_body, sample
from conftest import Clock
from vpp_aggregator.adapters.api.app import create_app
from vpp_aggregator.adapters.store.database import make_engine
from vpp_aggregator.config import load_settings


@pytest.fixture
def client(database_url: str, clock: Clock) -> Iterator[TestClient]:
    with TestClient(create_app(load_settings(DATABASE_URL=database_url), clock=clock)) as c:
        c.post(
            "/resources/register", json=bess_body("bess-1", max_discharge_kw=150, max_charge_kw=150)
        ).raise_for_status()
        yield c


@pytest.mark.parametrize("power_kw", [1e300, 1e12, 2000.0, -2000.0])
def test_power_beyond_the_registration_is_refused_with_the_reason(
    client: TestClient, clock: Clock, power_kw: float
) -> None:
    r = client.post(
        "/telemetry", json={"samples": [sample("bess-1", clock.now, 60, power=power_kw)]}
    )
    assert r.status_code in (200, 207, 422), r.text
    body = r.json()
    assert body["accepted"] == 0
    assert "power_kw" in str(body["rejected"]) and "max_discharge_kw" in str(body["rejected"])
    # Dispatch still works for everyone: the refused value never reached the state.
    client.post("/telemetry", json={"samples": [sample("bess-1", clock.now, 60)]})
    d = client.post("/dispatch", json={"target_kw": 50, "duration_minutes": 30})
    assert d.status_code == 201, d.text


def test_power_within_meter_noise_of_the_limit_is_accepted(
    client: TestClient, clock: Clock
) -> None:
    r = client.post("/telemetry", json={"samples": [sample("bess-1", clock.now, 60, power=160.0)]})
    assert r.json()["accepted"] == 1


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_stored_absurd_power_cannot_make_dispatch_fail(database_url: str, clock: Clock) -> None:
    settings = load_settings(DATABASE_URL=database_url)
    with TestClient(create_app(settings, clock=clock)) as c:
        c.post("/resources/register", json=bess_body("bess-1")).raise_for_status()
        c.post("/telemetry", json={"samples": [sample("bess-1", clock.now, 60)]})
    engine = make_engine(database_url)
    with engine.begin() as conn:  # as if stored before the bound existed
        conn.execute(text("UPDATE telemetry_samples SET power_kw = 1e300"))
        conn.execute(text("UPDATE telemetry_latest SET power_kw = 1e300"))
    engine.dispose()
    with TestClient(create_app(settings, clock=clock)) as c:
        d = c.post("/dispatch", json={"target_kw": 50, "duration_minutes": 30})
        assert d.status_code == 201, d.text
