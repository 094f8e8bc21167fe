"""The fleet's floor rules, in one place (docs/concepts.md, "Floors").

The floor is the SoC a resource may not be taken below. Capacity, the forecast, the dispatch
problem and the API all ask this module, so what capacity promises near a departure is what
dispatch will allocate, and a change of rule reaches all of them at once. Pure numpy, no I/O;
every function broadcasts, so one call serves a resource, a fleet or a fleet × time grid.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from vpp_aggregator.domain.early_departures import EARLY_FLOOR_FROM, early_count
from vpp_aggregator.domain.efficiency import one_way_efficiency

F8 = NDArray[np.float64]

# A command takes effect a few seconds after it is planned, and the device runs its previous
# setpoint meanwhile: a plan that ended exactly at a floor would cross it by that much.
LATENCY_RESERVE_S = 10.0


def static_floor_pct(is_bess: ArrayLike, min_soc_pct: ArrayLike, bess_min_soc_pct: float) -> F8:
    """Floor before any departure: a battery's own minimum, but never below `VPP_BESS_MIN_SOC`
    (the setting may be raised after a battery registered); a vehicle's driver minimum."""
    own = np.asarray(min_soc_pct, dtype=np.float64)
    return np.where(is_bess, np.maximum(own, bess_min_soc_pct), own)


def early_leaver_floor_pct(
    static_pct: F8,
    departure_soc_pct: ArrayLike,
    departure_ts: ArrayLike,
    early_bits: NDArray[np.uint16],
    floor_from: int = EARLY_FLOOR_FROM,
) -> F8:
    """Floor before any departure of a vehicle whose driver left early in `floor_from` or more
    of their last stays (`early_departures`; 0: every vehicle): the whole need of its next
    departure, for the whole stay. Such a driver may unplug hours before the time they gave,
    with what the vehicle holds then, so the vehicle serves only with charge beyond that need,
    and below it its own charging is not held up. Others keep the static floor (raised toward a
    departure by `departure_floor_pct` as for every vehicle)."""
    if floor_from > 0 and not early_bits.any():  # the common case, read on every refresh
        return static_pct
    risky = (early_count(early_bits) >= floor_from) & np.isfinite(departure_ts)
    return np.where(
        risky, np.maximum(static_pct, np.asarray(departure_soc_pct, np.float64)), static_pct
    )


def recharge_pct_per_hour(
    capacity_kwh: ArrayLike, max_charge_kw: ArrayLike, round_trip_efficiency: float
) -> F8:
    """SoC a vehicle regains per hour charging at full power: what reaches the cells, after the
    charging losses (a floor that ignored them would let a vehicle leave short of its need)."""
    cells_kw = one_way_efficiency(round_trip_efficiency) * np.asarray(max_charge_kw, np.float64)
    return np.asarray(cells_kw / np.asarray(capacity_kwh, np.float64) * 100.0)


def departure_floor_pct(
    static_pct: ArrayLike,
    departure_soc_pct: ArrayLike,
    hours_before_departure: ArrayLike,
    recharge_pct_per_h: ArrayLike,
) -> F8:
    """Floor at a moment `hours_before_departure` ahead of the next departure (+inf: none; at or
    past it, no time is left): the static floor, raised so that charging at full power from
    that moment still reaches `departure_soc_pct` by the time the vehicle leaves."""
    hours = np.asarray(hours_before_departure, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        raised = np.asarray(departure_soc_pct) - np.asarray(recharge_pct_per_h) * np.maximum(
            hours, 0.0
        )
    return np.maximum(static_pct, np.where(np.isfinite(hours), raised, -np.inf))


def raise_lead_hours(
    static_pct: ArrayLike, departure_soc_pct: ArrayLike, recharge_pct_per_h: ArrayLike
) -> F8:
    """How long before a departure the raised floor climbs above the static one (0 when the
    departure needs no more than the static floor). Inside that lead the floor rises at
    `recharge_pct_per_h`."""
    gap_pct = np.maximum(
        np.asarray(departure_soc_pct, np.float64) - np.asarray(static_pct, np.float64), 0.0
    )
    # A resource that cannot charge (0 kW) is raised from any distance (+inf), or not at all.
    with np.errstate(divide="ignore", invalid="ignore"):
        lead = gap_pct / np.asarray(recharge_pct_per_h, np.float64)
    return np.asarray(np.where(gap_pct > 0.0, lead, 0.0))


def latency_reserve_pct(
    capacity_kwh: ArrayLike, max_kw: ArrayLike, round_trip_efficiency: float
) -> F8:
    """SoC a resource moves in `LATENCY_RESERVE_S` at full power through its cells (about
    0.15 % of a battery at a C-rate of 0.5): the margin every dispatch plan keeps above a floor
    (and below a ceiling), so a command that takes effect late cannot carry the device across
    it. Capacity reports energy down to the floor itself (the design's formula); a dispatch that
    drains a resource delivers that much less."""
    cells_kw = np.asarray(max_kw, np.float64) / one_way_efficiency(round_trip_efficiency)
    return np.asarray(cells_kw * LATENCY_RESERVE_S / 3600.0 / np.asarray(capacity_kwh) * 100.0)
