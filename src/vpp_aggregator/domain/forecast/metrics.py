"""Forecast accuracy measures, all on the same hours."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray


@dataclass(slots=True)
class ErrorSums:
    """The sums behind MAPE, WAPE and MAE, so hours scored a few at a time, as the service does
    online, give the same figures as a backtest scoring them all at once. MAPE counts only hours
    with at least one vehicle (a miss on an empty hour has no percentage)."""

    abs_error: float = 0.0
    actual: float = 0.0
    ape: float = 0.0  # sum of |error| / actual over the busy hours
    busy_hours: int = 0
    hours: int = 0

    def add(self, y: NDArray[np.float64], yhat: NDArray[np.float64]) -> ErrorSums:
        ok = ~np.isnan(y) & ~np.isnan(yhat)
        y, yhat = y[ok], yhat[ok]
        err = np.abs(y - yhat)
        busy = y >= 1.0
        self.abs_error += float(err.sum())
        self.actual += float(np.abs(y).sum())
        self.ape += float((err[busy] / y[busy]).sum())
        self.busy_hours += int(busy.sum())
        self.hours += int(y.size)
        return self

    @property
    def mape(self) -> float | None:
        return self.ape / self.busy_hours if self.busy_hours else None

    @property
    def wape(self) -> float | None:
        return self.abs_error / self.actual if self.actual > 0 else None

    @property
    def mae(self) -> float | None:
        return self.abs_error / self.hours if self.hours else None


def point_metrics(y: NDArray[np.float64], yhat: NDArray[np.float64]) -> dict[str, float | None]:
    sums = ErrorSums().add(y, yhat)
    return {"mape": sums.mape, "wape": sums.wape, "mae": sums.mae, "hours": sums.hours}


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
