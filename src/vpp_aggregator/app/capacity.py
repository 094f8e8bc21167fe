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
        self._memo: dict[
            tuple[float, str | None, str | None], tuple[int, datetime, CapacityView]
        ] = {}

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
        now = self.clock()
        hit = self._memo.get(key)
        if hit is not None:
            version, at, answer = hit
            if version == self.state.version and 0 <= (now - at).total_seconds() <= self.max_age_s:
                return answer
        version = self.state.version
        answer = self._compute(duration_minutes, grid_node, fleet_id)
        if len(self._memo) > 256:
            self._memo.clear()
        self._memo[key] = (version, now, answer)
        return answer

    def quick(self, duration_minutes: float) -> bool:
        """Whether `available` for this window is a small step (its view is built)."""
        return self.state.has_view(duration_minutes)

    def _compute(
        self, duration_minutes: float, grid_node: str | None, fleet_id: str | None
    ) -> CapacityView:
        snap = self.snapshot(duration_minutes, grid_node, fleet_id)
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
