"""Availability forecast of a registered fleet from its own telemetry history.

Each resource gets a plug-in probability per local hour of week, learned from its history
(shrunk toward the fleet's profile when it has few samples), zeroed where its driver's schedule
says it is away; batteries stay. Vehicles available per interval then follow a Poisson-binomial
law, summarised by a normal approximation at each of the forecast's quantile levels
(`quantiles.QUANTILES`); power and energy scale with it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from vpp_aggregator.domain.dispatch.problem import ResourceInputs
from vpp_aggregator.domain.efficiency import one_way_efficiency
from vpp_aggregator.domain.floors import departure_floor_pct, recharge_pct_per_hour
from vpp_aggregator.domain.forecast.history import FULL, MISSING
from vpp_aggregator.domain.forecast.quantiles import Z

PRIOR_WEIGHT = 1.0  # pseudo-weeks of the fleet's profile behind each resource's own estimate


@dataclass(frozen=True, slots=True)
class Profile:
    """Per resource: plug-in probability by local hour of week, and typical SoC when plugged:
    overall, and by UTC hour of day (the overall one where an hour was never seen)."""

    p_plugged: NDArray[np.float64]  # (resources, 168); NaN in hours of week not asked for
    soc_typical: NDArray[np.float64]  # (resources,)
    samples: NDArray[np.int64]  # history samples behind each resource (in the hours asked)
    soc_by_hour: NDArray[np.float64] | None = None  # (resources, 24), by UTC hour of day

    def soc_at(self, utc_hour: NDArray[np.int64] | None) -> NDArray[np.float64]:
        """Typical SoC plugged in at intervals of these UTC hours of day, (resources,
        intervals); without hours (or an SoC by hour), the overall typical SoC, (resources,)."""
        if utc_hour is None or self.soc_by_hour is None:
            return self.soc_typical
        return self.soc_by_hour[:, np.asarray(utc_hour) % 24]


def hour_totals(hourly: NDArray[np.uint8]) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Per hour of the history, over the resources given: how many had data, and the sum of
    their shares plugged in (in FULL units, so sums over parts of a fleet add up exactly)."""
    seen = hourly != MISSING
    known = np.count_nonzero(seen, axis=0).astype(np.int64)
    plugged = np.where(seen, hourly, 0).sum(axis=0, dtype=np.int64)
    return known, plugged


def fleet_prior(
    known: NDArray[np.int64], plugged: NDArray[np.int64], how: NDArray[np.int64]
) -> NDArray[np.float64]:
    """The plug-in probability by hour of week of a group of resources (0.5 where none has
    data), from `hour_totals` over the group: the prior each member's estimate is shrunk to."""
    c = np.bincount(how, weights=known, minlength=168)[:168]
    h = np.bincount(how, weights=plugged, minlength=168)[:168] / FULL
    return np.asarray(np.where(c > 0, h / np.maximum(c, 1.0), 0.5), dtype=np.float64)


def learn_profile(
    hourly: NDArray[np.uint8],
    how: NDArray[np.int64],
    soc_when_plugged: NDArray[np.float64],
    current_soc: NDArray[np.float64],
    is_bess: NDArray[np.bool_],
    prior: NDArray[np.float64] | None = None,
    hows: NDArray[np.int64] | None = None,
    soc_by_hour: NDArray[np.float64] | None = None,
) -> Profile:
    """From each resource's hourly history (share plugged in times FULL, MISSING for no data; see
    `history`) and the local hour of week of each of those hours.

    One value per resource and clock hour, so a resource that reports every few seconds does
    not outweigh the prior more than one reporting hourly. `prior` (2, 168): the vehicles' and
    the batteries' `fleet_prior` when `hourly` is only part of the fleet; else from `hourly`.
    `hows`: the hours of week a forecast reads (default all); a day's forecast reads a seventh
    of the history, and the rest is not summed. `soc_by_hour` (resources, 24): SoC plugged in
    by UTC hour of day, NaN where unseen (`history.HourlyWindow`).
    """
    n = hourly.shape[0]
    asked = np.ones(168, dtype=bool)
    if hows is not None:
        asked[:] = False
        asked[hows] = True
    cols = np.flatnonzero(asked[how])
    order = cols[np.argsort(how[cols], kind="stable")]  # the hours read, by hour of week
    sorted_how = how[order]
    first = np.flatnonzero(np.r_[True, sorted_how[1:] != sorted_how[:-1]])
    group_of = sorted_how[first]
    read = hourly[:, order]
    seen = read != MISSING
    hits_h = np.where(seen, read, 0)
    del read
    wanted = np.flatnonzero(asked)
    at = np.searchsorted(wanted, group_of)  # each group's column among the hours of week asked
    count = np.zeros((n, wanted.size))
    hits = np.zeros((n, wanted.size))
    sizes = np.diff(np.r_[first, order.size])
    equal = order.size > 0 and bool((sizes == sizes[0]).all())
    if n and equal:  # each hour of week equally often: reshape and add
        k = int(sizes[0])
        count[:, at] = seen.reshape(n, -1, k).sum(axis=2, dtype=np.int32)
        hits[:, at] = hits_h.reshape(n, -1, k).sum(axis=2, dtype=np.int32) / FULL
    elif n and order.size:  # a clock change in the window: groups of unequal size
        count[:, at] = np.add.reduceat(seen, first, axis=1, dtype=np.int32)
        hits[:, at] = np.add.reduceat(hits_h, first, axis=1, dtype=np.int32) / FULL
    del seen, hits_h
    p = np.full((n, 168), np.nan)
    for kind in (False, True):  # vehicles learn from vehicles, batteries from batteries
        members = is_bess == kind
        if not members.any():
            continue
        fleet = (
            fleet_prior(*hour_totals(hourly[members]), how) if prior is None else prior[int(kind)]
        )[wanted]
        if members.all():  # a part of one kind, as the fleet forecast makes them
            p[:, wanted] = (hits + PRIOR_WEIGHT * fleet) / (count + PRIOR_WEIGHT)
            continue
        rows = np.flatnonzero(members)[:, None]
        p[rows, wanted] = (hits[members] + PRIOR_WEIGHT * fleet) / (count[members] + PRIOR_WEIGHT)
    soc_typ = np.where(np.isnan(soc_when_plugged), current_soc, soc_when_plugged)
    samples = count.sum(axis=1).astype(np.int64)
    soc_typ = np.nan_to_num(soc_typ, nan=50.0)
    by_hour = None
    if soc_by_hour is not None:
        by_hour = np.where(np.isnan(soc_by_hour), soc_typ[:, None], soc_by_hour)
    return Profile(p, soc_typ, samples, by_hour)


@dataclass(frozen=True, slots=True)
class IntervalForecast:
    vehicles: NDArray[np.float64]  # (intervals, len(QUANTILES)) of available resources, by level
    discharge_kw: NDArray[np.float64]
    discharge_kwh: NDArray[np.float64]
    charge_kw: NDArray[np.float64]


WEIGHTS = ("vehicles", "discharge_kw", "discharge_kwh", "charge_kw")


def forecast(
    inputs: ResourceInputs,
    profile: Profile,
    how: NDArray[np.int64],
    away: NDArray[np.bool_],
    hours: float,
    now_available: NDArray[np.bool_],
    round_trip_efficiency: float,
    first_intervals_live: int = 1,
    only: NDArray[np.bool_] | None = None,
    offset_min: float = 0.0,
    availability_scale: NDArray[np.float64] | None = None,
    utc_hour: NDArray[np.int64] | None = None,
) -> IntervalForecast:
    """`how` (and `utc_hour`, for SoC by hour of day) per interval, `away` (resources,
    intervals). The first interval(s) use live availability."""
    return from_sums(
        interval_sums(
            inputs,
            profile.p_plugged[:, how],
            profile.soc_at(utc_hour),
            away,
            hours,
            now_available,
            round_trip_efficiency,
            first_intervals_live,
            only,
            offset_min,
            availability_scale,
        )
    )


def interval_sums(
    inputs: ResourceInputs,
    p_how: NDArray[np.float64],
    soc_typical: NDArray[np.float64],
    away: NDArray[np.bool_],
    hours: float,
    now_available: NDArray[np.bool_],
    round_trip_efficiency: float,
    first_intervals_live: int = 1,
    only: NDArray[np.bool_] | None = None,
    offset_min: float = 0.0,
    availability_scale: NDArray[np.float64] | None = None,
) -> NDArray[np.float64]:
    """Per weight (`WEIGHTS`), the sums over these resources that `from_sums` turns into
    quantiles, (4, 4, intervals): sums over parts of a fleet add up to the whole fleet's, so a
    large fleet is forecast part by part. `p_how` (resources, intervals) is each resource's
    plug-in probability at each interval's hour of week; `soc_typical` its typical SoC when
    plugged in, (resources,) or at each interval (resources, intervals): a vehicle arriving low
    in the morning has less to give then than after its day's charge.

    Energy is at the grid connection and floors are `floors`'s, as in real-time capacity.
    """
    p = np.array(p_how, dtype=np.float64)  # (resources, intervals), a copy
    # Batteries do not leave: what they are now (available, or suspended/stale/locked) they stay.
    p[inputs.is_bess, :] = now_available[inputs.is_bess][:, None]
    p[away] = 0.0
    p[:, :first_intervals_live] = now_available[:, None] * (~away[:, :first_intervals_live])
    n_int = p.shape[1]
    minutes = hours * 60.0
    end_min = offset_min + minutes * np.arange(1, n_int + 1)  # interval ends, minutes from now
    start_min = end_min - minutes
    dep = inputs.departure_min[:, None]
    # A vehicle that leaves inside an interval is not available for it (docs/concepts.md, "Availability").
    p[(dep > start_min[None, :]) & (dep <= end_min[None, :])] = 0.0
    if only is not None:  # a subset of the resources (e.g. vehicles or batteries alone)
        p[~only] = 0.0
    if availability_scale is not None:  # operator events (stand-downs, site events)
        p = np.clip(p * availability_scale, 0.0, 1.0)
    cap = inputs.capacity_kwh[:, None]
    # Live SoC while it is live; the SoC a vehicle usually has when plugged in after that.
    typical = np.asarray(soc_typical, dtype=np.float64)
    typical = typical[:, None] if typical.ndim == 1 else typical
    soc = np.where(inputs.is_bess[:, None], inputs.soc_pct[:, None], typical) * np.ones((1, n_int))
    soc[:, :first_intervals_live] = inputs.soc_pct[:, None]
    # The floor at each interval's end, raised ahead of the next departure.
    recharge = recharge_pct_per_hour(
        inputs.capacity_kwh, inputs.max_charge_kw, round_trip_efficiency
    )
    floor = departure_floor_pct(
        inputs.floor_pct[:, None],
        inputs.departure_soc_pct[:, None],
        (dep - end_min[None, :]) / 60.0,
        recharge[:, None],
    )
    eta = one_way_efficiency(round_trip_efficiency)
    dis_kwh = np.maximum(soc - floor, 0.0) / 100.0 * cap * eta
    del floor
    dis_kw = np.minimum(inputs.max_discharge_kw[:, None], dis_kwh / hours)
    ch_kwh = np.maximum(inputs.ceiling_pct[:, None] - soc, 0.0) / 100.0 * cap / eta
    del soc
    ch_kw = np.minimum(inputs.max_charge_kw[:, None], ch_kwh / hours)
    del ch_kwh
    certain, possible = p >= 1.0, p > 0.0
    spread = p * (1 - p)
    out = np.empty((len(WEIGHTS), 4, n_int))
    for k, weight in enumerate((None, dis_kw, dis_kwh, ch_kw)):
        if weight is None:  # the vehicles themselves: weight one
            out[k] = [p.sum(axis=0), spread.sum(axis=0), certain.sum(axis=0), possible.sum(axis=0)]
            continue
        out[k] = [
            (p * weight).sum(axis=0),
            (spread * weight * weight).sum(axis=0),
            (weight * certain).sum(axis=0),
            (weight * possible).sum(axis=0),
        ]
    return out


def from_sums(sums: NDArray[np.float64]) -> IntervalForecast:
    """Every quantile level (`QUANTILES`) per interval from `interval_sums` (of a fleet, or
    added over its parts): available resources follow a Poisson-binomial law, summarised by a
    normal approximation; rising levels give non-decreasing figures, P50 is the mean."""

    def quantiles(s: NDArray[np.float64]) -> NDArray[np.float64]:
        mean, sd = s[0], np.sqrt(s[1])
        # The normal approximation must not leave what is possible: at least every certain
        # resource, at most every possible one (the mean lies between them).
        low, high = s[2][:, None], s[3][:, None]
        return np.asarray(
            np.clip(mean[:, None] + Z[None, :] * sd[:, None], low, high), dtype=np.float64
        )

    return IntervalForecast(**{name: quantiles(sums[k]) for k, name in enumerate(WEIGHTS)})
