"""The fleet forecast, worked through the fleet in parts, answers what it answers in one piece."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from devservices.synthetic import synthetic_fleet
from vpp_aggregator.adapters.store.database import make_engine, migrate
from vpp_aggregator.adapters.store.repository import Repository
from vpp_aggregator.app.forecast_parts import part_extras
from vpp_aggregator.app.forecast_service import ForecastService
from vpp_aggregator.domain.fleet_state import FleetState
from vpp_aggregator.domain.forecast.calendar import hour_of_week
from vpp_aggregator.domain.forecast.fleet import forecast, learn_profile
from vpp_aggregator.domain.forecast.quantiles import QUANTILES

NOW = datetime(2026, 11, 25, 14, 20, tzinfo=UTC)
N = 230  # 184 vehicles, 46 batteries: many parts of the sizes below
DAYS = 16  # past the 15 days a trained model needs


@pytest.fixture
def service(tmp_path: Path) -> Iterator[ForecastService]:
    state = FleetState(bess_min_soc_pct=20.0, stale_seconds=300.0, round_trip_efficiency=0.9)
    fleet = synthetic_fleet(N)
    state.upsert_many(fleet, NOW)
    rng = np.random.default_rng(3)
    state.apply_telemetry(
        np.arange(N, dtype=np.int64),
        np.full(N, NOW.timestamp() - 30.0),
        rng.uniform(20, 95, N),
        rng.random(N) < 0.8,
        np.zeros(N),
        NOW,
    )
    engine = make_engine(f"sqlite:///{tmp_path / 'f.db'}")
    migrate(engine)
    svc = ForecastService(
        state,
        Repository(engine),
        lambda: NOW,
        max_horizon_hours=72,
        timezone="America/Los_Angeles",
        hold_s=300.0,
        history_days=DAYS,
        model_dir=tmp_path / "models",
    )
    svc.history_ready.set()
    ids = [r.resource_id for r in fleet]
    home = rng.integers(14, 22, N)
    for h in range(DAYS * 24, 0, -1):
        t = NOW.timestamp() - h * 3600.0
        hour = int(t // 3600) % 24
        plugged = ((hour >= home) | (hour < 7)) & (rng.random(N) < 0.9)
        report = rng.random(N) < 0.85  # gaps: not every resource reports every hour
        svc.record(
            [r for r, k in zip(ids, report.tolist(), strict=True) if k],
            np.full(int(report.sum()), t),
            plugged[report],
            rng.uniform(30, 90, int(report.sum())),
        )
    svc.inputs.add_event(
        "depot stand-down", "NODE_03", NOW + timedelta(hours=3), NOW + timedelta(hours=9), 0.4
    )
    svc.inputs.add_event("heat", None, NOW + timedelta(hours=20), NOW + timedelta(hours=30), 1.5)
    yield svc
    engine.dispose()


def _answers(svc: ForecastService, rows: int | None, node: str | None = None) -> list[dict]:  # type: ignore[type-arg]
    svc.part_rows = rows
    out = []
    for hours, minutes in ((24, 60), (30, 15)):
        doc, fallback = svc._forecast(hours, minutes, node)
        out.append((doc, fallback))
    return out  # type: ignore[return-value]


def _same(a: dict, b: dict) -> None:  # type: ignore[type-arg]
    assert a["resource_count"] == b["resource_count"]
    assert a["model"] == b["model"]
    assert a["events"] == b["events"]
    for x, y in zip(a["intervals"], b["intervals"], strict=True):
        assert x["start"] == y["start"]
        for name in ("available_vehicles", "discharge_kw", "discharge_kwh", "charge_kw"):
            for q in QUANTILES:  # rounded to 3 decimals: round-off may flip the last
                assert x[name][q] == pytest.approx(y[name][q], rel=1e-9, abs=1.1e-3)


@pytest.mark.parametrize("node", [None, "NODE_03"])
def test_parts_of_any_size_give_the_same_forecast(
    service: ForecastService, node: str | None
) -> None:
    whole = _answers(service, None, node)  # one part per kind at this size
    for rows in (1, 7, 50):
        parts = _answers(service, rows, node)
        for (doc_a, fb_a), (doc_b, fb_b) in zip(whole, parts, strict=True):
            _same(doc_a, doc_b)
            for name in ("vehicles", "discharge_kw", "discharge_kwh", "charge_kw"):
                np.testing.assert_allclose(
                    getattr(fb_a, name), getattr(fb_b, name), rtol=1e-10, atol=1e-9
                )
    assert whole[0][0]["model"]["fallback"] is True
    assert max(i["available_vehicles"]["p50"] for i in whole[0][0]["intervals"]) > 1


def test_parts_match_the_whole_fleet_worked_at_once(service: ForecastService) -> None:
    """Against the forecast of the fleet in one piece: the profile learned over every resource
    (its prior from the rows themselves), every matrix of (resources, intervals) built at once."""
    service.part_rows = 11
    doc, fallback = service._forecast(24, 60, None)
    inputs, _ = service.state.dispatch_inputs(NOW, NOW, direction=1)
    now_h = int(NOW.timestamp() // 3600)
    window = service.history.window(inputs.resource_ids, now_h)
    mid = np.arange(window.start_hour, now_h, dtype=np.float64) * 3600.0 + 1800.0
    zone = service.zone
    profile = learn_profile(
        window.raw,
        hour_of_week(mid, zone),
        window.soc_when_plugged,
        inputs.soc_pct,
        inputs.is_bess,
        soc_by_hour=window.soc_by_hour,
    )
    start = NOW.replace(minute=0)
    step = timedelta(hours=1)
    starts = np.array([(start + i * step).timestamp() + 1800.0 for i in range(24)])
    events = service.store.events_between(start, start + 24 * step)
    away, scale = part_extras(service.state, events, start, step, 24)(inputs)
    assert scale is not None and away.any()
    want = forecast(
        inputs,
        profile,
        hour_of_week(starts, zone),
        away,
        1.0,
        inputs.available,
        service.state.round_trip_efficiency,
        offset_min=(start - NOW).total_seconds() / 60.0,
        availability_scale=scale,
        utc_hour=(starts // 3600).astype(np.int64) % 24,
    )
    for name in ("vehicles", "discharge_kw", "discharge_kwh", "charge_kw"):
        np.testing.assert_allclose(getattr(fallback, name), getattr(want, name), rtol=1e-10)
    assert doc["model"]["history_hours"] == int(window.samples.sum())


def test_the_trained_model_is_served_the_same_from_parts(service: ForecastService) -> None:
    from benchmarks.suite import DEMO_SESSIONS
    from vpp_aggregator.adapters.data.forecasting import train

    assert service.model_dir is not None
    train(DEMO_SESSIONS, None, "America/Los_Angeles", service.model_dir)
    whole = _answers(service, None)
    assert whole[0][0]["model"]["fallback"] is False
    for (doc_a, _), (doc_b, _) in zip(whole, _answers(service, 13), strict=True):
        _same(doc_a, doc_b)


@pytest.mark.parametrize("clock_change", [False, True])
def test_a_profile_of_some_hours_of_week_is_the_whole_profile_there(
    service: ForecastService, clock_change: bool
) -> None:
    """A forecast asks the profile only for its intervals' hours of week: those come out exactly
    as from the whole profile, for vehicles and batteries mixed, and every other hour is NaN (a
    forecast that read one would show it). With a clock change in the window the hours of week
    are not equally often in it (the grouped sums instead of the reshaped ones)."""
    inputs, _ = service.state.dispatch_inputs(NOW, NOW, direction=1)
    assert inputs.is_bess.any() and not inputs.is_bess.all()
    now_h = int(NOW.timestamp() // 3600)
    window = service.history.window(inputs.resource_ids, now_h)
    mid = np.arange(window.start_hour, now_h, dtype=np.float64) * 3600.0 + 1800.0
    how = hour_of_week(mid, service.zone)
    if clock_change:  # an hour of week twice, as the day the clocks go back has it
        how = how.copy()
        how[5] = how[4]
    args = (window.raw, how, window.soc_when_plugged, inputs.soc_pct, inputs.is_bess)
    whole = learn_profile(*args).p_plugged
    asked = np.unique([0, 7, 8, 9, 100, 167, int(how[4])])
    some = learn_profile(*args, hows=asked).p_plugged
    np.testing.assert_array_equal(some[:, asked], whole[:, asked])
    others = np.setdiff1d(np.arange(168), asked)
    assert np.isnan(some[:, others]).all()
    assert not np.isnan(whole).any()


def test_training_waits_until_the_stored_history_is_read(service: ForecastService) -> None:
    """A model learns from the forecast's own history: right after a start, while the stored
    history is still being read, training is refused with why, not fitted on a part of it."""
    from vpp_aggregator.app.forecast_inputs import ForecastRejectedError

    service.history_ready.clear()
    with pytest.raises(ForecastRejectedError, match="still being read"):
        service.models.train_now()
    service.history_ready.set()
    with pytest.raises(ForecastRejectedError, match="at least 21 days"):
        service.models.train_now()  # 16 days of history: the next reason
