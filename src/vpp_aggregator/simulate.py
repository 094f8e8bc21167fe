"""A fleet simulator driven by real data, so demos and load tests see realistic availability.

EVs replay the plug-in/unplug sessions of real drivers at the Caltech ACN garage
(`acn_caltech/sessions_caltech.csv`), mapped onto the simulated week by local hour-of-week;
their batteries and power limits are real V2G-capable models
(`prices_nl/ev_specs_v2g_enabled2024.json`) drawn by registration count. Sessions faster than
L2 (DC fast charges) are left out: those drivers top up, they do not park. Stationary
batteries (BESS) cycle gently once a day. State of charge evolves physically: charging while
plugged and below target, trip energy (the kWh the driver really put back at the next session)
consumed while away, efficiency losses both ways.

Pattern time runs `speed` times faster than wall time, while every telemetry timestamp is the
real current UTC time, because the service rejects samples from the future or the far past.
"""

from __future__ import annotations

import copy
import csv
import json
import logging
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from datetime import time as dtime
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

import httpx
import numpy as np
import numpy.typing as npt
import orjson

log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

SITE_TZ = "America/Los_Angeles"  # the Caltech garage; driver schedules are local to it
_ZONE = ZoneInfo(SITE_TZ)
WEEK_S = 7 * 86_400.0
LOOP_WEEKS = 4  # each EV replays four consecutive real weeks of one driver, then repeats
LOOP_S = LOOP_WEEKS * WEEK_S
MIN_SESSIONS_PER_LOOP = 8  # a driver must plug in at least ~twice a week to be a fleet vehicle
MIN_SESSION_S = 10 * 60.0
MAX_SESSION_S = 48 * 3600.0
MAX_L2_AVG_KW = 12.0  # faster sessions are DC fast charges: a top-up, not a parked fleet vehicle
MERGE_GAP_S = 10 * 60.0  # re-plugs within this gap are one stay (no trip in between)
DRIVE_LEG_S = 45 * 60.0  # trip energy is spent in a commute leg after leaving and before arriving
DRIVE_FLOOR_PCT = 5.0  # a driver charges elsewhere before running the pack flat
MIN_EV_BATTERY_KWH = 50.0
CHARGE_EFFICIENCY = 0.92
TAPER_START_PCT = 85.0  # constant-current/constant-voltage taper above this SoC
BESS_TAU_H = 1.0  # BESS follows its daily target with this time constant
MAX_BATCH = 10_000
DISPATCH_STATUSES = ("active", "partial", "scheduled")  # open; scheduled only once started
MAX_DISPATCHES = 50  # followed per tick, at most (one detail fetch each, when revised)
SETPOINT_STALE_S = 60.0  # a plan not confirmed by the service for this long is dropped
DISPATCH_TIMEOUT_S = 5.0
_STRIDE = 4 * LOOP_S  # key spacing per EV in the flat session index (three loop copies fit)
_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


PACKAGED_DATA_DIR = Path(__file__).resolve().parent / "demo_data"


def default_data_dir() -> Path:
    """`VPP_DATA_DIR`, else `<repo>/../shared/data` (from the source tree, then the cwd), else the
    small extract shipped in the package, so a demo runs from any clone or container."""
    env = os.environ.get("VPP_DATA_DIR")
    if env:
        return Path(env)
    candidates = [
        Path(__file__).resolve().parents[2].parent / "shared" / "data",
        Path.cwd().parent / "shared" / "data",
    ]
    for path in candidates:
        if (path / "acn_caltech" / "sessions_caltech.csv").is_file():
            return path
    return PACKAGED_DATA_DIR


# --------------------------------------------------------------------------- data loading


class _Driver:
    """One real driver's sessions (UTC epoch seconds) and the Mondays a replay may start on."""

    __slots__ = ("anchors", "end", "kwh", "start", "user_id")

    def __init__(
        self, user_id: str, start: FloatArray, end: FloatArray, kwh: FloatArray, anchors: FloatArray
    ) -> None:
        self.user_id = user_id
        self.start = start
        self.end = end
        self.kwh = kwh
        self.anchors = anchors


def _local_monday(ts: float) -> float:
    local = datetime.fromtimestamp(ts, _ZONE)
    monday = local.date() - timedelta(days=local.weekday())
    return datetime.combine(monday, dtime(0), tzinfo=_ZONE).timestamp()


@lru_cache(maxsize=4)
def _load_drivers(sessions_csv: str) -> tuple[_Driver, ...]:
    """Read the sessions once (csv module, ~0.1 s) and keep drivers regular enough to replay."""
    path = Path(sessions_csv)
    if not path.is_file():
        raise FileNotFoundError(f"ACN sessions file not found: {path} (set VPP_DATA_DIR)")
    by_user: dict[str, list[tuple[float, float, float]]] = {}
    with path.open(newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        i_user = header.index("user_id")
        i_conn = header.index("connect_time_utc")
        i_disc = header.index("disconnect_time_utc")
        i_kwh = header.index("kwh_delivered")
        for row in reader:
            user = row[i_user]
            if not user or not row[i_conn] or not row[i_disc]:
                continue
            start = datetime.fromisoformat(row[i_conn]).timestamp()
            end = datetime.fromisoformat(row[i_disc]).timestamp()
            if not MIN_SESSION_S <= end - start <= MAX_SESSION_S:
                continue
            kwh = float(row[i_kwh]) if row[i_kwh] else 0.0
            if kwh / ((end - start) / 3600.0) > MAX_L2_AVG_KW:
                continue
            by_user.setdefault(user, []).append((start, end, kwh))
    drivers: list[_Driver] = []
    for user in sorted(by_user):
        rows = by_user[user]
        if len(rows) < MIN_SESSIONS_PER_LOOP:
            continue
        arr = np.array(sorted(rows), dtype=np.float64)
        starts, ends, kwhs = arr[:, 0], arr[:, 1], arr[:, 2]
        first, last = _local_monday(float(starts[0])), _local_monday(float(starts[-1]))
        weeks = np.arange(first, last + 1.0, WEEK_S)
        # Whole-week steps in UTC drift by the DST hour; snap each back to local midnight.
        mondays = np.array([_local_monday(float(w) + 43_200.0) for w in weeks])
        counts = np.searchsorted(starts, mondays + LOOP_S) - np.searchsorted(starts, mondays)
        anchors = mondays[counts >= MIN_SESSIONS_PER_LOOP]
        if anchors.size:
            drivers.append(_Driver(user, starts, ends, kwhs, anchors))
    if not drivers:
        raise ValueError(f"no driver in {path} has {MIN_SESSIONS_PER_LOOP}+ sessions in 4 weeks")
    return tuple(drivers)


@lru_cache(maxsize=4)
def _load_ev_models(specs_json: str) -> tuple[tuple[str, float, float, float, float], ...]:
    """(model, battery kWh, charge kW, discharge kW, registrations) for models of 50 kWh or more."""
    path = Path(specs_json)
    if not path.is_file():
        raise FileNotFoundError(f"EV specs file not found: {path} (set VPP_DATA_DIR)")
    raw: dict[str, dict[str, Any]] = json.loads(path.read_text())
    out = []
    for model, spec in raw.items():
        capacity = float(spec["battery_capacity"])
        if capacity < MIN_EV_BATTERY_KWH:
            continue
        charge = float(spec["max_ac_charge_power"])
        # Conservative: a V2G wallbox can export no more than the lower of the two ratings.
        discharge = min(
            float(spec["max_ac_discharge_power"]),
            float(spec.get("max_dc_discharge_power", spec["max_ac_discharge_power"])),
        )
        out.append((model, capacity, charge, discharge, float(spec["number_of_registrations"])))
    if not out:
        raise ValueError(f"no EV model of {MIN_EV_BATTERY_KWH:g} kWh or more in {path}")
    return tuple(out)


# --------------------------------------------------------------------------- the fleet


def _hhmm(minutes: float) -> str:
    m = int(minutes) % (24 * 60)
    return f"{m // 60:02d}:{m % 60:02d}"


def _derive_schedule(start: FloatArray, end: FloatArray, required_soc_pct: float) -> dict[str, Any]:
    """A weekly routine from the replayed sessions: the days the driver usually leaves, when."""
    unplug = [datetime.fromtimestamp(float(t), _ZONE) for t in end]
    plug = [datetime.fromtimestamp(float(t), _ZONE) for t in start]
    counts = np.bincount([d.weekday() for d in unplug], minlength=7)
    usual = counts >= max(2, LOOP_WEEKS // 2)  # leaves that weekday in at least half the weeks
    if not usual.any():
        usual = counts == counts.max()
    days = [i for i in range(7) if usual[i]]
    dep_min = [d.hour * 60 + d.minute for d in unplug if d.weekday() in days]
    ret_min = [d.hour * 60 + d.minute for d in plug if d.weekday() in days] or dep_min
    departure = float(np.median(dep_min)) // 15 * 15  # round down: be ready a little early
    ret = round(float(np.median(ret_min)) / 15) * 15
    return {
        "days": [_WEEKDAYS[i] for i in days],
        "departure": _hhmm(departure),
        "return": _hhmm(ret),
        "required_soc_pct": required_soc_pct,
        "timezone": SITE_TZ,
    }


def _merge(start: FloatArray, end: FloatArray, kwh: FloatArray) -> FloatArray:
    """Sorted stays with short re-plug gaps merged; rows of (start, end, kwh)."""
    order = np.argsort(start, kind="stable")
    merged: list[list[float]] = []
    for s, e, k in zip(start[order], end[order], kwh[order], strict=True):
        if merged and s <= merged[-1][1] + MERGE_GAP_S:
            merged[-1][1] = max(merged[-1][1], float(e))
            merged[-1][2] += float(k)
        else:
            merged.append([float(s), float(e), float(k)])
    return np.array(merged, dtype=np.float64).reshape(-1, 3)


class SimulatedFleet:
    """Columnar state of every simulated resource (EVs first, then BESS), advanced by `step`."""

    def __init__(
        self,
        registrations: list[dict[str, Any]],
        n_ev: int,
        capacity_kwh: FloatArray,
        max_charge_kw: FloatArray,
        max_discharge_kw: FloatArray,
        min_soc_pct: FloatArray,
        max_soc_pct: FloatArray,
        target_soc_pct: FloatArray,
        soc_pct: FloatArray,
        bess_phase_h: FloatArray,
        session_keys: FloatArray,
        session_ev: IntArray,
        session_start: FloatArray,
        session_end: FloatArray,
        session_kwh: FloatArray,
    ) -> None:
        self._registrations = registrations
        self.resource_ids: tuple[str, ...] = tuple(r["resource_id"] for r in registrations)
        self.n_ev = n_ev
        self.capacity_kwh = capacity_kwh
        self.max_charge_kw = max_charge_kw
        self.max_discharge_kw = max_discharge_kw
        self.min_soc_pct = min_soc_pct
        self.max_soc_pct = max_soc_pct
        self.target_soc_pct = target_soc_pct
        self._soc = soc_pct
        self._bess_phase_h = bess_phase_h
        self._keys = session_keys
        self._sess_ev = session_ev
        self._sess_start = session_start
        self._sess_end = session_end
        self._sess_kwh = session_kwh
        self._ev_index = np.arange(n_ev, dtype=np.int64)
        self._index = {rid: i for i, rid in enumerate(self.resource_ids)}
        self._override = np.full(len(self.resource_ids), np.nan)  # kW, NaN = own behaviour
        self._wall_dt_s = 0.0  # real seconds of the current step (setpoints run in real time)
        self._clock: float | None = None  # simulated pattern time, UTC epoch seconds
        self._week0 = 0.0  # local Monday 00:00 of the first step: hour-of-week alignment

    @property
    def soc_pct(self) -> FloatArray:
        """Current state of charge per resource (a copy; the fleet owns its state)."""
        return self._soc.copy()

    def registrations(self) -> list[dict[str, Any]]:
        """Bodies for POST /resources/register, one per resource (deep copies, safe to mutate)."""
        return copy.deepcopy(self._registrations)

    def set_setpoints(self, setpoints_kw: Mapping[str, float]) -> None:
        """Command the power of some resources (kW, positive = discharge to the grid).

        Replaces every earlier command: resources not listed go back to their own behaviour.
        A command holds for the following steps until the next call, like a charger holding
        its last control command. In `step` it is clipped to the resource's charge/discharge
        limits and to what its SoC allows (EVs: between their min and max SoC; BESS: the
        same floor and ceiling they keep on their own), and it only acts while plugged in.
        Ids that are not in this fleet are ignored (a dispatch may span other fleets).
        """
        override = np.full(len(self.resource_ids), np.nan)
        for rid, kw in setpoints_kw.items():
            value = float(kw)
            if not math.isfinite(value):
                raise ValueError(f"setpoint for {rid!r} must be a finite number, not {kw!r}")
            i = self._index.get(rid)
            if i is not None:
                override[i] = value
        self._override = override

    def step(
        self, now: datetime, dt_s: float, wall_dt_s: float | None = None
    ) -> list[dict[str, Any]]:
        """Advance pattern time by `dt_s` simulated seconds; return samples stamped `now`.

        `wall_dt_s` is the real time the step covers (default `dt_s`): a commanded setpoint is
        real power over real time, so it moves SoC by `wall_dt_s`, not by the faster pattern time.

        The first call starts pattern time at `now`, so the replayed week lines up with the
        real hour-of-week. Power is the average over the step (negative = charging); for a
        resource under a setpoint (`set_setpoints`) it is the power actually applied.
        """
        if now.tzinfo is None or now.utcoffset() is None:
            raise ValueError("now must be timezone-aware (UTC on the wire)")
        if dt_s < 0 or not math.isfinite(dt_s):
            raise ValueError(f"dt_s must be a finite number >= 0, not {dt_s!r}")
        now = now.astimezone(UTC)
        if self._clock is None:
            self._clock = now.timestamp()
            self._week0 = _local_monday(self._clock)
        self._clock += dt_s
        self._wall_dt_s = dt_s if wall_dt_s is None else wall_dt_s
        n = len(self.resource_ids)
        power = np.zeros(n, dtype=np.float64)
        plugged = np.ones(n, dtype=np.bool_)
        if self.n_ev:
            ev_power, ev_plugged = self._step_evs(dt_s)
            power[: self.n_ev] = ev_power
            plugged[: self.n_ev] = ev_plugged
        if n > self.n_ev:
            power[self.n_ev :] = self._step_bess(dt_s)
        np.clip(self._soc, 0.0, 100.0, out=self._soc)
        stamp = now.isoformat()
        socs = np.round(self._soc, 2).tolist()
        kws = (np.round(power, 3) + 0.0).tolist()  # + 0.0 turns -0.0 into 0.0
        return [
            {
                "resource_id": rid,
                "timestamp": stamp,
                "soc_pct": soc,
                "plugged_in": plug,
                "power_kw": kw,
            }
            for rid, soc, plug, kw in zip(
                self.resource_ids, socs, plugged.tolist(), kws, strict=True
            )
        ]

    def _step_evs(self, dt_s: float) -> tuple[FloatArray, BoolArray]:
        """Replay lookup for every EV at once: one searchsorted over the flat session index."""
        assert self._clock is not None
        x1 = (self._clock - self._week0) % LOOP_S
        x0 = x1 - dt_s
        k = self.n_ev
        soc = self._soc[:k]
        cap = self.capacity_kwh[:k]
        target = self.target_soc_pct[:k]
        query = self._ev_index * _STRIDE + LOOP_S + x1
        j = np.searchsorted(self._keys, query, side="right")
        prev = j - 1  # the stay that started last (always exists: a copy of the loop precedes)
        s_prev, e_prev = self._sess_start[prev], self._sess_end[prev]
        plugged = e_prev > x1

        # Charging over the part of the step spent plugged in.
        plugged_s = np.where(
            plugged, np.clip(np.minimum(x1, e_prev) - np.maximum(x0, s_prev), 0.0, dt_s), 0.0
        )
        taper = np.clip((100.0 - soc) / (100.0 - TAPER_START_PCT), 0.15, 1.0)
        p_avail = self.max_charge_kw[:k] * taper
        wants = plugged & (soc < target)
        headroom_kwh = np.maximum(target - soc, 0.0) / 100.0 * cap
        e_in = np.minimum(p_avail * plugged_s / 3600.0 * CHARGE_EFFICIENCY, headroom_kwh)
        e_in = np.where(wants, e_in, 0.0)
        safe_s = np.where(plugged_s > 0, plugged_s, 1.0)
        charge_kw = np.where(
            wants, np.where(plugged_s > 0, e_in / CHARGE_EFFICIENCY * 3600.0 / safe_s, p_avail), 0.0
        )

        # Driving: the away spell around x1 is (end of previous stay, start of next stay).
        before = np.maximum(prev - 1, 0)
        has_before = self._sess_ev[before] == self._ev_index
        nxt = np.minimum(j, len(self._keys) - 1)
        away_from = np.where(plugged, self._sess_end[before], e_prev)
        away_to = np.where(plugged, s_prev, self._sess_start[nxt])
        trip_kwh = np.where(plugged, self._sess_kwh[prev], self._sess_kwh[nxt])
        trip_kwh = np.where(plugged & ~has_before, 0.0, np.minimum(trip_kwh, 0.8 * cap))
        leg = np.maximum(np.minimum(DRIVE_LEG_S, (away_to - away_from) / 2.0), 1.0)
        out_leg = np.clip(np.minimum(x1, away_from + leg) - np.maximum(x0, away_from), 0.0, None)
        in_leg = np.clip(np.minimum(x1, away_to) - np.maximum(x0, away_to - leg), 0.0, None)
        e_out = trip_kwh / 2.0 * (out_leg + in_leg) / leg

        power = -charge_kw
        commanded = plugged & ~np.isnan(self._override[:k])
        if commanded.any():
            # A setpoint replaces the driver's own charging while plugged in; the trip energy
            # spent on the drive in (if the car arrived during this step) is unaffected.
            kw = np.clip(self._override[:k], -p_avail, self.max_discharge_kw[:k])
            dt_h = np.where(plugged, self._wall_dt_s, 0.0) / 3600.0
            kw = _limit_to_soc(kw, soc, cap, self.min_soc_pct[:k], self.max_soc_pct[:k], dt_h)
            e_in = np.where(commanded, -_battery_kwh(kw, dt_h), e_in)
            power = np.where(commanded, kw, power)

        new_soc = soc + e_in / cap * 100.0
        drained = np.maximum(new_soc - e_out / cap * 100.0, np.minimum(new_soc, DRIVE_FLOOR_PCT))
        self._soc[:k] = drained
        return power, plugged

    def _step_bess(self, dt_s: float) -> FloatArray:
        """Follow a daily SoC target: charge through the morning, discharge into the evening."""
        assert self._clock is not None
        k = self.n_ev
        soc = self._soc[k:]
        cap = self.capacity_kwh[k:]
        lo, hi = self.min_soc_pct[k:], self.max_soc_pct[k:]
        local = datetime.fromtimestamp(self._clock, _ZONE)
        hour = local.hour + local.minute / 60.0 + local.second / 3600.0
        wave = np.cos(2.0 * np.pi * (hour - 16.0 - self._bess_phase_h) / 24.0)
        target = np.clip(57.5 + 27.5 * wave, lo + 5.0, hi - 5.0)
        kw = (soc - target) / 100.0 * cap / BESS_TAU_H  # positive = discharge
        override = self._override[k:]
        kw = np.where(np.isnan(override), kw, override)  # a setpoint replaces the daily cycle
        kw = np.clip(kw, -self.max_charge_kw[k:], self.max_discharge_kw[k:])
        # Commanded power runs in real time; the daily cycle in pattern time.
        dt_h = np.where(np.isnan(override), dt_s, self._wall_dt_s) / 3600.0
        kw = _limit_to_soc(kw, soc, cap, lo, hi, dt_h)
        if dt_s > 0 or self._wall_dt_s > 0:
            self._soc[k:] = np.clip(soc - _battery_kwh(kw, dt_h) / cap * 100.0, lo, hi)
        return kw


def _battery_kwh(kw: FloatArray, dt_h: FloatArray | float) -> FloatArray:
    """Energy leaving the battery for `kw` at the grid over `dt_h` (losses on the battery side)."""
    out: FloatArray = np.where(kw > 0, kw / CHARGE_EFFICIENCY, kw * CHARGE_EFFICIENCY) * dt_h
    return out


def _limit_to_soc(
    kw: FloatArray,
    soc: FloatArray,
    cap: FloatArray,
    lo: FloatArray,
    hi: FloatArray,
    dt_h: FloatArray,
) -> FloatArray:
    """Cut grid power (+ = discharge) so that `dt_h` hours of it keep the SoC within [lo, hi].

    With no time to integrate over (dt_h == 0) a battery at its floor still cannot discharge,
    nor one at its ceiling charge.
    """
    out_kwh = np.maximum(soc - lo, 0.0) / 100.0 * cap * CHARGE_EFFICIENCY
    in_kwh = np.maximum(hi - soc, 0.0) / 100.0 * cap / CHARGE_EFFICIENCY
    timed = dt_h > 0
    safe_h = np.where(timed, dt_h, 1.0)
    max_out = np.where(timed, out_kwh / safe_h, np.where(out_kwh > 0, np.inf, 0.0))
    max_in = np.where(timed, in_kwh / safe_h, np.where(in_kwh > 0, np.inf, 0.0))
    limited: FloatArray = np.maximum(np.minimum(kw, max_out), -max_in)
    return limited


def build_fleet(
    ev_count: int,
    bess_count: int,
    data_dir: Path,
    seed: int = 7,
    grid_nodes: Sequence[str] = ("NODE_A", "NODE_B"),
    fleet_id: str = "demo-fleet",
) -> SimulatedFleet:
    """A repeatable fleet from the real data: same inputs and seed, same fleet (reads only)."""
    if ev_count < 0 or bess_count < 0:
        raise ValueError("ev_count and bess_count must be >= 0")
    if not grid_nodes:
        raise ValueError("at least one grid node is required")
    data_dir = Path(data_dir)
    rng = np.random.default_rng(seed)
    regs: list[dict[str, Any]] = []
    n = ev_count + bess_count
    capacity = np.zeros(n)
    pc = np.zeros(n)
    pd = np.zeros(n)
    lo = np.zeros(n)
    hi = np.zeros(n)
    target = np.zeros(n)
    soc = np.zeros(n)
    keys: list[FloatArray] = []
    sess: list[FloatArray] = []
    sess_ev: list[IntArray] = []

    if ev_count:
        drivers = _load_drivers(str(data_dir / "acn_caltech" / "sessions_caltech.csv"))
        models = _load_ev_models(str(data_dir / "prices_nl" / "ev_specs_v2g_enabled2024.json"))
        weights = np.array([m[4] for m in models])
        model_idx = rng.choice(len(models), size=ev_count, p=weights / weights.sum())
        # Spread vehicles over distinct drivers first; reuse (with other weeks) only when needed.
        order = np.concatenate(
            [rng.permutation(len(drivers)) for _ in range(ev_count // len(drivers) + 1)]
        )[:ev_count]
        for i in range(ev_count):
            model, cap_kwh, charge_kw, discharge_kw, _ = models[int(model_idx[i])]
            driver = drivers[int(order[i])]
            anchor = float(driver.anchors[rng.integers(driver.anchors.size)])
            sel = (driver.start >= anchor) & (driver.start < anchor + LOOP_S)
            rel_s, rel_e, kwh = (
                driver.start[sel] - anchor,
                driver.end[sel] - anchor,
                driver.kwh[sel],
            )
            min_soc = float(rng.choice([15.0, 20.0, 25.0, 30.0]))
            max_soc = float(rng.choice([90.0, 100.0], p=[0.3, 0.7]))
            required = min(float(rng.choice([70.0, 75.0, 80.0, 85.0, 90.0])), max_soc)
            capacity[i], pc[i], pd[i] = cap_kwh, charge_kw, discharge_kw
            lo[i], hi[i] = min_soc, max_soc
            target[i] = min(max_soc, required + float(rng.choice([0.0, 5.0, 10.0])))
            soc[i] = float(rng.uniform(max(min_soc, 35.0), 85.0))
            rid = f"{fleet_id}-ev-{i + 1:04d}"
            regs.append(
                {
                    "resource_id": rid,
                    "resource_type": "EV",
                    "name": f"{model} #{i + 1} (ACN driver {driver.user_id})",
                    "fleet_id": fleet_id,
                    "grid_node": grid_nodes[i % len(grid_nodes)],
                    "battery_capacity_kwh": cap_kwh,
                    "max_charge_kw": charge_kw,
                    "max_discharge_kw": discharge_kw,
                    "v2g_capable": True,
                    "telemetry_enabled": True,
                    "interconnection": {"approved": True, "reference": f"IA-{rid}"},
                    "min_soc_pct": min_soc,
                    "max_soc_pct": max_soc,
                    "departure_schedule": [
                        _derive_schedule(driver.start[sel], driver.end[sel], required)
                    ],
                }
            )
            # Three copies of the loop (previous, current, next) so lookups never fall off an end.
            rows = _merge(
                np.concatenate([rel_s - LOOP_S, rel_s, rel_s + LOOP_S]),
                np.concatenate([rel_e - LOOP_S, rel_e, rel_e + LOOP_S]),
                np.concatenate([kwh, kwh, kwh]),
            )
            keys.append(i * _STRIDE + LOOP_S + rows[:, 0])
            sess.append(rows)
            sess_ev.append(np.full(len(rows), i, dtype=np.int64))

    for b in range(bess_count):
        i = ev_count + b
        cap_kwh = float(rng.choice(np.arange(100.0, 1001.0, 50.0)))
        min_soc = float(rng.choice([20.0, 20.0, 25.0]))
        max_soc = float(rng.choice([95.0, 100.0]))
        capacity[i], pc[i], pd[i] = cap_kwh, 0.5 * cap_kwh, 0.5 * cap_kwh  # C-rate 0.5
        lo[i], hi[i], target[i] = min_soc, max_soc, max_soc
        soc[i] = float(rng.uniform(40.0, 70.0))
        rid = f"{fleet_id}-bess-{b + 1:03d}"
        regs.append(
            {
                "resource_id": rid,
                "resource_type": "BESS",
                "name": f"Battery site {b + 1} ({cap_kwh:g} kWh)",
                "fleet_id": fleet_id,
                "grid_node": grid_nodes[i % len(grid_nodes)],
                "battery_capacity_kwh": cap_kwh,
                "max_charge_kw": 0.5 * cap_kwh,
                "max_discharge_kw": 0.5 * cap_kwh,
                "v2g_capable": True,
                "telemetry_enabled": True,
                "interconnection": {"approved": True, "reference": f"IA-{rid}"},
                "min_soc_pct": min_soc,
                "max_soc_pct": max_soc,
            }
        )

    rows_all = np.concatenate(sess) if sess else np.zeros((0, 3))
    return SimulatedFleet(
        registrations=regs,
        n_ev=ev_count,
        capacity_kwh=capacity,
        max_charge_kw=pc,
        max_discharge_kw=pd,
        min_soc_pct=lo,
        max_soc_pct=hi,
        target_soc_pct=target,
        soc_pct=soc,
        bess_phase_h=rng.uniform(-1.5, 1.5, size=bess_count),
        session_keys=np.concatenate(keys) if keys else np.zeros(0),
        session_ev=np.concatenate(sess_ev) if sess_ev else np.zeros(0, dtype=np.int64),
        session_start=rows_all[:, 0].copy(),
        session_end=rows_all[:, 1].copy(),
        session_kwh=rows_all[:, 2].copy(),
    )


# --------------------------------------------------------------------------- the HTTP driver


def _wait_healthy(client: httpx.Client, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while True:
        try:
            resp = client.get("/health")
            if resp.status_code == 200:
                return
            last = f"HTTP {resp.status_code}"
        except httpx.HTTPError as exc:
            last = f"{type(exc).__name__}: {exc}"
        if time.monotonic() >= deadline:
            raise TimeoutError(
                f"{client.base_url}health not healthy after {timeout_s:g} s ({last})"
            )
        time.sleep(0.5)


def _register(client: httpx.Client, body: dict[str, Any], attempts: int = 3) -> bool:
    """True when the resource exists afterwards (201 created, or 409 already there)."""
    for attempt in range(attempts):
        try:
            resp = client.post("/resources/register", json=body)
        except httpx.HTTPError as exc:
            log.warning("register %s: %s (attempt %d)", body["resource_id"], exc, attempt + 1)
        else:
            if resp.status_code in (200, 201, 409):
                return True
            if resp.status_code < 500:
                log.warning(
                    "register %s refused: HTTP %d %s",
                    body["resource_id"],
                    resp.status_code,
                    resp.text[:300],
                )
                return False
            log.warning(
                "register %s: HTTP %d (attempt %d)",
                body["resource_id"],
                resp.status_code,
                attempt + 1,
            )
        time.sleep(0.5 * 2**attempt)
    return False


def _post_samples(client: httpx.Client, samples: list[dict[str, Any]]) -> int:
    """POST in batches of at most 10,000; returns how many the service accepted.

    HTTP errors and rejections are logged, never raised: one bad tick must not end a demo.
    """
    accepted = 0
    for lo in range(0, len(samples), MAX_BATCH):
        chunk = samples[lo : lo + MAX_BATCH]
        try:
            resp = client.post(
                "/telemetry",
                content=orjson.dumps({"samples": chunk}),
                headers={"content-type": "application/json"},
            )
        except httpx.HTTPError as exc:
            log.warning("telemetry post failed: %s", exc)
            continue
        if resp.status_code >= 300:
            log.warning("telemetry post: HTTP %d %s", resp.status_code, resp.text[:300])
            continue
        try:
            answer = resp.json()
        except ValueError:
            log.warning("telemetry post: answer is not JSON: %s", resp.text[:300])
            continue
        accepted += int(answer.get("accepted", 0)) if isinstance(answer, dict) else 0
        rejected = answer.get("rejected") if isinstance(answer, dict) else None
        if rejected:
            first = rejected[0] if isinstance(rejected, list) else rejected
            log.warning("telemetry: %d sample(s) rejected, e.g. %s", len(rejected), first)
    return accepted


def parse_schedule(points: Sequence[Mapping[str, Any]]) -> tuple[FloatArray, FloatArray]:
    """A dispatch allocation's `schedule` as (UTC epoch seconds, kW) arrays sorted by time.

    Raises KeyError, TypeError or ValueError on a malformed point. A time without an offset is
    taken as UTC (the service always sends one).
    """
    rows: list[tuple[float, float]] = []
    for point in points:
        t = datetime.fromisoformat(str(point["t"]))
        if t.tzinfo is None:
            t = t.replace(tzinfo=UTC)
        kw = float(point["setpoint_kw"])
        if not math.isfinite(kw):
            raise ValueError(f"setpoint_kw must be finite, not {kw!r}")
        rows.append((t.timestamp(), kw))
    rows.sort()
    arr = np.array(rows, dtype=np.float64).reshape(-1, 2)
    return arr[:, 0].copy(), arr[:, 1].copy()


def schedule_setpoint_kw(times_s: FloatArray, kw: FloatArray, at_s: float) -> float:
    """The setpoint at `at_s`: linear between schedule points, 0 before the first and after
    the last (an empty schedule is 0 throughout)."""
    if times_s.size == 0:
        return 0.0
    return float(np.interp(at_s, times_s, kw, left=0.0, right=0.0))


@dataclass(slots=True)
class _Plan:
    """One dispatch revision as the simulator follows it."""

    revision: int | None
    allocations: list[tuple[str, FloatArray, FloatArray]]  # (resource id, times, kW)
    confirmed_at: float  # monotonic time the service last listed it at this revision


class DispatchFollower:
    """Turns the service's open dispatches into per-resource setpoints, as chargers obey them.

    Each call lists the open dispatches (active, partial, and scheduled ones whose start has
    come but that the service has not flipped to active yet), fetches the detail of at most
    `max_dispatches` of them only when their revision changed, and interpolates every
    allocation at `now`. A resource whose schedule has not begun is left to its own behaviour;
    one past its last point is held at 0 while the dispatch is open; a resource in several
    dispatches gets the sum. When the service cannot be asked, the plans last confirmed within
    `stale_s` seconds are still followed (at the current time), then dropped.
    """

    def __init__(
        self,
        client: httpx.Client,
        max_dispatches: int = MAX_DISPATCHES,
        stale_s: float = SETPOINT_STALE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._max = max_dispatches
        self._stale_s = stale_s
        self._clock = clock
        self._plans: dict[str, _Plan] = {}
        self._failing = False
        self._truncated = False

    def setpoints(self, now: datetime) -> dict[str, float]:
        """Resource id -> kW (+ = discharge) for every resource an open dispatch allocates."""
        mono = self._clock()
        listed = self._list_open(now)
        if listed is not None:
            plans: dict[str, _Plan] = {}
            for dispatch_id, revision in listed:
                plan = self._plans.get(dispatch_id)
                if plan is not None and revision is not None and plan.revision == revision:
                    plan.confirmed_at = mono
                else:
                    fresh = self._fetch(dispatch_id, mono)
                    if fresh is not None:
                        plan = fresh
                if plan is not None:  # a failed re-fetch keeps the old plan until it is stale
                    plans[dispatch_id] = plan
            self._plans = plans
        out: dict[str, float] = {}
        at_s = now.timestamp()
        for plan in self._plans.values():
            if mono - plan.confirmed_at > self._stale_s:
                continue
            for rid, times_s, kw in plan.allocations:
                if times_s.size == 0 or at_s < times_s[0]:
                    continue  # not started: the resource keeps its own behaviour until then
                out[rid] = out.get(rid, 0.0) + schedule_setpoint_kw(times_s, kw, at_s)
        return out

    def _get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        resp = self._client.get(path, params=params, timeout=DISPATCH_TIMEOUT_S)
        resp.raise_for_status()
        return resp.json()

    def _list_open(self, now: datetime) -> list[tuple[str, int | None]] | None:
        """(dispatch id, revision) of the dispatches to follow, or None when the service failed."""
        found: dict[str, int | None] = {}
        try:
            for status in DISPATCH_STATUSES:
                body = self._get("/dispatch", {"status": status, "limit": 500})
                for item in body["items"]:
                    if status == "scheduled":
                        start = datetime.fromisoformat(str(item["start"]))
                        if start.tzinfo is None:
                            start = start.replace(tzinfo=UTC)
                        if start > now:
                            continue
                    revision = item.get("revision")
                    found.setdefault(
                        str(item["dispatch_id"]), revision if isinstance(revision, int) else None
                    )
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            if not self._failing:
                log.warning(
                    "dispatch list failed (%s: %s); following the last known plans for up to %g s",
                    type(exc).__name__,
                    exc,
                    self._stale_s,
                )
            self._failing = True
            return None
        if self._failing:
            log.info("dispatch list answers again")
        self._failing = False
        if len(found) > self._max and not self._truncated:
            log.warning("%d open dispatches; following the first %d", len(found), self._max)
        self._truncated = len(found) > self._max
        return list(found.items())[: self._max]

    def _fetch(self, dispatch_id: str, mono: float) -> _Plan | None:
        try:
            body = self._get(f"/dispatch/{quote(dispatch_id, safe='')}")
        except (httpx.HTTPError, ValueError) as exc:
            log.warning("dispatch %s: %s: %s", dispatch_id, type(exc).__name__, exc)
            return None
        revision = body.get("revision") if isinstance(body, dict) else None
        revision = revision if isinstance(revision, int) else None
        try:
            if body["status"] not in ("active", "partial", "scheduled"):
                return _Plan(revision, [], mono)  # ended since it was listed: nothing to hold
            allocations = [
                (str(a["resource_id"]), *parse_schedule(a["schedule"])) for a in body["allocations"]
            ]
        except (KeyError, TypeError, ValueError) as exc:
            # Remembered (by revision) as empty, so a malformed dispatch is not fetched each tick.
            log.warning(
                "dispatch %s: malformed detail (%s: %s)", dispatch_id, type(exc).__name__, exc
            )
            return _Plan(revision, [], mono)
        return _Plan(revision, allocations, mono)


def run_simulation(
    base_url: str,
    ev_count: int,
    bess_count: int,
    interval_s: float = 2.0,
    duration_s: float | None = None,
    speed: float = 60.0,
    data_dir: Path | None = None,
    seed: int = 7,
    on_tick: Callable[[int, int], None] | None = None,
    follow_dispatch: bool = True,
) -> None:
    """Register a simulated fleet with a running service and stream telemetry to it.

    Waits up to ~30 s for GET /health, registers every resource (409 = already there), then
    every `interval_s` wall seconds advances the fleet `interval_s * speed` pattern seconds and
    posts the samples. Runs for `duration_s` (None: until Ctrl-C). HTTP trouble is logged and
    the loop goes on; `on_tick(accepted, rejected)` is called after each tick, where
    `rejected` counts every sample sent that tick and not accepted (refused or lost).

    With `follow_dispatch`, each tick the fleet first obeys the service's open dispatches:
    every allocated resource runs at its schedule's setpoint for the current real time (see
    `DispatchFollower`), so the telemetry shows the dispatch being delivered.
    """
    if interval_s <= 0 or speed <= 0:
        raise ValueError("interval_s and speed must be > 0")
    fleet = build_fleet(ev_count, bess_count, data_dir or default_data_dir(), seed=seed)
    with httpx.Client(base_url=base_url.rstrip("/"), timeout=httpx.Timeout(30.0)) as client:
        _wait_healthy(client, timeout_s=30.0)
        registered = {
            body["resource_id"] for body in fleet.registrations() if _register(client, body)
        }
        if not registered:
            raise RuntimeError("no simulated resource could be registered; see the log")
        log.info("simulating %d resources (%d EV, %d BESS)", len(registered), ev_count, bess_count)
        follower = DispatchFollower(client) if follow_dispatch else None
        start = last = time.monotonic()
        tick = 0
        try:
            while True:
                t = time.monotonic()
                dt_pattern = (t - last) * speed if tick else 0.0
                last = t
                now = datetime.now(UTC)
                if follower is not None:
                    fleet.set_setpoints(follower.setpoints(now))
                wall = dt_pattern / speed
                samples = [
                    s for s in fleet.step(now, dt_pattern, wall) if s["resource_id"] in registered
                ]
                accepted = _post_samples(client, samples)
                if on_tick is not None:
                    on_tick(accepted, len(samples) - accepted)
                tick += 1
                next_at = start + tick * interval_s
                if duration_s is not None and next_at - start > duration_s:
                    break
                time.sleep(max(0.0, next_at - time.monotonic()))
        except KeyboardInterrupt:
            log.info("simulation stopped after %d ticks", tick)
