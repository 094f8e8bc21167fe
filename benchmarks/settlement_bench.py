"""Market benchmarks. Settlement against a 45-day baseline, on SQLite: what one 5-minute real-time award costs when
its aggregation's history is read for the first time (cold), and for the next award of the day
(warm: past days are kept by the meter, only the award's own day is read)."""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from vpp_aggregator.adapters.store.database import make_engine, migrate
from vpp_aggregator.adapters.store.market_repository import MarketRepository
from vpp_aggregator.adapters.store.tables import market_awards, telemetry_samples
from vpp_aggregator.app.baseline_policy import BaselinePolicy
from vpp_aggregator.app.settlement import Meter
from vpp_aggregator.domain.baselines import BaselineMethod

DAY = date(2025, 6, 11)  # a Wednesday


@dataclass(frozen=True)
class SettlementBench:
    vehicles: int
    sample_s: int
    rows: int
    cold_ms: float
    warm_ms: float
    delivered_kwh: float


class _Members:
    def __init__(self, ids: list[str]) -> None:
        self.ids = ids

    def members(self, grid_node: str) -> list[tuple[str, bool]]:
        return [(r, False) for r in self.ids]


def bench_settlement(vehicles: int = 50, sample_s: int = 60) -> SettlementBench:
    with tempfile.TemporaryDirectory() as tmp:
        engine = make_engine(f"sqlite:///{Path(tmp) / 'settle.db'}")
        migrate(engine)
        ids = [f"ev-{i}" for i in range(vehicles)]
        begin = datetime(2025, 4, 26, 7, tzinfo=UTC)  # 46 local days before, Pacific
        event = datetime(2025, 6, 11, 19, tzinfo=UTC)  # 12:00 Pacific
        rng = np.random.default_rng(7)
        rows = 0
        t = begin
        with engine.begin() as conn:
            while t < event + timedelta(minutes=10):
                hour = (t.hour - 7) % 24  # local hour
                charging = 8 <= hour < 17 and t < event
                batch = [
                    {
                        "ts": t,
                        "resource_id": rid,
                        "soc_pct": 60.0,
                        "plugged_in": True,
                        "power_kw": -float(rng.uniform(3, 7)) if charging else 0.0,
                        "received_at": t,
                    }
                    for rid in ids
                ]
                conn.execute(telemetry_samples.insert(), batch)
                rows += len(batch)
                t += timedelta(seconds=sample_s)
            for k in range(2):
                conn.execute(
                    market_awards.insert().values(
                        award_id=f"aw-{k}",
                        aggregation_id="N",
                        interval_start=event + timedelta(minutes=5 * k),
                        interval_end=event + timedelta(minutes=5 * k + 5),
                        awarded_kw=100.0,
                        dispatch_id=f"d-{k}",
                        received_at=begin,
                        status="dispatched",
                    )
                )
        meter = Meter(
            MarketRepository(engine),
            _Members(ids),
            BaselinePolicy(default=BaselineMethod.CAISO_10IN10),
            hold_s=300.0,
            clock=lambda: event + timedelta(minutes=10),  # as settled: yesterday is not final yet
        )
        t0 = time.perf_counter()
        first = meter.measure("N", event, event + timedelta(minutes=5), 100.0)
        cold = time.perf_counter() - t0
        t0 = time.perf_counter()
        meter.measure("N", event + timedelta(minutes=5), event + timedelta(minutes=10), 100.0)
        warm = time.perf_counter() - t0
        engine.dispose()
    return SettlementBench(vehicles, sample_s, rows, cold * 1e3, warm * 1e3, first.delivered_kwh)


def bench_regulation(capacity_kw: float) -> dict[str, Any]:
    """One replay of the packaged RegA signal with the default-sized fleet."""
    from vpp_aggregator.cli_regulation import REGA
    from vpp_aggregator.demo.regulation import default_size, read_signal, replay

    t, s, _ = read_signal(REGA)
    sized = default_size(t, s, capacity_kw)
    t0 = time.perf_counter()
    r = replay(t, s, capacity_kw, sized.resources)
    return {
        "resources": sized.resources,
        "for_power": sized.for_power,
        "for_ramp": sized.for_ramp,
        "for_energy": sized.for_energy,
        "scores": [h.score for h in r.hours],
        "violations": r.safety_violations + r.soc_violations + r.departures_unmet,
        "commands": r.commands,
        "seconds": time.perf_counter() - t0,
    }
