"""When a target asks for more energy than the fleet holds, the plan is a level the fleet can hold
to the end of the window (ramp up, flat plateau, ramp down), reported as the allocated power; not
a burst that jumps between setpoints and reads 0 kW allocated."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from api_helpers import bess_body, ev_body, sample
from conftest import Clock
from safety_helpers import service_settings, violations
from vpp_aggregator.adapters.api.app import create_app
from vpp_aggregator.config import load_settings
from vpp_aggregator.domain.dispatch.safety import soc_trajectory


@pytest.fixture(params=["lp", "fast"])
def client(request: pytest.FixtureRequest, tmp_path: Any, clock: Clock) -> Iterator[TestClient]:
    lp_max = "40" if request.param == "lp" else "0"
    settings = load_settings(
        DATABASE_URL=f"sqlite:///{tmp_path / 'e.db'}", VPP_DISPATCH_LP_MAX_RESOURCES=lp_max
    )
    with TestClient(create_app(settings, clock=clock)) as c:
        yield c


def plateau(allocation: dict[str, Any], duration_min: int) -> list[float]:
    """Setpoints inside the window once the first ramp is over."""
    kw = [p["setpoint_kw"] for p in allocation["schedule"]][: duration_min + 1]
    top = max(kw)
    first = next(i for i, v in enumerate(kw) if v >= top - 1e-9)
    return kw[first:]


def test_one_battery_asked_for_too_much_energy_holds_a_flat_level(
    client: TestClient, clock: Clock
) -> None:
    client.post("/resources/register", json=bess_body("bess-1")).raise_for_status()
    client.post("/telemetry", json={"samples": [sample("bess-1", clock.now, 90)]})
    d = client.post("/dispatch", json={"target_kw": 100, "duration_minutes": 480})
    assert d.status_code == 201, d.text
    body = d.json()
    (a,) = body["allocations"]
    kw = [p["setpoint_kw"] for p in a["schedule"]]
    held = plateau(a, 480)
    # 500 kWh from 90 % to its 20 % floor is 332 kWh after losses: about 41.5 kW for 8 hours.
    assert 40.0 < held[0] <= 41.6
    assert max(held) - min(held) < 1e-6  # flat to the end of the window, no 0/10/20 jumps
    changes = sum(1 for x, y in itertools.pairwise(kw) if abs(x - y) > 1e-9)
    ramp_kw_per_min = service_settings(client).max_ramp_kw_per_min
    assert changes <= 2 * (held[0] // ramp_kw_per_min + 2)  # one ramp up, one ramp down
    assert body["allocated_kw"] == pytest.approx(held[0], abs=1e-3)
    assert body["shortfall_kw"] == pytest.approx(100 - held[0], abs=1e-3)
    rules = [r["rule"] for r in body["shortfall_reasons"]]
    assert rules[0] == "min_soc" and "ramp_limit" not in rules
    assert 20.0 <= a["expected_end_soc_pct"] < 20.5  # the energy is used, not left behind
    assert violations(client, a, client.get("/resources/bess-1").json()) == []


def test_a_vehicle_near_its_minimum_holds_what_it_can_without_crossing_it(
    client: TestClient, clock: Clock
) -> None:
    ev = {"battery_capacity_kwh": 100.0, "max_charge_kw": 20.0, "max_discharge_kw": 20.0}
    client.post("/resources/register", json=ev_body("ev-1", min_soc_pct=20, **ev))
    client.post("/telemetry", json={"samples": [sample("ev-1", clock.now, 33.3337)]})
    d = client.post(
        "/dispatch", json={"target_kw": 20, "duration_minutes": 120, "resource_ids": ["ev-1"]}
    ).json()
    (a,) = d["allocations"]
    held = plateau(a, 120)
    assert max(held) - min(held) < 1e-6 and 5.0 < held[0] < 6.6
    assert d["allocated_kw"] == pytest.approx(held[0], abs=1e-3)
    assert violations(client, a, client.get("/resources/ev-1").json()) == []


def test_a_plan_that_drains_a_battery_leaves_room_for_a_late_command(
    client: TestClient, clock: Clock
) -> None:
    """A device runs its previous setpoint until a command reaches it: a plan ending exactly at
    the floor would be crossed by a command a few seconds late. Every plan keeps what the
    battery moves in 10 s at full power above the floor (`floors.LATENCY_RESERVE_S`)."""
    client.post("/resources/register", json=bess_body("bess-1")).raise_for_status()
    client.post("/telemetry", json={"samples": [sample("bess-1", clock.now, 24)]})
    d = client.post("/dispatch", json={"target_kw": 250, "duration_minutes": 60})
    assert d.status_code == 201, d.text
    (a,) = d.json()["allocations"]
    kw = np.array([[p["setpoint_kw"] for p in a["schedule"]]])
    lowest = float(soc_trajectory(np.array([24.0]), np.array([500.0]), 0.9, kw).min())
    # 250 kW for 10 s draws 0.732 kWh from the cells (after losses): 0.146 % of 500 kWh.
    late_pct = 250.0 * 10.0 / 3600.0 / np.sqrt(0.9) / 500.0 * 100.0
    assert lowest >= 20.0 + late_pct - 1e-6
    assert lowest < 20.0 + late_pct + 0.05  # and the rest of the energy is used
