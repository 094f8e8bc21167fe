"""The package's one safety checker names each rule a schedule breaks, and only that rule.

Each case starts from a schedule that keeps every rule and breaks exactly one, so a checker that
stopped checking a rule (or started naming the wrong one) fails here, not silently in the
`violations == []` property tests. Schedules are given as they go on the wire: the resource's
facts, a start SoC and (time, kW) points one minute apart; facts come from domain resources with
the floor the configured VPP_BESS_MIN_SOC makes.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from factories import bess, ev
from vpp_aggregator.config import Settings, load_settings
from vpp_aggregator.domain.dispatch.safety import ResourceFacts, check_wire
from vpp_aggregator.domain.resources import Resource

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
# The figures below are worked out for these: 10 kW/min, 90 % round trip, BESS floor 20 %.
SETTINGS = load_settings(
    VPP_MAX_RAMP_KW_PER_MIN=10, VPP_ROUND_TRIP_EFFICIENCY=0.9, VPP_BESS_MIN_SOC=20
)
BATTERY = bess()  # 200 kWh, 50 kW out, 40 kW in, own minimum 20 %
VEHICLE = ev()  # 60 kWh, 10 kW out, 11 kW in, driver's minimum 30 %


def rules(
    resource: Resource | ResourceFacts,
    kw: list[float],
    start_soc_pct: float = 50.0,
    step: timedelta = timedelta(minutes=1),
    settings: Settings = SETTINGS,
) -> list[str]:
    """The rules the checker names for `kw` one `step` apart from `start_soc_pct`."""
    facts = (
        resource
        if isinstance(resource, ResourceFacts)
        else ResourceFacts.of(resource, settings.bess_min_soc_pct, after=T0)
    )
    points = [(T0 + i * step, v) for i, v in enumerate(kw)]
    found = check_wire(
        facts,
        start_soc_pct,
        points,
        ramp_kw_per_min=settings.max_ramp_kw_per_min,
        round_trip_efficiency=settings.round_trip_efficiency,
    )
    return sorted({v.rule for v in found})


def test_a_safe_schedule_passes() -> None:
    assert rules(BATTERY, [0, 10, 20, 20, 10, 0]) == []
    assert rules(VEHICLE, [0, -10, -11, -11, -10, 0]) == []


def test_ramp() -> None:
    assert rules(BATTERY, [0, 25, 20, 10, 0]) == ["ramp"]  # 25 kW in one minute


def test_discharge_power() -> None:
    up = [0, 10, 20, 30, 40, 50, 60]  # to 60 kW of a battery allowed 50
    assert rules(BATTERY, [*up, *reversed(up[:-1])]) == ["discharge_power"]


def test_charge_power() -> None:
    down = [0, -10, -20, -30, -40, -50]  # to 50 kW into a battery allowed 40
    assert rules(BATTERY, [*down, *reversed(down[:-1])]) == ["charge_power"]


def test_bess_floor() -> None:
    # 10 kW from 20.1 % of 200 kWh: about 0.09 % a minute, below 20 % in the second minute.
    assert rules(BATTERY, [0, 10, 10, 10, 10, 10, 0], start_soc_pct=20.1) == ["bess_min_soc"]


def test_the_bess_floor_is_the_configured_one() -> None:
    # The battery's own minimum is 20 %; VPP_BESS_MIN_SOC=25 makes its floor 25 %.
    stricter = load_settings(
        VPP_MAX_RAMP_KW_PER_MIN=10, VPP_ROUND_TRIP_EFFICIENCY=0.9, VPP_BESS_MIN_SOC=25
    )
    kw = [0, 10, 10, 10, 10, 10, 0]
    assert rules(BATTERY, kw, start_soc_pct=25.1) == []
    assert rules(BATTERY, kw, start_soc_pct=25.1, settings=stricter) == ["bess_min_soc"]


def test_driver_floor() -> None:
    # 10 kW from 30.1 % of 60 kWh: about 0.29 % a minute, below the driver's 30 % at once.
    assert rules(VEHICLE, [0, 10, 10, 10, 0], start_soc_pct=30.1) == ["driver_min_soc"]


def test_max_soc() -> None:
    capped = bess(max_soc_pct=90.0)
    # 10 kW into 200 kWh: about 0.08 % a minute, past 90 % in the second minute.
    assert rules(capped, [0, -10, -10, -10, 0], start_soc_pct=89.95) == ["max_soc"]


def test_departure_soc() -> None:
    # Leaves in 20 min needing 80 %: from 77 % charging at 11 kW it would make 82.8 %. After
    # 8 minutes at up to 10 kW out it is at about 74.9 % and can only reach about 78.4 %.
    leaving = ev(departs_in=timedelta(minutes=20), now=T0, required_soc_pct=80.0)
    kw = [0, 10, 10, 10, 10, 10, 10, 10, 0]
    assert rules(leaving, kw, start_soc_pct=77.0) == ["departure_soc"]


def test_after_departure() -> None:
    leaving = ev(departs_in=timedelta(minutes=3), now=T0, required_soc_pct=40.0)
    assert rules(leaving, [0, 5, 5, 5, 0], start_soc_pct=60.0) == ["after_departure"]


def test_unavailable() -> None:
    facts = ResourceFacts.of(BATTERY, SETTINGS.bess_min_soc_pct, after=T0)
    assert rules(facts, [0, 10, 0]) == []
    assert rules(replace(facts, available=False), [0, 10, 0]) == ["unavailable"]


@pytest.mark.parametrize("step", [timedelta(minutes=2), timedelta(seconds=30)])
def test_point_spacing(step: timedelta) -> None:
    assert rules(BATTERY, [0, 10, 0], step=step) == ["point_spacing"]


def test_a_ramp_down_from_beyond_the_limits_is_forced_but_may_not_dawdle() -> None:
    # At 70 kW of a battery now allowed 50: ramping down at the limit is the only way back.
    assert rules(BATTERY, [70, 60, 50, 40, 30, 20, 10, 0]) == []
    # Holding 70 kW for a minute first is not forced: it breaks the power limit.
    assert rules(BATTERY, [70, 70, 60, 50, 40, 30, 20, 10, 0]) == ["discharge_power"]
