"""The fleet as numpy columns, one row per resource: registration facts, latest telemetry,
departure routines, and the lookups every view of the fleet needs (rows, groups, nodes, fleets)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
from numpy.typing import NDArray

from vpp_aggregator.domain.capacity import ResourceColumns
from vpp_aggregator.domain.early_departures import EARLY_FLOOR_FROM, left_early, remember
from vpp_aggregator.domain.fleet_scan import id_chunks, locked_chunks
from vpp_aggregator.domain.floors import early_leaver_floor_pct
from vpp_aggregator.domain.id_index import IdIndex, grown_rows
from vpp_aggregator.domain.resources import RecurringDeparture, Resource, ResourceType, Trip
from vpp_aggregator.domain.schedule import next_departure
from vpp_aggregator.domain.window_view import N_COEF, WindowView

I8 = NDArray[np.int64]
F8 = NDArray[np.float64]

MAX_WINDOW_VIEWS = 4
RACE_TOLERANCE_S = 5.0
LOCKOUT_HYSTERESIS_PCT = 1.0
RESUM_AFTER_UPDATES_PER_ROW = 64

TYPES = (ResourceType.EV, ResourceType.BESS)

# How far reported power may exceed a resource's registered limits (meter noise, brief overshoot).
POWER_MARGIN = 0.10
POWER_MARGIN_KW = 1.0


class FleetColumns:
    """Thread-safe columnar fleet state; the single source of real-time capacity."""

    capacity_kwh: F8
    soc_pct: F8
    floor_pct: F8
    ceiling_pct: F8
    max_discharge_kw: F8
    max_charge_kw: F8
    departure_ts: F8
    departure_soc_pct: F8
    telemetry_ts: F8
    power_kw: F8
    present: NDArray[np.bool_]
    status_active: NDArray[np.bool_]
    plugged: NDArray[np.bool_]
    is_bess: NDArray[np.bool_]
    group: NDArray[np.int32]
    routine: NDArray[np.int32]
    row_gen: NDArray[np.uint32]  # bumped each time a row is given to a resource
    dirty: NDArray[np.bool_]  # live telemetry not yet snapshotted to the store
    discharge_locked: NDArray[np.bool_]  # BESS seen below its floor: no discharge until recovered
    early_bits: NDArray[np.uint16]  # which of its last stays ended early (early_departures)

    def __init__(
        self,
        *,
        bess_min_soc_pct: float,
        stale_seconds: float,
        round_trip_efficiency: float,
        initial_rows: int = 1024,
        need_floor_early_leaves: int = EARLY_FLOOR_FROM,
    ) -> None:
        self.bess_min_soc_pct = bess_min_soc_pct
        self.need_floor_early_leaves = need_floor_early_leaves
        self.round_trip_efficiency = round_trip_efficiency  # capacity is stated at the grid
        self.stale_seconds = stale_seconds
        self._lock = threading.RLock()
        self._n = 0
        self._alloc(max(16, initial_rows))
        self._index = IdIndex()  # resource id <-> row
        self._free: list[int] = []
        self._routines: list[tuple[tuple[RecurringDeparture, ...], tuple[Trip, ...]]] = []
        self._routine_ids: dict[tuple[tuple[RecurringDeparture, ...], tuple[Trip, ...]], int] = {}
        self._group_of_key: dict[tuple[int, str, str], int] = {}
        self._group_type: list[int] = []
        self._group_node: list[str] = []
        self._group_fleet: list[str] = []
        self._views: OrderedDict[float, WindowView] = OrderedDict()
        self._charge_points: dict[str, str] = {}  # only where it differs from the resource id
        self.version = 0  # bumped on every change of inputs; lets readers cache answers
        self.removals = 0  # rows freed: a pass in chunks that saw one looks for an id twice

    # ----------------------------------------------------------------- storage

    def _alloc(self, rows: int) -> None:
        def grow(name: str, fill: float | bool | int, dtype: type) -> None:
            new: NDArray[Any] = np.full(rows, fill, dtype=dtype)
            old = getattr(self, name, None)
            if old is not None:
                new[: old.shape[0]] = old
            setattr(self, name, new)

        for name, fill in (
            ("capacity_kwh", 1.0),
            ("soc_pct", np.nan),
            ("floor_pct", 0.0),
            ("ceiling_pct", 100.0),
            ("max_discharge_kw", 0.0),
            ("max_charge_kw", 1.0),
            ("departure_ts", np.inf),
            ("departure_soc_pct", 0.0),
            ("telemetry_ts", -np.inf),
            ("power_kw", np.nan),
        ):
            grow(name, fill, np.float64)
        grow("present", False, np.bool_)
        grow("status_active", False, np.bool_)
        grow("plugged", False, np.bool_)
        grow("is_bess", False, np.bool_)
        grow("group", 0, np.int32)
        grow("routine", -1, np.int32)
        grow("row_gen", 0, np.uint32)
        grow("dirty", False, np.bool_)
        grow("discharge_locked", False, np.bool_)
        grow("early_bits", 0, np.uint16)
        self._rows = rows
        for view in getattr(self, "_views", {}).values():
            view.resize(rows)

    def _columns(self, rows: I8 | slice) -> ResourceColumns:
        return ResourceColumns(
            capacity_kwh=self.capacity_kwh[rows],
            soc_pct=self.soc_pct[rows],
            floor_pct=self.floor_of(rows),
            ceiling_pct=self.ceiling_pct[rows],
            max_discharge_kw=self.max_discharge_kw[rows],
            max_charge_kw=self.max_charge_kw[rows],
            departure_ts=self.departure_ts[rows],
            departure_soc_pct=self.departure_soc_pct[rows],
            telemetry_ts=self.telemetry_ts[rows],
            active=self.present[rows] & self.status_active[rows],
            plugged=self.plugged[rows],
            discharge_locked=self.discharge_locked[rows],
        )

    def _group(self, rtype: ResourceType, node: str, fleet: str) -> int:
        key = (TYPES.index(rtype), node, fleet)
        gid = self._group_of_key.get(key)
        if gid is None:
            gid = len(self._group_type)
            self._group_of_key[key] = gid
            self._group_type.append(key[0])
            self._group_node.append(node)
            self._group_fleet.append(fleet)
            for view in self._views.values():
                view.group_sums = np.vstack([view.group_sums, np.zeros((1, N_COEF))])
        return gid

    # ----------------------------------------------------------------- views

    def _detach(self, row: int) -> None:
        """Take a row's contribution out of its group before its group or presence changes."""
        one = slice(row, row + 1)
        for view in self._views.values():
            view.group_sums[self.group[row]] -= view.coef(one)[0]
            view.put(one, np.zeros((1, N_COEF)))
            view.next_change[row] = np.inf

    def _routine(self, resource: Resource) -> int:
        """Intern a resource's departure routine; fleets share a handful, so rows store an index."""
        if not (resource.departure_schedule or resource.trips):
            return -1
        key = (resource.departure_schedule, resource.trips)
        rid = self._routine_ids.get(key)
        if rid is None:
            rid = len(self._routines)
            self._routines.append(key)
            self._routine_ids[key] = rid
        return rid

    def _roll_departures(self, rows: I8, now_ts: float) -> None:
        """Move rows whose departure has passed on to their next one; a vehicle still plugged in
        past its departure stays overdue (docs/concepts.md, "Floors"). A row whose departure
        is -inf (just registered or changed) always moves on."""
        rows = rows[~self.plugged[rows] | (self.departure_ts[rows] == -np.inf)]
        if rows.size == 0:
            return
        after = datetime.fromtimestamp(now_ts, tz=UTC)
        routine = self.routine[rows]
        for rid in np.unique(routine).tolist():
            hit = rows[routine == rid]
            schedule, trips = self._routines[rid] if rid >= 0 else ((), ())
            nxt = next_departure(schedule, trips, after) if rid >= 0 else None
            self.departure_ts[hit] = nxt.at.timestamp() if nxt else np.inf
            self.departure_soc_pct[hit] = nxt.required_soc_pct if nxt else 0.0

    def floor_of(self, rows: I8 | slice) -> F8:
        """The floor before any departure the fleet plans with: the static one, or for a vehicle
        whose driver leaves early, its next trip's need (`floors.early_leaver_floor_pct`)."""
        return early_leaver_floor_pct(
            self.floor_pct[rows],
            self.departure_soc_pct[rows],
            self.departure_ts[rows],
            self.early_bits[rows],
            self.need_floor_early_leaves,
        )

    def _note_unplugs(self, rows: I8, plugged_now: NDArray[np.bool_], sample_ts: F8) -> None:
        """Remember whether vehicles just seen unplugged left well before their departure."""
        gone = self.plugged[rows] & ~plugged_now & np.isfinite(self.departure_ts[rows])
        if gone.any():
            r = rows[gone]
            early = left_early(self.departure_ts[r], sample_ts[gone])
            self.early_bits[r] = remember(self.early_bits[r], early)

    # ----------------------------------------------------------------- registry

    def _new_row(self) -> int:
        """A free row for a new resource; the caller gives it the resource's id (`_index.add`)."""
        if self._free:
            row = self._free.pop()
        else:
            if self._n == self._rows:
                self._alloc(grown_rows(self._rows, self._n + 1))
            row = self._n
            self._n += 1
        self.row_gen[row] += 1
        return row

    def _remove_row(self, row: int) -> None:
        self.version += 1
        self.removals += 1
        self._detach(row)
        self._index.remove(row)
        self.present[row] = False
        self.status_active[row] = False
        self.plugged[row] = False
        self.soc_pct[row] = np.nan
        self.power_kw[row] = np.nan
        self.telemetry_ts[row] = -np.inf
        self.departure_ts[row] = np.inf
        self.routine[row] = -1
        self.discharge_locked[row] = False
        self.early_bits[row] = 0
        self._free.append(row)

    def __contains__(self, resource_id: str) -> bool:
        with self._lock:
            return bool(self._index.rows([resource_id])[0] >= 0)

    def resource_ids(self) -> list[str]:
        """Every resource in the live state (registered and not removed), in row order."""
        with self._lock:
            return self._index.ids(self._index.live_rows())

    def __len__(self) -> int:
        return len(self._index)

    def rows_of(self, resource_ids: Sequence[str]) -> I8:
        """Row index per id, -1 where the resource is unknown or deactivated."""
        with self._lock:
            return self._index.rows(resource_ids)

    def ids_of(self, rows: I8) -> list[str]:
        """The resource id of each row."""
        with self._lock:
            return self._index.ids(rows)

    # ----------------------------------------------------------------- telemetry

    def power_within_limits(self, rows: I8, power_kw: F8) -> NDArray[np.bool_]:
        """A reported power a resource can physically have: within its registered limits, with
        a margin for meter noise (unknown rows pass; they are refused for being unknown)."""
        known = rows >= 0
        r = np.where(known, rows, 0)
        ok = (power_kw <= self.max_discharge_kw[r] * (1 + POWER_MARGIN) + POWER_MARGIN_KW) & (
            -power_kw <= self.max_charge_kw[r] * (1 + POWER_MARGIN) + POWER_MARGIN_KW
        )
        return ok | ~known

    def history_rows(
        self,
        resource_ids: Sequence[str],
        _create: bool = False,
        found: tuple[I8, NDArray[np.uint32]] | None = None,
    ) -> tuple[I8, NDArray[np.uint32]]:
        """Rows (-1: unknown) and their generations, for per-resource data kept beside the state
        (the forecast's history) without a second index of the ids. `found`: what this returned
        for these ids a moment ago (telemetry ingest), checked instead of looked up again (the
        lookup is the costly part): a row since removed or given to another resource is -1."""
        if found is not None:
            was, gen = found
            r = np.maximum(was, 0)
            with self._lock:
                held = (was >= 0) & self.present[r] & (self.row_gen[r] == gen)
            return np.where(held, was, -1), gen
        rows: list[I8] = [np.zeros(0, np.int64)]
        gens: list[NDArray[np.uint32]] = [self.row_gen[:0]]
        for chunk in id_chunks(resource_ids):  # a chunk per hold of the lock
            with self._lock:
                rows.append(self.rows_of(list(chunk)))
                gens.append(self.row_gen[np.maximum(rows[-1], 0)])
        return np.concatenate(rows), np.concatenate(gens)

    def routine_index(
        self, resource_ids: Sequence[str]
    ) -> tuple[NDArray[np.int64], list[tuple[tuple[RecurringDeparture, ...], tuple[Trip, ...]]]]:
        """Each resource's interned routine (-1: none) and the routines, so work done per
        routine is done once for every resource sharing it."""
        ids: list[NDArray[np.int64]] = [np.zeros(0, np.int64)]
        for chunk in id_chunks(resource_ids):  # a chunk per hold of the lock
            with self._lock:
                rows = self.rows_of(list(chunk))
                ids.append(np.where(rows >= 0, self.routine[np.maximum(rows, 0)], -1))
        with self._lock:  # routines are only added: this covers every index read above
            return np.concatenate(ids).astype(np.int64), list(self._routines)

    def resource_of_charge_point(self, charge_point_id: str) -> str | None:
        """The live resource behind a charge point (its id is the charge point by default)."""
        with self._lock:
            for rid, cp in self._charge_points.items():
                if cp == charge_point_id and rid in self:
                    return rid
            return charge_point_id if charge_point_id in self else None

    def charge_point(self, resource_id: str) -> str:
        return self._charge_points.get(resource_id, resource_id)

    def grid_nodes_of(self, resource_ids: Sequence[str]) -> list[str]:
        with self._lock:
            rows = self.rows_of(list(resource_ids))
            return [self._group_node[int(self.group[r])] if r >= 0 else "" for r in rows.tolist()]

    def grid_nodes(self, fleet_id: str | None = None) -> set[str]:
        """Grid nodes with a registered resource (of `fleet_id`'s, when given: to a fleet, a node
        only other fleets use does not exist)."""
        used = np.zeros(0, dtype=bool)
        for sl in locked_chunks(self._lock, lambda: self._n, event=True):
            here = np.bincount(self.group[sl][self.present[sl]], minlength=len(self._group_type))
            used = np.concatenate([used, np.zeros(here.size - used.size, dtype=bool)])
            used |= here > 0
        with self._lock:
            return {
                self._group_node[g]
                for g in np.flatnonzero(used).tolist()
                if fleet_id is None or self._group_fleet[g] == fleet_id
            }

    def in_fleet(self, resource_ids: Sequence[str], fleet_id: str | None) -> list[bool]:
        """Whether each resource is registered (and in `fleet_id`, when given)."""
        with self._lock:
            rows = self.rows_of(list(resource_ids)).tolist()
            return [
                r >= 0 and (fleet_id is None or self._group_fleet[int(self.group[r])] == fleet_id)
                for r in rows
            ]

    def counts_by_type(self) -> dict[str, int]:
        with self._lock:
            n = self._n
            present = self.present[:n]
            bess = int(np.count_nonzero(present & self.is_bess[:n]))
            return {"EV": int(np.count_nonzero(present)) - bess, "BESS": bess}

    def take_dirty(self) -> tuple[list[str], I8, F8, F8, NDArray[np.bool_], F8]:
        """Rows whose telemetry changed since the last call: ids, rows, ts, soc, plugged, power.
        In chunks (`fleet_scan`): a row's values are read as its flag is cleared, so a sample
        applied meanwhile is in this snapshot or left dirty for the next."""
        ids: list[str] = []
        none = np.zeros(0, np.int64)
        parts = [
            (none, self.telemetry_ts[none], self.soc_pct[none], self.plugged[none], none * 0.0)
        ]
        for sl in locked_chunks(self._lock, lambda: self._n):
            rows = sl.start + np.flatnonzero(self.dirty[sl] & self.present[sl])
            self.dirty[rows] = False
            ids += self._index.ids(rows)
            parts.append(
                (
                    rows,
                    self.telemetry_ts[rows],
                    self.soc_pct[rows],
                    self.plugged[rows],
                    np.nan_to_num(self.power_kw[rows]),
                )
            )
        r, ts, soc, plugged, power = (np.concatenate(c) for c in zip(*parts, strict=True))
        return ids, r, ts, soc, plugged, power

    def mark_dirty(self, rows: I8) -> None:
        """Give rows back to the next snapshot (the last one could not be stored)."""
        with self._lock:
            self.dirty[rows] = True

    def lockouts(self) -> list[str]:
        """Resources currently locked out of discharge by the BESS safety monitor."""
        with self._lock:
            rows = np.flatnonzero(self.discharge_locked[: self._n] & self.present[: self._n])
            return self._index.ids(rows)
