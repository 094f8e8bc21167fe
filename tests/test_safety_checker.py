"""The load run's independent safety checker must catch what it is there to catch."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from factories import bess
from vpp_aggregator.bench_load import check_schedule

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def allocation(kw: list[float], start_soc: float = 50.0, step_min: float = 1.0) -> dict:  # type: ignore[type-arg]
    return {
        "resource_id": "bess-1",
        "start_soc_pct": start_soc,
        "schedule": [
            {"t": (T0 + timedelta(minutes=i * step_min)).isoformat(), "setpoint_kw": v}
            for i, v in enumerate(kw)
        ],
    }


def test_a_safe_schedule_passes() -> None:
    assert check_schedule(allocation([0, 10, 20, 20, 10, 0]), bess()) == []


def test_each_broken_rule_is_named() -> None:
    spec = bess()  # 200 kWh, 50 kW out, 40 kW in, floor 20 %
    assert any("ramp" in v for v in check_schedule(allocation([0, 25]), spec))
    assert any("apart" in v for v in check_schedule(allocation([0, 0], step_min=2), spec))
    assert any("beyond its limits" in v for v in check_schedule(allocation([60.0] * 2), spec))
    # up to 50 kW and held for an hour from 21 %: far below the 20 % floor
    ramp = [min(50.0, 10.0 * i) for i in range(61)]
    assert any(
        "below its floor" in v for v in check_schedule(allocation(ramp, start_soc=21.0), spec)
    )
