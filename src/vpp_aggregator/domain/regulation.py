"""Frequency regulation by many small resources: each gets a base point and a participation
(kW per unit of signal), and follows `base + participation × signal` at no more than its ramp
limit. The fleet tracks a fast signal by spreading it thin, never by making one resource ramp
faster: a resource's participation is capped so that the signal's fast changes ask no more of
it than its ramp limit.

Every command is safe for the whole time it is valid whatever the signal does: at signal +1 for
the whole validity a resource still ends above its floor (and, for a vehicle, above the SoC from
which full-power charging reaches its departure SoC), at −1 below its ceiling, and base ±
participation stays within its power limits. `domain/regulation_safety.py` proves that for each
command on its own arithmetic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from vpp_aggregator.domain.dispatch.safety import ResourceFacts

F8 = NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class RegulationResources:
    """The resources that may regulate, as columns (energy at the grid side: `eta` is the
    one-way efficiency)."""

    resource_ids: list[str]
    capacity_kwh: F8
    soc_pct: F8
    floor_pct: F8  # static floor (BESS minimum, driver minimum)
    ceiling_pct: F8
    max_discharge_kw: F8
    max_charge_kw: F8
    departure_s: F8  # seconds until it leaves (inf: no departure)
    departure_soc_pct: F8
    available: NDArray[np.bool_]
    power_kw: F8 | None = None  # what each does now (+ discharge); None: at rest


def facts_of(r: RegulationResources, i: int, is_bess: bool) -> ResourceFacts:
    """Resource `i` as the independent checker takes its facts."""
    return ResourceFacts(
        resource_id=r.resource_ids[i],
        is_bess=is_bess,
        capacity_kwh=float(r.capacity_kwh[i]),
        floor_pct=float(r.floor_pct[i]),
        ceiling_pct=float(r.ceiling_pct[i]),
        max_discharge_kw=float(r.max_discharge_kw[i]),
        max_charge_kw=float(r.max_charge_kw[i]),
        departure_soc_pct=float(r.departure_soc_pct[i]),
        available=bool(r.available[i]),
    )


@dataclass(frozen=True, slots=True)
class Participation:
    base_kw: F8  # positive = discharge
    participation_kw: F8  # kW per unit of signal, ≥ 0
    valid_s: F8  # seconds each command holds (to its departure at the latest)

    @property
    def capacity_kw(self) -> float:
        return float(self.participation_kw.sum())

    @property
    def fleet_base_kw(self) -> float:
        return float(self.base_kw.sum())


def _overshoot(gap_kw: F8, ramp_kw_per_min: float, minutes: F8) -> F8:
    """kWh a resource `gap_kw` past a new power still moves while ramping there."""
    gap = np.maximum(gap_kw, 0.0)
    t = np.minimum(np.maximum(minutes, 0.0), gap / ramp_kw_per_min)
    return np.asarray((gap * t - ramp_kw_per_min * t * t / 2.0) / 60.0, dtype=np.float64)


def departure_floor_pct(
    r: RegulationResources, after_s: F8, eta: float, ramp_kw_per_min: float
) -> F8:
    """The SoC from which charging at full power, reached at the ramp limit from full
    discharge, reaches the departure SoC by departure, `after_s` from now; the static floor
    where that is lower (or there is no departure)."""
    hours = np.maximum(r.departure_s - after_s, 0.0) / 3600.0
    ramp_in = _overshoot(r.max_discharge_kw + r.max_charge_kw, ramp_kw_per_min, hours * 60.0)
    kwh = r.max_charge_kw * np.where(np.isfinite(hours), hours, 0.0) - ramp_in
    reach = np.where(
        np.isfinite(r.departure_s),
        r.departure_soc_pct - kwh * eta / r.capacity_kwh * 100.0,
        -np.inf,
    )
    return np.maximum(r.floor_pct, reach)


def allocate(
    r: RegulationResources,
    capacity_kw: float,
    *,
    horizon_s: float,
    ramp_kw_per_min: float,
    signal_rate_per_min: float,
    eta: float,
    departure_margin_s: float = 300.0,
) -> Participation:
    """Base points that draw every battery toward the fleet's mean state of charge (summing to
    what vehicles must charge anyway), then `capacity_kw` of participation shared in proportion
    to what each resource can safely carry for the whole horizon."""
    valid = np.minimum(horizon_s, np.maximum(r.departure_s - departure_margin_s, 0.0))
    ok = r.available & (valid > 0)
    hours = np.maximum(valid, 1.0) / 3600.0
    floor = departure_floor_pct(r, valid, eta, ramp_kw_per_min)
    margin = 0.999  # a thousandth kept back, so watts rounded off never cross a limit
    give_kwh = np.maximum(r.soc_pct - floor, 0.0) / 100.0 * r.capacity_kwh * eta * margin
    take_kwh = np.maximum(r.ceiling_pct - r.soc_pct, 0.0) / 100.0 * r.capacity_kwh / eta * margin
    # a vehicle at or below what full-power charging needs for its departure only charges
    short = ok & (floor - r.soc_pct > 0)
    need = np.where(short, -np.minimum(r.max_charge_kw, take_kwh / hours), 0.0)
    # the others lean toward the fleet's mean state of charge within the hour, at most half
    # their power, adding up to nothing so the fleet's base stays what the vehicles need
    free = ok & ~short
    mean = float(np.average(r.soc_pct[free], weights=r.capacity_kwh[free])) if free.any() else 0.0
    lean = np.where(free, (r.soc_pct - mean) / 100.0 * r.capacity_kwh, 0.0)
    lean = np.clip(lean, -0.5 * r.max_charge_kw, 0.5 * r.max_discharge_kw)
    if free.any():
        lean -= np.where(free, r.capacity_kwh, 0.0) * lean.sum() / r.capacity_kwh[free].sum()
        lean = np.clip(lean, -0.5 * r.max_charge_kw, 0.5 * r.max_discharge_kw)
    # and never more than the energy it has (or has room for) over the horizon
    lean = np.clip(lean, -take_kwh / hours, give_kwh / hours)
    base = np.trunc((need + lean) * 1000.0) / 1000.0  # whole watts, toward zero
    room = np.minimum.reduce(
        [
            r.max_discharge_kw - base,
            r.max_charge_kw + base,
            give_kwh / hours - base,
            take_kwh / hours + base,
            np.full_like(base, ramp_kw_per_min / max(signal_rate_per_min, 1e-9)),
        ]
    )
    room = np.where(free, np.maximum(room, 0.0), 0.0)
    total = float(room.sum())
    share = room * (capacity_kw / total) if total > capacity_kw else room
    share = _within_reach(r, base, share, give_kwh, take_kwh, valid, ramp_kw_per_min)
    base = np.where(ok, base, 0.0)
    # whole watts, rounded toward zero: less asked of each resource, never more
    return Participation(
        np.trunc(base * 1000.0) / 1000.0,
        np.floor(share * 1000.0) / 1000.0,
        np.where(ok, valid, 0.0),
    )


def _within_reach(
    r: RegulationResources,
    base: F8,
    share: F8,
    give_kwh: F8,
    take_kwh: F8,
    valid_s: F8,
    ramp_kw_per_min: float,
) -> F8:
    """Shares cut where a resource, ramping from what it does now to a worst case, would give
    or take more energy than it has (bisection, each resource on its own)."""
    now = r.power_kw if r.power_kw is not None else np.zeros_like(base)
    minutes = valid_s / 60.0

    def fits(p: F8) -> NDArray[np.bool_]:
        top, bottom = base + p, base - p
        given = top * minutes / 60.0 + _overshoot(now - top, ramp_kw_per_min, minutes)
        taken = -bottom * minutes / 60.0 + _overshoot(bottom - now, ramp_kw_per_min, minutes)
        return np.asarray((given <= give_kwh) & (taken <= take_kwh))

    ok = fits(share)
    if ok.all():
        return share
    lo, hi = np.zeros_like(share), share.copy()
    for _ in range(30):
        mid = (lo + hi) / 2.0
        f = fits(mid)
        lo, hi = np.where(f, mid, lo), np.where(f, hi, mid)
    return np.where(ok, share, np.floor(lo * 1000.0) / 1000.0)


@dataclass(frozen=True, slots=True)
class Sizing:
    resources: int
    for_power: int
    for_ramp: int
    for_energy: int
    ramp_rate_per_min: float  # the signal's change per minute at the percentile
    energy_kwh: float  # the most energy the signal moves one way


def signal_rate_per_min(t_s: F8, signal: F8, percentile: float = 99.0) -> float:
    """A high percentile of the signal's change over one minute."""
    step = float(np.median(np.diff(t_s)))
    lag = max(1, round(60.0 / step))
    change = np.abs(signal[lag:] - signal[:-lag])
    return float(np.percentile(change, percentile)) if change.size else 0.0


def size_fleet(
    t_s: F8,
    signal: F8,
    capacity_kw: float,
    *,
    power_kw: float,
    usable_kwh: float,
    ramp_kw_per_min: float,
    percentile: float = 99.0,
) -> Sizing:
    """How many resources of one kind (symmetric `power_kw`, `usable_kwh` each way from where
    they start) follow `capacity_kw` of this signal: enough for the power, for the signal's
    fast changes (its high-percentile change per minute × C over each one's ramp limit), and for
    the most energy it moves one way at any point (the running sum of signal × C)."""
    rate = signal_rate_per_min(t_s, signal, percentile)
    dt = np.diff(t_s, append=t_s[-1] + float(np.median(np.diff(t_s))))
    running = np.cumsum(signal * capacity_kw * dt / 3600.0)
    energy = float(np.max(np.abs(running))) if running.size else 0.0
    for_power = math.ceil(capacity_kw / power_kw)
    for_ramp = math.ceil(capacity_kw * rate / ramp_kw_per_min)
    for_energy = math.ceil(energy / usable_kwh) if usable_kwh > 0 else 0
    return Sizing(
        max(for_power, for_ramp, for_energy), for_power, for_ramp, for_energy, rate, energy
    )
