"""The intervals the meter measured, kept per day for the members measured together, so a
measurement reads again only what may have changed since the last: the intervals after that
read, and those a sample received since then falls in.

Settling an hour's award read the day-of adjustment window and, for the day's first award, the
two days before again, for every member: two thirds of the samples a replayed day read were
ones read before (docs/replay.md, "How fast it replays")."""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import date

import numpy as np
from numpy.typing import NDArray


@dataclass(slots=True)
class DayBlock:
    """One local day of a set of members (rows in `members` order): each interval's mean kW
    of net consumption (NaN where the clock skips it; float32 once final) and the seconds its
    samples covered (per interval while the day is open, the day's total once final)."""

    kw: NDArray[np.floating]  # (members, intervals)
    covered: NDArray[np.floating]  # (members, intervals) while open, (members,) once final
    from_s: float  # intervals starting before this were not measured
    read_at: float | None  # when its samples were last read or checked; None: final
    good_to: float  # intervals ending after this were not read whole

    @property
    def size(self) -> int:
        return int(self.kw.shape[0])


Key = tuple[tuple[str, ...], str, date, int]  # members, zone, day, pass of a repeated hour


class KeptDays:
    """Day blocks, least recently used out beyond `most` resource-days."""

    def __init__(self, most: int) -> None:
        self.most = most
        self._blocks: OrderedDict[Key, DayBlock] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()

    def get(self, key: Key) -> DayBlock | None:
        with self._lock:
            block = self._blocks.get(key)
            if block is not None:
                self._blocks.move_to_end(key)
            return block

    def put(self, key: Key, block: DayBlock) -> None:
        with self._lock:
            old = self._blocks.pop(key, None)
            self._size -= old.size if old is not None else 0
            self._blocks[key] = block
            self._size += block.size
            while self._size > self.most and len(self._blocks) > 1:
                _, gone = self._blocks.popitem(last=False)
                self._size -= gone.size


def valid_until(
    block: DayBlock, rows: NDArray[np.int64], late_ts: NDArray[np.float64], day_start_s: float
) -> NDArray[np.float64]:
    """Per member, the instant up to which the block's intervals still hold: everything for a
    final block; else up to what its read covered (`good_to`) or the first sample received
    since that falls in the day or is held into it (`late_ts`, when each was taken, one per
    `rows` entry, already limited to the day and the hold before it)."""
    n = block.size
    if block.read_at is None:
        return np.full(n, np.inf)
    until = np.full(n, block.good_to)
    if rows.size:
        np.minimum.at(until, rows, np.maximum(late_ts, day_start_s))
    return until


def first_stale_start(
    starts: NDArray[np.float64],
    exists: NDArray[np.bool_],
    until: NDArray[np.float64],
    slot_s: float,
) -> NDArray[np.float64]:
    """Per member, the start of the first existing interval that ends after `until` (+inf when
    every interval holds)."""
    stale = exists[None, :] & (starts[None, :] + slot_s > until[:, None])
    return np.asarray(np.where(stale, starts[None, :], np.inf).min(axis=1), dtype=np.float64)
