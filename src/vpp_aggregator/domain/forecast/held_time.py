"""Time held by each resource's samples, in the order they come: a sample's state holds until
the resource's next sample, for at most `hold_s`, the sample-and-hold rule the meter measures
with (`domain/metering`). `PluggedHistory` counts these spans into the hours they fall in."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

# Held spans: rows, from, to (epoch s), plugged in, SoC (time order per row), and whether they
# are late (of samples not after the stream's last).
Spans = tuple[
    NDArray[np.int64],
    NDArray[np.float64],
    NDArray[np.float64],
    NDArray[np.bool_],
    NDArray[Any],
    bool,
]


def grown(a: NDArray[Any], new: int, fill: float) -> NDArray[Any]:
    out = np.full(new, fill, dtype=a.dtype)
    out[: a.shape[0]] = a
    return out


def after(a: NDArray[Any], first: Any) -> NDArray[Any]:
    """`a` moved one on: each element the one before it, `first` first."""
    out = np.empty_like(a)
    out[0] = first
    out[1:] = a[:-1]
    return out


def by_hour(
    rows: NDArray[np.int64], a: NDArray[np.float64], b: NDArray[np.float64]
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.float64], NDArray[np.int64] | None]:
    """Spans [a, b) cut at the hours: each piece's row, epoch hour, seconds, and its span
    (None: one piece each)."""
    h0 = np.floor(a / 3600.0).astype(np.int64)
    n = np.ceil(b / 3600.0).astype(np.int64) - h0  # hours each span touches
    if (n == 1).all():  # as nearly always: no span crosses an hour
        return rows, h0, b - a, None
    span = np.repeat(np.arange(a.size), n)
    hour = h0[span] + (np.arange(span.size) - np.repeat(np.cumsum(n) - n, n))
    secs = np.minimum(b[span], (hour + 1) * 3600.0) - np.maximum(a[span], hour * 3600.0)
    return rows[span], hour, secs, span


class SampleStream:
    """One source of samples in time order per resource (live ingest, or the stored history
    read after a start): its last sample, how far that sample's held time is counted, and the
    hour being accumulated (seconds reported, seconds plugged in, SoC × seconds plugged in)."""

    def __init__(self) -> None:
        self.last_ts = np.zeros(0, dtype=np.float64)  # NaN: none yet
        self.last_plugged = np.zeros(0, dtype=np.bool_)
        self.last_soc = np.zeros(0, dtype=np.float32)
        self.counted_to = np.zeros(0, dtype=np.float64)  # the last sample's time counted to
        self.hour = np.zeros(0, dtype=np.int32)  # epoch hour; -1: none
        self.covered_s = np.zeros(0, dtype=np.float32)
        self.plugged_s = np.zeros(0, dtype=np.float32)
        self.soc_s = np.zeros(0, dtype=np.float32)

    def grow(self, new: int) -> None:
        fills = {"last_ts": np.nan, "counted_to": np.nan, "hour": -1}
        for name in ("last_ts", "last_plugged", "last_soc", "counted_to", "hour"):
            setattr(self, name, grown(getattr(self, name), new, fills.get(name, 0)))
        for name in ("covered_s", "plugged_s", "soc_s"):
            setattr(self, name, grown(getattr(self, name), new, 0))

    def clear(self, rows: NDArray[np.int64]) -> None:
        self.last_ts[rows] = np.nan
        self.counted_to[rows] = np.nan
        self.hour[rows] = -1
        for a in (self.covered_s, self.plugged_s, self.soc_s):
            a[rows] = 0

    def ended(
        self,
        rows: NDArray[np.int64],
        ts: NDArray[np.float64],
        plugged: NDArray[np.bool_],
        soc: NDArray[np.float64],
        once: bool,
        hold_s: float,
    ) -> list[Spans]:
        """The held time these samples end, and they become the last. Each sample ends the time
        held by the one before it (of the batch, or the stream's last). A sample not after the
        stream's last (late, or delivered again) gives only its own held time before the next
        such one, and only to hours already past (`PluggedHistory._count`).
        `once`: no resource has two samples in the batch (then their order does not matter)."""
        out: list[Spans] = []
        if once:
            other = np.ones(rows.size, dtype=np.bool_)
        else:
            order = np.lexsort((ts, rows))
            rows, ts, plugged, soc = rows[order], ts[order], plugged[order], soc[order]
            other = after(rows, -1) != rows  # a resource's first sample of the batch
        last_ts = self.last_ts[rows]
        late = ts <= last_ts  # NaN (no sample yet) compares False
        fresh = ~late if once else ~late & (other | (after(ts, np.nan) != ts))  # a repeat: not new
        if late.any():
            r, t = rows[late], ts[late]
            nxt = after(t[::-1], np.inf)[::-1]
            nxt[after(r[::-1], -1)[::-1] != r] = np.inf
            b = np.minimum(np.minimum(nxt, t + hold_s), last_ts[late])
            out.append((r, t, b, plugged[late], soc[late], True))
        if not fresh.all():
            rows, ts, plugged, soc = rows[fresh], ts[fresh], plugged[fresh], soc[fresh]
            if rows.size == 0:
                return out
            other = np.ones(rows.size, dtype=np.bool_) if once else after(rows, -1) != rows
        if once:
            before, was_plugged = self.last_ts[rows], self.last_plugged[rows]
            was_soc = self.last_soc[rows]
        else:
            first = rows[other]
            before = after(ts, np.nan)
            before[other] = self.last_ts[first]
            was_plugged = after(plugged, False)
            was_plugged[other] = self.last_plugged[first]
            was_soc = after(soc, 0.0)
            was_soc[other] = self.last_soc[first]
        a = np.fmax(before, self.counted_to[rows])
        b = np.minimum(ts, before + hold_s)
        ok = b > a  # NaN (no sample before) compares False
        out.append((rows[ok], a[ok], b[ok], was_plugged[ok], was_soc[ok], False))
        end = other if once else after(other[::-1], True)[::-1]  # its last sample of the batch
        r = rows[end]
        self.counted_to[r] = np.fmax(self.counted_to[r], ts[end])
        self.last_ts[r], self.last_plugged[r], self.last_soc[r] = ts[end], plugged[end], soc[end]
        return out

    def held_to(self, end_s: float, hold_s: float, rows: NDArray[np.int64]) -> list[Spans]:
        """The last samples' held time of these resources not yet counted, up to `end_s`."""
        until = np.minimum(self.last_ts[rows] + hold_s, end_s)
        due = until > self.counted_to[rows]  # NaN (none) compares False
        if not due.any():
            return []
        r, until = rows[due], until[due]
        spans = (r, self.counted_to[r], until, self.last_plugged[r], self.last_soc[r], False)
        self.counted_to[r] = until
        return [spans]
