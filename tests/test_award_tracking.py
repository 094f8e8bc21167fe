"""The award tracking's target: the award plus what the aggregation's other members draw beyond
the baseline, up to a cap (`MAX_RAISE`)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest

from vpp_aggregator.app.award_tracking import LEAST_TARGET_KW, MAX_RAISE, AwardTracking

START = datetime(2019, 11, 21, 15, 0, tzinfo=UTC)


class Meter:
    """Settlement's meter as the tracking reads it: a baseline of `base_kw` in every interval."""

    def __init__(self, base_kw: float) -> None:
        self.base_kw = base_kw

    def measure(
        self, aggregation_id: str, start: Any, end: Any, awarded_kw: float, per_resource: bool
    ) -> Any:
        assert not per_resource  # tracking needs the whole baseline, not each member's
        slots = [
            {
                "interval_start": (START + timedelta(minutes=5 * k)).isoformat(),
                "baseline_kwh": self.base_kw / 12,
            }
            for k in range(12)
        ]
        return SimpleNamespace(intervals=slots)


class Powers:
    """The node's net output (kW) and what the dispatch's resources give of it."""

    def __init__(self, net_kw: float, dispatched_kw: float) -> None:
        self.net_kw, self.dispatched_kw = net_kw, dispatched_kw

    def net_power(self, now_ts: float) -> dict[str, tuple[float, int, int]]:
        return {"NODE_A": (self.net_kw, 10, 10)}

    def power_of(self, resource_ids: Sequence[str], now_ts: float) -> float:
        return self.dispatched_kw


AWARD = {  # 100 kW for an hour from START
    "award_id": "aw-1",
    "aggregation_id": "NODE_A",
    "interval_start": START.isoformat(),
    "interval_end": (START + timedelta(hours=1)).isoformat(),
    "awarded_kw": 100.0,
}


def _target(base_kw: float, others_kw: float) -> float:
    """A 100 kW award whose dispatch gives 100 kW while the other members give `others_kw`."""
    award = AWARD
    tracking = AwardTracking(Meter(base_kw), Powers(100.0 + others_kw, 100.0))  # type: ignore[arg-type]
    return tracking.targets([(award, ["bess-1"])], START + timedelta(minutes=7))["aw-1"]


def test_vehicles_charging_beyond_the_baseline_raise_the_target_by_what_they_draw() -> None:
    # Residential evenings: vehicles arriving home draw 110 kW where the baseline expects none.
    assert _target(base_kw=0.0, others_kw=-110.0) == pytest.approx(210.0)
    # What the baseline expects is already in the award's measurement: only the rest is made up.
    assert _target(base_kw=60.0, others_kw=-110.0) == pytest.approx(150.0)


def test_the_raise_is_capped() -> None:
    assert MAX_RAISE == 3.0
    assert _target(base_kw=0.0, others_kw=-400.0) == pytest.approx(300.0)


def test_a_baseline_above_what_members_draw_lowers_the_target_but_never_turns_it() -> None:
    # Vehicles held at zero where the baseline expects 80 kW of charging: the meter shows those
    # 80 kW already, so the batteries give 20 and keep the rest for the day's later awards.
    assert _target(base_kw=80.0, others_kw=0.0) == pytest.approx(20.0)
    # A baseline of 150 kW covers the award twice over: the dispatch is asked its least, never
    # to charge during a discharge award.
    assert _target(base_kw=150.0, others_kw=0.0) == pytest.approx(LEAST_TARGET_KW)
    # Members outside the dispatch exporting on their own count too.
    assert _target(base_kw=0.0, others_kw=30.0) == pytest.approx(70.0)
