"""Real drivers from the ACN sessions and real V2G vehicle models, turned into a fleet to simulate
(registrations with schedules derived from each driver's own weeks)."""

from __future__ import annotations

import csv
import json
import logging
import os
from collections.abc import Sequence
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from vpp_aggregator.demo.constants import (
    _STRIDE,
    _WEEKDAYS,
    _ZONE,
    LOOP_S,
    LOOP_WEEKS,
    MAX_L2_AVG_KW,
    MAX_SESSION_S,
    MERGE_GAP_S,
    MIN_EV_BATTERY_KWH,
    MIN_SESSION_S,
    MIN_SESSIONS_PER_LOOP,
    PACKAGED_DATA_DIR,
    SITE_TZ,
    WEEK_S,
    FloatArray,
    IntArray,
)
from vpp_aggregator.demo.fleet import SimulatedFleet, local_monday

log = logging.getLogger(__name__)


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
        first, last = local_monday(float(starts[0])), local_monday(float(starts[-1]))
        weeks = np.arange(first, last + 1.0, WEEK_S)
        # Whole-week steps in UTC drift by the DST hour; snap each back to local midnight.
        mondays = np.array([local_monday(float(w) + 43_200.0) for w in weeks])
        counts = np.searchsorted(starts, mondays + LOOP_S) - np.searchsorted(starts, mondays)
        anchors = mondays[counts >= MIN_SESSIONS_PER_LOOP]
        if anchors.size:
            drivers.append(_Driver(user, starts, ends, kwhs, anchors))
    if not drivers:
        raise ValueError(f"no driver in {path} has {MIN_SESSIONS_PER_LOOP}+ sessions in 4 weeks")
    return tuple(drivers)


@lru_cache(maxsize=4)
def load_ev_models(specs_json: str) -> tuple[tuple[str, float, float, float, float], ...]:
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
        models = load_ev_models(str(data_dir / "prices_nl" / "ev_specs_v2g_enabled2024.json"))
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
