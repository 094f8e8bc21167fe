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


FAR = "9999-12-31T20:00:00-14:00"  # year 10000 in UTC


def test_a_far_future_trip_is_a_422_naming_the_field_and_nothing_is_stored(
    client: TestClient,
) -> None:
    from api_helpers import ev_body

    r = client.post(
        "/resources/register",
        json=ev_body("ev-far", trips=[{"departure": FAR, "required_soc_pct": 80}]),
    )
    assert r.status_code == 422, r.text
    assert [e["field"] for e in r.json()["errors"]] == ["trips.0.departure"]
    assert client.get("/resources/ev-far").status_code == 404
    assert client.get("/resources").status_code == 200
    client.post("/resources/register", json=ev_body("ev-1")).raise_for_status()
    patched = client.patch(
        "/resources/ev-1", json={"trips": [{"departure": FAR, "required_soc_pct": 80}]}
    )
    assert patched.status_code == 422
    assert client.get("/resources/ev-1").json()["trips"] == []


@pytest.mark.parametrize("at", [FAR, "0001-01-01T00:00:00+14:00", "1970-01-01T00:00:00Z"])
def test_telemetry_outside_the_service_years_is_refused(client: TestClient, at: str) -> None:
    r = client.post(
        "/telemetry",
        json={
            "samples": [
                {"resource_id": "bess-1", "timestamp": at, "soc_pct": 50, "plugged_in": True}
            ]
        },
    )
    assert r.json()["accepted"] == 0 and "timestamp" in r.json()["rejected"][0]["reason"]


@pytest.mark.parametrize(
    "field, value",
    [
        ("target_kw", True),
        ("target_kw", "10"),
        ("duration_minutes", "60"),
        ("duration_minutes", 60.5),
    ],
)
def test_request_numbers_are_strict(client: TestClient, field: str, value: object) -> None:
    body: dict[str, object] = {"target_kw": 50, "duration_minutes": 30, field: value}
    r = client.post("/dispatch", json=body)
    assert r.status_code == 422 and [e["field"] for e in r.json()["errors"]] == [field]


def test_telemetry_must_be_posted_as_json(client: TestClient, clock: Clock) -> None:
    import orjson

    body = orjson.dumps({"samples": [sample("bess-1", clock.now, 60)]})
    r = client.post("/telemetry", content=body, headers={"content-type": "text/plain"})
    assert r.status_code == 415
    assert client.get("/resources/bess-1").json()["telemetry"] is None


@pytest.mark.parametrize("rid", [".", "..", "-x", ".hidden"])
def test_resource_ids_that_are_path_segments_are_refused(client: TestClient, rid: str) -> None:
    r = client.post("/resources/register", json=bess_body(rid))
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "resource_id"


def test_overlapping_trips_are_refused(client: TestClient, clock: Clock) -> None:
    from datetime import timedelta

    from api_helpers import ev_body

    def trip(leaves_h: float, back_h: float) -> dict[str, object]:
        return {
            "departure": (clock.now + timedelta(hours=leaves_h)).isoformat(),
            "return": (clock.now + timedelta(hours=back_h)).isoformat(),
            "required_soc_pct": 60,
        }

    r = client.post("/resources/register", json=ev_body("ev-1", trips=[trip(1, 5), trip(3, 6)]))
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "trips[1].departure"
    ok = client.post("/resources/register", json=ev_body("ev-1", trips=[trip(1, 3), trip(3, 6)]))
    assert ok.status_code == 201, ok.text
