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
_HEAD = np.dtype([("fields", ">i2"), ("ts_len", ">i4"), ("ts", ">i8"), ("id_len", ">i4")])
_TAIL = np.dtype(
    [
        ("soc_len", ">i4"),
        ("soc_pct", ">f8"),
        ("plugged_len", ">i4"),
        ("plugged_in", "u1"),
        ("power_len", ">i4"),
        ("power_kw", ">f8"),
        ("received_len", ">i4"),
        ("received_at", ">i8"),
    ]
)
COLUMNS = "ts, resource_id, soc_pct, plugged_in, power_kw, received_at"


def _pg_micros(epoch_s: NDArray[np.float64] | float) -> NDArray[np.int64]:
    return np.round((np.asarray(epoch_s, dtype=np.float64) - PG_EPOCH_S) * 1e6).astype(np.int64)


def telemetry_copy_buffer(
    resource_ids: Sequence[str],
    timestamp_s: NDArray[np.float64],
    soc_pct: NDArray[np.float64],
    plugged_in: NDArray[np.bool_],
    power_kw: NDArray[np.float64],
    received_at_s: float,
) -> bytes:
    """One COPY payload for `telemetry_samples (COLUMNS)`; timestamps to the microsecond."""
    n = len(resource_ids)
    ids = [rid.encode() for rid in resource_ids]
    id_len = np.fromiter((len(b) for b in ids), np.int64, n)
    head = np.zeros(n, _HEAD)
    head["fields"] = 6
    head["ts_len"] = 8
    head["ts"] = _pg_micros(timestamp_s)
    head["id_len"] = id_len
    tail = np.zeros(n, _TAIL)
    tail["soc_len"] = tail["power_len"] = tail["received_len"] = 8
    tail["plugged_len"] = 1
    tail["soc_pct"] = soc_pct
    tail["plugged_in"] = plugged_in
    tail["power_kw"] = power_kw
    tail["received_at"] = _pg_micros(received_at_s)
    hs, ts = _HEAD.itemsize, _TAIL.itemsize
    row_len = hs + id_len + ts
    row_start = np.r_[0, np.cumsum(row_len)[:-1]]
    out = np.empty(int(row_len.sum()), np.uint8)
    out[(row_start[:, None] + np.arange(hs)).ravel()] = head.view(np.uint8)
    id_bytes = np.frombuffer(b"".join(ids), np.uint8)
    id_start = np.r_[0, np.cumsum(id_len)[:-1]]
    out[np.repeat(row_start + hs - id_start, id_len) + np.arange(id_bytes.size)] = id_bytes
    out[((row_start + hs + id_len)[:, None] + np.arange(ts)).ravel()] = tail.view(np.uint8)
    return HEADER + out.tobytes() + TRAILER
