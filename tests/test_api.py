"""HTTP API behaviour on both databases: what an operator sees for good and bad requests."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient

from api_helpers import bess_body, ev_body, sample
from conftest import Clock
from vpp_aggregator.adapters.api.app import create_app
from vpp_aggregator.adapters.api.schemas import CapacityOut
from vpp_aggregator.config import load_settings

# One way of the default VPP_ROUND_TRIP_EFFICIENCY (0.9): capacity's energy is at the grid.
ETA = 0.9**0.5


@pytest.fixture
def client(database_url: str, clock: Clock) -> Iterator[TestClient]:
    settings = load_settings(DATABASE_URL=database_url)
    with TestClient(create_app(settings, clock=clock)) as c:
        yield c


def test_health(client: TestClient) -> None:
    r = client.get("/health")
    assert r.status_code == 200
    assert r.json()["status"] == "healthy" and r.json()["service"] == "vpp-aggregator"


def test_register_and_read_back(client: TestClient) -> None:
    body = ev_body(
        departure_schedule=[
            {
                "days": ["mon", "wed"],
                "departure": "07:30",
                "return": "17:30",
                "required_soc_pct": 80,
                "timezone": "America/Los_Angeles",
            }
        ]
    )
    r = client.post("/resources/register", json=body)
    assert r.status_code == 201, r.text
    got = client.get("/resources/ev-1").json()
    assert got["battery_capacity_kwh"] == 200.0
    assert got["departure_schedule"][0]["return"] == "17:30"
    assert got["availability_factor"] == 0.0 and got["availability_reason"] == "no_telemetry"
    # 2026-11-25 is a Wednesday; 07:30 in Los Angeles is 15:30 UTC.
    assert got["next_departure"]["departure"].startswith("2026-11-25T15:30")


def test_resource_id_generated_when_absent(client: TestClient) -> None:
    body = ev_body()
    del body["resource_id"]
    r = client.post("/resources/register", json=body)
    assert r.status_code == 201
    assert r.json()["resource_id"].startswith("ev-")


def test_every_failed_requirement_is_named(client: TestClient) -> None:
    body = ev_body(
        battery_capacity_kwh=40,
        v2g_capable=False,
        telemetry_enabled=False,
        interconnection={"approved": False, "reference": ""},
    )
    r = client.post("/resources/register", json=body)
    assert r.status_code == 422
    fields = {e["field"] for e in r.json()["errors"]}
    assert fields == {
        "battery_capacity_kwh",
        "v2g_capable",
        "telemetry_enabled",
        "interconnection.approved",
        "interconnection.reference",
    }
    assert all(len(e["message"]) > 20 for e in r.json()["errors"])


def test_bess_floor_below_fleet_minimum_rejected(client: TestClient) -> None:
    r = client.post("/resources/register", json=bess_body(min_soc_pct=10))
    assert r.status_code == 422
    assert r.json()["errors"][0]["field"] == "min_soc_pct"


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ('{"resource_type": "EV",', "body"),
        ('{"resource_type": "TRUCK"}', "resource_type"),
    ],
)
def test_malformed_json_and_wrong_types_are_422(client: TestClient, raw: str, field: str) -> None:
    r = client.post(
        "/resources/register", content=raw, headers={"content-type": "application/json"}
    )
    assert r.status_code == 422
    assert field in {e["field"] for e in r.json()["errors"]}


def test_wrong_types_name_each_field(client: TestClient) -> None:
    r = client.post(
        "/resources/register", json=ev_body(battery_capacity_kwh="lots", v2g_capable="maybe")
    )
    assert r.status_code == 422
    assert {"battery_capacity_kwh", "v2g_capable"} <= {e["field"] for e in r.json()["errors"]}


def test_duplicate_is_409(client: TestClient) -> None:
    assert client.post("/resources/register", json=ev_body()).status_code == 201
    r = client.post("/resources/register", json=ev_body())
    assert r.status_code == 409


def test_list_filters_and_paging(client: TestClient) -> None:
    client.post("/resources/register", json=ev_body("ev-1"))
    client.post("/resources/register", json=ev_body("ev-2", grid_node="NODE_B"))
    client.post("/resources/register", json=bess_body("bess-1"))
    r = client.get("/resources", params={"resource_type": "EV"}).json()
    assert r["total"] == 2 and {i["resource_id"] for i in r["items"]} == {"ev-1", "ev-2"}
    assert client.get("/resources", params={"grid_node": "NODE_B"}).json()["total"] == 1
    page = client.get("/resources", params={"limit": 2, "offset": 2}).json()
    assert page["total"] == 3 and len(page["items"]) == 1
    assert client.get("/resources", params={"limit": 0}).status_code == 422


def test_patch_and_deactivate(client: TestClient, clock: Clock) -> None:
    client.post("/resources/register", json=bess_body())
    client.post("/telemetry", json={"samples": [sample("bess-1", clock.now, 60)]})
    r = client.patch("/resources/bess-1", json={"min_soc_pct": 40})
    assert r.status_code == 200 and r.json()["floor_soc_pct"] == 40
    cap = client.get("/capacity/available").json()
    assert cap["discharge"]["kwh"] == pytest.approx(0.2 * 500 * ETA, abs=1e-3)
    assert client.patch("/resources/bess-1", json={"min_soc_pct": 5}).status_code == 422
    assert client.patch("/resources/nope", json={"min_soc_pct": 40}).status_code == 404
    r = client.patch("/resources/bess-1", json={"status": "suspended"})
    assert client.get("/resources/bess-1").json()["availability_reason"] == "suspended"
    assert client.delete("/resources/bess-1").json()["status"] == "inactive"
    assert client.get("/capacity/available").json()["resource_count"] == 0
    got = client.get("/resources/bess-1").json()
    assert got["status"] == "inactive"  # history kept
    r = client.post("/telemetry", json={"samples": [sample("bess-1", clock.now, 60)]})
    assert r.json()["accepted"] == 0


def test_telemetry_partial_acceptance_with_reasons(client: TestClient, clock: Clock) -> None:
    client.post("/resources/register", json=ev_body())
    now = clock.now
    batch = [
        sample("ev-1", now - timedelta(seconds=10), 55),
        sample("ghost", now, 50),
        sample("ev-1", now, 120),
        {
            "resource_id": "ev-1",
            "timestamp": "2026-11-25T11:59:00",
            "soc_pct": 50,
            "plugged_in": True,
        },
        sample("ev-1", now + timedelta(hours=1), 50),
        {"resource_id": "ev-1", "timestamp": "yesterday", "soc_pct": 50, "plugged_in": True},
        sample("ev-1", now - timedelta(seconds=5), 56),
    ]
    r = client.post("/telemetry", json={"samples": batch})
    assert r.status_code == 200
    body = r.json()
    assert body["accepted"] == 2
    reasons = {x["index"]: x["reason"] for x in body["rejected"]}
    assert set(reasons) == {1, 2, 3, 4, 5}
    assert "unknown" in reasons[1] and "soc_pct" in reasons[2] and "time zone" in reasons[3]
    assert "future" in reasons[4] and "timestamp" in reasons[5]
    assert client.get("/resources/ev-1").json()["telemetry"]["soc_pct"] == 56
    # An older sample arriving late never overwrites the newer one.
    client.post("/telemetry", json={"samples": [sample("ev-1", now - timedelta(seconds=60), 10)]})
    assert client.get("/resources/ev-1").json()["telemetry"]["soc_pct"] == 56


def test_telemetry_batch_limits_and_garbage(client: TestClient, clock: Clock) -> None:
    r = client.post(
        "/telemetry", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert r.status_code == 422
    assert client.post("/telemetry", json={"nope": []}).status_code == 422
    big = {"samples": [sample("x", clock.now, 50)] * 10_001}
    assert client.post("/telemetry", json=big).status_code == 413


def test_capacity_follows_design_formulas(client: TestClient, clock: Clock) -> None:
    client.post("/resources/register", json=bess_body("bess-1", grid_node="NODE_A"))
    client.post("/resources/register", json=ev_body("ev-1", grid_node="NODE_B"))
    client.post("/resources/register", json=ev_body("ev-2", grid_node="NODE_B"))
    now = clock.now
    client.post(
        "/telemetry",
        json={
            "samples": [
                sample("bess-1", now, 80),
                sample("ev-1", now, 70),
                sample("ev-2", now, 70, plugged=False),
            ]
        },
    )
    cap = client.get("/capacity/available", params={"duration_minutes": 60}).json()
    CapacityOut.model_validate(cap)  # the documented schema holds
    # In the cells, BESS: (80-20)% of 500 = 300 kWh, 250 kW; EV-1: (70-30)% of 200 = 80 kWh, 60 kW;
    # EV-2 unplugged. At the grid discharging gives ETA of it.
    assert cap["discharge"]["kw"] == 310.0
    assert cap["discharge"]["kwh"] == pytest.approx(380.0 * ETA, abs=1e-3)
    assert cap["available_capacity_kw"] == 310.0
    assert cap["available_capacity_kwh"] == cap["discharge"]["kwh"]
    # Headroom: 100 kWh in the BESS, 60 in EV-1; charging them takes 1/ETA of that from the grid,
    # so over 1 h the BESS's 105.4 kWh, not its 250 kW limit, bounds its power.
    assert cap["charge"]["kwh"] == pytest.approx(160.0 / ETA, abs=1e-3)
    assert cap["charge"]["kw"] == pytest.approx(100.0 / ETA + 60.0, abs=1e-3)
    assert cap["gross_energy_kwh"] == pytest.approx(400 + 140)
    assert cap["resource_count"] == 3 and cap["available_resource_count"] == 2
    assert cap["meets_minimum"] is True and cap["min_capacity_kw"] == 100
    assert cap["by_type"]["EV"]["discharge"]["kw"] == 60.0
    assert cap["by_grid_node"]["NODE_B"]["meets_minimum"] is False
    assert cap["by_grid_node"]["NODE_A"]["meets_minimum"] is True
    node_b = client.get("/capacity/available", params={"grid_node": "NODE_B"}).json()
    assert node_b["discharge"]["kw"] == 60.0 and node_b["meets_minimum"] is False
    # Telemetry goes stale after VPP_TELEMETRY_STALE_SECONDS.
    clock.advance(seconds=301)
    cap = client.get("/capacity/available").json()
    assert cap["available_resource_count"] == 0 and cap["discharge"]["kw"] == 0.0
    assert client.get("/resources/bess-1").json()["availability_reason"] == "stale_telemetry"
    assert client.get("/capacity/available", params={"duration_minutes": 0}).status_code == 422


def test_by_default_a_vehicle_gives_only_what_it_holds_beyond_its_next_trips_need(
    client: TestClient, clock: Clock
) -> None:
    """Drivers first (docs/concepts.md, "Floors"): one who leaves early takes what it holds."""
    dep = clock.now + timedelta(hours=3)
    trips = [{"departure": dep.isoformat(), "required_soc_pct": 70}]
    client.post("/resources/register", json=ev_body(trips=trips))
    client.post("/telemetry", json={"samples": [sample("ev-1", clock.now, 80)]})
    assert client.get("/capacity/available").json()["discharge"]["kwh"] == pytest.approx(
        (80 - 70) / 100 * 200 * ETA, abs=1e-3
    )


def test_departure_raise_visible_in_capacity(database_url: str, clock: Clock) -> None:
    """Where the operator keeps only drivers seen leaving early to their need, the floor of the
    others rises toward their departure."""
    settings = load_settings(DATABASE_URL=database_url, VPP_NEED_FLOOR_EARLY_LEAVES=2)
    with TestClient(create_app(settings, clock=clock)) as client:
        _departure_raise(client, clock)


def _departure_raise(client: TestClient, clock: Clock) -> None:
    dep = clock.now + timedelta(hours=3)
    client.post(
        "/resources/register",
        json=ev_body(trips=[{"departure": dep.isoformat(), "required_soc_pct": 90}]),
    )
    client.post("/telemetry", json={"samples": [sample("ev-1", clock.now, 80)]})
    # Charging at 60 kW puts ETA * 60 kW into the cells: 28.5 % of 200 kWh per hour.
    # Window 1 h ends 2 h before departure: floor = 90 - 2 * 28.5 = 33.1 % -> 46.9 % of 200, ETA of
    # it at the grid.
    floor_1h = 90 - ETA * 60 * 2 / 200 * 100
    assert client.get("/capacity/available").json()["discharge"]["kwh"] == pytest.approx(
        (80 - floor_1h) / 100 * 200 * ETA, abs=1e-3
    )
    # Window 2 h: floor = 90 - 28.5 = 61.5 % -> 18.5 % of 200 = 36.9 kWh, 35 at the grid over 2 h.
    floor_2h = 90 - ETA * 60 / 200 * 100
    cap = client.get("/capacity/available", params={"duration_minutes": 120}).json()
    assert cap["discharge"]["kwh"] == pytest.approx((80 - floor_2h) / 100 * 200 * ETA, abs=1e-3)
    assert cap["discharge"]["kw"] == pytest.approx(cap["discharge"]["kwh"] / 2, abs=1e-3)
    # Window 4 h: it leaves inside the window.
    assert (
        client.get("/resources/ev-1", params={"duration_minutes": 240}).json()[
            "availability_reason"
        ]
        == "departing"
    )


def test_state_survives_restart(database_url: str, clock: Clock) -> None:
    settings = load_settings(DATABASE_URL=database_url)
    with TestClient(create_app(settings, clock=clock)) as c:
        c.post("/resources/register", json=bess_body())
        c.post(
            "/telemetry",
            json={
                "samples": [
                    sample("bess-1", clock.now - timedelta(seconds=30), 50),
                    sample("bess-1", clock.now, 60),
                ]
            },
        )
    with TestClient(create_app(settings, clock=clock)) as c:
        got = c.get("/resources/bess-1").json()
        assert got["telemetry"]["soc_pct"] == 60
        assert c.get("/capacity/available").json()["discharge"]["kwh"] == pytest.approx(
            200.0 * ETA, abs=1e-3
        )


def test_nothing_lost_when_the_process_dies_before_a_snapshot(
    database_url: str, clock: Clock
) -> None:
    settings = load_settings(DATABASE_URL=database_url)
    with TestClient(create_app(settings, clock=clock)) as c:
        c.post("/resources/register", json=bess_body())
        c.post("/telemetry", json={"samples": [sample("bess-1", clock.now, 50)]})
    clock.advance(seconds=30)
    crashed = TestClient(
        create_app(settings, clock=clock)
    )  # no lifespan: no final snapshot, as in a crash
    crashed.post("/telemetry", json={"samples": [sample("bess-1", clock.now, 75)]})
    with TestClient(create_app(settings, clock=clock)) as c:
        assert c.get("/resources/bess-1").json()["telemetry"]["soc_pct"] == 75


def test_metrics_exposed(client: TestClient, clock: Clock) -> None:
    client.post("/resources/register", json=bess_body())
    client.post(
        "/telemetry",
        json={"samples": [sample("bess-1", clock.now, 80), sample("ghost", clock.now, 1)]},
    )
    text = client.get("/metrics").text
    assert 'vpp_available_capacity_kw{direction="discharge",name="all",scope="total"} 250.0' in text
    assert 'vpp_active_resources{resource_type="BESS"} 1.0' in text
    assert "vpp_telemetry_samples_accepted_total 1.0" in text
    assert "vpp_telemetry_samples_rejected_total" in text
    assert 'vpp_job_cpu_seconds_total{job="dispatch follow-through"}' in text  # each periodic job
    rss = next(
        line for line in text.splitlines() if line.startswith("process_resident_memory_bytes")
    )
    assert float(rss.split()[1]) > 10e6  # this very process, a Python interpreter with numpy
    assert (
        'vpp_http_request_duration_seconds_bucket{le="0.001",method="POST",route="/telemetry"'
        in text
    )


def test_openapi_references_resolve(client: TestClient) -> None:
    """ReDoc refuses the whole document over one dangling $ref (POST /telemetry had one)."""
    doc = client.get("/openapi.json").json()
    refs = set(re.findall(r'"\$ref": ?"([^"]+)"', json.dumps(doc)))
    assert refs and all(r.startswith("#/components/schemas/") for r in refs)
    assert {r.rsplit("/", 1)[1] for r in refs} <= set(doc["components"]["schemas"])
    assert "$defs" not in json.dumps(doc["paths"])


def test_openapi_lists_every_endpoint(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert {
        "/health",
        "/resources/register",
        "/resources",
        "/resources/{resource_id}",
        "/telemetry",
        "/capacity/available",
        "/metrics",
    } <= set(paths)
