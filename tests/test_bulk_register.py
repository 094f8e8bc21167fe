"""Operators bring fleets as files: a list of registrations, or a CSV through the command line,
registered as far as each one passes (never all-or-nothing), with every refused row named by
its place, its id and every reason."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from api_helpers import bess_body, ev_body, live_server
from vpp_aggregator.adapters.api.app import create_app
from vpp_aggregator.cli import app as cli
from vpp_aggregator.config import load_settings


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    settings = load_settings(DATABASE_URL=f"sqlite:///{tmp_path / 'bulk.db'}")
    with TestClient(create_app(settings)) as c:
        yield c


def test_a_list_registers_what_passes_and_names_every_refusal(client: TestClient) -> None:
    assert client.post("/resources/register", json=bess_body("old-1")).status_code == 201
    fleet: list[Any] = [
        ev_body("bus-1"),
        {**ev_body("bus-2"), "battery_capacity_kwh": "lots"},  # not a number
        {**ev_body("bus-3"), "battery_capacity_kwh": 45.0, "v2g_capable": False},  # two rules
        bess_body("old-1"),  # registered before
        {k: v for k, v in bess_body().items() if k != "resource_id"},  # an id is given to it
        ev_body("bus-1"),  # twice in the list
        "not a registration",
        ev_body("bus-4"),
    ]
    answer = client.post("/resources/register", json=fleet)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["registered"] == 3
    refused = {r["index"]: r for r in body["rejected"]}
    assert sorted(refused) == [1, 2, 3, 5, 6]
    assert refused[1]["resource_id"] == "bus-2"
    assert [e["field"] for e in refused[1]["errors"]] == ["battery_capacity_kwh"]
    assert {e["field"] for e in refused[2]["errors"]} == {"battery_capacity_kwh", "v2g_capable"}
    assert refused[3]["errors"] == [{"field": "resource_id", "message": "already registered"}]
    assert refused[5]["errors"] == [{"field": "resource_id", "message": "already registered"}]
    assert refused[6]["resource_id"] is None and refused[6]["errors"]
    ids = {r["resource_id"] for r in client.get("/resources", params={"limit": 50}).json()["items"]}
    assert {"bus-1", "bus-4", "old-1"} <= ids and len(ids) == 4  # and the one given an id
    too_many = client.post("/resources/register", json=[ev_body(f"x-{i}") for i in range(10_001)])
    assert too_many.status_code == 422 and "10,000" in too_many.json()["errors"][0]["message"]
    one = client.post("/resources/register", json={**ev_body("bus-9"), "v2g_capable": "yes"})
    assert one.status_code == 422  # one registration answers as it always has
    assert one.json()["errors"][0]["field"] == "v2g_capable"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    settings = load_settings(
        DATABASE_URL=f"sqlite:///{tmp_path / 'import.db'}", VPP_FORECAST_RETRAIN_HOURS="0"
    )
    with live_server(settings) as url:
        yield url


def test_a_csv_fleet_is_imported_with_its_bad_rows_reported(tmp_path: Path, server: str) -> None:
    columns = [
        "resource_id",
        "resource_type",
        "name",
        "fleet_id",
        "grid_node",
        "battery_capacity_kwh",
        "max_charge_kw",
        "max_discharge_kw",
        "v2g_capable",
        "telemetry_enabled",
        "interconnection",
        "min_soc_pct",
        "departure_schedule",
    ]
    approved = json.dumps({"approved": True, "reference": "IA-7"})
    weekdays = json.dumps(
        [
            {
                "days": ["mon", "tue", "wed", "thu", "fri"],
                "departure": "07:30",
                "required_soc_pct": 80,
            }
        ]
    )
    rows = [
        [
            "bus-1",
            "EV",
            "Bus 1",
            "depot",
            "NODE_A",
            "200",
            "60",
            "60",
            "true",
            "true",
            approved,
            "30",
            weekdays,
        ],
        [
            "bus-2",
            "EV",
            "Bus 2",
            "depot",
            "NODE_A",
            "40",
            "60",
            "60",
            "true",
            "true",
            approved,
            "",
            "",
        ],
        [
            "bat-1",
            "BESS",
            "Battery",
            "depot",
            "NODE_A",
            "500",
            "250",
            "250",
            "yes",
            "yes",
            approved,
            "",
            "",
        ],
        [
            "bus-3",
            "EV",
            "Bus 3",
            "depot",
            "NODE_A",
            "two hundred",
            "60",
            "60",
            "true",
            "true",
            approved,
            "",
            "",
        ],
        [
            "bus-4",
            "EV",
            "Bus 4",
            "depot",
            "NODE_B",
            "200",
            "60",
            "60",
            "true",
            "false",
            "{not json",
            "",
            "",
        ],
    ]
    path = tmp_path / "fleet.csv"
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(columns)
        w.writerows(rows)
    run = CliRunner().invoke(
        cli, ["resources", "import", str(path), "--url", server, "--batch", "2"]
    )
    assert run.exit_code == 0, run.output
    report = json.loads(run.stdout[run.stdout.index("{") :])
    assert report["registered"] == 2  # bus-1 and bat-1; batches of 2, indexes across the file
    refused = {r["index"]: r for r in report["rejected"]}
    assert sorted(refused) == [1, 3, 4]
    assert [e["field"] for e in refused[1]["errors"]] == ["battery_capacity_kwh"]  # 40 kWh
    assert refused[3]["errors"][0]["field"] == "battery_capacity_kwh"  # not a number
    assert {e["field"] for e in refused[4]["errors"]} >= {"interconnection"}
    import httpx

    got = httpx.get(f"{server}/resources/bus-1").json()
    assert got["departure_schedule"][0]["departure"] == "07:30"
