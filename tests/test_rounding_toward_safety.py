"""Setpoints go out rounded to whole watts, and the rounding never carries a battery past a floor
the plan reaches: published schedules, replayed from the published start SoC, stay above it."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings

from api_helpers import ev_body, sample
from conftest import Clock
from dispatch_fleets import fleet_cases, random_inputs
from vpp_aggregator.adapters.api.app import create_app
from vpp_aggregator.config import load_settings
from vpp_aggregator.domain.dispatch.fast import solve_fast
from vpp_aggregator.domain.dispatch.lp import solve_lp
from vpp_aggregator.domain.dispatch.problem import DispatchProblem, round_toward_safety
from vpp_aggregator.domain.dispatch.safety import check, soc_trajectory

EV = {"battery_capacity_kwh": 77.7, "max_charge_kw": 19.3, "max_discharge_kw": 19.3}


def lowest_soc(allocation: dict[str, Any], capacity_kwh: float) -> float:
    kw = np.array([[p["setpoint_kw"] for p in allocation["schedule"]]])
    start = np.array([allocation["start_soc_pct"]])
    return float(soc_trajectory(start, np.array([capacity_kwh]), 0.9, kw).min())


@pytest.mark.parametrize(("soc_pct", "minutes"), [(20.2222, 30), (20.12, 7), (22.0001, 13)])
def test_a_published_schedule_replayed_never_crosses_the_floor(
    tmp_path: Any, clock: Clock, soc_pct: float, minutes: int
) -> None:
    settings_ = load_settings(DATABASE_URL=f"sqlite:///{tmp_path / 'r.db'}")
    with TestClient(create_app(settings_, clock=clock)) as c:
        c.post("/resources/register", json=ev_body("ev-1", min_soc_pct=20, **EV))
        c.post("/telemetry", json={"samples": [sample("ev-1", clock.now, soc_pct)]})
        d = c.post(
            "/dispatch",
            json={"target_kw": 19.3, "duration_minutes": minutes, "resource_ids": ["ev-1"]},
        ).json()
        (a,) = d["allocations"]
        assert a["start_soc_pct"] == soc_pct  # reported as measured, not rounded down
        assert lowest_soc(a, EV["battery_capacity_kwh"]) >= 20.0 - 1e-9


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fleet_cases)
def test_rounded_setpoints_of_either_solver_keep_every_rule(
    case: tuple[int, int, float, int, bool],
) -> None:
    n, seed, target, window, opposite = case
    p = DispatchProblem(random_inputs(n, seed), target, window, 10.0, include_opposite=opposite)
    for solution in (solve_fast(p), solve_lp(p)):
        wire = round_toward_safety(solution.setpoints_kw(p), p.direction)
        assert np.array_equal(wire, np.round(wire, 3))
        assert check(p, wire, 10.0) == []
