"""Online accuracy of the availability forecast, per forecaster.

Every hourly forecast's P50 of available vehicles is kept for the hours it covers and compared,
once each hour is over, with the availability observed in it (ErrorSums, the backtest's own
measures). The fallback (seasonal profile) is computed for every forecast, also while a trained
model serves, so it is scored from start-up on and stays the baseline a model has to beat; a
trained model is scored separately from the first forecast it serves.
"""

from __future__ import annotations

import threading
from dataclasses import replace

import numpy as np

from vpp_aggregator.domain.forecast.metrics import ErrorSums

FALLBACK = "fallback"
TRAINED = "trained"


class OnlineAccuracy:
    def __init__(self) -> None:
        self._lock = threading.Lock()  # scored by the dispatch loop, read by /metrics scrapes
        self._predicted: dict[str, dict[int, list[float]]] = {FALLBACK: {}}  # model -> hour -> P50s
        self._observed: dict[int, list[float]] = {}  # hour (epoch h) -> available counts seen
        self._scores: dict[str, ErrorSums] = {FALLBACK: ErrorSums()}

    def predict(self, model: str, p50_by_hour: dict[int, float]) -> None:
        """A forecast `model` made for coming hours (epoch hours), to be scored when they end."""
        with self._lock:
            self._scores.setdefault(model, ErrorSums())
            made = self._predicted.setdefault(model, {})
            for hour, p50 in p50_by_hour.items():
                made.setdefault(hour, []).append(p50)

    def observe(self, hour: int, available: float) -> None:
        """Availability seen now; every hour before `hour` is over and scored."""
        with self._lock:
            self._observed.setdefault(hour, []).append(available)
            for h in [h for h in self._observed if h < hour]:
                seen = self._observed.pop(h)
                actual = sum(seen) / len(seen)
                for model, made in self._predicted.items():
                    p50 = np.array(made.pop(h, []), dtype=np.float64)
                    self._scores[model].add(np.full(p50.size, actual), p50)
            for made in self._predicted.values():  # hours never observed (the service was down)
                for h in [h for h in made if h < hour - 1]:
                    del made[h]

    def scores(self) -> dict[str, ErrorSums]:
        """Per forecaster: the fallback always, a trained model once it has served a forecast."""
        with self._lock:
            return {model: replace(sums) for model, sums in self._scores.items()}
