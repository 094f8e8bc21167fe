"""Capacity maths (docs/concepts.md, "Capacity"), vectorised over columnar fleet state.

One function computes every resource's contribution for a window and, alongside it, the
earliest time at which that contribution could change with no new telemetry (staleness,
the departure raise of the floor, a departure inside the window). The fleet state uses that
time to re-evaluate only the resources that need it, so a read does not recompute the fleet.

Energy figures are at the grid connection, as dispatch delivers it: cell energy above the floor
times the discharge efficiency, headroom divided by the charge efficiency (`efficiency`). The
floor, raised ahead of a departure, is `floors`'s.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np
from numpy.typing import NDArray

from vpp_aggregator.domain.efficiency import one_way_efficiency
from vpp_aggregator.domain.floors import (
    departure_floor_pct,
    raise_lead_hours,
    recharge_pct_per_hour,
)

F8 = NDArray[np.float64]
B1 = NDArray[np.bool_]

# Columns of a contribution row.
GROSS_KWH, DISCHARGE_KWH, DISCHARGE_KW, CHARGE_KWH, CHARGE_KW, N_AVAILABLE, N_RESOURCES = range(7)
N_COLUMNS = 7


@dataclass(frozen=True, slots=True)
class ResourceColumns:
    """Per-resource inputs of the capacity formulas, one entry per resource."""

    capacity_kwh: F8
    soc_pct: F8  # NaN when no telemetry yet
    floor_pct: F8  # static floor: BESS max(VPP_BESS_MIN_SOC, own min); EV driver minimum
    ceiling_pct: F8
    max_discharge_kw: F8
    max_charge_kw: F8
    departure_ts: F8  # epoch s of the next departure; +inf when none (always +inf for BESS)
    departure_soc_pct: F8  # SoC needed at that departure
    telemetry_ts: F8  # epoch s of the latest sample; -inf when none
    active: B1  # registered (present) and status active
    plugged: B1
    discharge_locked: B1  # safety lockout: may charge, may not discharge


class Unavailable(StrEnum):
    """Why a resource cannot respond over a window, the first rule it fails in this order."""

    SUSPENDED = "suspended"  # not active (suspended or deactivated)
    NO_TELEMETRY = "no_telemetry"
    STALE_TELEMETRY = "stale_telemetry"
    UNPLUGGED = "unplugged"
    DEPARTING = "departing"  # leaves before the window ends


REASONS = (None, *Unavailable)  # code 0: available; code k: REASONS[k]


def unavailability(
    cols: ResourceColumns, now_ts: float, window_s: float, stale_s: float
) -> NDArray[np.int8]:
    """Per resource, 0 when it can respond over [now, now + window] (docs/concepts.md,
    "Availability"), else the index in `REASONS` of the first rule it fails."""
    no_soc = np.isnan(cols.soc_pct) | ~np.isfinite(cols.telemetry_ts)
    failed = [
        ~cols.active,
        no_soc,
        cols.telemetry_ts < now_ts - stale_s,
        ~cols.plugged,
        cols.departure_ts <= now_ts + window_s,
    ]
    return np.asarray(np.select(failed, np.arange(1, len(failed) + 1), 0), dtype=np.int8)


def availability(cols: ResourceColumns, now_ts: float, window_s: float, stale_s: float) -> B1:
    """Real-time availability factor, 0 or 1: no rule of `unavailability` failed."""
    return np.asarray(unavailability(cols, now_ts, window_s, stale_s) == 0)


def contributions(
    cols: ResourceColumns,
    now_ts: float,
    window_s: float,
    stale_s: float,
    round_trip_efficiency: float,
) -> tuple[NDArray[np.float64], NDArray[np.float64], F8]:
    """Each resource's capacity contribution over [now, now + window], how it moves, and until when.

    Returns `(values, slopes, next_change)`: values of shape (n, N_COLUMNS) at `now_ts`; slopes of
    shape (n, 2), the exact rate of change per second of DISCHARGE_KWH and DISCHARGE_KW (non-zero
    only while a departure raises the floor, where both fall linearly); and the time until which
    `values + slopes * (t - now_ts)` stays exact. Past it the resource must be re-evaluated.
    """
    n = cols.capacity_kwh.shape[0]
    window_h = window_s / 3600.0
    window_end = now_ts + window_s
    eta = one_way_efficiency(round_trip_efficiency)
    a = availability(cols, now_ts, window_s, stale_s)
    soc = np.where(a, cols.soc_pct, 0.0)
    recharge = recharge_pct_per_hour(cols.capacity_kwh, cols.max_charge_kw, round_trip_efficiency)
    hours_after_window = (cols.departure_ts - window_end) / 3600.0
    floor = departure_floor_pct(
        cols.floor_pct, cols.departure_soc_pct, hours_after_window, recharge
    )
    out = np.empty((n, N_COLUMNS), dtype=np.float64)
    scale = np.where(a, cols.capacity_kwh / 100.0, 0.0)  # cell kWh per percentage point
    out[:, GROSS_KWH] = soc * scale
    dis_kwh = out[:, DISCHARGE_KWH]  # at the grid: cell energy above the floor, after losses
    np.multiply(np.maximum(soc - floor, 0.0), scale * eta * ~cols.discharge_locked, out=dis_kwh)
    cap_kwh = cols.max_discharge_kw * window_h  # energy at which power stops being the limit
    np.minimum(cols.max_discharge_kw * a, dis_kwh / window_h, out=out[:, DISCHARGE_KW])
    # At the grid: what it takes to fill the headroom, losses included.
    np.multiply(np.maximum(cols.ceiling_pct - soc, 0.0), scale / eta, out=out[:, CHARGE_KWH])
    np.minimum(cols.max_charge_kw * a, out[:, CHARGE_KWH] / window_h, out=out[:, CHARGE_KW])
    out[:, N_AVAILABLE] = a
    out[:, N_RESOURCES] = 1.0

    # Inside the raise zone the floor climbs `recharge` points per hour, so the energy at the grid
    # falls at Pc * round-trip efficiency kWh per hour.
    dep = np.isfinite(cols.departure_ts)
    lead_h = raise_lead_hours(cols.floor_pct, cols.departure_soc_pct, recharge)
    zone_start = cols.departure_ts - window_s - np.where(dep, lead_h, 0.0) * 3600.0
    in_zone = a & (now_ts >= zone_start)
    falling = in_zone & (dis_kwh > 0.0)
    rate = np.where(falling, recharge * scale * eta / 3600.0, 0.0)  # kWh per second
    power_capped = dis_kwh >= cap_kwh
    slopes = np.zeros((n, 2), dtype=np.float64)
    slopes[:, 0] = -rate
    slopes[:, 1] = np.where(power_capped, 0.0, -rate / window_h)
    with np.errstate(divide="ignore", invalid="ignore"):
        t_zero = np.where(falling, now_ts + dis_kwh / rate, np.inf)
        t_uncap = np.where(falling & power_capped, now_ts + (dis_kwh - cap_kwh) / rate, np.inf)

    stale_at = cols.telemetry_ts + stale_s
    departs_at = cols.departure_ts - window_s  # from then on it leaves inside the window
    departing = cols.departure_ts <= window_end
    next_change = np.minimum(np.minimum(stale_at, departs_at), np.minimum(t_zero, t_uncap))
    next_change = np.where(in_zone, next_change, np.minimum(next_change, zone_start))
    # An overdue vehicle (still plugged in past its departure) changes only with its telemetry.
    next_change = np.where(
        departing, np.where(cols.departure_ts > now_ts, cols.departure_ts, np.inf), next_change
    )
    next_change = np.where(a | departing, next_change, np.inf)
    return out, slopes, next_change
