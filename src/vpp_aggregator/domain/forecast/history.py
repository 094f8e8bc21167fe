"""Hourly plug-in history per resource, kept up to date as telemetry arrives.

A forecast needs each resource's plug-in pattern over the last weeks. Reading weeks of raw
samples per request costs seconds at 10k resources, so history is folded on arrival into one
byte per resource and clock hour (the share of that hour's reported time it was plugged in), in
a ring of the last `hours` hours. The share is of time, not of samples, by the sample-and-hold
rule the meter measures with (`domain/metering`): a sample's state holds until the resource's
next sample, for at most `hold_s`. Counting samples would make the forecast depend on how often
devices report: a charger reporting every minute beside a vehicle heartbeat every 15 minutes
away from it would weigh the plugged-in minutes of the hour it arrives many times over. The
hour a resource's held time is in stays in small accumulators until that resource moves on to
a later hour or the hour is read as finished.

Beside it, each resource's SoC while plugged in, by UTC hour of day: a vehicle's SoC runs
through the day (low as it arrives, rising as it charges), and where a floor is its driver's
whole need, the energy it can give at 8 am is not the energy it can give at 4 pm. One byte per
resource and hour of day, an exponential average over the days it was plugged in then.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from vpp_aggregator.domain.forecast.held_time import SampleStream, after, by_hour, grown
from vpp_aggregator.domain.id_index import grown_rows

MISSING = 255  # no sample that hour
FULL = 250  # share 1.0 (0.4 % resolution)
SOC_STEPS = 2.0  # SoC by hour of day in half percents (0..200); MISSING where never plugged in
SOC_DAY_WEIGHT = 0.25  # weight of the newest day in each hour of day's average


@dataclass(frozen=True, slots=True)
class HourlyWindow:
    """The last hours before `end_hour`, oldest first, one byte per resource and hour: the share
    plugged in times FULL, or MISSING."""

    start_hour: int  # epoch hours of column 0
    raw: NDArray[np.uint8]  # (resources, hours)
    soc_when_plugged: NDArray[np.float64]  # (resources,) mean SoC of plugged samples, NaN unseen
    samples: NDArray[np.int64]  # (resources,) hours with data in the window
    soc_by_hour: NDArray[np.float64]  # (resources, 24) SoC plugged in by UTC hour; NaN unseen

    @property
    def share(self) -> NDArray[np.float32]:
        """Share plugged in, NaN where no sample (a float copy: for tests and small fleets)."""
        out = self.raw / np.float32(FULL)
        out[self.raw == MISSING] = np.nan
        return out.astype(np.float32)


Found = tuple[NDArray[np.int64], NDArray[np.uint32]]  # rows (-1: unknown) and their generations


class Rows(Protocol):
    """Ids to rows; `found`: rows the source gave for these ids a moment ago, to be checked."""

    def __call__(
        self, ids: Sequence[str], create: bool, found: Found | None = None, /
    ) -> Found: ...


class OwnRows:
    """Rows of a history kept on its own (tests, tools): one per id seen, never reused."""

    def __init__(self) -> None:
        self._row: dict[str, int] = {}

    def __call__(self, ids: Sequence[str], create: bool, found: Found | None = None) -> Found:
        # `found` comes from another source (the live state's rows): not these rows.
        rows = np.empty(len(ids), dtype=np.int64)
        for i, rid in enumerate(ids):
            row = self._row.get(rid, -1)
            if row < 0 and create:
                row = self._row[rid] = len(self._row)
            rows[i] = row
        return rows, np.zeros(len(ids), dtype=np.uint32)


class PluggedHistory:
    """`rows` maps ids to rows and their generation: the live state's own rows (no second index
    of a million ids), where a row handed to another resource comes back with a new generation
    and its history is cleared. Each hour's column is allocated when its first sample arrives and
    let go when the hour leaves the window, so memory follows the hours that have data. `hold_s`:
    how long a sample's state holds when no next one comes (the service's stale window)."""

    def __init__(self, hours: int, rows: Rows | None = None, *, hold_s: float) -> None:
        self.hours = hours
        self.hold_s = hold_s
        self._lock = threading.Lock()
        self._source: Rows = rows or OwnRows()
        self._size = 0  # rows allocated in every per-row array and column
        self._cols: list[NDArray[np.uint8] | None] = [None] * hours  # by slot (hour % hours)
        self._slot_hour = np.full(hours, -1, dtype=np.int64)  # epoch hour each slot holds
        self._gen = np.zeros(0, dtype=np.uint32)  # generation + 1 of the row's owner; 0 unseen
        self._live = SampleStream()
        self._stored: SampleStream | None = None  # while the stored history is read after a start
        self._soc_sum = np.zeros(0, dtype=np.float64)
        self._soc_n = np.zeros(0, dtype=np.int32)
        self._hour_soc = np.full((0, 24), MISSING, dtype=np.uint8)  # by UTC hour of day
        self._mark = np.zeros(0, dtype=np.int32)  # scratch: which resources a batch repeats

    def __len__(self) -> int:
        return int(np.count_nonzero(self._gen))

    def _streams(self) -> list[SampleStream]:
        return [self._live] if self._stored is None else [self._live, self._stored]

    def _grow(self, size: int) -> None:
        if size <= self._size:
            return
        new = grown_rows(self._size, size)  # as the live state's rows grow
        self._cols = [None if c is None else grown(c, new, MISSING) for c in self._cols]
        self._gen = grown(self._gen, new, 0)
        for stream in self._streams():
            stream.grow(new)
        self._soc_sum = grown(self._soc_sum, new, 0)
        self._soc_n = grown(self._soc_n, new, 0)
        self._mark = np.zeros(new, dtype=np.int32)
        hour_soc = np.full((new, 24), MISSING, dtype=np.uint8)
        hour_soc[: self._hour_soc.shape[0]] = self._hour_soc
        self._hour_soc = hour_soc
        self._size = new

    def _rows(
        self, ids: Sequence[str], create: bool, found: Found | None = None
    ) -> NDArray[np.int64]:
        """Rows of `ids` (-1: unknown); rows that changed hands start with an empty history."""
        rows, gens = self._source(ids, create, found)
        known = rows >= 0
        if known.any():
            self._grow(int(rows.max()) + 1)
        r, g = rows[known], gens[known].astype(np.uint32) + np.uint32(1)
        other = self._gen[r] != g
        if create and other.any():
            again = np.unique(r[other & (self._gen[r] != 0)])
            for col in self._cols:
                if col is not None:
                    col[again] = MISSING
            for stream in self._streams():
                stream.clear(again)
            self._soc_sum[again] = 0
            self._soc_n[again] = 0
            self._hour_soc[again] = MISSING
            self._gen[r[other]] = g[other]
        elif other.any():  # read before the new owner reported: nothing of the old one shows
            rows[np.flatnonzero(known)[other]] = -1
        return rows

    def add(
        self,
        resource_ids: Sequence[str],
        timestamp_s: NDArray[np.float64],
        plugged_in: NDArray[np.bool_],
        soc_pct: NDArray[np.float64],
        now_s: float,
        found: Found | None = None,
        stored: bool = False,
    ) -> None:
        """Fold samples in; samples older than the window, or of unknown resources, are ignored.
        `found`: the samples' rows as the source gave them at ingest (checked, not looked up).
        `stored`: samples of the stored history read after a start (`load_history`), a time
        order of their own beside live ingest's; `finish_stored` ends it."""
        now_h = int(now_s // 3600)
        hour = np.floor(timestamp_s / 3600.0).astype(np.int64)
        keep = hour >= now_h - self.hours
        if not keep.any():
            return
        with self._lock:
            rows = self._rows(
                [r for r, k in zip(resource_ids, keep.tolist(), strict=True) if k],
                True,
                None if found is None else (found[0][keep], found[1][keep]),
            )
            ts, plugged, soc = timestamp_s[keep], plugged_in[keep], soc_pct[keep]
            known = rows >= 0
            if not known.all():
                rows, ts, plugged, soc = rows[known], ts[known], plugged[known], soc[known]
            if rows.size == 0:
                return
            # Most batches hold one sample per resource (a gateway's reading of its fleet).
            k = np.arange(rows.size, dtype=np.int32)
            self._mark[rows] = k
            once = bool((self._mark[rows] == k).all())
            on = rows[plugged]
            if once:
                self._soc_sum[on] += soc[plugged]
                self._soc_n[on] += 1
            else:
                np.add.at(self._soc_sum, on, soc[plugged])
                np.add.at(self._soc_n, on, 1)
            if stored and self._stored is None:
                self._stored = SampleStream()
                self._stored.grow(self._size)
            stream = self._stored if stored and self._stored is not None else self._live
            for span in stream.ended(rows, ts, plugged, soc, once, self.hold_s):
                self._count(stream, *span)

    def _count_held(self, st: SampleStream, end_s: float, rows: NDArray[np.int64]) -> None:
        """Count these resources' last samples' held time up to `end_s` (an hour read as
        finished, or the end of the stored history)."""
        for span in st.held_to(end_s, self.hold_s, rows):
            self._count(st, *span)

    def _count(
        self,
        st: SampleStream,
        rows: NDArray[np.int64],
        a: NDArray[np.float64],
        b: NDArray[np.float64],
        plugged: NDArray[np.bool_],
        soc: NDArray[Any],
        late: bool,
    ) -> None:
        """Count the held spans [a, b) (in time order per resource) into their hours. Late
        spans only fill hours that hold nothing yet, before the stream's last sample and other
        than the one being accumulated: the time they cover there was counted already as the
        sample before them held, and a batch delivered again (a consumer re-reading after a
        failure) must change nothing."""
        keep = b > a
        if not keep.all():
            rows, a, b, plugged, soc = rows[keep], a[keep], b[keep], plugged[keep], soc[keep]
        if rows.size == 0:
            return
        rows, hour, secs, span = by_hour(rows, a, b)
        if span is not None:
            plugged, soc = plugged[span], soc[span]
        on_s = np.where(plugged, secs, 0.0)
        # One group per (resource, hour): the spans come in time order per resource, by row.
        cut = np.flatnonzero((after(rows, -1) != rows) | (after(hour, -1) != hour))
        g_row, g_hour = rows[cut], hour[cut]
        if cut.size == rows.size:
            g_cov, g_plug, g_soc = secs, on_s, on_s * soc
        else:
            g_cov = np.add.reduceat(secs, cut)
            g_plug = np.add.reduceat(on_s, cut)
            g_soc = np.add.reduceat(on_s * soc, cut)
        if late:  # an hour past, or one the stream's samples skipped (a gap in its reports)
            gone = (g_hour < st.last_ts[g_row] // 3600) & (g_hour != st.hour[g_row])
            self._write(g_row[gone], g_hour[gone], g_cov[gone], g_plug[gone], g_soc[gone])
            return
        # Time in the hour a resource is in joins its accumulator; then a resource whose latest
        # time is in a later hour finishes that hour and starts accumulating anew.
        same = g_hour == st.hour[g_row]
        r = g_row[same]  # one group each: a resource is in one hour
        st.covered_s[r] += g_cov[same]
        st.plugged_s[r] += g_plug[same]
        st.soc_s[r] += g_soc[same]
        last = after(g_row[::-1], -1)[::-1] != g_row
        newer = last & (g_hour > st.hour[g_row])
        moving = g_row[newer]
        self._flush(st, moving)
        st.hour[moving] = g_hour[newer]
        st.covered_s[moving] = g_cov[newer]
        st.plugged_s[moving] = g_plug[newer]
        st.soc_s[moving] = g_soc[newer]
        # Other (earlier) hours go straight into the ring.
        rest = ~same & ~newer
        self._write(g_row[rest], g_hour[rest], g_cov[rest], g_plug[rest], g_soc[rest])

    def finish_stored(self, now_s: float) -> None:
        """The stored history (samples before `now_s`, the start) is read: its last samples'
        held time is counted up to the start and its finished hours are stored (an hour live
        ingest stored first keeps live's value). The hour under way goes on in live ingest's
        accumulators, and a resource live has not heard from yet goes on from its stored last
        sample, whose held time runs on past the start."""
        with self._lock:
            st, live = self._stored, self._live
            if st is None:
                return
            self._stored = None
            every = np.arange(self._size, dtype=np.int64)
            self._count_held(st, now_s, every)
            now_h = int(now_s // 3600)
            self._flush(st, np.flatnonzero((st.hour < now_h) & (st.covered_s > 0)))
            r = np.flatnonzero(st.covered_s > 0)  # the hour under way at the start
            join = r[live.hour[r] == st.hour[r]]
            for name in ("covered_s", "plugged_s", "soc_s"):
                getattr(live, name)[join] += getattr(st, name)[join]
            take = r[live.hour[r] < 0]  # live has counted nothing of them yet
            for name in ("hour", "covered_s", "plugged_s", "soc_s"):
                getattr(live, name)[take] = getattr(st, name)[take]
            self._flush(st, np.setdiff1d(r, np.r_[join, take]))  # live is in another hour
            unheard = np.flatnonzero(np.isnan(live.last_ts) & ~np.isnan(st.last_ts))
            for name in ("last_ts", "last_plugged", "last_soc", "counted_to"):
                getattr(live, name)[unheard] = getattr(st, name)[unheard]

    def _flush(self, st: SampleStream, rows: NDArray[np.int64]) -> None:
        rows = rows[st.covered_s[rows] > 0]
        hours = st.hour[rows].astype(np.int64)
        self._write(rows, hours, st.covered_s[rows], st.plugged_s[rows], st.soc_s[rows])
        st.covered_s[rows] = 0
        st.plugged_s[rows] = 0
        st.soc_s[rows] = 0

    def _write(
        self,
        rows: NDArray[np.int64],
        hours: NDArray[np.int64],
        covered_s: NDArray[Any],
        plugged_s: NDArray[Any],
        soc_s: NDArray[Any],
    ) -> None:
        """Store finished hours (`covered_s` seconds reported, `plugged_s` of them plugged in,
        SoC × seconds plugged in `soc_s`); an hour already stored for a resource keeps its
        first value."""
        if rows.size == 0:
            return
        slot = hours % self.hours
        for h in np.unique(hours).tolist():  # a newer hour takes over its column
            s = h % self.hours
            if self._slot_hour[s] < h:
                self._cols[s] = None
                self._slot_hour[s] = h
        ok = np.flatnonzero(self._slot_hour[slot] == hours)
        ok = ok[np.argsort(slot[ok], kind="stable")]
        rows, slot = rows[ok], slot[ok]
        value = np.rint(plugged_s[ok] / covered_s[ok] * FULL).astype(np.uint8)
        fresh = np.zeros(ok.size, dtype=np.bool_)
        bounds = np.flatnonzero(np.r_[True, slot[1:] != slot[:-1], True])
        for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
            s = int(slot[a])
            col = self._cols[s]
            if col is None:
                col = self._cols[s] = np.full(self._size, MISSING, dtype=np.uint8)
            r = rows[a:b]
            fresh[a:b] = col[r] == MISSING
            col[r[fresh[a:b]]] = value[a:b][fresh[a:b]]
        ok = ok[fresh]
        self._note_soc(rows[fresh], hours[ok], plugged_s[ok], soc_s[ok])

    def _note_soc(
        self,
        rows: NDArray[np.int64],
        hours: NDArray[np.int64],
        plugged: NDArray[Any],
        soc_sum: NDArray[Any],
    ) -> None:
        """Each finished hour a resource was plugged in moves its hour of day's average SoC a
        `SOC_DAY_WEIGHT` of the way to that hour's mean (its first such hour sets it)."""
        on = plugged > 0
        if not on.any():
            return
        r, hod = rows[on], hours[on] % 24
        mean = soc_sum[on] / plugged[on] * SOC_STEPS
        old = self._hour_soc[r, hod]
        seen = old != MISSING
        new = np.where(seen, old + SOC_DAY_WEIGHT * (mean - old), mean)
        self._hour_soc[r, hod] = np.clip(np.rint(new), 0, 100 * SOC_STEPS).astype(np.uint8)

    def window(
        self,
        resource_ids: Sequence[str],
        end_hour: int,
        read: NDArray[np.bool_] | None = None,
    ) -> HourlyWindow:
        """The `hours` finished hours before `end_hour` for these resources (unknown ones: empty).
        `read` (one per hour of the window): only those hours are read, the others are MISSING."""
        with self._lock:
            rows = self._rows(resource_ids, False)
            st, mine = self._live, np.unique(rows[rows >= 0])  # an id asked twice counts once
            self._count_held(st, end_hour * 3600.0, mine)
            self._flush(st, mine[(st.hour[mine] < end_hour) & (st.covered_s[mine] > 0)])
            start = end_hour - self.hours
            known = np.flatnonzero(rows >= 0)
            r = rows[known]
            every = known.size == len(rows)
            out = np.full((self.hours, len(rows)), MISSING, dtype=np.uint8)
            for c, h in enumerate(range(start, end_hour)):
                s = h % self.hours
                col = self._cols[s]
                if col is None or self._slot_hour[s] != h or (read is not None and not read[c]):
                    continue
                if every:
                    np.take(col, r, out=out[c])
                else:
                    out[c, known] = col[r]
            soc_n, soc_sum = np.zeros(len(rows)), np.zeros(len(rows))
            soc_n[known] = self._soc_n[r]
            soc_sum[known] = self._soc_sum[r]
            by_hour = np.full((len(rows), 24), MISSING, dtype=np.uint8)
            by_hour[known] = self._hour_soc[r]
        raw = out.T  # (resources, hours), as a view: no second copy of a large fleet's window
        with np.errstate(invalid="ignore", divide="ignore"):
            soc = np.where(soc_n > 0, soc_sum / soc_n, np.nan)
        seen = np.count_nonzero(raw != MISSING, axis=1).astype(np.int64)
        soc_by_hour = np.where(by_hour == MISSING, np.nan, by_hour / SOC_STEPS)
        return HourlyWindow(start, raw, soc, seen, soc_by_hour)
