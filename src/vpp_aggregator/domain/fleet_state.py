"""Live, columnar state of the whole fleet and incrementally maintained capacity aggregates.

Resources live in numpy columns (one row each). For every window length that is being asked
about, a `_WindowView` keeps each row's contribution and running sums per group
(resource type x grid node x fleet). Telemetry and registry changes re-evaluate only the rows
they touch; a read re-evaluates only the rows whose `next_change` time has come. The sums are
rebuilt from scratch now and then so floating-point drift cannot accumulate.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
from numpy.typing import NDArray

from vpp_aggregator.domain.capacity import (
    CHARGE_KW,
    CHARGE_KWH,
    DISCHARGE_KW,
    DISCHARGE_KWH,
    GROSS_KWH,
    N_AVAILABLE,
    N_COLUMNS,
    N_RESOURCES,
    ResourceColumns,
    availability,
    contributions,
)
from vpp_aggregator.domain.dispatch.problem import ResourceInputs
from vpp_aggregator.domain.floors import static_floor_pct
from vpp_aggregator.domain.resources import (
    RecurringDeparture,
    Resource,
    ResourceStatus,
    ResourceType,
    Trip,
)
from vpp_aggregator.domain.schedule import next_departure

I8 = NDArray[np.int64]
F8 = NDArray[np.float64]

MAX_WINDOW_VIEWS = 4
RACE_TOLERANCE_S = 5.0
LOCKOUT_HYSTERESIS_PCT = 1.0
RESUM_AFTER_UPDATES_PER_ROW = 64
N_COEF = N_COLUMNS + 2
TYPES = (ResourceType.EV, ResourceType.BESS)


# How far reported power may exceed a resource's registered limits (meter noise, brief overshoot).
POWER_MARGIN = 0.10
POWER_MARGIN_KW = 1.0


@dataclass(frozen=True, slots=True)
class Figures:
    """Capacity of a set of resources over one window."""

    discharge_kw: float
    discharge_kwh: float
    charge_kw: float
    charge_kwh: float
    gross_energy_kwh: float
    resource_count: int
    available_resource_count: int

    @classmethod
    def from_sums(cls, sums: F8) -> Figures:
        return cls(
            discharge_kw=max(0.0, float(sums[DISCHARGE_KW])),
            discharge_kwh=max(0.0, float(sums[DISCHARGE_KWH])),
            charge_kw=max(0.0, float(sums[CHARGE_KW])),
            charge_kwh=max(0.0, float(sums[CHARGE_KWH])),
            gross_energy_kwh=max(0.0, float(sums[GROSS_KWH])),
            resource_count=round(float(sums[N_RESOURCES])),
            available_resource_count=round(float(sums[N_AVAILABLE])),
        )


@dataclass(frozen=True, slots=True)
class CapacitySnapshot:
    as_of: datetime
    duration_minutes: float
    total: Figures
    by_type: dict[str, Figures]
    by_grid_node: dict[str, Figures]


@dataclass(frozen=True, slots=True)
class LiveState:
    """What the state knows about one resource right now."""

    soc_pct: float | None
    plugged_in: bool
    power_kw: float | None
    telemetry_at: datetime | None
    next_departure: datetime | None
    departure_soc_pct: float | None
    availability_factor: float
    availability_reason: str | None
    discharge_locked: bool = False


@dataclass(slots=True)
class _WindowView:
    """Per-row linear contributions `coef` (intercept at t_ref, then the two discharge slopes)."""

    window_s: float
    t_ref: float
    coef: NDArray[np.float64]  # (rows, N_COEF)
    next_change: F8
    group_sums: NDArray[np.float64]  # (groups, N_COEF)
    evaluated_at: float = -np.inf
    updates_since_rebuild: int = 0

    def at(self, sums: NDArray[np.float64], ts: float) -> NDArray[np.float64]:
        """Evaluate summed coefficients at time `ts`."""
        values = sums[..., :N_COLUMNS].copy()
        dt = ts - self.t_ref
        values[..., DISCHARGE_KWH] += sums[..., N_COLUMNS] * dt
        values[..., DISCHARGE_KW] += sums[..., N_COLUMNS + 1] * dt
        return values


def _coef(
    values: NDArray[np.float64], slopes: NDArray[np.float64], now_ts: float, t_ref: float
) -> NDArray[np.float64]:
    coef = np.concatenate([values, slopes], axis=1)
    dt = now_ts - t_ref
    coef[:, DISCHARGE_KWH] -= slopes[:, 0] * dt
    coef[:, DISCHARGE_KW] -= slopes[:, 1] * dt
    return coef


class FleetState:
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
    group: I8
    routine: I8
    dirty: NDArray[np.bool_]  # live telemetry not yet snapshotted to the store
    discharge_locked: NDArray[np.bool_]  # BESS seen below its floor: no discharge until recovered

    def __init__(
        self,
        *,
        bess_min_soc_pct: float,
        stale_seconds: float,
        round_trip_efficiency: float,
        initial_rows: int = 1024,
    ) -> None:
        self.bess_min_soc_pct = bess_min_soc_pct
        self.round_trip_efficiency = round_trip_efficiency  # capacity is stated at the grid
        self.stale_seconds = stale_seconds
        self._lock = threading.RLock()
        self._n = 0
        self._alloc(max(16, initial_rows))
        self._row_of: dict[str, int] = {}
        self._ids: list[str | None] = []
        self._free: list[int] = []
        self._routines: list[tuple[tuple[RecurringDeparture, ...], tuple[Trip, ...]]] = []
        self._routine_ids: dict[tuple[tuple[RecurringDeparture, ...], tuple[Trip, ...]], int] = {}
        self._group_of_key: dict[tuple[int, str, str], int] = {}
        self._group_type: list[int] = []
        self._group_node: list[str] = []
        self._group_fleet: list[str] = []
        self._views: OrderedDict[float, _WindowView] = OrderedDict()
        self._charge_points: dict[str, str] = {}  # only where it differs from the resource id
        self.version = 0  # bumped on every change of inputs; lets readers cache answers

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
        grow("group", 0, np.int64)
        grow("routine", -1, np.int64)
        grow("dirty", False, np.bool_)
        grow("discharge_locked", False, np.bool_)
        self._rows = rows
        for view in getattr(self, "_views", {}).values():
            coef = np.zeros((rows, N_COEF))
            coef[: view.coef.shape[0]] = view.coef
            nxt = np.full(rows, np.inf)
            nxt[: view.next_change.shape[0]] = view.next_change
            view.coef, view.next_change = coef, nxt

    def _columns(self, rows: I8 | slice) -> ResourceColumns:
        return ResourceColumns(
            capacity_kwh=self.capacity_kwh[rows],
            soc_pct=self.soc_pct[rows],
            floor_pct=self.floor_pct[rows],
            ceiling_pct=self.ceiling_pct[rows],
            max_discharge_kw=self.max_discharge_kw[rows],
            max_charge_kw=self.max_charge_kw[rows],
            departure_ts=self.departure_ts[rows],
            departure_soc_pct=self.departure_soc_pct[rows],
            telemetry_ts=self.telemetry_ts[rows],
            eligible=self.present[rows] & self.status_active[rows] & self.plugged[rows],
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
    def _new_view(self, window_s: float, now_ts: float) -> _WindowView:
        view = _WindowView(
            window_s=window_s,
            t_ref=now_ts,
            coef=np.zeros((self._rows, N_COEF)),
            next_change=np.full(self._rows, np.inf),
            group_sums=np.zeros((len(self._group_type), N_COEF)),
        )
        self._rebuild(view, now_ts)
        return view

    def _rebuild(self, view: _WindowView, now_ts: float) -> None:
        n = self._n
        self._roll_departures(np.flatnonzero(self.departure_ts[:n] <= now_ts), now_ts)
        values, slopes, nxt = contributions(
            self._columns(slice(0, n)),
            now_ts,
            view.window_s,
            self.stale_seconds,
            self.round_trip_efficiency,
        )
        view.t_ref = now_ts
        coef = _coef(values, slopes, now_ts, view.t_ref)
        present = self.present[:n]
        coef[~present] = 0.0
        nxt[~present] = np.inf
        view.coef[:n] = coef
        view.next_change[:n] = nxt
        g = len(self._group_type)
        groups = self.group[:n][present]
        sums = np.zeros((g, N_COEF), dtype=np.float64)
        for k in range(N_COEF):
            sums[:, k] = np.bincount(groups, weights=coef[present, k], minlength=g)
        view.group_sums = sums
        view.evaluated_at = now_ts
        view.updates_since_rebuild = 0

    def _resum(self, view: _WindowView) -> None:
        """Re-add the group sums from the per-row coefficients, dropping accumulated round-off."""
        n, g = self._n, len(self._group_type)
        groups = self.group[:n]
        for k in range(N_COEF):
            view.group_sums[:, k] = np.bincount(groups, weights=view.coef[:n, k], minlength=g)
        view.updates_since_rebuild = 0

    def _view(self, window_s: float, now_ts: float) -> _WindowView:
        view = self._views.get(window_s)
        if view is None:
            view = self._new_view(window_s, now_ts)
            self._views[window_s] = view
            while len(self._views) > MAX_WINDOW_VIEWS:
                self._views.popitem(last=False)
        else:
            self._views.move_to_end(window_s)
        return view

    def _refresh(self, view: _WindowView, rows: I8, now_ts: float) -> None:
        if rows.size == 0:
            return
        values, slopes, nxt = contributions(
            self._columns(rows),
            now_ts,
            view.window_s,
            self.stale_seconds,
            self.round_trip_efficiency,
        )
        coef = _coef(values, slopes, now_ts, view.t_ref)
        gone = ~self.present[rows]
        coef[gone] = 0.0
        nxt[gone] = np.inf
        delta = coef - view.coef[rows]
        groups = self.group[rows]
        if rows.size < 64:
            np.add.at(view.group_sums, groups, delta)
        else:
            g = len(self._group_type)
            for k in range(N_COEF):
                view.group_sums[:, k] += np.bincount(groups, weights=delta[:, k], minlength=g)
        view.coef[rows] = coef
        view.next_change[rows] = nxt
        view.updates_since_rebuild += int(rows.size)

    def _touch(self, rows: I8, now_ts: float) -> None:
        """Re-evaluate rows in every view after their inputs changed."""
        self.version += 1
        for view in self._views.values():
            self._refresh(view, rows, max(now_ts, view.evaluated_at))

    def _detach(self, row: int) -> None:
        """Take a row's contribution out of its group before its group or presence changes."""
        for view in self._views.values():
            view.group_sums[self.group[row]] -= view.coef[row]
            view.coef[row] = 0.0
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
        """Move rows whose departure has passed on to their next one."""
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

    # ----------------------------------------------------------------- registry
    def upsert(self, resource: Resource, now: datetime) -> None:
        """Add or update a resource's static attributes (registration, PATCH, deactivate)."""
        self.upsert_many([resource], now)

    def upsert_many(self, resources: Sequence[Resource], now: datetime) -> None:
        """Bulk form of `upsert`: column writes are vectorised, so loading a million is seconds."""
        now_ts = now.timestamp()
        with self._lock:
            rows: list[int] = []
            values: dict[str, list[float]] = {k: [] for k in ("cap", "min", "ceil", "pd", "pc")}
            flags: dict[str, list[bool]] = {"bess": [], "active": []}
            groups: list[int] = []
            routines: list[int] = []
            for resource in resources:
                row = self._row_of.get(resource.resource_id)
                if resource.status is ResourceStatus.INACTIVE:
                    if row is not None:
                        self._remove_row(row)
                    continue
                if row is None:
                    row = self._new_row(resource.resource_id)
                else:
                    self._detach(row)
                rows.append(row)
                values["cap"].append(resource.battery_capacity_kwh)
                values["min"].append(resource.min_soc_pct)
                values["ceil"].append(resource.max_soc_pct)
                values["pd"].append(resource.max_discharge_kw)
                values["pc"].append(resource.max_charge_kw)
                flags["bess"].append(resource.resource_type is ResourceType.BESS)
                flags["active"].append(resource.status is ResourceStatus.ACTIVE)
                groups.append(
                    self._group(resource.resource_type, resource.grid_node, resource.fleet_id)
                )
                routines.append(self._routine(resource))
                if resource.charge_point_id and resource.charge_point_id != resource.resource_id:
                    self._charge_points[resource.resource_id] = resource.charge_point_id
                else:
                    self._charge_points.pop(resource.resource_id, None)
            if not rows:
                return
            idx = np.asarray(rows, dtype=np.int64)
            self.capacity_kwh[idx] = values["cap"]
            self.floor_pct[idx] = static_floor_pct(
                flags["bess"], values["min"], self.bess_min_soc_pct
            )
            self.ceiling_pct[idx] = values["ceil"]
            self.max_discharge_kw[idx] = values["pd"]
            self.max_charge_kw[idx] = values["pc"]
            self.is_bess[idx] = flags["bess"]
            self.status_active[idx] = flags["active"]
            self.present[idx] = True
            self.group[idx] = groups
            self.routine[idx] = routines
            self.departure_ts[idx] = -np.inf  # forces a roll to the next departure after now
            self._roll_departures(idx, now_ts)
            self._touch(idx, now_ts)

    def _new_row(self, resource_id: str) -> int:
        if self._free:
            row = self._free.pop()
            self._ids[row] = resource_id
        else:
            if self._n == self._rows:
                self._alloc(self._rows * 2)
            row = self._n
            self._n += 1
            self._ids.append(resource_id)
        self._row_of[resource_id] = row
        return row

    def _remove_row(self, row: int) -> None:
        self.version += 1
        self._detach(row)
        resource_id = self._ids[row]
        if resource_id is not None:
            del self._row_of[resource_id]
        self._ids[row] = None
        self.present[row] = False
        self.status_active[row] = False
        self.plugged[row] = False
        self.soc_pct[row] = np.nan
        self.power_kw[row] = np.nan
        self.telemetry_ts[row] = -np.inf
        self.departure_ts[row] = np.inf
        self.routine[row] = -1
        self.discharge_locked[row] = False
        self._free.append(row)

    def __contains__(self, resource_id: str) -> bool:
        return resource_id in self._row_of

    def __len__(self) -> int:
        return len(self._row_of)

    def power_within_limits(self, rows: I8, power_kw: F8) -> NDArray[np.bool_]:
        """A reported power a resource can physically have: within its registered limits, with
        a margin for meter noise (unknown rows pass; they are refused for being unknown)."""
        known = rows >= 0
        r = np.where(known, rows, 0)
        ok = (power_kw <= self.max_discharge_kw[r] * (1 + POWER_MARGIN) + POWER_MARGIN_KW) & (
            -power_kw <= self.max_charge_kw[r] * (1 + POWER_MARGIN) + POWER_MARGIN_KW
        )
        return ok | ~known

    def rows_of(self, resource_ids: list[str]) -> I8:
        """Row index per id, -1 where the resource is unknown or deactivated."""
        get = self._row_of.get
        return np.fromiter(
            (get(r, -1) for r in resource_ids), dtype=np.int64, count=len(resource_ids)
        )

    # ----------------------------------------------------------------- telemetry
    def apply_telemetry(
        self,
        rows: I8,
        timestamp_s: F8,
        soc_pct: F8,
        plugged_in: NDArray[np.bool_],
        power_kw: F8,
        now: datetime,
    ) -> int:
        """Apply validated samples; a sample older than (or as old as) what is held is ignored.

        Returns how many samples changed the live state.
        """
        if rows.size == 0:
            return 0
        with self._lock:
            # Newest sample per row wins within the batch.
            order = np.lexsort((timestamp_s, rows))
            rows_sorted = rows[order]
            last = np.ones(rows_sorted.size, dtype=bool)
            last[:-1] = rows_sorted[1:] != rows_sorted[:-1]
            pick = order[last]
            r = rows[pick]
            newer = timestamp_s[pick] > self.telemetry_ts[r]
            pick, r = pick[newer], r[newer]
            self.telemetry_ts[r] = timestamp_s[pick]
            self.soc_pct[r] = soc_pct[pick]
            self.plugged[r] = plugged_in[pick]
            self.power_kw[r] = power_kw[pick]
            self.dirty[r] = True
            # BESS safety monitor: below its floor -> locked out of discharge until it is back
            # LOCKOUT_HYSTERESIS_PCT above it (so it does not flap at the boundary).
            bess = r[self.is_bess[r]]
            soc_b, floor_b = self.soc_pct[bess], self.floor_pct[bess]
            self.discharge_locked[bess[soc_b < floor_b]] = True
            self.discharge_locked[bess[soc_b >= floor_b + LOCKOUT_HYSTERESIS_PCT]] = False
            self._touch(r, now.timestamp())
            return int(r.size)

    # ----------------------------------------------------------------- reads
    def capacity(
        self,
        now: datetime,
        duration_minutes: float,
        grid_node: str | None = None,
        fleet_id: str | None = None,
        resource_type: ResourceType | None = None,
    ) -> CapacitySnapshot:
        now_ts = now.timestamp()
        window_s = float(duration_minutes) * 60.0
        with self._lock:
            view = self._view(window_s, now_ts)
            if view.evaluated_at - RACE_TOLERANCE_S <= now_ts < view.evaluated_at:
                # A concurrent reader got the lock first with a later clock: answer as of its time.
                now_ts = view.evaluated_at
                now = datetime.fromtimestamp(now_ts, tz=now.tzinfo or UTC)
            if view.updates_since_rebuild > max(RESUM_AFTER_UPDATES_PER_ROW * self._n, 1_000_000):
                self._resum(view)
            if now_ts < view.evaluated_at:
                self._rebuild(view, now_ts)  # asked about an earlier time than last evaluated
            else:
                n = self._n
                due = np.flatnonzero(view.next_change[:n] <= now_ts)
                if due.size:
                    self._roll_departures(due[self.departure_ts[due] <= now_ts], now_ts)
                    self._refresh(view, due, now_ts)
                view.evaluated_at = now_ts
            sums = view.at(view.group_sums, now_ts)
            g_type = np.asarray(self._group_type, dtype=np.int64)
            g_node = list(self._group_node)
            g_fleet = list(self._group_fleet)
        mask = np.ones(len(g_node), dtype=bool)
        if grid_node is not None:
            mask &= np.fromiter((n == grid_node for n in g_node), dtype=bool, count=len(g_node))
        if fleet_id is not None:
            mask &= np.fromiter((f == fleet_id for f in g_fleet), dtype=bool, count=len(g_fleet))
        if resource_type is not None:
            mask &= g_type == TYPES.index(resource_type)
        selected = sums[mask]
        by_type = {
            t.value: Figures.from_sums(sums[mask & (g_type == i)].sum(axis=0))
            for i, t in enumerate(TYPES)
        }
        by_node: dict[str, F8] = {}
        for gid in np.flatnonzero(mask).tolist():
            node = g_node[gid]
            by_node[node] = by_node.get(node, 0.0) + sums[gid]
        return CapacitySnapshot(
            as_of=now,
            duration_minutes=duration_minutes,
            total=Figures.from_sums(selected.sum(axis=0)),
            by_type=by_type,
            by_grid_node={node: Figures.from_sums(v) for node, v in sorted(by_node.items())},
        )

    def capacity_of(
        self, resource_ids: Sequence[str], now: datetime, duration_minutes: float
    ) -> dict[str, Figures]:
        """Capacity of just these resources (say, those a dispatch holds), by grid node."""
        now_ts = now.timestamp()
        with self._lock:
            rows = self.rows_of(list(dict.fromkeys(resource_ids)))
            rows = rows[rows >= 0]
            if rows.size == 0:
                return {}
            values, _, _ = contributions(
                self._columns(rows),
                now_ts,
                float(duration_minutes) * 60.0,
                self.stale_seconds,
                self.round_trip_efficiency,
            )
            nodes = [self._group_node[g] for g in self.group[rows].tolist()]
        by_node: dict[str, F8] = {}
        for node, v in zip(nodes, values, strict=True):
            by_node[node] = by_node.get(node, 0.0) + v
        return {node: Figures.from_sums(v) for node, v in sorted(by_node.items())}

    def live(
        self, resource_id: str, now: datetime, duration_minutes: float = 60.0
    ) -> LiveState | None:
        """Latest telemetry and availability of one resource, with the reason when unavailable."""
        now_ts = now.timestamp()
        window_s = duration_minutes * 60.0
        with self._lock:
            row = self._row_of.get(resource_id)
            if row is None:
                return None
            if self.departure_ts[row] <= now_ts:
                self._roll_departures(np.array([row]), now_ts)
            cols = self._columns(np.array([row]))
            a = bool(availability(cols, now_ts, window_s, self.stale_seconds)[0])
            soc = float(self.soc_pct[row])
            tel = float(self.telemetry_ts[row])
            dep = float(self.departure_ts[row])
            reason = None
            if not a:
                if not self.status_active[row]:
                    reason = "suspended"
                elif np.isnan(soc) or not np.isfinite(tel):
                    reason = "no_telemetry"
                elif tel < now_ts - self.stale_seconds:
                    reason = "stale_telemetry"
                elif not self.plugged[row]:
                    reason = "unplugged"
                elif dep <= now_ts + window_s:
                    reason = "departing"
            return LiveState(
                soc_pct=None if np.isnan(soc) else soc,
                plugged_in=bool(self.plugged[row]),
                power_kw=None if np.isnan(self.power_kw[row]) else float(self.power_kw[row]),
                telemetry_at=datetime.fromtimestamp(tel, tz=UTC) if np.isfinite(tel) else None,
                next_departure=datetime.fromtimestamp(dep, tz=UTC) if np.isfinite(dep) else None,
                departure_soc_pct=float(self.departure_soc_pct[row]) if np.isfinite(dep) else None,
                availability_factor=1.0 if a else 0.0,
                availability_reason=reason,
                discharge_locked=bool(self.discharge_locked[row]),
            )

    def take_dirty(self) -> tuple[list[str], I8, F8, F8, NDArray[np.bool_], F8]:
        """Rows whose telemetry changed since the last call: ids, rows, ts, soc, plugged, power."""
        with self._lock:
            rows = np.flatnonzero(self.dirty[: self._n] & self.present[: self._n])
            self.dirty[rows] = False
            ids = [self._ids[r] or "" for r in rows.tolist()]
            return (
                ids,
                rows,
                self.telemetry_ts[rows].copy(),
                self.soc_pct[rows].copy(),
                self.plugged[rows].copy(),
                np.nan_to_num(self.power_kw[rows]),
            )

    def mark_dirty(self, rows: I8) -> None:
        """Give rows back to the next snapshot (the last one could not be stored)."""
        with self._lock:
            self.dirty[rows] = True

    def lockouts(self) -> list[str]:
        """Resources currently locked out of discharge by the BESS safety monitor."""
        with self._lock:
            rows = np.flatnonzero(self.discharge_locked[: self._n] & self.present[: self._n])
            return [self._ids[r] or "" for r in rows.tolist()]

    def dispatch_inputs(
        self,
        now: datetime,
        start: datetime,
        *,
        direction: int,
        grid_node: str | None = None,
        fleet_id: str | None = None,
        resource_ids: Sequence[str] | None = None,
        busy: Sequence[str] = (),
    ) -> tuple[ResourceInputs, int]:
        """Inputs of a dispatch over the resources in scope, and how many of them cannot take part.

        A resource takes part when present, active, plugged in, reporting fresh telemetry, not
        held by another dispatch, and (for discharge) not locked out by the safety monitor.
        Departures are passed on, not excluded: a vehicle can serve until it leaves.
        """
        now_ts, start_ts = now.timestamp(), start.timestamp()
        with self._lock:
            n = self._n
            if resource_ids is not None:
                rows = self.rows_of(list(resource_ids))
                rows = rows[rows >= 0]
            else:
                g_ok = np.ones(len(self._group_type), dtype=bool)
                if grid_node is not None:
                    g_ok &= np.array([x == grid_node for x in self._group_node], dtype=bool)
                if fleet_id is not None:
                    g_ok &= np.array([x == fleet_id for x in self._group_fleet], dtype=bool)
                rows = np.flatnonzero(
                    self.present[:n] & g_ok[self.group[:n]] if g_ok.size else np.zeros(n, bool)
                )
            late = rows[self.departure_ts[rows] <= now_ts]
            self._roll_departures(late, now_ts)
            fresh = self.telemetry_ts[rows] >= now_ts - self.stale_seconds
            available = (
                self.present[rows]
                & self.status_active[rows]
                & self.plugged[rows]
                & fresh
                & ~np.isnan(self.soc_pct[rows])
            )
            if direction > 0:
                available &= ~self.discharge_locked[rows]
            if busy:
                held = self.rows_of(list(busy))
                available &= ~np.isin(rows, held[held >= 0])
            ids = [self._ids[r] or "" for r in rows.tolist()]
            inputs = ResourceInputs(
                resource_ids=ids,
                is_bess=self.is_bess[rows].copy(),
                capacity_kwh=self.capacity_kwh[rows].copy(),
                soc_pct=np.nan_to_num(self.soc_pct[rows]),
                floor_pct=self.floor_pct[rows].copy(),
                ceiling_pct=self.ceiling_pct[rows].copy(),
                max_discharge_kw=self.max_discharge_kw[rows].copy(),
                max_charge_kw=self.max_charge_kw[rows].copy(),
                # Bounded as telemetry is (a stored value from before that rule, or from another
                # path, must not make the planner's horizon explode).
                power_kw=np.where(
                    available,
                    np.clip(
                        np.nan_to_num(self.power_kw[rows]),
                        -(self.max_charge_kw[rows] * (1 + POWER_MARGIN) + POWER_MARGIN_KW),
                        self.max_discharge_kw[rows] * (1 + POWER_MARGIN) + POWER_MARGIN_KW,
                    ),
                    0.0,
                ),
                departure_min=(self.departure_ts[rows] - start_ts) / 60.0,
                departure_soc_pct=self.departure_soc_pct[rows].copy(),
                available=available,
            )
            return inputs, int((~available).sum())

    def routines_of(
        self, resource_ids: Sequence[str]
    ) -> list[tuple[tuple[RecurringDeparture, ...], tuple[Trip, ...]] | None]:
        """Each resource's departure routine and trips (None when it has none)."""
        with self._lock:
            rows = self.rows_of(list(resource_ids))
            out: list[tuple[tuple[RecurringDeparture, ...], tuple[Trip, ...]] | None] = []
            for r in rows.tolist():
                rid = int(self.routine[r]) if r >= 0 else -1
                out.append(self._routines[rid] if rid >= 0 else None)
            return out

    def routine_index(
        self, resource_ids: Sequence[str]
    ) -> tuple[NDArray[np.int64], list[tuple[tuple[RecurringDeparture, ...], tuple[Trip, ...]]]]:
        """Each resource's interned routine (-1: none) and the routines, so work done per
        routine is done once for every resource sharing it."""
        with self._lock:
            rows = self.rows_of(list(resource_ids))
            ids = np.where(rows >= 0, self.routine[np.maximum(rows, 0)], -1).astype(np.int64)
            return ids, list(self._routines)

    def resource_of_charge_point(self, charge_point_id: str) -> str | None:
        """The live resource behind a charge point (its id is the charge point by default)."""
        with self._lock:
            for rid, cp in self._charge_points.items():
                if cp == charge_point_id and rid in self._row_of:
                    return rid
            return charge_point_id if charge_point_id in self._row_of else None

    def charge_point(self, resource_id: str) -> str:
        return self._charge_points.get(resource_id, resource_id)

    def grid_nodes_of(self, resource_ids: Sequence[str]) -> list[str]:
        with self._lock:
            rows = self.rows_of(list(resource_ids))
            return [self._group_node[int(self.group[r])] if r >= 0 else "" for r in rows.tolist()]

    def grid_nodes(self, fleet_id: str | None = None) -> set[str]:
        """Grid nodes with a registered resource (of `fleet_id`'s, when given: to a fleet, a node
        only other fleets use does not exist)."""
        with self._lock:
            n = self._n
            groups = np.unique(self.group[:n][self.present[:n]]).tolist()
            return {
                self._group_node[g]
                for g in groups
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
