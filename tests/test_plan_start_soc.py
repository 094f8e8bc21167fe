"""A plan starts from the SoC a resource has now, not the one it last reported: the report is
moved on by the power reported with it for the time since (up to the stale limit)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from factories import bess
from vpp_aggregator.domain.fleet_state import FleetState

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
ROUND_TRIP = 0.9


def _reported(power_kw: float, age_s: float, direction: int = 1) -> float:
    """The SoC a plan (discharge: `direction` 1) would start from: 200 kWh battery at 50 %
    reporting `power_kw`, planned `age_s` after the report."""
    state = FleetState(bess_min_soc_pct=20.0, stale_seconds=300.0, round_trip_efficiency=ROUND_TRIP)
    state.upsert_many([bess("b", max_discharge_kw=250.0, max_charge_kw=250.0)], NOW)
    state.apply_telemetry(
        state.rows_of(["b"]),
        np.array([NOW.timestamp()]),
        np.array([50.0]),
        np.array([True]),
        np.array([power_kw]),
        NOW,
    )
    later = NOW + timedelta(seconds=age_s)
    inputs, _ = state.dispatch_inputs(later, later, direction=direction)
    return float(inputs.soc_pct[0])


def test_a_battery_discharging_when_sampled_has_less_by_the_time_it_is_planned() -> None:
    # 120 kW for a minute, through the cells at √η: 2.108 kWh of 200 kWh
    drawn_pct = 120.0 / math.sqrt(ROUND_TRIP) / 60.0 / 200.0 * 100.0
    assert _reported(120.0, 60.0) == pytest.approx(50.0 - drawn_pct)


def test_a_charging_battery_has_more_for_a_charge_plan_and_an_idle_one_what_it_said() -> None:
    stored_pct = 120.0 * math.sqrt(ROUND_TRIP) / 60.0 / 200.0 * 100.0
    assert _reported(-120.0, 60.0, direction=-1) == pytest.approx(50.0 + stored_pct)
    assert _reported(0.0, 60.0) == pytest.approx(50.0)


def test_the_move_counts_only_toward_the_limit_the_plan_runs_to() -> None:
    """A vehicle charging when sampled may have stopped since: a discharge plan starts from what
    it said, not from more (a plan from more ended below the driver's minimum by the difference,
    12 flags on a Norway quarter); likewise a charge plan from a discharging report."""
    assert _reported(-120.0, 60.0, direction=1) == pytest.approx(50.0)
    assert _reported(120.0, 60.0, direction=-1) == pytest.approx(50.0)


def test_the_move_stops_at_the_stale_limit() -> None:
    """Past the stale limit the resource is not planned with at all; up to it, the report is
    moved on by at most that long."""
    assert _reported(120.0, 300.0) == pytest.approx(50.0 - 5 * (50.0 - _reported(120.0, 60.0)))
