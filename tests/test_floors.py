"""The floor rules (docs/concepts.md, "Floors") against hand-computed cases."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from vpp_aggregator.domain.floors import (
    departure_floor_pct,
    raise_lead_hours,
    recharge_pct_per_hour,
    static_floor_pct,
)

# A 60 kWh vehicle charging at 11 kW with a 0.9 round trip: sqrt(0.9) * 11 = 10.44 kW reach the
# cells, 17.39 points of SoC per hour.
CELLS_PCT_PER_H = math.sqrt(0.9) * 11.0 / 60.0 * 100.0


def test_bess_floor_uses_fleet_minimum_and_ev_floor_is_the_drivers() -> None:
    assert static_floor_pct(True, 20.0, 25.0) == 25.0
    assert static_floor_pct(True, 30.0, 25.0) == 30.0
    assert static_floor_pct(False, 10.0, 25.0) == 10.0
    fleet = static_floor_pct(np.array([True, False, True]), [10.0, 10.0, 40.0], 25.0)
    assert fleet.tolist() == [25.0, 10.0, 40.0]


def test_recharge_counts_what_reaches_the_cells() -> None:
    assert recharge_pct_per_hour(60.0, 11.0, 0.9) == pytest.approx(CELLS_PCT_PER_H)
    assert recharge_pct_per_hour(60.0, 11.0, 1.0) == pytest.approx(11.0 / 60.0 * 100.0)


def test_departure_floor_leaves_room_for_charging_losses() -> None:
    rate = recharge_pct_per_hour(60.0, 11.0, 0.9)
    # 2 h before leaving with 80 %: 80 - 2 * 17.39 = 45.2 % (43.3 % if charging lost nothing).
    assert departure_floor_pct(20.0, 80.0, 2.0, rate) == pytest.approx(45.21, abs=0.01)
    assert departure_floor_pct(20.0, 80.0, 10.0, rate) == 20.0  # far off: the driver's minimum
    assert departure_floor_pct(20.0, 80.0, 0.0, rate) == 80.0  # leaving now: all of the need
    assert departure_floor_pct(20.0, 80.0, -1.0, rate) == 80.0  # no time left to charge
    assert departure_floor_pct(20.0, 80.0, math.inf, rate) == 20.0  # no departure
    # The raise starts (80 - 20) / 17.39 = 3.45 h before leaving, where the two floors meet.
    lead = raise_lead_hours(20.0, 80.0, rate)
    assert lead == pytest.approx(60.0 / CELLS_PCT_PER_H)
    assert departure_floor_pct(20.0, 80.0, lead, rate) == pytest.approx(20.0)
    assert raise_lead_hours(50.0, 40.0, rate) == 0.0  # needs less than its minimum: no raise
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no 0/0 for a resource that cannot charge
        assert raise_lead_hours(50.0, 40.0, 0.0) == 0.0
        assert raise_lead_hours(20.0, 80.0, 0.0) == math.inf


def test_departure_floor_broadcasts_over_resources_and_times() -> None:
    static = np.array([20.0, 30.0, 25.0])
    need = np.array([80.0, 90.0, 0.0])
    rate = recharge_pct_per_hour(np.array([60.0, 80.0, 500.0]), np.array([11.0, 7.2, 100.0]), 0.9)
    hours = np.array([[0.5, 2.0], [1.0, math.inf], [3.0, 0.0]])
    grid = departure_floor_pct(static[:, None], need[:, None], hours, rate[:, None])
    for i in range(3):
        for j in range(2):
            one = departure_floor_pct(static[i], need[i], hours[i, j], rate[i])
            assert grid[i, j] == pytest.approx(float(one))
    assert grid[1, 1] == 30.0 and grid[2, 1] == 25.0
