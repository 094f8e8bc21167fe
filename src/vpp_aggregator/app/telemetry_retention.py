"""Raw telemetry is kept for `raw_days`; before a day's samples go, each resource's five-minute
series of that day is measured and kept for `series_days`, which is what settlement baselines
read beyond the raw history (45 days of like days for CAISO's 10-in-10)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from vpp_aggregator.app.settlement import SLOT_S
from vpp_aggregator.domain.metering import interval_energy

log = logging.getLogger(__name__)

DAY_S = 86_400.0
DAYS_AHEAD = 2  # raw days made ready before their first sample (today and these)
EDGES = np.arange(0.0, DAY_S + SLOT_S, SLOT_S)  # a UTC day's interval edges, from midnight


class HistoryStore(Protocol):
    def rolled_through(self) -> date | None: ...
    def oldest_raw_day(self) -> date | None: ...
    def day_samples(
        self, day: date, lead_s: float
    ) -> Iterator[tuple[str, NDArray[np.float64], NDArray[np.float64]]]: ...
    def write_day(
        self, day: date, rows: Sequence[tuple[str, NDArray[np.float32], NDArray[np.uint16], int]]
    ) -> None: ...
    def mark_rolled_through(self, day: date) -> None: ...
    def prepare_raw_days(self, days: Sequence[date]) -> None: ...
    def drop_raw_before(self, day: date) -> None: ...
    def drop_series_before(self, day: date) -> None: ...


def day_series(
    day: date, ts: NDArray[np.float64], power_kw: NDArray[np.float64], hold_s: float
) -> tuple[NDArray[np.float32], NDArray[np.uint16]]:
    """A resource's kWh and seconds covered in each five-minute interval of a UTC day, by the
    settlement's own sample-and-hold rule."""
    midnight = datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()
    kwh, covered = interval_energy(ts, power_kw, midnight + EDGES, hold_s)
    return kwh.astype(np.float32), np.round(covered).astype(np.uint16)


@dataclass
class TelemetryRetention:
    store: HistoryStore
    clock: Callable[[], datetime]
    raw_days: int
    series_days: int
    hold_s: float
    batch: int = 10_000

    def prepare_ahead(self) -> list[date]:
        """Make the raw history ready for today and the next days, so that samples never wait
        for their day's table to be made (on PostgreSQL that takes a lock on the whole table)."""
        today = self.clock().astimezone(UTC).date()
        days = [today + timedelta(days=k) for k in range(DAYS_AHEAD + 1)]
        self.store.prepare_raw_days(days)
        return days

    def run(self) -> dict[str, object]:
        """Roll up every day that leaves the raw history (and the first day kept, so the
        interval after the cut still sees the sample held into it), then drop what aged out."""
        today = self.clock().astimezone(UTC).date()
        cutoff = today - timedelta(days=self.raw_days)
        keep_from = today - timedelta(days=self.series_days)
        oldest = self.store.oldest_raw_day()
        first = self.store.rolled_through() or oldest
        rolled: list[str] = []
        if first is not None:
            day = max(first, keep_from)  # a series older than that would go at once
            while day <= cutoff:
                self._roll(day)
                rolled.append(day.isoformat())
                day += timedelta(days=1)
                self.store.mark_rolled_through(day)
        if oldest is not None and oldest < cutoff:
            self.store.drop_raw_before(cutoff)
        self.store.drop_series_before(keep_from)
        if rolled:
            log.info("telemetry: rolled up %s; raw history from %s", ", ".join(rolled), cutoff)
        return {"rolled_up": rolled, "raw_from": cutoff.isoformat()}

    def _roll(self, day: date) -> None:
        rows: list[tuple[str, NDArray[np.float32], NDArray[np.uint16], int]] = []
        for rid, ts, kw in self.store.day_samples(day, self.hold_s):
            kwh, covered = day_series(day, ts, kw, self.hold_s)
            rows.append((rid, kwh, covered, int(ts.size)))
            if len(rows) >= self.batch:
                self.store.write_day(day, rows)
                rows = []
        self.store.write_day(day, rows)
