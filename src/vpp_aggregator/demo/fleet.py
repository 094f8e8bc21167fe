"""The simulated fleet's physics: charging with taper and losses, trips spent while away, batteries
following a daily target, setpoints from the service obeyed within power and SoC limits."""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from datetime import time as dtime
from typing import Any

import numpy as np

from vpp_aggregator.demo.constants import (
    _STRIDE,
    _ZONE,
    BESS_TAU_H,
    CHARGE_EFFICIENCY,
    DRIVE_FLOOR_PCT,
    DRIVE_LEG_S,
    LOOP_S,
    TAPER_START_PCT,
    BoolArray,
    FloatArray,
    IntArray,
)

log = logging.getLogger(__name__)


def local_monday(ts: float) -> float:
    local = datetime.fromtimestamp(ts, _ZONE)
    monday = local.date() - timedelta(days=local.weekday())
    return datetime.combine(monday, dtime(0), tzinfo=_ZONE).timestamp()


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
            self._week0 = local_monday(self._clock)
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
