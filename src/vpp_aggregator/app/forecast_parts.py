"""The fleet forecast worked through the fleet part by part, so its memory does not grow with it.

At a million resources the forecast built every per-resource matrix at once (a month of hourly
history, 168 hours of week, every interval: several of each), some 7 GB per process. Its
results are sums over resources, so each part adds its sums and nothing of size resources x
hours outlives a part. The one thing a resource needs from the rest of the fleet, the prior of
its plug-in profile (its kind's profile), comes from a first pass of per-hour totals over the
same parts, which also give the fleet's hourly series the trained model reads. Parts hold one
kind each (vehicles or batteries), so the vehicles' and batteries' sums stay apart for the model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
from numpy.typing import NDArray

from vpp_aggregator.domain.dispatch.problem import ResourceInputs
from vpp_aggregator.domain.fleet_state import FleetState
from vpp_aggregator.domain.forecast.calendar import hour_of_week
from vpp_aggregator.domain.forecast.fleet import (
    WEIGHTS,
    fleet_prior,
    hour_totals,
    interval_sums,
    learn_profile,
)
from vpp_aggregator.domain.forecast.history import HourlyWindow, PluggedHistory
from vpp_aggregator.domain.forecast.series import HourlySeries, totals_series
from vpp_aggregator.domain.schedule import away_intervals

PART_BYTES = 48 << 20  # working memory one part of the fleet may take (estimated per row)
KEEP_BYTES = 64 << 20  # first-pass history windows kept for the second (no second read)
ROUTINES_CACHED = 4096  # routines whose away-intervals one forecast keeps between parts

Extras = Callable[[ResourceInputs], tuple[NDArray[np.bool_], NDArray[np.float64] | None]]


@dataclass(frozen=True, slots=True)
class FleetSums:
    sums: NDArray[np.float64]  # (2, len(WEIGHTS), 4, intervals): vehicles', batteries' sums
    series: HourlySeries | None  # the fleet's hourly plugged-in vehicles (for the model)
    history_hours: int  # resource-hours of history behind the forecast


def part_rows(intervals: int, history_hours: int) -> int:
    """Resources per part: about a dozen float matrices of (rows, intervals) live at once in
    `interval_sums`, several of (rows, 168) in `learn_profile`, and a few bytes per history hour."""
    per_row = 8 * (12 * intervals + 6 * 168) + 4 * history_hours
    return max(256, PART_BYTES // per_row)


def parts(is_bess: NDArray[np.bool_], rows: int) -> list[NDArray[np.int64]]:
    """Indexes of the fleet in parts of at most `rows`, vehicles first, each of one kind."""
    out: list[NDArray[np.int64]] = []
    for kind in (False, True):
        idx = np.flatnonzero(is_bess == kind)
        out += [idx[a : a + rows] for a in range(0, idx.size, rows)]
    return out


def take(inputs: ResourceInputs, idx: NDArray[np.int64]) -> ResourceInputs:
    """The inputs of the resources at `idx`."""
    ids = inputs.resource_ids
    cols: dict[str, Any] = {
        f.name: getattr(inputs, f.name)[idx] for f in fields(inputs) if f.name != "resource_ids"
    }
    return ResourceInputs(resource_ids=[ids[i] for i in idx.tolist()], **cols)


def fleet_sums(
    history: PluggedHistory,
    inputs: ResourceInputs,
    now_h: int,
    zone: ZoneInfo,
    interval_how: NDArray[np.int64],
    interval_hour: NDArray[np.int64],
    extras: Extras,
    hours_per_interval: float,
    round_trip_efficiency: float,
    offset_min: float,
    rows: int | None = None,
) -> FleetSums:
    """The forecast's sums over the fleet, `rows` resources at a time (default `part_rows`).
    `interval_how`: each interval's local hour of week; `interval_hour`: its UTC hour of day.

    A part's history window is read whole in the first pass (the fleet's hourly totals) and again
    in the second unless the first could keep it, then only the hours that fall on the hours of
    week of the intervals (a day's forecast reads a seventh of it). Telemetry folded in between
    the passes can then reach a part's own estimate but not yet its prior.
    """
    rows = rows or part_rows(interval_how.size, history.hours)
    split = parts(inputs.is_bess, rows)
    start_hour = now_h - history.hours
    known, plugged, samples, kept = _first_pass(history, inputs, split, now_h, KEEP_BYTES)
    mid_hour_s = np.arange(start_hour, now_h, dtype=np.float64) * 3600.0 + 1800.0
    slot_how = hour_of_week(mid_hour_s, zone)
    prior = np.stack([fleet_prior(known[k], plugged[k], slot_how) for k in (0, 1)])
    sums = np.zeros((2, len(WEIGHTS), 4, interval_how.size))
    hows = np.unique(interval_how)
    read = np.isin(slot_how, hows)  # the hours of the window those are learned from
    for j, idx in enumerate(split):
        part = take(inputs, idx)
        window: HourlyWindow | None = kept.pop(j, None)
        if window is None:
            window = history.window(part.resource_ids, now_h, read)
        profile = learn_profile(
            window.raw,
            slot_how,
            window.soc_when_plugged,
            part.soc_pct,
            part.is_bess,
            prior,
            hows,
            window.soc_by_hour,
        )
        del window
        away, scale = extras(part)
        sums[int(part.is_bess[0])] += interval_sums(
            part,
            profile.p_plugged[:, interval_how],
            profile.soc_at(interval_hour),
            away,
            hours_per_interval,
            part.available,
            round_trip_efficiency,
            offset_min=offset_min,
            availability_scale=scale,
        )
    return FleetSums(sums, totals_series(start_hour, known[0], plugged[0]), samples)


def part_extras(
    state: FleetState,
    events: list[dict[str, Any]],
    start: datetime,
    step: timedelta,
    count: int,
) -> Extras:
    """Per part: where each resource's driver schedule has it away in each interval (worked out
    once per routine, not per resource), and the operator events' availability factors (None
    without events)."""
    mids = np.array([(start + i * step).timestamp() for i in range(count)])
    mids += step.total_seconds() / 2
    end = start + count * step
    gone_of: dict[int, NDArray[np.bool_]] = {}

    def gone(rid: int, routines: list[Any]) -> NDArray[np.bool_]:
        row = gone_of.get(rid)
        if row is None:
            schedule, trips = routines[rid]
            row = np.zeros(count, dtype=bool)
            for a, b in away_intervals(schedule, trips, start, end):
                row |= (mids >= a) & (mids < b)
            if len(gone_of) < ROUTINES_CACHED:
                gone_of[rid] = row
        return row

    def extras(part: ResourceInputs) -> tuple[NDArray[np.bool_], NDArray[np.float64] | None]:
        n = len(part.resource_ids)
        away = np.zeros((n, count), dtype=bool)
        routine_of, routines = state.routine_index(part.resource_ids)
        has = routine_of >= 0
        shared, which = np.unique(routine_of[has], return_inverse=True)
        if shared.size:
            away[has] = np.stack([gone(rid, routines) for rid in shared.tolist()])[which]
        if not events:
            return away, None
        scale = np.ones((n, count))
        nodes = state.grid_nodes_of(part.resource_ids)
        for ev_ in events:
            in_time = (mids >= ev_["start_at"].timestamp()) & (mids < ev_["end_at"].timestamp())
            who = np.array([ev_["grid_node"] in (None, node) for node in nodes], dtype=bool)
            scale[np.ix_(who, in_time)] *= float(ev_["availability_factor"])
        return away, scale

    return extras


def _first_pass(
    history: PluggedHistory,
    inputs: ResourceInputs,
    split: list[NDArray[np.int64]],
    now_h: int,
    keep_bytes: int,
    vehicles_only: bool = False,
) -> tuple[NDArray[np.int64], NDArray[np.int64], int, dict[int, HourlyWindow]]:
    """Per kind (vehicles, batteries) and hour of the window, how many resources reported and
    their shares plugged in summed (FULL units); the resource-hours read; and the parts'
    windows kept for a second pass, up to `keep_bytes`."""
    known = np.zeros((2, history.hours), dtype=np.int64)
    plugged = np.zeros((2, history.hours), dtype=np.int64)
    samples = 0
    kept: dict[int, HourlyWindow] = {}
    kept_bytes = 0
    for j, idx in enumerate(split):
        kind = int(inputs.is_bess[idx[0]])
        if vehicles_only and kind:
            continue
        first = history.window([inputs.resource_ids[i] for i in idx.tolist()], now_h)
        k_, p_ = hour_totals(first.raw)
        known[kind] += k_
        plugged[kind] += p_
        samples += int(first.samples.sum())
        if kept_bytes + first.raw.nbytes <= keep_bytes:
            kept[j] = first
            kept_bytes += first.raw.nbytes
        del first
    return known, plugged, samples, kept


def history_series(
    history: PluggedHistory, inputs: ResourceInputs, now_h: int, rows: int | None = None
) -> HourlySeries | None:
    """The fleet's hourly plugged-in vehicles over the history window, part by part: the series
    a model learns from, read as `fleet_sums` reads the one it is applied to."""
    split = parts(inputs.is_bess, rows or part_rows(1, history.hours))
    known, plugged, _, _ = _first_pass(history, inputs, split, now_h, 0, vehicles_only=True)
    return totals_series(now_h - history.hours, known[0], plugged[0])
