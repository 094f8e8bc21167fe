"""Real-time capacity answers in the shape operators and the market gateway read."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from vpp_aggregator.app.results import CapacityFigures, CapacityView
from vpp_aggregator.domain.fleet_state import CapacitySnapshot, Figures, FleetState


def _figures(f: Figures, min_capacity_kw: float | None = None) -> CapacityFigures:
    out: CapacityFigures = {
        "discharge": {"kw": round(f.discharge_kw, 3), "kwh": round(f.discharge_kwh, 3)},
        "charge": {"kw": round(f.charge_kw, 3), "kwh": round(f.charge_kwh, 3)},
        "gross_energy_kwh": round(f.gross_energy_kwh, 3),
        "resource_count": f.resource_count,
        "available_resource_count": f.available_resource_count,
    }
    if min_capacity_kw is not None:
        out["meets_minimum"] = f.discharge_kw >= min_capacity_kw
    return out


_Key = tuple[float, str | None, str | None]  # window (minutes), grid node, fleet


class CapacityService:
    """Answers are memoised for at most `max_age_s`, and only while no input has changed."""

    def __init__(
        self,
        state: FleetState,
        min_capacity_kw: float,
        clock: Callable[[], datetime],
        max_age_s: float = 0.2,
    ) -> None:
        self.state = state
        self.min_capacity_kw = min_capacity_kw
        self.clock = clock
        self.max_age_s = max_age_s
        self._memo: dict[_Key, tuple[int, datetime, CapacityView]] = {}

    def snapshot(
        self, duration_minutes: float, grid_node: str | None = None, fleet_id: str | None = None
    ) -> CapacitySnapshot:
        return self.state.capacity(
            self.clock(), duration_minutes, grid_node=grid_node, fleet_id=fleet_id
        )

    def available(
        self, duration_minutes: float, grid_node: str | None = None, fleet_id: str | None = None
    ) -> CapacityView:
        key = (float(duration_minutes), grid_node, fleet_id)
        version, now = self.state.version, self.clock()
        hit = self._hit(key, version, now)
        if hit is not None:
            return hit
        snap = self.state.capacity(now, duration_minutes, grid_node=grid_node, fleet_id=fleet_id)
        return self._keep(key, version, now, self._view(snap))

    def available_at_once(
        self, duration_minutes: float, grid_node: str | None = None, fleet_id: str | None = None
    ) -> CapacityView | None:
        """`available` when it needs no wait for the live state's lock and no pass over its
        rows, else None: the event loop answering HTTP then asks `available` on a worker thread
        instead of waiting behind another thread's work."""
        key = (float(duration_minutes), grid_node, fleet_id)
        version, now = self.state.version, self.clock()
        hit = self._hit(key, version, now)
        if hit is not None:
            return hit
        snap = self.state.capacity_at_once(now, duration_minutes, grid_node, fleet_id)
        return None if snap is None else self._keep(key, version, now, self._view(snap))

    def _hit(self, key: _Key, version: int, now: datetime) -> CapacityView | None:
        hit = self._memo.get(key)
        if hit is None:
            return None
        at_version, at, answer = hit
        fresh = at_version == version and 0 <= (now - at).total_seconds() <= self.max_age_s
        return answer if fresh else None

    def _keep(self, key: _Key, version: int, now: datetime, answer: CapacityView) -> CapacityView:
        if len(self._memo) > 256:
            self._memo.clear()
        self._memo[key] = (version, now, answer)
        return answer

    def _view(self, snap: CapacitySnapshot) -> CapacityView:
        total = _figures(snap.total, self.min_capacity_kw)
        return {
            "as_of": snap.as_of.isoformat(),
            "duration_minutes": snap.duration_minutes,
            **total,
            "min_capacity_kw": self.min_capacity_kw,
            "by_type": {t: _figures(f) for t, f in snap.by_type.items()},
            "by_grid_node": {
                n: _figures(f, self.min_capacity_kw) for n, f in snap.by_grid_node.items()
            },
            "available_capacity_kw": total["discharge"]["kw"],
            "available_capacity_kwh": total["discharge"]["kwh"],
        }
