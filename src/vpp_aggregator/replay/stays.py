"""Real parking stays from a sessions file (the ACN format and the Norwegian one in its common
schema), per driver or, where the file names no drivers, per charger: what a replay's vehicles
do. Columnar and sorted, so a replay looks stays up with `searchsorted`, not per-row Python."""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from vpp_aggregator.demo.constants import MAX_L2_AVG_KW, MAX_SESSION_S, MERGE_GAP_S, MIN_SESSION_S

F8 = NDArray[np.float64]
I8 = NDArray[np.int64]


class SessionsFileError(ValueError):
    """The sessions file is missing or lacks what a replay needs."""


@dataclass(frozen=True, slots=True)
class Stays:
    """One row per stay (re-plugs a few minutes apart are one stay), sorted by key, then start.

    `needed_kwh` is what the driver needed from the stay: the energy they asked for where the
    file has it, otherwise the energy the session really delivered (they needed at least that).
    `stated_departure_ts` is the departure the driver gave (NaN where the file has none)."""

    keys: tuple[str, ...]  # driver ids, or charger ids where the file names no drivers
    by: str  # "driver" or "charger"
    key: I8  # index into keys
    start_ts: F8
    end_ts: F8
    delivered_kwh: F8
    needed_kwh: F8
    stated_departure_ts: F8

    def __len__(self) -> int:
        return int(self.key.size)

    def between(self, start_ts: float, end_ts: float) -> Stays:
        """The stays that begin in [start_ts, end_ts)."""
        return self.take(np.flatnonzero((self.start_ts >= start_ts) & (self.start_ts < end_ts)))

    def take(self, rows: I8) -> Stays:
        return Stays(
            self.keys,
            self.by,
            self.key[rows],
            self.start_ts[rows],
            self.end_ts[rows],
            self.delivered_kwh[rows],
            self.needed_kwh[rows],
            self.stated_departure_ts[rows],
        )

    def regular(self, start_ts: float, end_ts: float, min_per_week: float) -> list[int]:
        """Keys with at least `min_per_week` stays a week on average in [start_ts, end_ts)
        (and at least two), busiest first: the fleet's vehicles."""
        inside = self.between(start_ts, end_ts)
        counts = np.bincount(inside.key, minlength=len(self.keys))
        weeks = (end_ts - start_ts) / (7 * 86_400.0)
        need = max(2, math.ceil(min_per_week * weeks))
        ranked = sorted(np.flatnonzero(counts >= need).tolist(), key=lambda k: (-counts[k], k))
        return [int(k) for k in ranked]


def _ts(value: str) -> float:
    if not value:
        return math.nan
    dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return dt.timestamp()  # the files are UTC with an explicit zone


def _float(value: str | None) -> float:
    try:
        return float(value) if value else math.nan
    except ValueError:
        return math.nan


def read_stays(
    path: Path, site: str | None = None, window: tuple[float, float] | None = None
) -> Stays:
    """Every usable session of `path` (one `site` of a multi-site file when given): sessions
    shorter than 10 minutes or longer than 48 hours, and DC fast charges (drivers who top up,
    not park), are left out; a driver's re-plugs a few minutes apart become one stay.

    Vehicles are the file's drivers when most sessions in `window` (start, end timestamps; the
    whole file by default) name theirs, else its chargers: Office001 names drivers only from
    2020 on, and a 2019 replay by driver would have dropped every session."""
    if not path.is_file():
        raise SessionsFileError(f"sessions file not found: {path}")
    rows: list[tuple[str, str, float, float, float, float, float]] = []
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        missing = {"connect_time_utc", "disconnect_time_utc", "kwh_delivered"} - set(
            reader.fieldnames or []
        )
        if missing:
            raise SessionsFileError(f"{path} lacks column(s) {', '.join(sorted(missing))}")
        for r in reader:
            if site is not None and r.get("site") != site:
                continue
            start, end = _ts(r["connect_time_utc"]), _ts(r["disconnect_time_utc"])
            if not (MIN_SESSION_S <= end - start <= MAX_SESSION_S):  # NaN fails too
                continue
            delivered = _float(r["kwh_delivered"])
            delivered = 0.0 if math.isnan(delivered) else delivered
            if delivered / ((end - start) / 3600.0) > MAX_L2_AVG_KW:
                continue
            requested = _float(r.get("kwh_requested"))
            stated = _ts(r.get("requested_departure_utc") or "")
            charger = r.get("station_id") or f"{r.get('site', '')}/{r.get('space_id', '')}"
            rows.append((r.get("user_id") or "", charger, start, end, delivered, requested, stated))
    if not rows:
        raise SessionsFileError(f"{path} holds no usable session" + (f" at {site}" if site else ""))
    lo, hi = window if window is not None else (-math.inf, math.inf)
    inside = [bool(r[0]) for r in rows if lo <= r[2] < hi]
    by = "driver" if inside and 2 * sum(inside) >= len(inside) else "charger"
    if by == "driver":
        rows = [r for r in rows if r[0]]  # sessions nobody can be tied to are no one's stay
    names = sorted({r[0] if by == "driver" else r[1] for r in rows})
    index = {name: i for i, name in enumerate(names)}
    key = np.array([index[r[0] if by == "driver" else r[1]] for r in rows], dtype=np.int64)
    cols = np.array([r[2:] for r in rows], dtype=np.float64)
    needed = np.where(cols[:, 3] > 0, cols[:, 3], cols[:, 2])  # asked for, else what was taken
    return _merged(tuple(names), by, key, cols[:, 0], cols[:, 1], cols[:, 2], needed, cols[:, 4])


def _merged(
    keys: tuple[str, ...],
    by: str,
    key: I8,
    start: F8,
    end: F8,
    delivered: F8,
    needed: F8,
    stated: F8,
) -> Stays:
    """Sort by key and start; a stay that begins within MERGE_GAP_S of the key's previous one
    (a re-plug, or a file's overlapping duplicates) joins it: energies add, the later stated
    departure holds."""
    order = np.lexsort((start, key))
    key, start, end = key[order], start[order], end[order]
    delivered, needed, stated = delivered[order], needed[order], stated[order]
    # A running maximum of ends per key: a stay inside an earlier long one joins it too.
    reach = end.copy()
    same_key = np.r_[False, key[1:] == key[:-1]]
    for i in range(1, key.size):  # sequential by nature; a few tens of thousands of rows
        if same_key[i]:
            reach[i] = max(reach[i], reach[i - 1])
    joins = same_key & np.r_[False, start[1:] <= reach[:-1] + MERGE_GAP_S]
    group = np.cumsum(~joins) - 1
    n = int(group[-1]) + 1 if group.size else 0
    first = np.flatnonzero(~joins)
    out_end = np.full(n, -np.inf)
    np.maximum.at(out_end, group, end)
    out_stated = np.full(n, np.nan)
    np.fmax.at(out_stated, group, stated)
    return Stays(
        keys,
        by,
        key[first],
        start[first],
        out_end,
        np.bincount(group, weights=delivered, minlength=n).astype(np.float64),
        np.bincount(group, weights=needed, minlength=n).astype(np.float64),
        out_stated,
    )
