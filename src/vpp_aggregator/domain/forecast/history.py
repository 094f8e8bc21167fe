"""Hourly plug-in history per resource, kept up to date as telemetry arrives.

A forecast needs each resource's plug-in pattern over the last weeks. Reading weeks of raw
samples per request costs seconds at 10k resources, so history is folded on arrival into one
byte per resource and clock hour (the share of its samples that hour that were plugged in), in
a ring of the last `hours` hours. The hour a resource is reporting in stays in small
accumulators until that resource moves on to a later hour or the hour is read as finished.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

MISSING = 255  # no sample that hour
FULL = 250  # share 1.0 (0.4 % resolution)


@dataclass(frozen=True, slots=True)
class HourlyWindow:
    """The last hours before `end_hour`, oldest first, one byte per resource and hour: the share
    plugged in times FULL, or MISSING."""

    start_hour: int  # epoch hours of column 0
    raw: NDArray[np.uint8]  # (resources, hours)
    soc_when_plugged: NDArray[np.float64]  # (resources,) mean SoC of plugged samples, NaN unseen
    samples: NDArray[np.int64]  # (resources,) hours with data in the window

    @property
    def share(self) -> NDArray[np.float32]:
        """Share plugged in, NaN where no sample (a float copy: for tests and small fleets)."""
        out = self.raw / np.float32(FULL)
        out[self.raw == MISSING] = np.nan
        return out.astype(np.float32)


class PluggedHistory:
    def __init__(self, hours: int) -> None:
        self.hours = hours
        self._lock = threading.Lock()
        self._row: dict[str, int] = {}
        self._ring = np.full((0, hours), MISSING, dtype=np.uint8)
        self._slot_hour = np.full(hours, -1, dtype=np.int64)  # epoch hour each column holds
        self._cur_hour = np.zeros(0, dtype=np.int64)  # hour being accumulated per resource
        self._cur_n = np.zeros(0, dtype=np.int64)
        self._cur_plugged = np.zeros(0, dtype=np.int64)
        self._soc_sum = np.zeros(0)
        self._soc_n = np.zeros(0)

    def __len__(self) -> int:
        return len(self._row)

    def _rows(self, ids: Sequence[str], create: bool) -> NDArray[np.int64]:
        rows = np.empty(len(ids), dtype=np.int64)
        for i, rid in enumerate(ids):
            row = self._row.get(rid, -1)
            if row < 0 and create:
                row = self._row[rid] = len(self._row)
            rows[i] = row
        grow = len(self._row) - self._ring.shape[0]
        if grow > 0:
            self._ring = np.vstack([self._ring, np.full((grow, self.hours), MISSING, np.uint8)])
            self._cur_hour = np.concatenate([self._cur_hour, np.full(grow, -1, np.int64)])
            for name in ("_cur_n", "_cur_plugged"):
                setattr(self, name, np.concatenate([getattr(self, name), np.zeros(grow, np.int64)]))
            for name in ("_soc_sum", "_soc_n"):
                setattr(self, name, np.concatenate([getattr(self, name), np.zeros(grow)]))
        return rows

    def add(
        self,
        resource_ids: Sequence[str],
        timestamp_s: NDArray[np.float64],
        plugged_in: NDArray[np.bool_],
        soc_pct: NDArray[np.float64],
        now_s: float,
    ) -> None:
        """Fold samples in; samples older than the window are ignored."""
        now_h = int(now_s // 3600)
        hour = np.floor(timestamp_s / 3600.0).astype(np.int64)
        keep = hour >= now_h - self.hours
        if not keep.any():
            return
        with self._lock:
            rows = self._rows(
                [r for r, k in zip(resource_ids, keep.tolist(), strict=True) if k], True
            )
            hour, plugged, soc = hour[keep], plugged_in[keep], soc_pct[keep]
            np.add.at(self._soc_sum, rows[plugged], soc[plugged])
            np.add.at(self._soc_n, rows[plugged], 1.0)
            # One group per (resource, hour), in hour order within each resource.
            span = int(hour.max() - hour.min() + 1)
            key = rows * span + (hour - hour.min())
            uniq, inv = np.unique(key, return_inverse=True)
            g_row, g_hour = uniq // span, uniq % span + hour.min()
            g_n = np.bincount(inv).astype(np.int64)
            g_plug = np.bincount(inv, weights=plugged.astype(np.float64)).astype(np.int64)
            # Samples of the hour a resource is in join its accumulator; then a resource whose
            # latest sample is in a later hour finishes that hour and starts accumulating anew.
            same = g_hour == self._cur_hour[g_row]
            np.add.at(self._cur_n, g_row[same], g_n[same])
            np.add.at(self._cur_plugged, g_row[same], g_plug[same])
            last = np.r_[g_row[1:] != g_row[:-1], True]
            newer = last & (g_hour > self._cur_hour[g_row])
            moving = g_row[newer]
            self._flush(moving)
            self._cur_hour[moving] = g_hour[newer]
            self._cur_n[moving] = g_n[newer]
            self._cur_plugged[moving] = g_plug[newer]
            # Other (earlier) hours go straight into the ring.
            rest = ~same & ~newer
            self._write(g_row[rest], g_hour[rest], g_plug[rest] / g_n[rest])

    def _flush(self, rows: NDArray[np.int64]) -> None:
        rows = rows[self._cur_n[rows] > 0]
        self._write(rows, self._cur_hour[rows], self._cur_plugged[rows] / self._cur_n[rows])
        self._cur_n[rows] = 0
        self._cur_plugged[rows] = 0

    def _write(
        self, rows: NDArray[np.int64], hours: NDArray[np.int64], share: NDArray[np.float64]
    ) -> None:
        """Store finished hours; an hour already stored for a resource keeps its first value."""
        if rows.size == 0:
            return
        slot = hours % self.hours
        for h in np.unique(hours).tolist():  # a newer hour takes over its column
            s = h % self.hours
            if self._slot_hour[s] < h:
                self._ring[:, s] = MISSING
                self._slot_hour[s] = h
        ok = (self._slot_hour[slot] == hours) & (self._ring[rows, slot] == MISSING)
        self._ring[rows[ok], slot[ok]] = np.rint(share[ok] * FULL).astype(np.uint8)

    def window(self, resource_ids: Sequence[str], end_hour: int) -> HourlyWindow:
        """The `hours` finished hours before `end_hour` for these resources (unknown ones: empty)."""
        with self._lock:
            finished = np.flatnonzero((self._cur_hour < end_hour) & (self._cur_n > 0))
            self._flush(finished)
            rows = self._rows(resource_ids, False)
            start = end_hour - self.hours
            hours = np.arange(start, end_hour)
            slot = hours % self.hours
            current = self._slot_hour[slot] == hours
            known = rows >= 0
            if known.all() and current.all():
                raw = self._ring[rows][:, slot]
            else:
                raw = np.full((len(rows), self.hours), MISSING, dtype=np.uint8)
                raw[np.ix_(known, current)] = self._ring[np.ix_(rows[known], slot[current])]
            soc_n, soc_sum = np.zeros(len(rows)), np.zeros(len(rows))
            soc_n[known] = self._soc_n[rows[known]]
            soc_sum[known] = self._soc_sum[rows[known]]
        with np.errstate(invalid="ignore", divide="ignore"):
            soc = np.where(soc_n > 0, soc_sum / soc_n, np.nan)
        seen = np.count_nonzero(raw != MISSING, axis=1).astype(np.int64)
        return HourlyWindow(start, raw, soc, seen)
