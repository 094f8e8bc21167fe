"""PJM's performance score against cases worked from its definition (Manual 12): a perfect
response scores 1; one 2 minutes late loses exactly the delay score the definition gives
(|(2 − 5) / 5| = 0.6); a response that does nothing scores low."""

from __future__ import annotations

import numpy as np
import pytest

from vpp_aggregator.domain.regulation_score import hourly_scores, to_scoring_samples

HOUR = 3600


def random_signal(seconds: int, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """A signal every 2 s that takes a new random level every 10 s: no two 10-second samples
    are alike, so only the true shift correlates."""
    rng = np.random.default_rng(seed)
    t = np.arange(0, seconds, 2, dtype=np.float64)
    levels = rng.uniform(-1, 1, seconds // 10 + 1)
    return t, levels[(t // 10).astype(int)]


def test_a_perfect_response_scores_1() -> None:
    t, s = random_signal(HOUR + 600)
    first = hourly_scores(t, s, s.copy())[0]
    assert (first.correlation, first.delay, first.precision) == (
        pytest.approx(1.0),
        pytest.approx(1.0),
        pytest.approx(1.0),
    )
    assert first.score == pytest.approx(1.0) and first.delay_s == 0.0


def test_a_response_2_minutes_late_loses_exactly_the_delay_score() -> None:
    t, s = random_signal(HOUR + 600)
    late = np.r_[np.zeros(60), s[:-60]]  # 60 samples of 2 s: 120 s behind
    first = hourly_scores(t, s, late)[0]
    assert first.correlation == pytest.approx(1.0)
    assert first.delay == pytest.approx(0.6)  # |(2 min − 5 min) / 5 min|
    assert first.delay_s == pytest.approx(120.0)
    _, s10 = to_scoring_samples(t, s)
    _, r10 = to_scoring_samples(t, late)
    hour = slice(0, HOUR // 10)
    precision = 1 - np.abs(r10[hour] - s10[hour]).mean() / np.abs(s10[hour]).mean()
    assert first.precision == pytest.approx(max(0.0, precision))
    assert first.score == pytest.approx((1.0 + 0.6 + max(0.0, precision)) / 3)


def test_a_response_that_does_nothing_scores_low() -> None:
    t, s = random_signal(HOUR)
    first = hourly_scores(t, s, np.zeros_like(s))[0]
    # no correlation at any shift, so the shift with the best delay score, 0, is chosen
    assert (first.correlation, first.delay, first.precision) == (0.0, 1.0, 0.0)
    assert first.score == pytest.approx(1 / 3)
    assert first.score < 0.75


def test_a_window_whose_signal_does_not_move_counts_for_precision_only() -> None:
    t = np.arange(0, HOUR, 2, dtype=np.float64)
    flat = np.full_like(t, -1.0)  # RegA sits at −1 for long stretches
    half = hourly_scores(t, flat, np.full_like(t, -0.5))[0]
    assert (half.correlation, half.delay) == (None, None)
    assert half.score == pytest.approx(0.5)  # 1 − 0.5 / 1
    hair = flat.copy()
    hair[100] = -0.999  # one stray sample: still no shape to correlate
    assert hourly_scores(t, hair, np.full_like(t, -0.5))[0].correlation is None
    _, moving = random_signal(HOUR)
    mixed = np.where(t < HOUR / 2, -1.0, moving)  # half flat, half moving
    followed = hourly_scores(t, mixed, mixed.copy())[0]
    assert followed.score == pytest.approx(1.0)


def test_hours_are_scored_apart() -> None:
    t, s = random_signal(2 * HOUR)
    response = np.where(t < HOUR, s, 0.0)  # follows for an hour, then stops
    first, second = hourly_scores(t, s, response)
    assert first.score == pytest.approx(1.0, abs=1e-9)
    assert second.score == pytest.approx(1 / 3)
    assert second.start_s - first.start_s == HOUR
