"""What award dispatches made up, per aggregation and local hour, over its last award days
(`domain/makeup`): written by the award tracking as awards run, read by the day's offers."""

from __future__ import annotations

import threading
from collections import OrderedDict
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
from numpy.typing import NDArray

from vpp_aggregator.domain.makeup import HOURS, reserve_by_hour

DAYS_KEPT = 10  # award days remembered per aggregation, as a 10-in-10 baseline looks back
MAX_STEP_S = 300.0  # a longer gap between two notes: no award ran between them


class MakeupLog:
    def __init__(self, zone: ZoneInfo, days_kept: int = DAYS_KEPT) -> None:
        self.zone = zone
        self.days_kept = days_kept
        self._lock = threading.Lock()
        self._days: dict[str, OrderedDict[date, NDArray[np.float64]]] = {}
        self._last_ts: dict[str, float] = {}

    def note(self, node: str, now: datetime, extra_kw: float) -> None:
        """An award of `node` runs at `now` and its dispatch is asked `extra_kw` beyond it for
        what the members outside it draw beyond the baseline (negative: they draw less). The
        day counts as an award day even when nothing was made up."""
        ts = now.timestamp()
        local = now.astimezone(self.zone)
        with self._lock:
            last = self._last_ts.get(node)
            self._last_ts[node] = ts
            gap_s = ts - last if last is not None else 0.0
            step_s = gap_s if 0.0 < gap_s <= MAX_STEP_S else 0.0
            days = self._days.setdefault(node, OrderedDict())
            day = days.get(local.date())
            if day is None:
                day = days[local.date()] = np.zeros(HOURS)
                while len(days) > self.days_kept:
                    days.popitem(last=False)
            day[local.hour] += max(extra_kw, 0.0) * step_s / 3600.0

    def reserve(self, node: str, ends: list[datetime], level: float) -> NDArray[np.float64]:
        """The energy to keep back by the end of each interval (`ends`, in order, of whole
        operating days), at the offer's quantile `level`: a running total over the intervals,
        as the offers' own energy check counts them (`domain/market.sellable_kw`)."""
        with self._lock:
            days = self._days.get(node)
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
