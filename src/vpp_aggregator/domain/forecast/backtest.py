"""Rolling-origin backtest: at every origin, train only on what was known before it.

Models are refitted every `retrain_days` (each origin uses the latest model trained on data
strictly before that origin's retraining point, which is never after the origin itself), and
the model, seasonal-naive-168 and persistence-24 are scored on the same hours in one run.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import NDArray

from vpp_aggregator.domain.forecast.features import (
    Calendar,
    Weather,
    design,
    persistence_24,
    seasonal_naive_168,
)
from vpp_aggregator.domain.forecast.metrics import point_metrics, quantile_metrics
from vpp_aggregator.domain.forecast.model import QuantileForecaster
from vpp_aggregator.domain.forecast.quantiles import column
from vpp_aggregator.domain.forecast.series import HourlySeries

BUCKETS = ((1, 24), (25, 48), (49, 72))


def training_origins(
    series: HourlySeries, before: int, history_days: int, step_h: int
) -> NDArray[np.int64]:
    """Origins whose whole horizon ended before `before` (no target after the cut-off)."""
    first = max(14 * 24 + 1, before - history_days * 24)
    return np.arange(first, before, step_h, dtype=np.int64)


def fit_model(
    series: HourlySeries,
    cal: Calendar,
    weather: Weather | None,
    before: int,
    horizon: int,
    history_days: int = 365,
    step_h: int = 12,
) -> QuantileForecaster:
    """Train on origins before `before`, using only target hours before `before`."""
    origins = training_origins(series, before - horizon, history_days, step_h)
    X, t = design(series, cal, weather, origins, horizon)
    keep = (t >= 0) & (t < before)
    X, t = X[keep], t[keep]
    y = np.where(series.gap[t], np.nan, series.plugged[t])
    cal_rows = int(min(28 * 24 // step_h * horizon, X.shape[0] // 4))
    return QuantileForecaster().fit(X, y, calibration_rows=cal_rows)


def run_backtest(
    series: HourlySeries,
    cal: Calendar,
    weather: Weather | None,
    origins: NDArray[np.int64],
    horizon: int = 72,
    retrain_days: int = 7,
    history_days: int = 365,
    progress: Callable[[int, int], None] | None = None,
    trained_before: list[int] | None = None,
) -> dict[str, Any]:
    origins = np.sort(origins)
    preds: list[NDArray[np.float64]] = []
    targets: list[NDArray[np.int64]] = []
    origin_rep: list[NDArray[np.int64]] = []
    model: QuantileForecaster | None = None
    trained_at = -1
    for i, o in enumerate(origins.tolist()):
        if model is None or o - trained_at >= retrain_days * 24:
            model = fit_model(series, cal, weather, o, horizon, history_days)
            trained_at = o
            if trained_before is not None:
                trained_before.append(o)
        X, t = design(series, cal, weather, np.array([o]), horizon)
        preds.append(model.predict(X))
        targets.append(t)
        origin_rep.append(np.full(t.size, o))
        if progress:
            progress(i + 1, origins.size)
    quant = np.vstack(preds)
    tgt = np.concatenate(targets)
    org = np.concatenate(origin_rep)
    inside = (tgt >= 0) & ~series.gap[np.maximum(tgt, 0)]
    quant, tgt, org = quant[inside], tgt[inside], org[inside]
    y = series.plugged[tgt]
    naive = seasonal_naive_168(series, tgt)
    pers = persistence_24(series, org, tgt)
    h = tgt - org + 1
    scored = ~np.isnan(naive) & ~np.isnan(pers)

    def block(mask: NDArray[np.bool_]) -> dict[str, Any]:
        m = mask & scored
        return {
            "model": quantile_metrics(
                y[m],
                quant[m, column("p10")],
                quant[m, column("p50")],
                quant[m, column("p90")],
            ),
            "seasonal_naive_168": point_metrics(y[m], naive[m]),
            "persistence_24": point_metrics(y[m], pers[m]),
        }

    return {
        "metrics": block(np.ones(y.size, dtype=bool)),
        "by_horizon_bucket": {f"{a}-{b}h": block((h >= a) & (h <= b)) for a, b in BUCKETS},
        "origins": int(origins.size),
        "hours_scored": int(scored.sum()),
    }
