"""What operators tell the forecast: hourly weather and events (a depot stand-down, a holiday
fair) that scale availability on a grid node for a while. Checked here, stored by the store."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from vpp_aggregator.app.ports import ResourceStore
from vpp_aggregator.domain.fleet_state import FleetState
from vpp_aggregator.domain.forecast.features import Weather
from vpp_aggregator.domain.forecast.series import HourlySeries


class ForecastRejectedError(Exception):
    def __init__(self, errors: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{f}: {m}" for f, m in errors))
        self.errors = errors


class ForecastInputs:
    def __init__(
        self, state: FleetState, store: ResourceStore, clock: Callable[[], datetime]
    ) -> None:
        self.state = state
        self.store = store
        self.clock = clock

    def weather_for(self, series: HourlySeries) -> Weather | None:
        """Stored hourly weather aligned with a series (None when nothing is stored)."""
        start = datetime.fromtimestamp(series.start_ts, UTC)
        rows = self.store.weather_between(start, start + timedelta(hours=len(series)))
        if not rows:
            return None
        temp, rain = np.full(len(series), np.nan), np.full(len(series), np.nan)
        for at, t, r in rows:
            i = int((at.timestamp() - series.start_ts) // 3600)
            if 0 <= i < len(series):
                temp[i] = np.nan if t is None else t
                rain[i] = np.nan if r is None else r
        return Weather(temp, rain)

    def add_weather(self, hours: list[tuple[datetime, float | None, float | None]]) -> int:
        naive = [i for i, h in enumerate(hours) if h[0].tzinfo is None]
        if naive:
            raise ForecastRejectedError(
                [(f"hours[{i}].hour_utc", "needs a time zone offset") for i in naive]
            )
        odd = [i for i, h in enumerate(hours) if not _plausible(h[0])]
        if odd:
            raise ForecastRejectedError(
                [(f"hours[{i}].hour_utc", "must fall between 1970 and 2200") for i in odd]
            )
        whole = [
            (h[0].astimezone(UTC).replace(minute=0, second=0, microsecond=0), h[1], h[2])
            for h in hours
        ]
        self.store.upsert_weather(whole)
        return len(whole)

    def add_event(
        self,
        name: str,
        grid_node: str | None,
        start: datetime,
        end: datetime,
        availability_factor: float,
    ) -> dict[str, Any]:
        errors = []
        if start.tzinfo is None or end.tzinfo is None:
            errors.append(("start", "Start and end need a time zone offset."))
        elif not (_plausible(start) and _plausible(end)):
            errors.append(("start", "Start and end must fall between 1970 and 2200."))
        elif end <= start:
            errors.append(("end", "The event must end after it starts."))
        if not 0.0 <= availability_factor <= 2.0:
            errors.append(
                (
                    "availability_factor",
                    "Expected effect on availability: a factor from 0 (nobody) to 2.",
                )
            )
        if grid_node is not None and grid_node not in self.state.grid_nodes():
            errors.append(("grid_node", f"No registered resource is on grid node {grid_node!r}."))
        if errors:
            raise ForecastRejectedError(errors)
        event = {
            "event_id": f"evt-{uuid.uuid4().hex[:12]}",
            "name": name,
            "grid_node": grid_node,
            "start_at": start,
            "end_at": end,
            "availability_factor": availability_factor,
            "created_at": self.clock(),
        }
        self.store.add_event(event)
        return event


def _plausible(at: datetime) -> bool:
    """Inside the years a fleet can have weather or events (and a database can store)."""
    return datetime(1970, 1, 2, tzinfo=UTC) <= at <= datetime(2200, 1, 1, tzinfo=UTC)
