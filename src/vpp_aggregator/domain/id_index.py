"""Row of each resource id and id of each row, without a Python object per resource.

A dict of a million ids to rows holds a str, an int and a dict entry per resource (~145 B at a
million). Here the ids live as UTF-8 bytes in one buffer (offset and length per row) and an
open-addressing table of int32 rows, keyed by the ids' str hash, finds them (~40 B). A row the
table points to is confirmed by comparing its bytes with the id asked about, so answers are exact
whatever the hashes do. Lookups and inserts are vectorised over a batch of ids.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

I8 = NDArray[np.int64]
EMPTY = -1  # table slot never used: a probe stops here
TOMBSTONE = -2  # table slot whose id was removed: a probe goes on
MIN_TABLE = 1024
GROW_MIN_ROWS = 1024
UTF8_ERRORS = "surrogatepass"  # any str a JSON body can carry round-trips
MEMO_MAX = 4096  # ids whose rows a lookup remembers until the next add or remove


def grown_rows(rows: int, needed: int) -> int:
    """Rows to allocate when `rows` are full and `needed` are asked for: an eighth more (at least
    GROW_MIN_ROWS), not double, so a million rows do not become two million at the next one."""
    return max(needed, rows + max(GROW_MIN_ROWS, rows // 8))


def _encoded(ids: Sequence[str]) -> tuple[NDArray[np.uint8], I8]:
    """The ids' UTF-8 bytes end to end, and each one's length in bytes."""
    joined = "".join(ids).encode(errors=UTF8_ERRORS)
    lens = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
    if len(joined) != int(lens.sum()):  # not all ASCII: byte lengths differ from characters
        parts = [s.encode(errors=UTF8_ERRORS) for s in ids]
        lens = np.fromiter(map(len, parts), dtype=np.int64, count=len(parts))
    return np.frombuffer(joined, dtype=np.uint8), lens


def _spans(starts: I8, lens: I8) -> I8:
    """Indices of every byte of the spans (start, length), end to end."""
    total = int(lens.sum())
    ends = np.cumsum(lens)
    return np.repeat(starts - (ends - lens), lens) + np.arange(total, dtype=np.int64)


class IdIndex:
    """Not thread-safe on its own: the fleet state calls it under its lock."""

    def __init__(self) -> None:
        self._hash = np.zeros(0, dtype=np.int64)  # per row: hash of its id
        self._off = np.zeros(0, dtype=np.int64)  # per row: where its bytes start in _blob
        self._len = np.zeros(0, dtype=np.int32)  # per row: bytes of its id, -1 none
        self._blob = np.zeros(MIN_TABLE, dtype=np.uint8)
        self._used = 0  # bytes of _blob in use (live or garbage)
        self._garbage = 0  # bytes of removed ids still in _blob
        self._table = np.full(MIN_TABLE, EMPTY, dtype=np.int32)
        self._count = 0
        self._tombstones = 0
        # Rows of the ids last looked up (a gateway's fleet reports the same ids every minute):
        # valid until an id is added or removed, the only changes that move an id's row.
        self._memo: dict[str, int] = {}

    def __len__(self) -> int:
        return self._count

    # ----------------------------------------------------------------- reads

    def rows(self, ids: Sequence[str]) -> I8:
        """Row per id, -1 where unknown."""
        n = len(ids)
        if n == 0 or self._count == 0:
            return np.full(n, -1, dtype=np.int64)
        memo = self._memo
        if n <= MEMO_MAX and all(i in memo for i in ids):  # all remembered: no lookup
            return np.fromiter(map(memo.__getitem__, ids), dtype=np.int64, count=n)
        out = self._look_up(ids)
        if n <= MEMO_MAX:
            if len(memo) + n > MEMO_MAX:
                memo.clear()
            memo.update(zip(ids, out.tolist(), strict=True))
        return out

    def _look_up(self, ids: Sequence[str]) -> I8:
        n = len(ids)
        out = np.full(n, -1, dtype=np.int64)
        h = np.fromiter(map(hash, ids), dtype=np.int64, count=n)
        mask = self._table.size - 1
        pending = np.arange(n, dtype=np.int64)
        slot = h & mask
        while pending.size:
            r = self._table[slot].astype(np.int64)
            maybe = r >= 0
            maybe[maybe] = self._hash[r[maybe]] == h[maybe]
            if maybe.any():
                q = pending[maybe]
                same = self._same([ids[i] for i in q.tolist()], r[maybe])
                out[q[same]] = r[maybe][same]
                maybe[maybe] = same
            go_on = ~maybe & (r != EMPTY)
            pending, slot, h = pending[go_on], (slot[go_on] + 1) & mask, h[go_on]
        return out

    def _same(self, ids: list[str], rows: I8) -> NDArray[np.bool_]:
        """Whether each id's bytes are those stored for its row."""
        data, lens = _encoded(ids)
        same: NDArray[np.bool_] = lens == self._len[rows]
        if not same.any():
            return same
        k = np.flatnonzero(same)
        starts = np.cumsum(lens) - lens
        stored = self._blob[_spans(self._off[rows[k]], lens[k])]
        asked = data[_spans(starts[k], lens[k])]
        wrong = np.concatenate(([0], np.cumsum(stored != asked)))
        ends = np.cumsum(lens[k])
        same[k] = wrong[ends] == wrong[ends - lens[k]]
        return same

    def ids(self, rows: I8) -> list[str]:
        """The id of each row ("" for a row without one)."""
        lens = np.maximum(self._len[rows].astype(np.int64), 0)
        data = self._blob[_spans(self._off[rows], lens)].tobytes()
        ends = np.cumsum(lens)
        bounds = zip((ends - lens).tolist(), ends.tolist(), strict=True)
        if data.isascii():
            text = data.decode("ascii")
            return [text[a:b] for a, b in bounds]
        return [data[a:b].decode(errors=UTF8_ERRORS) for a, b in bounds]

    def live_rows(self) -> I8:
        return np.flatnonzero(self._len >= 0)

    # ----------------------------------------------------------------- changes

    def add(self, ids: Sequence[str], rows: I8) -> None:
        """Give each id (not held yet, each once) its row (free, not holding an id)."""
        k = len(ids)
        if k == 0:
            return
        self._memo.clear()
        self._reserve_rows(int(rows.max()) + 1)
        if 2 * (self._count + self._tombstones + k) > self._table.size:
            self._rehash(self._count + k)  # before the new rows count as live
        data, lens = _encoded(ids)
        if self._used + data.size > self._blob.size:
            self._compact(data.size)
        self._blob[self._used : self._used + data.size] = data
        self._off[rows] = self._used + np.cumsum(lens) - lens
        self._len[rows] = lens
        self._used += data.size
        self._hash[rows] = np.fromiter(map(hash, ids), dtype=np.int64, count=k)
        self._insert(rows)
        self._count += k

    def remove(self, row: int) -> None:
        """Forget a row's id (the row may be given to another id later)."""
        if self._len[row] < 0:
            return
        self._memo.clear()
        mask = self._table.size - 1
        slot = int(self._hash[row]) & mask
        while int(self._table[slot]) != row:
            slot = (slot + 1) & mask
        self._table[slot] = TOMBSTONE
        self._tombstones += 1
        self._count -= 1
        self._garbage += int(self._len[row])
        self._len[row] = -1

    def _insert(self, rows: I8) -> None:
        """Put rows into the table, each at the first free slot from its hash on."""
        mask = self._table.size - 1
        slot = self._hash[rows] & mask
        pending = np.arange(rows.size, dtype=np.int64)
        while pending.size:
            s = slot[pending]
            was = self._table[s]
            free = was < 0
            # Rows after the same free slot all write it; the one that stays there has it.
            self._table[s[free]] = rows[pending[free]]
            won = free & (self._table[s] == rows[pending])
            self._tombstones -= int(np.count_nonzero(won & (was == TOMBSTONE)))
            pending = pending[~won]
            slot[pending] = (slot[pending] + 1) & mask

    def _rehash(self, count: int) -> None:
        size = MIN_TABLE
        while size < 2 * count:
            size *= 2
        self._table = np.full(size, EMPTY, dtype=np.int32)
        self._tombstones = 0
        self._insert(self.live_rows())

    def _reserve_rows(self, rows: int) -> None:
        size = self._len.size
        if rows <= size:
            return
        new = grown_rows(size, rows)
        for name, fill in (("_hash", 0), ("_off", 0), ("_len", -1)):
            old = getattr(self, name)
            grown = np.full(new, fill, dtype=old.dtype)
            grown[:size] = old
            setattr(self, name, grown)

    def _compact(self, more: int) -> None:
        """Room for `more` bytes: garbage dropped, and the buffer grown by half when still short."""
        live = self.live_rows()
        lens = self._len[live].astype(np.int64)
        need = int(lens.sum()) + more
        size = self._blob.size
        if need > size or self._garbage < size // 2:
            size = max(need, size + size // 2)
        blob = np.empty(size, dtype=np.uint8)
        kept = int(lens.sum())
        blob[:kept] = self._blob[_spans(self._off[live], lens)]
        self._off[live] = np.cumsum(lens) - lens
        self._blob, self._used, self._garbage = blob, kept, 0
