"""The telemetry history and forecast inputs as the forecaster and a restart read them."""

from __future__ import annotations

import builtins
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import DateTime, Engine, String, func, insert, select, type_coerce

from vpp_aggregator.adapters.store.tables import (
    epoch_seconds,
    forecast_events,
    forecast_weather,
    telemetry_samples,
)
from vpp_aggregator.app.ports import StoredSample


class HistoryReads:
    """Part of `Repository`: reads of the telemetry history and the forecast's inputs."""

    engine: Engine
    _dialect: str

    def samples_received_since(self, since: datetime | None) -> Iterable[StoredSample]:
        """History that arrived after `since` (all of it when None), for replay after a restart."""
        t = telemetry_samples
        q = select(t.c.resource_id, t.c.ts, t.c.soc_pct, t.c.plugged_in, t.c.power_kw)
        if since is not None:
            q = q.where(t.c.received_at >= since)
        with self.engine.connect() as conn:
            for row in conn.execution_options(yield_per=10_000).execute(q):
                yield StoredSample(
                    row.resource_id, row.ts, row.soc_pct, row.plugged_in, row.power_kw
                )

    def history_chunks(
        self, start: datetime, end: datetime, size: int = 5_000
    ) -> Iterator[
        tuple[builtins.list[str], NDArray[np.float64], NDArray[np.bool_], NDArray[np.float64]]
    ]:
        """Samples in [start, end) as column chunks: resource ids, epoch seconds, plugged, SoC.

        This runs beside the API after a start: chunks stay small because the driver builds a
        fetched chunk's rows in one call holding the GIL (100,000 rows held requests up for
        tenths of a second), and times come untyped, converted for the whole chunk at once."""
        t = telemetry_samples
        untyped = String() if self._dialect == "sqlite" else DateTime(timezone=True)
        ts = type_coerce(t.c.ts, untyped)
        q = (  # in time order: each sample's state holds until the next (`PluggedHistory`)
            select(t.c.resource_id, ts, t.c.plugged_in, t.c.soc_pct)
            .where(t.c.ts >= start, t.c.ts < end)
            .order_by(t.c.ts)
        )
        with self.engine.connect() as conn:
            result = conn.execution_options(yield_per=size).execute(q)
            while rows := result.fetchmany(size):
                ids, stamps, plugged, soc = zip(*rows, strict=True)
                yield (
                    builtins.list(ids),
                    epoch_seconds(stamps),
                    np.array(plugged, dtype=bool),
                    np.array(soc, dtype=np.float64),
                )

    def weather_between(
        self, start: datetime, end: datetime
    ) -> builtins.list[tuple[datetime, float | None, float | None]]:
        w = forecast_weather
        q = select(w.c.hour_utc, w.c.temperature_c, w.c.precipitation_mm).where(
            w.c.hour_utc >= start, w.c.hour_utc < end
        )
        with self.engine.connect() as conn:
            return [(r.hour_utc, r.temperature_c, r.precipitation_mm) for r in conn.execute(q)]

    def add_event(self, event: dict[str, Any]) -> None:
        with self.engine.begin() as conn:
            conn.execute(insert(forecast_events).values(**event))

    def events_between(self, start: datetime, end: datetime) -> builtins.list[dict[str, Any]]:
        e = forecast_events
        q = select(e).where(e.c.end_at > start, e.c.start_at < end).order_by(e.c.start_at)
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(q)]

    def count_samples(self, resource_id: str | None = None) -> int:
        q = select(func.count()).select_from(telemetry_samples)
        if resource_id:
            q = q.where(telemetry_samples.c.resource_id == resource_id)
        with self.engine.connect() as conn:
            return int(conn.execute(q).scalar_one())
