"""Capacity kept current incrementally. For every window length being asked about, a view holds
each row's contribution and running sums per group (type x grid node x fleet); telemetry and
registry changes re-evaluate only the rows they touch, a read only the rows whose `next_change` has
come, and the sums are rebuilt now and then so floating-point drift cannot accumulate."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
from numpy.typing import NDArray

from vpp_aggregator.domain.capacity import (
    CHARGE_KW,
    CHARGE_KWH,
    DISCHARGE_KW,
    DISCHARGE_KWH,
    GROSS_KWH,
    N_AVAILABLE,
    N_RESOURCES,
    contributions,
)
from vpp_aggregator.domain.fleet_columns import (
    F8,
    I8,
    MAX_WINDOW_VIEWS,
    RACE_TOLERANCE_S,
    RESUM_AFTER_UPDATES_PER_ROW,
    TYPES,
    FleetColumns,
)
from vpp_aggregator.domain.resources import (
    ResourceType,
)
from vpp_aggregator.domain.window_view import N_COEF, WindowView


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


def _coef(
    values: NDArray[np.float64], slopes: NDArray[np.float64], now_ts: float, t_ref: float
) -> NDArray[np.float64]:
    coef = np.concatenate([values, slopes], axis=1)
    dt = now_ts - t_ref
    coef[:, DISCHARGE_KWH] -= slopes[:, 0] * dt
    coef[:, DISCHARGE_KW] -= slopes[:, 1] * dt
    return coef


class FleetCapacity(FleetColumns):
    def _new_view(self, window_s: float, now_ts: float) -> WindowView:
        view = WindowView.empty(window_s, now_ts, self._rows, len(self._group_type))
        self._rebuild(view, now_ts)
        return view

    def _rebuild(self, view: WindowView, now_ts: float) -> None:
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
        view.put(slice(0, n), coef)
        view.next_change[:n] = nxt
        g = len(self._group_type)
        groups = self.group[:n][present]
        sums = np.zeros((g, N_COEF), dtype=np.float64)
        for k in range(N_COEF):
            sums[:, k] = np.bincount(groups, weights=coef[present, k], minlength=g)
        view.group_sums = sums
        view.evaluated_at = now_ts
        view.updates_since_rebuild = 0

    def _resum(self, view: WindowView) -> None:
        """Re-add the group sums from the per-row coefficients, dropping accumulated round-off."""
        n, g = self._n, len(self._group_type)
        groups, coef = self.group[:n], view.coef(slice(0, n))
        for k in range(N_COEF):
            view.group_sums[:, k] = np.bincount(groups, weights=coef[:, k], minlength=g)
        view.updates_since_rebuild = 0

    def _view(self, window_s: float, now_ts: float) -> WindowView:
        view = self._views.get(window_s)
        if view is None:
            view = self._new_view(window_s, now_ts)
            self._views[window_s] = view
            while len(self._views) > MAX_WINDOW_VIEWS:
                self._views.popitem(last=False)
        else:
            self._views.move_to_end(window_s)
        return view

    def _refresh(self, view: WindowView, rows: I8, now_ts: float) -> None:
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
        delta = coef - view.coef(rows)
        groups = self.group[rows]
        if rows.size < 64:
            np.add.at(view.group_sums, groups, delta)
        else:
            g = len(self._group_type)
            for k in range(N_COEF):
                view.group_sums[:, k] += np.bincount(groups, weights=delta[:, k], minlength=g)
        view.put(rows, coef)
        view.next_change[rows] = nxt
        view.updates_since_rebuild += int(rows.size)

    def _touch(self, rows: I8, now_ts: float) -> None:
        """Re-evaluate rows in every view after their inputs changed."""
        self.version += 1
        for view in self._views.values():
            self._refresh(view, rows, max(now_ts, view.evaluated_at))

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
