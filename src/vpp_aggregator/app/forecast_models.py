"""The forecast's trained models: the newest readable one in `VPP_MODEL_DIR` is served (cached
until a newer file appears; files written atomically, so a reader never sees half a model), and
training on the fleet's own telemetry runs one at a time in the background."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from vpp_aggregator.app.forecast_inputs import ForecastInputs, ForecastRejectedError
from vpp_aggregator.app.forecast_parts import history_series
from vpp_aggregator.domain.fleet_state import FleetState
from vpp_aggregator.domain.forecast.backtest import fit_model
from vpp_aggregator.domain.forecast.calendar import local_calendar
from vpp_aggregator.domain.forecast.history import PluggedHistory
from vpp_aggregator.domain.forecast.model import QuantileForecaster, TooLittleHistoryError

log = logging.getLogger(__name__)
MIN_TRAIN_DAYS = 21


class ForecastModels:
    def __init__(
        self,
        state: FleetState,
        history: PluggedHistory,
        history_ready: threading.Event,
        inputs: ForecastInputs,
        clock: Callable[[], datetime],
        *,
        model_dir: Path | None,
        timezone: str,
        holidays: tuple[str, str | None],
    ) -> None:
        self.state = state
        self.history = history
        self.history_ready = history_ready  # the stored history is read after a start
        self.inputs = inputs
        self.clock = clock
        self.model_dir = model_dir
        self.timezone = timezone
        self.holidays = holidays
        self._model: tuple[Path, float, dict[str, Any], QuantileForecaster] | None = None
        self.unusable: set[Path] = set()  # stored models this version cannot read
        self._train_lock = threading.Lock()
        self.training: dict[str, Any] = {"state": "idle"}

    def newest(self) -> tuple[dict[str, Any], QuantileForecaster] | None:
        """The newest stored model (`vpp-aggregator forecast train`), cached until a newer one appears."""
        if self.model_dir is None or not self.model_dir.is_dir():
            return None
        for path in sorted(self.model_dir.glob("forecast-*.json"), reverse=True):
            mtime = path.stat().st_mtime
            if self._model is not None and self._model[0] == path and self._model[1] == mtime:
                return self._model[2], self._model[3]
            if path in self.unusable:
                continue
            try:
                doc = json.loads(path.read_text())
                model = QuantileForecaster.from_dict(doc["model"])
            except (ValueError, KeyError) as exc:  # an older version's model, or a damaged file
                log.warning("forecast model %s not used: %s", path.name, exc)
                self.unusable.add(path)
                continue
            self._model = (path, mtime, doc, model)
            return doc, model
        return None

    def train_now(self, horizon_hours: int = 72) -> dict[str, Any]:
        """Fit on the fleet's own hourly history and store a new model version (blocking). The
        history is the forecast's own (`PluggedHistory`), the one the model is then applied to:
        learnt and applied, the hours are measured by the same rule."""
        if self.model_dir is None:
            raise ForecastRejectedError(
                [("model_dir", "No model directory is configured (VPP_MODEL_DIR).")]
            )
        if not self.history_ready.is_set():
            raise ForecastRejectedError(
                [
                    (
                        "history",
                        "The stored telemetry history is still being read after the start "
                        "(GET /forecast/model: history_loading); training waits for it.",
                    )
                ]
            )
        now = self.clock()
        inputs, _ = self.state.dispatch_inputs(now, now, direction=1)
        series = history_series(self.history, inputs, int(now.timestamp() // 3600))
        if series is None or now.timestamp() - series.start_ts < MIN_TRAIN_DAYS * 86_400:
            raise ForecastRejectedError(
                [
                    (
                        "history",
                        f"Training needs at least {MIN_TRAIN_DAYS} days of fleet "
                        "telemetry; until then the seasonal profile answers.",
                    )
                ]
            )
        cal = local_calendar(series, self.timezone, *self.holidays)
        started = time.perf_counter()
        try:
            model = fit_model(
                series,
                cal,
                self.inputs.weather_for(series),
                len(series),
                horizon_hours,
            )
        except TooLittleHistoryError as exc:
            raise ForecastRejectedError([("history", f"Too little to train on: {exc}.")]) from None
        version = now.strftime("%Y%m%dT%H%M%SZ")
        doc = {
            "name": "lightgbm-quantile-direct",
            "version": version,
            "trained_at": now.isoformat(),
            "train_seconds": round(time.perf_counter() - started, 1),
            "source": f"fleet telemetry, last {self.history.hours // 24} days",
            "timezone": self.timezone,
            "horizon_hours": horizon_hours,
            "model": model.to_dict(),
        }
        self.model_dir.mkdir(parents=True, exist_ok=True)
        path = self.model_dir / f"forecast-{version}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc))
        tmp.replace(path)  # readers never see a half-written model
        return {k: v for k, v in doc.items() if k != "model"}

    def start_training(self) -> dict[str, Any]:
        """Train in a background thread (one at a time): forecasts keep being served meanwhile."""
        with self._train_lock:
            if self.training.get("state") == "running":
                return dict(self.training)
            self.training = {"state": "running", "started_at": self.clock().isoformat()}

        def run() -> None:
            try:
                info = self.train_now()
                result = {
                    "state": "done",
                    "version": info["version"],
                    "train_seconds": info["train_seconds"],
                }
            except ForecastRejectedError as exc:
                result = {"state": "skipped", "reason": str(exc)}
            except Exception as exc:  # reported, never raised into the API
                log.exception("forecast training failed")
                result = {"state": "failed", "reason": f"{type(exc).__name__}: {exc}"}
            with self._train_lock:
                self.training = {**self.training, **result, "finished_at": self.clock().isoformat()}

        threading.Thread(target=run, name="forecast-training", daemon=True).start()
        return dict(self.training)

    def current(self) -> dict[str, Any] | None:
        """The served model's description (without its trees), or None."""
        loaded = self.newest()
        return None if loaded is None else {k: v for k, v in loaded[0].items() if k != "model"}
