"""Fleet availability forecast for the next hours, as the market side will read it.

Telemetry is folded into an hourly plug-in history as it arrives (read back from the store
after a start), so a forecast never rereads raw samples. From it: a seasonal profile per
resource (the documented fallback), and the fleet's hourly plugged-in series that a stored
gradient-boosting model forecasts; driver schedules, operator events and live availability
for the first interval apply to both.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
from numpy.typing import NDArray

from vpp_aggregator.app.forecast_accuracy import FALLBACK, TRAINED, OnlineAccuracy
from vpp_aggregator.app.forecast_inputs import ForecastInputs, ForecastRejectedError
from vpp_aggregator.app.forecast_models import ForecastModels
from vpp_aggregator.app.forecast_parts import FleetSums, fleet_sums, part_extras
from vpp_aggregator.app.ports import ResourceStore
from vpp_aggregator.app.results import (
    CapacityForecast,
    ForecastModelInfo,
    Quantiles,
)
from vpp_aggregator.domain.fleet_state import FleetState
from vpp_aggregator.domain.forecast.calendar import extended_calendar, hour_of_week
from vpp_aggregator.domain.forecast.features import design
from vpp_aggregator.domain.forecast.fleet import IntervalForecast, from_sums
from vpp_aggregator.domain.forecast.history import Found, PluggedHistory
from vpp_aggregator.domain.forecast.quantiles import MEDIAN, QUANTILES
from vpp_aggregator.domain.forecast.series import HourlySeries

log = logging.getLogger(__name__)
MIN_TRAIN_DAYS = 21


class ForecastService:
    def __init__(
        self,
        state: FleetState,
        store: ResourceStore,
        clock: Callable[[], datetime],
        *,
        max_horizon_hours: int,
        timezone: str,
        hold_s: float,
        history_days: int = 28,
        model_dir: Path | None = None,
        holiday_country: str = "US",
        holiday_subdivision: str | None = "CA",
    ) -> None:
        self.state = state
        self.store = store
        self.clock = clock
        self.max_horizon_hours = max_horizon_hours
        self.zone = ZoneInfo(timezone)
        self.history_days = history_days
        self.model_dir = model_dir
        self.timezone = timezone
        self.holidays = (holiday_country, holiday_subdivision or None)
        self.inputs = ForecastInputs(state, store, clock)
        self.history = PluggedHistory(history_days * 24, state.history_rows, hold_s=hold_s)
        self.history_ready = threading.Event()  # stored history folded in after a start
        self.models = ForecastModels(
            state,
            self.history,
            self.history_ready,
            self.inputs,
            clock,
            model_dir=model_dir,
            timezone=timezone,
            holidays=self.holidays,
        )
        self.accuracy = OnlineAccuracy()
        self._last_forecast_hour = -1
        self.part_rows: int | None = None  # resources per part of a forecast (None: by memory)
        # One fleet-wide forecast at a time: two at once (the hour's offers and its accuracy
        # forecast) gain nothing under the GIL and leave the API's requests waiting on both.
        self._one_at_a_time = threading.Lock()

    def capacity_forecast(
        self, horizon_hours: int, interval_minutes: int, grid_node: str | None
    ) -> CapacityForecast:
        return self._forecast(horizon_hours, interval_minutes, grid_node)[0]

    def _forecast(
        self, horizon_hours: int, interval_minutes: int, grid_node: str | None
    ) -> tuple[CapacityForecast, IntervalForecast]:
        """The forecast answer, and the fallback's forecast beneath it (the answer itself when no
        trained model serves)."""
        errors = []
        if not 1 <= horizon_hours <= self.max_horizon_hours:
            errors.append(
                (
                    "horizon_hours",
                    f"Horizon must be between 1 and {self.max_horizon_hours} hours "
                    "(VPP_FORECAST_HORIZON_HOURS).",
                )
            )
        if interval_minutes not in (15, 60):
            errors.append(("interval_minutes", "Interval must be 15 or 60 minutes."))
        no_node = ("grid_node", f"No registered resource is on grid node {grid_node!r}.")
        if errors:
            if grid_node is not None and grid_node not in self.state.grid_nodes():
                errors.append(no_node)
            raise ForecastRejectedError(errors)
        now = self.clock()
        step = timedelta(minutes=interval_minutes)
        start = now.replace(second=0, microsecond=0) - timedelta(
            minutes=now.minute % interval_minutes
        )
        count = int(horizon_hours * 60 // interval_minutes)
        starts = [start + i * step for i in range(count)]
        inputs, _ = self.state.dispatch_inputs(now, now, direction=1, grid_node=grid_node)
        n = len(inputs.resource_ids)
        # A node has no registered resource exactly when its inputs are empty: checked here, not
        # with a scan of the whole fleet under the state lock before (the market asks per node).
        if grid_node is not None and n == 0:
            raise ForecastRejectedError([no_node])
        now_h = int(now.timestamp() // 3600)
        mids = np.array([s.timestamp() + step.total_seconds() / 2 for s in starts])
        interval_how = hour_of_week(mids, self.zone)
        interval_hour = (mids // 3600).astype(np.int64) % 24
        events = self.store.events_between(start, start + count * step)
        with self._one_at_a_time:
            totals = fleet_sums(
                self.history,
                inputs,
                now_h,
                self.zone,
                interval_how,
                interval_hour,
                part_extras(self.state, events, start, step, count),
                interval_minutes / 60.0,
                self.state.round_trip_efficiency,
                (start - now).total_seconds() / 60.0,  # the first interval began before now
                self.part_rows,
            )
        result = fallback = from_sums(totals.sums.sum(axis=0))
        model_info: ForecastModelInfo = {
            "name": "seasonal-profile",
            "version": f"telemetry-{self.history_days}d",
            "trained_at": now.isoformat(),
            "fallback": True,
            "detail": "Per-resource plug-in probability by hour of week from the last "
            f"{self.history_days} days of telemetry, driver schedules applied (no trained model in "
            f"{self.model_dir}, or under 15 days of fleet history).",
            "history_hours": totals.history_hours,
            "backtest": None,
        }
        served = self._serve_model(
            totals, float((~inputs.is_bess).sum()), now, starts, step, result
        )
        if served is not None:
            result, model_info = (
                served[0],
                {**served[1], "history_hours": totals.history_hours},
            )
        doc: CapacityForecast = {
            "generated_at": now.isoformat(),
            "horizon_hours": horizon_hours,
            "interval_minutes": interval_minutes,
            "grid_node": grid_node,
            "resource_count": n,
            "model": model_info,
            "history_loading": not self.history_ready.is_set(),
            "events": [
                {
                    "event_id": e["event_id"],
                    "name": e["name"],
                    "grid_node": e["grid_node"],
                    "start": e["start_at"].isoformat(),
                    "end": e["end_at"].isoformat(),
                    "availability_factor": e["availability_factor"],
                }
                for e in events
            ],
            "intervals": [
                {
                    "start": s.isoformat(),
                    "end": (s + step).isoformat(),
                    "available_vehicles": _q(result.vehicles, i),
                    "discharge_kw": _q(result.discharge_kw, i),
                    "discharge_kwh": _q(result.discharge_kwh, i),
                    "charge_kw": _q(result.charge_kw, i),
                }
                for i, s in enumerate(starts)
            ],
        }
        return doc, fallback

    def record(
        self,
        resource_ids: list[str],
        timestamp_s: NDArray[np.float64],
        plugged_in: NDArray[np.bool_],
        soc_pct: NDArray[np.float64],
        found: Found | None = None,
    ) -> None:
        """Fold accepted telemetry into the hourly history the forecast reads (`found`: the
        samples' rows as ingest found them)."""
        now_s = self.clock().timestamp()
        self.history.add(resource_ids, timestamp_s, plugged_in, soc_pct, now_s, found)

    def load_history(self) -> int:
        """After a restart: fold the stored history of the window in, chunk by chunk (samples read).

        Runs beside live ingest, each in its own time order; an hour both report keeps the
        value of the one that finished it first.
        """
        now = self.clock()
        read = 0
        try:
            for ids, ts, plugged, soc in self.store.history_chunks(
                now - timedelta(days=self.history_days), now
            ):
                self.history.add(ids, ts, plugged, soc, now.timestamp(), stored=True)
                read += len(ids)
        except Exception:  # the forecast then learns from live telemetry alone
            log.exception("reading stored telemetry history for the forecast failed")
        finally:
            self.history.finish_stored(now.timestamp())
            self.history_ready.set()
        log.info("forecast history: %d stored samples folded in", read)
        return read

    def _serve_model(
        self,
        totals: FleetSums,
        n_ev: float,
        now: datetime,
        starts: list[datetime],
        step: timedelta,
        fallback: IntervalForecast,
    ) -> tuple[IntervalForecast, ForecastModelInfo] | None:
        """Vehicles from the trained model on the fleet's own hourly history; power and energy per
        vehicle from the per-resource profile; batteries as the profile has them (they stay)."""
        loaded = self.models.newest()
        if loaded is None:
            return None
        doc, model = loaded
        series = totals.series
        if series is None or now.timestamp() - series.start_ts < 15 * 86_400:
            return None
        start_h = int(series.start_ts // 3600)
        origin = len(series)
        hours_needed = int(
            np.ceil(
                (
                    starts[-1]
                    + step
                    - datetime.fromtimestamp(origin * 3600.0 + start_h * 3600.0, UTC)
                ).total_seconds()
                / 3600.0
            )
        )
        horizon = max(1, min(hours_needed, int(doc.get("horizon_hours", 72))))
        cal_ext = extended_calendar(series, horizon, self.timezone, *self.holidays)
        series_ext = HourlySeries(
            series.start_ts,
            np.concatenate([series.plugged, np.zeros(horizon)]),
            np.zeros(origin + horizon),
            np.concatenate([series.gap, np.ones(horizon, bool)]),
        )
        X, _ = design(
            series_ext, cal_ext, self.inputs.weather_for(series_ext), np.array([origin]), horizon
        )
        q = model.predict(X)  # (horizon, len(QUANTILES)) EVs plugged
        # Vehicles from the model; per-vehicle kW and kWh from the vehicles' profile; batteries
        # (which do not leave) exactly as the profile has them. The first interval stays live.
        ev, bess = from_sums(totals.sums[0]), from_sums(totals.sums[1])
        first_model_hour = origin * 3600.0 + start_h * 3600.0
        parts = {
            name: getattr(fallback, name).copy()
            for name in ("vehicles", "discharge_kw", "discharge_kwh", "charge_kw")
        }
        for i, s_ in enumerate(starts):
            k = int((s_.timestamp() - first_model_hour) // 3600)
            if i == 0 or not 0 <= k < horizon:
                continue
            vehicles = np.minimum(q[k], n_ev)
            parts["vehicles"][i] = vehicles + bess.vehicles[i]
            for name in ("discharge_kw", "discharge_kwh", "charge_kw"):
                per_vehicle = getattr(ev, name)[i, MEDIAN] / max(ev.vehicles[i, MEDIAN], 1e-9)
                parts[name][i] = vehicles * per_vehicle + getattr(bess, name)[i]
        out = IntervalForecast(**parts)
        info: ForecastModelInfo = {
            "name": doc.get("name", "lightgbm-quantile-direct"),
            "version": doc.get("version", "unknown"),
            "trained_at": doc.get("trained_at", now.isoformat()),
            "fallback": False,
            "detail": f"Stored model {doc.get('version')} applied to the fleet's hourly plugged-in vehicles "
            "from its telemetry; kW and kWh per vehicle from each resource's profile.",
            "backtest": doc.get("backtest"),
        }
        return out, info

    # ----------------------------------------------------------------- training
    def model_status(self) -> dict[str, Any]:
        return {
            "current": self.models.current(),
            "training": dict(self.models.training),
            "model_dir": str(self.models.model_dir),
            "history_loading": not self.history_ready.is_set(),
            "history_resources": len(self.history),
            "unusable_models": sorted(p.name for p in self.models.unusable),
        }

    def track_accuracy(self) -> None:
        """Call periodically: observe availability now, score finished hours, and once an hour
        forecast the coming ones with the fallback and, when one serves, the trained model."""
        now = self.clock()
        hour = int(now.timestamp() // 3600)
        available = self.state.available_count(now, 60)
        self.accuracy.observe(hour, float(available))
        if hour != self._last_forecast_hour and len(self.state) > 0:
            self._last_forecast_hour = hour
            doc, fallback = self._forecast(min(24, self.max_horizon_hours), 60, None)
            hours = [
                int(datetime.fromisoformat(i["start"]).timestamp() // 3600)
                for i in doc["intervals"]
            ]
            # The first interval is live availability, not a forecast: not scored.
            self.accuracy.predict(
                FALLBACK, {h: _q(fallback.vehicles, i)["p50"] for i, h in enumerate(hours) if i}
            )
            if not doc["model"]["fallback"]:
                self.accuracy.predict(
                    TRAINED,
                    {
                        h: doc["intervals"][i]["available_vehicles"]["p50"]
                        for i, h in enumerate(hours)
                        if i
                    },
                )


def _q(arr: NDArray[np.float64], i: int) -> Quantiles:
    """Interval `i` of a forecast figure at every level (rounding keeps them in order)."""
    return {q: round(float(arr[i, k]), 3) for k, q in enumerate(QUANTILES)}
