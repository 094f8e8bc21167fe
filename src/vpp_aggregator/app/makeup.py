"""What award dispatches made up, per aggregation and local hour, over its last award days
(`domain/makeup`): noted by the award tracking as awards run, kept in the store (an hour's sum
at a time, so every process's offers read what any process's dispatches made up), and read by
the day-ahead offers."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import date, datetime, timedelta
from typing import Protocol
from zoneinfo import ZoneInfo

import numpy as np
from numpy.typing import NDArray

from vpp_aggregator.domain.makeup import HOURS, reserve_by_hour

DAYS_KEPT = 10  # award days read per aggregation, as a 10-in-10 baseline looks back
MAX_STEP_S = 300.0  # a longer gap between two notes: no award ran between them

Key = tuple[str, date, int]  # aggregation, local day, local hour


class MakeupStore(Protocol):
    def add_makeup(self, rows: Sequence[tuple[str, date, int, float]]) -> None: ...
    def makeup_days(self, aggregation_id: str, days: int) -> dict[date, NDArray[np.float64]]: ...


class MemoryMakeup:
    """A store of one process's own (tests, tools)."""

    def __init__(self) -> None:
        self._rows: dict[Key, float] = {}

    def add_makeup(self, rows: Sequence[tuple[str, date, int, float]]) -> None:
        for node, day, hour, kwh in rows:
            self._rows[(node, day, hour)] = self._rows.get((node, day, hour), 0.0) + kwh

    def makeup_days(self, aggregation_id: str, days: int) -> dict[date, NDArray[np.float64]]:
        out: dict[date, NDArray[np.float64]] = {}
        for (node, day, hour), kwh in sorted(self._rows.items()):
            if node == aggregation_id:
                out.setdefault(day, np.zeros(HOURS))[hour] += kwh
        return dict(list(out.items())[-days:])


class MakeupLog:
    def __init__(
        self, zone: ZoneInfo, store: MakeupStore | None = None, days_kept: int = DAYS_KEPT
    ) -> None:
        self.zone = zone
        self.store: MakeupStore = store or MemoryMakeup()
        self.days_kept = days_kept
        self._lock = threading.Lock()
        self._open: dict[Key, float] = {}  # the hour under way per aggregation, not yet stored
        self._last_ts: dict[str, float] = {}

    def note(self, node: str, now: datetime, extra_kw: float) -> None:
        """An award of `node` runs at `now` and its dispatch is asked `extra_kw` beyond it for
        what the members outside it draw beyond the baseline (negative: they draw less). The
        day counts as an award day even when nothing was made up."""
        ts = now.timestamp()
        local = now.astimezone(self.zone)
        key = (node, local.date(), local.hour)
        with self._lock:
            last = self._last_ts.get(node)
            self._last_ts[node] = ts
            gap_s = ts - last if last is not None else 0.0
            step_s = gap_s if 0.0 < gap_s <= MAX_STEP_S else 0.0
            done = [k for k in self._open if k[0] == node and k != key]
            kwh = max(extra_kw, 0.0) * step_s / 3600.0
            self._open[key] = self._open.get(key, 0.0) + kwh
            rows = [(*k, self._open.pop(k)) for k in done]
        self.store.add_makeup(rows)  # an hour once it is over

    def reserve(self, node: str, ends: list[datetime], level: float) -> NDArray[np.float64]:
        """The energy to keep back by the end of each interval (`ends`, in order, of whole
        operating days), at the offer's quantile `level`: a running total over the intervals,
        as the offers' own energy check counts them (`domain/market.sellable_kw`)."""
        with self._lock:  # what this process noted so far is stored first
            rows = [(*k, self._open.pop(k)) for k in [k for k in self._open if k[0] == node]]
        self.store.add_makeup(rows)
        days = self.store.makeup_days(node, self.days_kept)
        past = np.array(list(days.values())) if days else np.zeros((0, HOURS))
        by_hour = reserve_by_hour(past, level)
        out = np.empty(len(ends))
        first: date | None = None
        for i, end in enumerate(ends):
            # the hours that end by then: an interval ending at midnight closes its whole day
            local = end.astimezone(self.zone)
            on_the_hour = (local.minute, local.second, local.microsecond) == (0, 0, 0)
            hour = local.hour if on_the_hour else local.hour + 1
            day = local.date() if hour > 0 else (local - timedelta(hours=1)).date()
            first = first or day
            out[i] = (day - first).days * by_hour[-1] + (by_hour[hour - 1] if hour else by_hour[-1])
        return out
