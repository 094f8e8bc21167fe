"""PJM's performance score of a regulation response (PJM Manual 12, performance scoring).

The signal (−1…+1, a share of the regulation capacity) and the response (power above the base
point over the capacity) are compared on 10-second samples:

- **correlation and delay**, chosen together in each 5-minute window: over response shifts δ of
  0 to 5 minutes (in 10 s steps), the shift that maximises correlation(signal, response shifted
  back by δ) + delay score, where delay score = |(δ − 5 min) / 5 min|; the window's correlation
  score is that correlation (below 0 counts as 0) and its delay score that of δ;
- **precision**, over the hour: 1 − mean |response − signal| / mean |signal| (not below 0);
- the **hourly score** is the mean of the hour's correlation, delay and precision scores, the
  first two averaged over the hour's windows.

A window whose signal does not move has no correlation to measure (a constant has none, and a
signal pinned at −1 with a stray sample a hair off has only noise), so a window whose signal's
standard deviation is under `FLAT_STD` (1 % of the capacity) counts for precision only; an hour
with no other window is scored on precision alone. This reading is ours: the definition does not
say what a flat window scores.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

SAMPLE_S = 10  # the scoring samples
WINDOW = 30  # 5 minutes of 10-second samples
MAX_SHIFT = 30  # 5 minutes
QUALIFYING = 0.75  # PJM's qualifying hourly score
FLAT_STD = 0.01  # a window's signal moving less than this has no shape to correlate


@dataclass(frozen=True, slots=True)
class HourScore:
    start_s: float  # epoch seconds of the hour's first sample
    score: float
    correlation: float | None
    delay: float | None  # the delay score (1: no delay)
    delay_s: float | None  # the mean shift chosen, seconds
    precision: float


def to_scoring_samples(
    t_s: NDArray[np.float64], values: NDArray[np.float64]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """The values at each 10-second instant from the first, each the last known by then."""
    first = np.ceil(t_s[0] / SAMPLE_S) * SAMPLE_S
    grid = np.arange(first, t_s[-1] + 1e-9, SAMPLE_S)
    idx = np.searchsorted(t_s, grid + 1e-9, side="right") - 1
    return grid, values[np.maximum(idx, 0)]


def _correlation(a: NDArray[np.float64], b: NDArray[np.float64]) -> float:
    sa, sb = a.std(), b.std()
    if sa < 1e-12 or sb < 1e-12:
        return 0.0  # a flat response follows nothing
    return float(np.mean((a - a.mean()) * (b - b.mean())) / (sa * sb))


def window_score(
    signal: NDArray[np.float64], response: NDArray[np.float64], start: int
) -> tuple[float, float, int] | None:
    """(correlation score, delay score, shift in samples) of the window starting at `start`, or
    None when its signal does not move."""
    s = signal[start : start + WINDOW]
    if s.size < WINDOW or s.std() < FLAT_STD:
        return None
    best: tuple[float, float, int] | None = None
    for shift in range(MAX_SHIFT + 1):
        r = response[start + shift : start + shift + WINDOW]
        if r.size < WINDOW:
            break  # the response after the data ends is unknown
        corr = max(0.0, _correlation(s, r))
        delay = abs((shift - MAX_SHIFT) / MAX_SHIFT)
        if best is None or corr + delay > best[0] + best[1] + 1e-12:
            best = (corr, delay, shift)
    return best


def hourly_scores(
    t_s: NDArray[np.float64],
    signal: NDArray[np.float64],
    response: NDArray[np.float64],
) -> list[HourScore]:
    """Scores of each clock hour (whole, or the part recorded) of a signal and the normalised
    response, both sampled at `t_s` (epoch or any seconds counted from a whole hour; any rate of
    10 s or finer). A window near an hour's end may take its shifted response from the next."""
    grid, s = to_scoring_samples(t_s, signal)
    _, r = to_scoring_samples(t_s, response)
    hour_of = np.floor(grid / 3600.0)
    edges = np.r_[0, np.flatnonzero(np.diff(hour_of)) + 1, grid.size]
    out: list[HourScore] = []
    for h0, h1 in zip(edges[:-1].tolist(), edges[1:].tolist(), strict=True):
        windows = [
            w
            for w in (window_score(s, r, i) for i in range(h0, h1 - WINDOW + 1, WINDOW))
            if w is not None
        ]
        mean_abs = float(np.abs(s[h0:h1]).mean())
        error = float(np.abs(r[h0:h1] - s[h0:h1]).mean())
        if mean_abs > 1e-12:
            precision = max(0.0, 1.0 - error / mean_abs)
        else:
            precision = 1.0 if error < 1e-9 else 0.0
        corr: float | None = None
        delay: float | None = None
        shift_s: float | None = None
        score = precision
        if windows:
            corr = float(np.mean([w[0] for w in windows]))
            delay = float(np.mean([w[1] for w in windows]))
            shift_s = float(np.mean([w[2] for w in windows])) * SAMPLE_S
            score = (corr + delay + precision) / 3.0
        out.append(HourScore(float(hour_of[h0]) * 3600.0, score, corr, delay, shift_s, precision))
    return out
