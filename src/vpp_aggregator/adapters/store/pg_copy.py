"""PostgreSQL binary COPY of telemetry, built with numpy.

Row inserts cost about 4 µs of client CPU per sample in parameter handling alone; a binary
COPY buffer assembled from column arrays costs well under 1 µs, and COPY is also the cheapest
way in for the server. Format: PostgreSQL's `COPY … (FORMAT BINARY)`: a header, then per row
a 16-bit field count and each field as a 32-bit length and its big-endian value."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

PG_EPOCH_S = 946_684_800.0  # 2000-01-01T00:00:00Z, where PostgreSQL timestamps count from
HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
TRAILER = b"\xff\xff"

# The columns in table order: ts, resource_id | soc_pct, plugged_in, power_kw, received_at
_HEAD = [("fields", ">i2"), ("ts_len", ">i4"), ("ts", ">i8"), ("id_len", ">i4")]
_TAIL = [
    ("soc_len", ">i4"),
    ("soc_pct", ">f8"),
    ("plugged_len", ">i4"),
    ("plugged_in", "u1"),
    ("power_len", ">i4"),
    ("power_kw", ">f8"),
    ("received_len", ">i4"),
    ("received_at", ">i8"),
]
COLUMNS = "ts, resource_id, soc_pct, plugged_in, power_kw, received_at"


def _pg_micros(epoch_s: NDArray[np.float64] | float) -> NDArray[np.int64]:
    return np.round((np.asarray(epoch_s, dtype=np.float64) - PG_EPOCH_S) * 1e6).astype(np.int64)


def _rows(id_bytes: int, count: int) -> NDArray[np.void]:
    """Rows whose resource ids are `id_bytes` long, as one record array: a row is then a
    fixed-size record and the buffer is written field by field, not scattered byte by byte."""
    rows = np.zeros(count, np.dtype([*_HEAD, ("id", f"S{id_bytes}"), *_TAIL]))
    rows["fields"] = 6
    rows["ts_len"] = rows["soc_len"] = rows["power_len"] = rows["received_len"] = 8
    rows["plugged_len"] = 1
    rows["id_len"] = id_bytes
    return rows


def telemetry_copy_buffer(
    resource_ids: Sequence[str],
    timestamp_s: NDArray[np.float64],
    soc_pct: NDArray[np.float64],
    plugged_in: NDArray[np.bool_],
    power_kw: NDArray[np.float64],
    received_at_s: float,
) -> bytes:
    """One COPY payload for `telemetry_samples (COLUMNS)`; timestamps to the microsecond.
    Rows go grouped by the length of their id (COPY keeps no order)."""
    n = len(resource_ids)
    text = "".join(resource_ids)
    # An id all ASCII has as many bytes as characters: one encode for the whole batch.
    ids: Sequence[str | bytes] = (
        resource_ids if text.isascii() else [r.encode() for r in resource_ids]
    )
    raw = np.frombuffer(text.encode(), np.uint8)
    id_len = np.fromiter(map(len, ids), np.int64, n)
    id_start = np.cumsum(id_len) - id_len
    ts_us, received = _pg_micros(timestamp_s), _pg_micros(received_at_s)
    parts = [HEADER]
    for length in np.unique(id_len).tolist():
        pick = np.flatnonzero(id_len == length)
        rows = _rows(length, pick.size)
        rows["ts"] = ts_us[pick]
        rows["id"] = raw[id_start[pick, None] + np.arange(length)].view(f"S{length}").ravel()
        rows["soc_pct"] = soc_pct[pick]
        rows["plugged_in"] = plugged_in[pick]
        rows["power_kw"] = power_kw[pick]
        rows["received_at"] = received
        parts.append(rows.tobytes())
    parts.append(TRAILER)
    return b"".join(parts)
