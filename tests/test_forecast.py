"""Forecasting maths: hourly series, metrics, no leakage across the origin, a small real backtest."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from vpp_aggregator.domain.forecast.backtest import fit_model, run_backtest
from vpp_aggregator.domain.forecast.features import (
    Calendar,
    design,
    persistence_24,
    seasonal_naive_168,
)
from vpp_aggregator.domain.forecast.metrics import point_metrics, quantile_metrics
from vpp_aggregator.domain.forecast.series import HOUR, HourlySeries, hourly_from_sessions

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
T0 = datetime(2026, 1, 5, tzinfo=UTC).timestamp()  # a Monday, 00:00 UTC


def test_occupancy_is_time_weighted_per_hour() -> None:
    # 00:30-02:15 and 01:00-01:30
    s = np.array([T0 + 0.5 * HOUR, T0 + HOUR])
    e = np.array([T0 + 2.25 * HOUR, T0 + 1.5 * HOUR])
    h = hourly_from_sessions(s, e)
    assert h.start_ts == T0
    assert h.plugged[:3] == pytest.approx([0.5, 1.5, 0.25])
    assert list(h.arrivals[:3]) == [1, 1, 0]


def test_a_day_without_any_arrival_at_a_busy_site_is_a_gap() -> None:
    days = 40
    starts = np.array([T0 + d * 86400 + k * 600 for d in range(days) if d != 20 for k in range(8)])
    h = hourly_from_sessions(starts, starts + 3 * HOUR)
    day = ((h.hours_ts - T0) // 86400).astype(int)
    assert h.gap[day == 20].all()
    assert not h.gap[(day != 20) & (day < days - 1)].any()


def test_metrics_by_hand() -> None:
    y = np.array([0.0, 2.0, 4.0, np.nan])
    yhat = np.array([1.0, 1.0, 5.0, 3.0])
    m = point_metrics(y, yhat)
    assert m["wape"] == pytest.approx(3 / 6) and m["mae"] == pytest.approx(1.0)
    assert m["mape"] == pytest.approx((0.5 + 0.25) / 2)  # only hours with at least one vehicle
    q = quantile_metrics(y, yhat - 1.5, yhat, yhat + 0.5)  # covers 0 and 4, misses 2
    assert q["coverage_p10_p90"] == pytest.approx(2 / 3)


def _synthetic(weeks: int = 30, seed: int = 3) -> tuple[HourlySeries, Calendar]:
    rng = np.random.default_rng(seed)
    n = weeks * 168
    hour = np.arange(n) % 24
    dow = (np.arange(n) // 24) % 7
    base = np.where((dow < 5) & (hour >= 8) & (hour < 18), 20.0, 2.0)
    y = np.maximum(base + rng.normal(0, 2, n), 0)
    series = HourlySeries(T0, y, np.zeros(n), np.zeros(n, dtype=bool))
    return series, Calendar(hour.astype(np.int64), dow.astype(np.int64), np.zeros(n, dtype=bool))


def test_nothing_after_the_origin_reaches_the_forecast() -> None:
    series, cal = _synthetic()
    origin = 26 * 168 + 5
    poisoned = dataclasses.replace(
        series, plugged=np.where(np.arange(len(series)) >= origin, 1e6, series.plugged)
    )
    a = fit_model(series, cal, None, origin, 72, history_days=120).predict(
        design(series, cal, None, np.array([origin]), 72)[0]
    )
    b = fit_model(poisoned, cal, None, origin, 72, history_days=120).predict(
        design(poisoned, cal, None, np.array([origin]), 72)[0]
    )
    assert np.array_equal(a, b)
    # and it learned the pattern: the origin is Monday 05:00, so horizons 4-13 are working hours
    assert float(np.median(a[3:13, 1])) > 12 > float(np.median(a[20:28, 1]))


def test_backtest_retrains_only_on_the_past_and_scores_baselines_on_the_same_hours() -> None:
    series, cal = _synthetic()
    origins = np.arange(24 * 7 * 20, 24 * 7 * 22, 24)
    trained: list[int] = []
    result = run_backtest(
        series, cal, None, origins, retrain_days=7, history_days=90, trained_before=trained
    )
    assert trained and all(t <= o for t, o in zip(trained, origins[::7], strict=False))
    m = result["metrics"]
    assert m["model"]["hours"] == m["seasonal_naive_168"]["hours"] == m["persistence_24"]["hours"]
    assert m["model"]["wape"] < m["persistence_24"]["wape"]
    assert set(result["by_horizon_bucket"]) == {"1-24h", "25-48h", "49-72h"}


def test_baselines_look_back_from_the_target_and_the_origin() -> None:
    series, _ = _synthetic()
    t = np.array([1000, 1001])
    assert seasonal_naive_168(series, t) == pytest.approx(series.plugged[t - 168])
    o = np.array([990, 990])
    # horizons 11 and 12 (<= 24): the same hour one day before the target
    assert persistence_24(series, o, t) == pytest.approx(series.plugged[t - 24])


@pytest.mark.skipif(not (DATA / "acn_office001").is_dir(), reason="shared/data not beside the repo")
def test_backtest_command_on_real_office_sessions(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from vpp_aggregator.cli import app

    out = tmp_path / "bt.json"
    result = CliRunner().invoke(
        app,
        [
            "forecast",
            "backtest",
            "--sessions",
            str(DATA / "acn_office001" / "sessions_office001.csv"),
            "--start",
            "2019-10-07",
            "--days",
            "7",
            "--json",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    import json

    doc = json.loads(out.read_text())
    assert doc["origins"] == 7
    assert {"model", "seasonal_naive_168", "persistence_24"} <= set(doc["metrics"])
    assert 0 <= doc["metrics"]["model"]["coverage_p10_p90"] <= 1


def test_recent_same_daytype_hour_averages_the_last_days_of_the_same_kind() -> None:
    """Working days learn from the last five working days at that hour, weekends and holidays
    from the last weekend days and holidays, never from the origin onward."""
    from vpp_aggregator.domain.forecast.features import recent_same_daytype

    n = 24 * 7 * 4
    hour = np.arange(n) % 24
    dow = (np.arange(n) // 24) % 7
    holiday = np.zeros(n, dtype=bool)
    holiday[24 * 16 : 24 * 17] = True  # the Wednesday of week 3
    y = np.where(dow >= 5, 1.0, 10.0) + hour / 100 + np.arange(n) // 24 / 1000
    y[holiday] = 1.0
    cal = Calendar(hour.astype(np.int64), dow.astype(np.int64), holiday)
    origin = 24 * 21  # Monday of week 4, 00:00
    target = np.array([origin + 9, origin + 24 * 5 + 9])
    got = recent_same_daytype(y, cal, np.full(2, origin), target)
    # Monday 09:00 (day 21): the working days before it, skipping weekends and Wednesday's holiday
    assert got[0] == pytest.approx(np.mean([10.09 + d / 1000 for d in (18, 17, 15, 14, 11)]))
    # Saturday 09:00 (day 26): weekend days and the holiday before the origin, not days 21-25
    weekend = [1.09 + d / 1000 for d in (20, 19, 13, 12)]
    assert got[1] == pytest.approx(np.mean([*weekend, 1.0]))
