"""Both solvers against the safety rules, and the fast one against the LP reference."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from dispatch_fleets import fleet_cases, market_cases, random_inputs
from vpp_aggregator.domain.dispatch.fast import solve_fast
from vpp_aggregator.domain.dispatch.lp import solve_lp
from vpp_aggregator.domain.dispatch.problem import (
    DispatchProblem,
    ResourceInputs,
)
from vpp_aggregator.domain.dispatch.safety import check, soc_path

RAMP = 10.0


Case = tuple[int, int, float, int, bool]


def _problem(case: Case) -> DispatchProblem:
    n, seed, target, window, opposite = case
    return DispatchProblem(random_inputs(n, seed), target, window, RAMP, include_opposite=opposite)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fleet_cases)
def test_fast_allocator_never_breaks_a_rule(case: Case) -> None:
    p = _problem(case)
    sol = solve_fast(p)
    assert check(p, sol.setpoints_kw(p), RAMP) == []
    fleet = sol.fleet_power()[1 : p.duration_min + 1]
    # Never more than asked, unless power already flowing cannot ramp down any faster.
    t = np.arange(1, p.duration_min + 1)
    forced = np.maximum(p.q0[p.eligible][:, None] - RAMP * t[None, :], 0.0).sum(axis=0)
    assert (fleet <= np.maximum(p.target_abs_kw, forced) + 1e-6).all()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fleet_cases)
def test_lp_never_breaks_a_rule(case: Case) -> None:
    p = _problem(case)
    assert check(p, solve_lp(p).setpoints_kw(p), RAMP) == []


# Derandomized: the same 60 cases every run, so a CI run cannot pass or fail by the draw. On
# 27,000 other random market cases (9 seed ranges of 3,000, 15,000 of them not used in tuning
# fast.py) none was above 0.5 %; the largest gap was 0.39 % (see fast.py).
@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,
)
@given(market_cases)
def test_fast_delivers_within_half_a_percent_of_the_lp_on_market_cases(
    case: Case,
) -> None:
    p = _problem(case)
    lp, fast = solve_lp(p), solve_fast(p)
    e_lp, e_fast = lp.delivered_kwh(p), fast.delivered_kwh(p)
    assert e_fast <= e_lp + 1e-6 * max(1.0, abs(e_lp))  # the LP is the optimum
    assert e_fast >= e_lp - 0.005 * abs(e_lp) - 1e-6


# Energy-limited fleets found by random searches at 0.5 %, each beyond it once.
@pytest.mark.parametrize(
    "case",
    [
        # Its batteries held their rate to the window's end and spent energy ramping down after
        # it (0.66 %); planned ramp-downs ending at the window's end fixed it.
        (29, 1678124625, 445.0005110614484, 98, False),
        # Holding the target to the end needs batteries still at power there (1.15 %, 0.84 % with
        # ramp-downs ending at the window's end): ending them 2 points after it gives 0.18 %.
        (24, 211726109, -711.3538977100387, 99, False),
        # A battery rushed beyond its plan while the fleet was short pushed vehicles with energy
        # to spare off once the target was met (0.82 %): a gentler approach to the target.
        (14, 150033439, -489.690174951312, 53, True),
        # Small vehicles planned to spend energy after the window, which a ramp-down cannot
        # (0.81 %): plan ends no later than a ramp-down from full power allows (0.39 %).
        (12, 5235471, 595.6718015496638, 69, True),
    ],
)
def test_energy_limited_fleet_within_half_a_percent(case: Case) -> None:
    p = _problem(case)
    e_lp, e_fast = solve_lp(p).delivered_kwh(p), solve_fast(p).delivered_kwh(p)
    assert e_fast >= e_lp - 0.005 * abs(e_lp) - 1e-6


def _one(**kw: float) -> ResourceInputs:
    base = {
        "is_bess": False,
        "capacity_kwh": 60.0,
        "soc_pct": 80.0,
        "floor_pct": 20.0,
        "ceiling_pct": 100.0,
        "max_discharge_kw": 11.0,
        "max_charge_kw": 11.0,
        "power_kw": 0.0,
        "departure_min": np.inf,
        "departure_soc_pct": 0.0,
        "available": True,
    }
    base.update(kw)
    return ResourceInputs(
        resource_ids=["x"],
        **{
            k: np.array([v], dtype=bool if k in ("is_bess", "available") else float)
            for k, v in base.items()
        },
        early_departures=np.zeros(1, dtype=np.int64),
    )


def test_ramp_up_shape_from_rest() -> None:
    inputs = _one(is_bess=True, capacity_kwh=1000.0, max_discharge_kw=250.0, max_charge_kw=250.0)
    p = DispatchProblem(inputs, 100.0, 60, RAMP)
    sp = solve_fast(p).setpoints_kw(p)[0]
    assert list(sp[:12]) == [0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 100]
    assert sp[60] == 100 and list(sp[61:64]) == [90, 80, 70]  # ramps back down after the window
    assert sp[-1] == 0


def test_vehicle_charging_now_first_ramps_through_zero() -> None:
    assert not DispatchProblem(_one(power_kw=-7.0), 11.0, 30, RAMP).eligible[0]  # left charging
    p = DispatchProblem(_one(power_kw=-7.0), 11.0, 30, RAMP, include_opposite=True)
    sp = solve_fast(p).setpoints_kw(p)[0]
    assert sp[0] == -7.0 and sp[1] == 0.0 and sp[2] == 10.0 and sp[3] == 11.0


def test_departure_mid_window_ends_before_leaving_with_the_required_charge() -> None:
    # Leaves in 40 min needing 75 %; recharging at 11 kW gives ~0.3 %/min back.
    p = DispatchProblem(
        _one(soc_pct=85.0, departure_min=40.0, departure_soc_pct=75.0), 50.0, 60, RAMP
    )
    for sol in (solve_fast(p), solve_lp(p)):
        sp = sol.setpoints_kw(p)[0]
        assert (sp[40:] == 0).all()
        soc = soc_path(p, sol.setpoints_kw(p))[0]
        assert soc[40] >= 75.0 - 1e-9
        assert sp.max() > 0  # it does take part before leaving


def test_vehicle_that_must_recharge_is_left_alone() -> None:
    # 70 % now, needs 90 % in 90 min: even charging flat out it needs ~105 min; no discharge.
    p = DispatchProblem(
        _one(soc_pct=70.0, departure_min=90.0, departure_soc_pct=90.0), 50.0, 30, RAMP
    )
    assert not p.eligible[0]
    assert solve_fast(p).rows.size == 0


def test_bess_at_21_percent_gives_one_percent_and_stops_at_20() -> None:
    inputs = _one(
        is_bess=True, capacity_kwh=500.0, soc_pct=21.0, max_discharge_kw=250.0, max_charge_kw=250.0
    )
    p = DispatchProblem(inputs, 200.0, 60, RAMP)
    for sol in (solve_fast(p), solve_lp(p)):
        soc = soc_path(p, sol.setpoints_kw(p))[0]
        assert soc.min() >= 20.0 - 1e-9
        # 1 % of 500 kWh = 5 kWh of cells; with losses ~4.7 kWh reach the grid, less the ramp-down reserve
        assert 3.5 <= sol.delivered_kwh(p) <= 5.0


def test_infeasible_target_is_delivered_as_far_as_the_rules_allow() -> None:
    p = DispatchProblem(random_inputs(5, 3, departures=False), 100_000.0, 30, RAMP)
    lp, fast = solve_lp(p), solve_fast(p)
    assert lp.delivered_kwh(p) < 100_000.0 * 0.5
    assert fast.delivered_kwh(p) == pytest.approx(lp.delivered_kwh(p), rel=0.005)
    assert check(p, fast.setpoints_kw(p), RAMP) == []


def test_charge_dispatch_leaves_a_vehicle_that_needs_its_charge_alone() -> None:
    # Charging itself at 11 kW, leaving in 2 h needing 80 %: a 1 kW charge target must not
    # throttle it below what it needs (it would leave at ~78 %).
    inputs = _one(soc_pct=60.0, power_kw=-11.0, departure_min=120.0, departure_soc_pct=80.0)
    p = DispatchProblem(inputs, -1.0, 60, RAMP, include_opposite=True)
    assert not p.eligible[0]
    assert solve_fast(p).rows.size == 0 and solve_lp(p).rows.size == 0
    # And the checker itself refuses such a throttled schedule.
    throttled = np.array([[-11.0, -1.0] + [-1.0] * 59 + [0.0] * (p.horizon - 60)])
    assert any(v.rule == "departure_soc" for v in check(p, throttled, RAMP))


def test_power_covering_for_vehicles_still_charging_comes_down_in_time() -> None:
    """Hypothesis found it: three vehicles charging at 30 kW ramp through zero while a large
    battery covers for them; it must not still be above the target when they are done."""
    p = DispatchProblem(random_inputs(5, 553), 12.0, 3, RAMP, include_opposite=True)
    sol = solve_fast(p)
    assert (sol.fleet_power()[1 : p.duration_min + 1] <= 12.0 + 1e-6).all()
    assert check(p, sol.setpoints_kw(p), RAMP) == []


def test_charge_dispatch_leaves_a_vehicle_its_lead_would_take_below_its_departure_charge() -> None:
    """A random sweep found it: a vehicle discharging 4 kW just above the charge it needs to
    leave with loses a little more ramping to zero first, and was then left at zero."""
    inputs = _one(soc_pct=53.0, power_kw=4.0, departure_min=120.0, departure_soc_pct=52.97)
    p = DispatchProblem(inputs, -5.0, 60, RAMP, include_opposite=True)
    assert not p.eligible[0]
    for sol in (solve_fast(p), solve_lp(p)):
        assert check(p, sol.setpoints_kw(p), RAMP) == []
