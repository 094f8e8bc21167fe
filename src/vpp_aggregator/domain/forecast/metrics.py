"""Forecast accuracy measures, all on the same hours."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray


def point_metrics(y: NDArray[np.float64], yhat: NDArray[np.float64]) -> dict[str, float | None]:
    ok = ~np.isnan(y) & ~np.isnan(yhat)
    y, yhat = y[ok], yhat[ok]
    err = np.abs(y - yhat)
    busy = y >= 1.0
    return {
        "mape": float(np.mean(err[busy] / y[busy])) if busy.any() else None,
        "wape": float(err.sum() / np.abs(y).sum()) if np.abs(y).sum() > 0 else None,
        "mae": float(err.mean()) if err.size else None,
        "hours": int(y.size),
    }


def pinball(y: NDArray[np.float64], q: NDArray[np.float64], alpha: float) -> float:
    d = y - q
    return float(np.mean(np.maximum(alpha * d, (alpha - 1) * d)))


def quantile_metrics(
    y: NDArray[np.float64],
    p10: NDArray[np.float64],
    p50: NDArray[np.float64],
    p90: NDArray[np.float64],
) -> dict[str, float | None]:
    ok = ~np.isnan(y)
    out = point_metrics(y[ok], p50[ok])
    out["pinball_p10"] = pinball(y[ok], p10[ok], 0.1)
    out["pinball_p90"] = pinball(y[ok], p90[ok], 0.9)
    out["coverage_p10_p90"] = (
        float(np.mean((y[ok] >= p10[ok]) & (y[ok] <= p90[ok]))) if ok.any() else None
    )
    return out
