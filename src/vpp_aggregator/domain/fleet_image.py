"""The live fleet state as plain columns and tables, and back: what a restart restores in seconds
instead of rebuilding a million resources one registry row at a time.

An image holds the present rows only (packed, in row order), the interned tables the rows point
into (groups, departure routines) and the charge points. Derived values (departures, capacity
views) are not kept: they are recomputed from the image at restore time.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
from numpy.typing import NDArray

from vpp_aggregator.domain.fleet_columns import TYPES, FleetColumns
from vpp_aggregator.domain.fleet_scan import last_of_each, locked_chunks
from vpp_aggregator.domain.resources import RecurringDeparture, ResourceType, Trip

# Per-row columns an image carries; the rest of the state follows from them.
COLUMNS = (
    "capacity_kwh",
    "soc_pct",
    "floor_pct",
    "ceiling_pct",
    "max_discharge_kw",
    "max_charge_kw",
    "telemetry_ts",
    "power_kw",
    "status_active",
    "plugged",
    "is_bess",
    "group",
    "routine",
    "dirty",
    "discharge_locked",
    "early_bits",  # learnt from past stays: nothing else can restore it
)

Routine = tuple[tuple[RecurringDeparture, ...], tuple[Trip, ...]]


@dataclass(frozen=True, slots=True)
class FleetImage:
    """A copy of the live state at `taken_at`, detached from it (safe to encode without a lock)."""

    taken_at: datetime
    resource_ids: list[str]
    columns: dict[str, NDArray[Any]]  # each of COLUMNS, one value per resource id
    groups: list[tuple[str, str, str]]  # (resource type, grid node, fleet id) per group index
    routines: list[Routine]
    charge_points: dict[str, str]
    bess_min_soc_pct: float  # the rule the floors were computed under

    def fits(self, state: FleetColumns) -> bool:
        """Whether the image was taken under the rules `state` has (floors depend on them)."""
        return self.bess_min_soc_pct == state.bess_min_soc_pct

    def __len__(self) -> int:
        return len(self.resource_ids)


def take_image(state: FleetColumns, at: datetime) -> FleetImage:
    """Copy the present rows, a chunk at a time (`fleet_scan`: the lock is let go between chunks).

    Not one instant: each row is as it was when its chunk was copied, and a resource moved to
    another row meanwhile is kept once (its later copy). That is enough because a restore takes
    in every registry change and sample since `at` (less a margin) after the image, and `at` is
    read before the first chunk."""
    ids: list[str] = []
    parts: list[dict[str, NDArray[Any]]] = []
    removals = state.removals
    for sl in locked_chunks(state._lock, lambda: state._n):
        rows = sl.start + np.flatnonzero(state.present[sl])
        parts.append({name: getattr(state, name)[rows] for name in COLUMNS})
        ids += state.ids_of(rows)
    with state._lock:  # the tables only grow: these cover every row copied above
        groups = [
            (TYPES[t].value, node, fleet)
            for t, node, fleet in zip(
                state._group_type, state._group_node, state._group_fleet, strict=True
            )
        ]
        routines = list(state._routines)
        charge_points = dict(state._charge_points)
    columns = {
        name: np.concatenate([getattr(state, name)[:0], *(p[name] for p in parts)])
        for name in COLUMNS
    }
    keep = last_of_each(ids) if state.removals != removals else None
    if keep is not None:  # moved between chunks: its later copy
        columns = {name: col[keep] for name, col in columns.items()}
        ids = [ids[i] for i in keep]
    return FleetImage(
        at.astimezone(UTC),
        ids,
        columns,
        groups,
        routines,
        charge_points,
        state.bess_min_soc_pct,
    )


def restore_image(state: FleetColumns, image: FleetImage, now: datetime) -> None:
    """Load an image into an empty state; departures are rolled on to their next one after `now`."""
    n = len(image)
    with state._lock:
        if len(state) or state._n:
            raise ValueError("an image is restored into an empty fleet state only")
        if not image.fits(state):
            raise ValueError("the image was taken under another VPP_BESS_MIN_SOC")
        if len(set(image.resource_ids)) != n:
            raise ValueError("an image names a resource twice")
        if n > state._rows:
            state._alloc(n)
        for name in COLUMNS:
            getattr(state, name)[:n] = image.columns[name]
        state.present[:n] = True
        state._n = n
        state._index.add(image.resource_ids, np.arange(n, dtype=np.int64))
        for rtype, node, fleet in image.groups:
            state._group(ResourceType(rtype), node, fleet)
        for routine in image.routines:
            state._routine_ids[routine] = len(state._routines)
            state._routines.append(routine)
        state._charge_points = dict(image.charge_points)
        state.departure_ts[:n] = -np.inf  # rolled on to the next departure after now
        state._roll_departures(np.arange(n, dtype=np.int64), now.timestamp())
        state.version += 1
