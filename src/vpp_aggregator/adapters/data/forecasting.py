"""Forecast work from files (the CLI's `forecast train` and `forecast backtest`): read sessions and
weather, fit or backtest, store the model file."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from vpp_aggregator.adapters.data.files import read_sessions, read_weather
from vpp_aggregator.domain.forecast.backtest import fit_model, run_backtest
from vpp_aggregator.domain.forecast.calendar import local_calendar as calendar
from vpp_aggregator.domain.forecast.series import HOUR


@dataclass(frozen=True, slots=True)
class BacktestSpec:
    sessions: Path
    weather: Path | None
    timezone: str
    start: datetime
    days: int
    horizon_hours: int = 72
    origin_hour_local: int = 0
    retrain_days: int = 7
    site: str | None = None
    country: str = "US"
    subdivision: str | None = "CA"


def backtest(
    spec: BacktestSpec, progress: Callable[[int, int], None] | None = None
) -> dict[str, Any]:
    series = read_sessions(spec.sessions, spec.timezone, spec.site)
    cal = calendar(series, spec.timezone, spec.country, spec.subdivision)
    weather = read_weather(spec.weather, series) if spec.weather else None
    first = int(np.ceil((spec.start.timestamp() - series.start_ts) / HOUR))
    # one origin per day at the given local hour
    starts = np.arange(first, first + spec.days * 24)
    origins = starts[cal.hour_local[np.minimum(starts, len(series) - 1)] == spec.origin_hour_local]
    origins = origins[(origins > 14 * 24) & (origins + spec.horizon_hours < len(series))]
    if origins.size == 0:
        raise ValueError(
            "no origin falls inside the data; check --start and --days against the file"
        )
    t = time.perf_counter()
    result = run_backtest(
        series, cal, weather, origins, spec.horizon_hours, spec.retrain_days, progress=progress
    )
    result["seconds"] = round(time.perf_counter() - t, 1)
    result["first_origin"] = datetime.fromtimestamp(
        series.start_ts + origins[0] * HOUR, UTC
    ).isoformat()
    result["last_origin"] = datetime.fromtimestamp(
        series.start_ts + origins[-1] * HOUR, UTC
    ).isoformat()
    return result


def train(
    sessions: Path, weather: Path | None, timezone: str, out_dir: Path, horizon_hours: int = 72
) -> Path:
    """Fit on everything in the file and store a versioned model; returns its path."""
    series = read_sessions(sessions, timezone)
    cal = calendar(series, timezone)
    w = read_weather(weather, series) if weather else None
    t = time.perf_counter()
    model = fit_model(series, cal, w, len(series), horizon_hours)
    trained_at = datetime.now(UTC)
    version = trained_at.strftime("%Y%m%dT%H%M%SZ")
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"forecast-{version}.json"
    doc = {
        "name": "lightgbm-quantile-direct",
        "version": version,
        "trained_at": trained_at.isoformat(),
        "train_seconds": round(time.perf_counter() - t, 1),
        "sessions": str(sessions),
        "timezone": timezone,
        "horizon_hours": horizon_hours,
        "data_until": datetime.fromtimestamp(series.start_ts + len(series) * HOUR, UTC).isoformat(),
        "model": model.to_dict(),
    }
    path.write_text(json.dumps(doc))
    return path
