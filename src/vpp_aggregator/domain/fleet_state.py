"""Live, columnar state of the whole fleet and incrementally maintained capacity aggregates.

Resources live in numpy columns (one row each). For every window length that is being asked
about, a `_WindowView` keeps each row's contribution and running sums per group
(resource type x grid node x fleet). Telemetry and registry changes re-evaluate only the rows
they touch; a read re-evaluates only the rows whose `next_change` time has come. The sums are
rebuilt from scratch now and then so floating-point drift cannot accumulate.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
from numpy.typing import NDArray

from vpp_aggregator.domain.capacity import REASONS, Unavailable, unavailability
from vpp_aggregator.domain.dispatch.problem import ResourceInputs, joined_inputs
from vpp_aggregator.domain.early_departures import early_count
from vpp_aggregator.domain.efficiency import soc_change_pct
from vpp_aggregator.domain.fleet_capacity import (
    CapacitySnapshot,
    Figures,
    FleetCapacity,
)
from vpp_aggregator.domain.fleet_columns import (
    F8,
    I8,
    LOCKOUT_HYSTERESIS_PCT,
    POWER_MARGIN,
    POWER_MARGIN_KW,
)
from vpp_aggregator.domain.fleet_scan import id_chunks, last_of_each, locked_chunks
from vpp_aggregator.domain.floors import static_floor_pct
from vpp_aggregator.domain.resources import (
    Resource,
    ResourceStatus,
    ResourceType,
)

__all__ = [
    "POWER_MARGIN",
    "POWER_MARGIN_KW",
    "CapacitySnapshot",
    "Figures",
    "FleetState",
    "LiveState",
]


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
    availability_reason: Unavailable | None
    discharge_locked: bool = False
    early_departures: int = 0  # of its last stays, how many the driver left early
    floor_now_soc_pct: float | None = None  # its floor before the departure raise (`floor_of`)


class FleetState(FleetCapacity):
    """Thread-safe columnar fleet state; the single source of real-time capacity."""

    def upsert(self, resource: Resource, now: datetime) -> None:
        """Add or update a resource's static attributes (registration, PATCH, deactivate)."""
        self.upsert_many([resource], now)

    def upsert_many(self, resources: Sequence[Resource], now: datetime) -> None:
        """Bulk form of `upsert`: column writes are vectorised, so loading a million is seconds.
        A chunk of resources per hold of the lock (`fleet_scan`): each one is written whole."""
        for chunk in id_chunks(resources):
            self._upsert_chunk(chunk, now)

    def _upsert_chunk(self, resources: Sequence[Resource], now: datetime) -> None:
        now_ts = now.timestamp()
        with self._lock:
            rows: list[int] = []
            values: dict[str, list[float]] = {k: [] for k in ("cap", "min", "ceil", "pd", "pc")}
            flags: dict[str, list[bool]] = {"bess": [], "active": []}
            groups: list[int] = []
            routines: list[int] = []
            found = self.rows_of([r.resource_id for r in resources]).tolist()
            seen: dict[str, int] = {}  # rows given or taken in this batch (-1: removed)
            fresh: dict[str, int] = {}  # new rows, their ids to index
            for resource, hit in zip(resources, found, strict=True):
                rid = resource.resource_id
                row = seen.get(rid, hit)
                if resource.status is ResourceStatus.INACTIVE:
                    if row >= 0:
                        self._remove_row(row)
                        seen[rid] = -1
                        fresh.pop(rid, None)
                    continue
                if row < 0:
                    row = seen[rid] = fresh[rid] = self._new_row()
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
            self._index.add(list(fresh), np.fromiter(fresh.values(), np.int64, len(fresh)))
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
            self._note_unplugs(r, plugged_in[pick], timestamp_s[pick])
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
            # An overdue vehicle that unplugged has left: on to its next departure.
            self._roll_departures(r[self.departure_ts[r] <= now.timestamp()], now.timestamp())
            self._touch(r, now.timestamp())
            return int(r.size)

    # ----------------------------------------------------------------- reads

    def live(
        self, resource_id: str, now: datetime, duration_minutes: float = 60.0
    ) -> LiveState | None:
        """Latest telemetry and availability of one resource, with the reason when unavailable."""
        return self.live_many([resource_id], now, duration_minutes)[0]

    def live_many(
        self, resource_ids: Sequence[str], now: datetime, duration_minutes: float = 60.0
    ) -> list[LiveState | None]:
        """`live` of each id (None where unknown), read in one hold of the lock: following a
        dispatch asks about every resource it holds at each tick, and a lookup per id took the
        lock and searched the index once each."""
        now_ts = now.timestamp()
        with self._lock:
            all_rows = self.rows_of(list(resource_ids))
            found = np.flatnonzero(all_rows >= 0)
            rows = all_rows[found]
            self._roll_departures(rows[self.departure_ts[rows] <= now_ts], now_ts)
            codes = unavailability(
                self._columns(rows), now_ts, duration_minutes * 60.0, self.stale_seconds
            ).tolist()
            soc, tel = self.soc_pct[rows].tolist(), self.telemetry_ts[rows].tolist()
            power, dep = self.power_kw[rows].tolist(), self.departure_ts[rows].tolist()
            dep_soc, plugged = self.departure_soc_pct[rows].tolist(), self.plugged[rows].tolist()
            locked = self.discharge_locked[rows].tolist()
            early = early_count(self.early_bits[rows]).tolist()
            floor = self.floor_of(rows).tolist()
        out: list[LiveState | None] = [None] * len(resource_ids)
        for k, i in enumerate(found.tolist()):
            finite_dep = math.isfinite(dep[k])
            out[i] = LiveState(
                soc_pct=None if math.isnan(soc[k]) else soc[k],
                plugged_in=plugged[k],
                power_kw=None if math.isnan(power[k]) else power[k],
                telemetry_at=datetime.fromtimestamp(tel[k], tz=UTC)
                if math.isfinite(tel[k])
                else None,
                next_departure=datetime.fromtimestamp(dep[k], tz=UTC) if finite_dep else None,
                departure_soc_pct=dep_soc[k] if finite_dep else None,
                availability_factor=0.0 if codes[k] else 1.0,
                availability_reason=REASONS[codes[k]],
                discharge_locked=locked[k],
                early_departures=early[k],
                floor_now_soc_pct=floor[k],
            )
        return out

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
        In chunks (`fleet_scan`): each resource's inputs are read together, the fleet's not at
        one instant (as samples arrive anyway); an id seen twice (moved rows meanwhile) is kept
        once.
        """
        now_ts, start_ts = now.timestamp(), start.timestamp()
        held = set(busy)
        with self._lock:
            removals = self.removals
            parts = [self._inputs(np.zeros(0, np.int64), now_ts, start_ts, direction, held)]
        if resource_ids is not None:
            for chunk in id_chunks(resource_ids):
                with self._lock:
                    rows = self.rows_of(list(chunk))
                    parts.append(self._inputs(rows[rows >= 0], now_ts, start_ts, direction, held))
        else:
            for sl in locked_chunks(self._lock, lambda: self._n, event=True):
                g_ok = np.ones(len(self._group_type), dtype=bool)
                if grid_node is not None:
                    g_ok &= np.array([x == grid_node for x in self._group_node], dtype=bool)
                if fleet_id is not None:
                    g_ok &= np.array([x == fleet_id for x in self._group_fleet], dtype=bool)
                if g_ok.size:  # no group: no resource
                    rows = sl.start + np.flatnonzero(self.present[sl] & g_ok[self.group[sl]])
                    parts.append(self._inputs(rows, now_ts, start_ts, direction, held))
        ids = [rid for p in parts for rid in p.resource_ids]
        dedupe = resource_ids is None and self.removals != removals and len(parts) > 1
        inputs = joined_inputs(parts, last_of_each(ids) if dedupe else None)
        return inputs, int((~inputs.available).sum())

    def _inputs(
        self, rows: I8, now_ts: float, start_ts: float, direction: int, held: set[str]
    ) -> ResourceInputs:
        """`dispatch_inputs` of these rows (under the lock)."""
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
        ids = self._index.ids(rows)
        if held:
            available &= np.fromiter((i not in held for i in ids), dtype=bool, count=len(ids))
        return ResourceInputs(
            resource_ids=ids,
            is_bess=self.is_bess[rows],
            capacity_kwh=self.capacity_kwh[rows],
            soc_pct=self._soc_now(rows, now_ts, direction),
            floor_pct=self.floor_of(rows),
            ceiling_pct=self.ceiling_pct[rows],
            max_discharge_kw=self.max_discharge_kw[rows],
            max_charge_kw=self.max_charge_kw[rows],
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
            departure_soc_pct=self.departure_soc_pct[rows],
            available=available,
            early_departures=early_count(self.early_bits[rows]),
        )

    def _soc_now(self, rows: I8, now_ts: float, direction: int) -> F8:
        """The last report moved on by its power since (up to the stale limit), only toward the
        limit the plan runs to: the device may have stopped meanwhile."""
        age_s = np.clip(now_ts - self.telemetry_ts[rows], 0.0, self.stale_seconds)
        soc = np.nan_to_num(self.soc_pct[rows])
        moved = soc_change_pct(
            np.nan_to_num(self.power_kw[rows]),
            np.nan_to_num(age_s),
            np.maximum(self.capacity_kwh[rows], 1e-9),
            self.round_trip_efficiency,
        )
        toward = np.minimum(moved, 0.0) if direction > 0 else np.maximum(moved, 0.0)
        return np.clip(soc + toward, 0.0, 100.0)

    def members(self, grid_node: str) -> list[tuple[str, bool]]:
        """The resources registered at a grid node (an aggregation), each with whether it is a
        battery, in id order."""
        out: list[tuple[str, bool]] = []
        for sl in locked_chunks(self._lock, lambda: self._n):
            at_node = np.array([x == grid_node for x in self._group_node], dtype=bool)
            if not at_node.size:
                break
            rows = sl.start + np.flatnonzero(self.present[sl] & at_node[self.group[sl]])
            out += zip(self._index.ids(rows), map(bool, self.is_bess[rows].tolist()), strict=True)
        return sorted(out)

    def net_power(self, now_ts: float) -> dict[str, tuple[float, int, int]]:
        """Per grid node: the net power its resources last reported (kW, positive = export),
        counting only telemetry fresher than the stale limit, how many reported so, and how
        many are registered there. In chunks (`fleet_scan`)."""
        totals = np.zeros((0, 3))  # per group: kW, reporting, registered
        for sl in locked_chunks(self._lock, lambda: self._n):
            present = self.present[sl]
            fresh = present & (now_ts - self.telemetry_ts[sl] <= self.stale_seconds)
            groups = self.group[sl]
            size = len(self._group_node)
            part = np.stack(
                [
                    np.bincount(
                        groups[fresh],
                        weights=np.nan_to_num(self.power_kw[sl][fresh]),
                        minlength=size,
                    ),
                    np.bincount(groups[fresh], minlength=size),
                    np.bincount(groups[present], minlength=size),
                ],
                axis=1,
            )
            totals = np.vstack([totals, np.zeros((size - totals.shape[0], 3))]) + part
        with self._lock:
            nodes = self._group_node[: totals.shape[0]]
        out: dict[str, tuple[float, int, int]] = {}
        for g in np.flatnonzero(totals[:, 2]).tolist():
            node = nodes[g]
            total, count, regs = out.get(node, (0.0, 0, 0))
            out[node] = (
                total + float(totals[g, 0]),
                count + round(totals[g, 1]),
                regs + round(totals[g, 2]),
            )
        return out

    def power_of(self, resource_ids: Sequence[str], now_ts: float) -> float:
        """The power these resources last reported (kW, + export), counting only telemetry
        fresher than the stale limit."""
        with self._lock:
            rows = self.rows_of(list(resource_ids))
            rows = rows[rows >= 0]
            fresh = now_ts - self.telemetry_ts[rows] <= self.stale_seconds
            return float(np.nan_to_num(self.power_kw[rows][fresh]).sum())
