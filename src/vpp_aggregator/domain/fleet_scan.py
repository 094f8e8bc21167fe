"""Whole-fleet passes in chunks: the fleet lock is held for one chunk of rows at a time and let go
between chunks, so a reader (a capacity answer, a telemetry batch) waits for at most one chunk's
work, never for a pass over a million rows.

A pass that is not atomic sees each row as it was when its chunk was read; rows may change (or
be added) between chunks. Each caller says why that is enough for it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any, TypeVar

CHUNK_ROWS = 16_384  # rows per hold of the lock: a few ms of numpy work at most
# On a grid event's way to its first command (`dispatch_inputs`, `grid_nodes`) each pause can
# cost milliseconds while other threads have the interpreter (the reaction bench's planning p99
# went from 60 to ~110 ms with 16k-row holds at 100k resources): there, a hold covers a
# hundred thousand rows (~5-10 ms of numpy work), a fleet of 100k in one.
EVENT_CHUNK_ROWS = 131_072
ID_CHUNK = 4_096  # ids looked up per hold (a dict lookup each, ~1 µs in a million-row index)
PAUSE_S = 0.0002  # see `pause`
T = TypeVar("T")


def locked_chunks(
    lock: AbstractContextManager[Any],
    rows: Callable[[], int],
    start: int = 0,
    chunk: int | None = None,
    event: bool = False,
) -> Iterator[slice]:
    """Row ranges from `start` up to `rows()` (read under the lock each time: the fleet may grow
    meanwhile), each yielded while `lock` is held; `chunk` rows each (CHUNK_ROWS, or
    EVENT_CHUNK_ROWS for a pass on a grid event's way)."""
    step = chunk or (EVENT_CHUNK_ROWS if event else CHUNK_ROWS)
    while True:
        with lock:
            n = rows()
            if start >= n:
                return
            stop = min(start + step, n)
            yield slice(start, stop)
            last = stop >= rows()
        if last:
            return
        start = stop
        pause()


def pause() -> None:
    """Between two holds of the lock: a real sleep, so a thread woken to take it runs before
    this one takes it back (a bare release and re-acquire would barge ahead of it)."""
    time.sleep(PAUSE_S)


def id_chunks(ids: Sequence[T], chunk: int | None = None) -> Iterator[Sequence[T]]:
    """`ids` (or resources) in chunks of `chunk` (ID_CHUNK): a long list is looked up (or
    written) a chunk per hold of the lock."""
    step = chunk or ID_CHUNK
    for i in range(0, len(ids), step):
        if i:
            pause()
        yield ids[i : i + step]


def last_of_each(ids: Sequence[str]) -> list[int] | None:
    """Positions of each id's last occurrence when an id occurs twice (a resource removed and
    registered again into a later row while a pass went through the fleet), else None. A loop
    of bytecode, not one C call: other threads get the interpreter meanwhile."""
    last: dict[str, int] = {}
    for i, rid in enumerate(ids):
        last[rid] = i
    return None if len(last) == len(ids) else sorted(last.values())
