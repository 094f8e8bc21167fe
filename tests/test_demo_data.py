"""The small extract shipped in the package keeps the demo working without ../shared."""

from __future__ import annotations

from datetime import UTC, datetime

from vpp_aggregator.demo.constants import PACKAGED_DATA_DIR
from vpp_aggregator.demo.drivers import build_fleet


def test_packaged_extract_runs_a_demo_without_shared_data() -> None:
    """A clone without ../shared beside it (or the Docker image) still has a realistic demo fleet."""
    fleet = build_fleet(20, 2, PACKAGED_DATA_DIR, seed=3)
    assert len(fleet.registrations()) == 22
    samples = fleet.step(datetime(2026, 11, 25, 20, tzinfo=UTC), 60.0)
    assert len(samples) == 22 and all(0 <= s["soc_pct"] <= 100 for s in samples)
