"""GET /capacity/forecast on the fleet's own history (the documented seasonal-profile fallback)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api_helpers import bess_body, ev_body, sample
from conftest import Clock
from vpp_aggregator.adapters.api.app import create_app
from vpp_aggregator.adapters.api.schemas_forecast import ForecastOut
from vpp_aggregator.config import load_settings
from vpp_aggregator.domain.forecast.quantiles import QUANTILES


@pytest.fixture
def client(tmp_path, clock: Clock) -> Iterator[TestClient]:  # type: ignore[no-untyped-def]
    settings = load_settings(DATABASE_URL=f"sqlite:///{tmp_path / 'f.db'}", VPP_SITE_TIMEZONE="UTC")
    with TestClient(create_app(settings, clock=clock)) as c:
        yield c


def test_forecast_follows_history_schedules_and_keeps_batteries(
    client: TestClient, clock: Clock
) -> None:
    # ev-day is plugged in 08:00-18:00 UTC, ev-night the other hours, for two weeks of history.
    client.post("/resources/register", json=ev_body("ev-day"))
    client.post("/resources/register", json=ev_body("ev-night"))
    client.post("/resources/register", json=bess_body("bess-1"))
    now = clock.now  # 2026-11-25 12:00 UTC, a Wednesday
    batch = []
    for hours_back in range(1, 14 * 24):
        t = now - timedelta(hours=hours_back)
        day = 8 <= t.hour < 18
        batch += [
            sample("ev-day", t, 70, plugged=day),
            sample("ev-night", t, 70, plugged=not day),
            sample("bess-1", t, 60),
        ]
    batch += [
        sample(r, now, 70, plugged=(r != "ev-night")) for r in ("ev-day", "ev-night", "bess-1")
    ]
    for i in range(0, len(batch), 5000):
        assert client.post("/telemetry", json={"samples": batch[i : i + 5000]}).status_code == 200
    # ev-day leaves on a trip tomorrow 09:00-15:00.
    trip = {
        "departure": (now + timedelta(hours=21)).isoformat(),
        "return": (now + timedelta(hours=27)).isoformat(),
        "required_soc_pct": 80,
    }
    assert client.patch("/resources/ev-day", json={"trips": [trip]}).status_code == 200
    r = client.get("/capacity/forecast", params={"horizon_hours": 48, "interval_minutes": 60})
    assert r.status_code == 200, r.text
    doc = r.json()
    ForecastOut.model_validate(doc)
    assert doc["model"]["fallback"] is True and len(doc["intervals"]) == 48
    by_hour = {
        i["start"][11:13]
        + ("+1" if i["start"][:10] != doc["intervals"][0]["start"][:10] else ""): i
        for i in doc["intervals"]
    }
    # Tonight at 22:00 only ev-night and the battery are expected; at 12:00 tomorrow ev-day is on its trip.
    assert by_hour["22"]["available_vehicles"]["p50"] == pytest.approx(2.0, abs=0.35)
    assert by_hour["12+1"]["available_vehicles"]["p50"] == pytest.approx(1.0, abs=0.35)
    assert by_hour["16+1"]["available_vehicles"]["p50"] == pytest.approx(2.0, abs=0.35)
    for i in doc["intervals"]:
        for key in ("available_vehicles", "discharge_kw", "discharge_kwh", "charge_kw"):
            q = i[key]
            assert 0 <= q["p5"] <= q["p10"] <= q["p20"] <= q["p30"] <= q["p50"] <= q["p90"]
    # The battery alone always offers its discharge power: (70-20) % of 500 kWh (its live SoC) is
    # 250 kWh in its cells, sqrt(0.9) of that at the grid over 1 h (237.2 kW, under its 250 kW limit).
    assert all(i["discharge_kw"]["p10"] >= 250 * 0.9**0.5 - 1e-3 for i in doc["intervals"])


def test_forecast_rejects_bad_requests(client: TestClient) -> None:
    client.post("/resources/register", json=bess_body("bess-1"))
    assert client.get("/capacity/forecast", params={"horizon_hours": 100}).status_code == 422
    assert client.get("/capacity/forecast", params={"interval_minutes": 30}).status_code == 422
    r = client.get("/capacity/forecast", params={"grid_node": "NOWHERE"})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "grid_node"


def _gauges(client: TestClient, prefix: str = "vpp_forecast_") -> dict[str, float]:
    """The forecast-accuracy series of GET /metrics, `name{labels}` -> value."""
    lines = client.get("/metrics").text.splitlines()
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in lines
        if line.startswith(prefix)
    }


def test_forecast_accuracy_gauges_exist_from_start_up(client: TestClient) -> None:
    g = _gauges(client)
    # Nothing scored yet: the fallback's series are there, not a number (compares false in alerts)
    assert math.isnan(g['vpp_forecast_mape{model="fallback"}'])
    assert math.isnan(g['vpp_forecast_wape{model="fallback"}'])
    assert g['vpp_forecast_scored_hours{model="fallback"}'] == 0
    assert not any('model="trained"' in k for k in g)  # no trained model, no series for one


def test_online_accuracy_compares_forecasts_with_what_happened(
    client: TestClient, clock: Clock
) -> None:
    client.post("/resources/register", json=bess_body("bess-1"))
    agg = client.app.state.aggregator  # type: ignore[attr-defined]
    for _ in range(3):  # three hours: the battery reports and is available all along
        client.post("/telemetry", json={"samples": [sample("bess-1", clock.now, 60)]})
        agg.forecast.track_accuracy()
        clock.advance(minutes=30)
        client.post("/telemetry", json={"samples": [sample("bess-1", clock.now, 60)]})
        agg.forecast.track_accuracy()
        clock.advance(minutes=30)
    agg.forecast.track_accuracy()
    g = _gauges(client)
    assert g['vpp_forecast_scored_hours{model="fallback"}'] >= 2
    # a battery that never leaves is easy
    assert g['vpp_forecast_mape{model="fallback"}'] == pytest.approx(0.0, abs=1e-9)
    assert g['vpp_forecast_wape{model="fallback"}'] == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("enabled", [True, False])
def test_the_follow_through_scores_the_forecast_only_where_told_to(
    tmp_path,
    clock: Clock,
    enabled: bool,  # type: ignore[no-untyped-def]
) -> None:
    from vpp_aggregator.bootstrap import jobs

    settings = load_settings(
        DATABASE_URL=f"sqlite:///{tmp_path / 'a.db'}",
        VPP_SITE_TIMEZONE="UTC",
        VPP_MARKET_ENABLED="false",
        VPP_DISPATCH_TICK_SECONDS="300",  # the test runs the job itself
        VPP_FORECAST_ACCURACY_ENABLED=str(enabled).lower(),
    )
    with TestClient(create_app(settings, clock=clock)) as c:
        c.post("/resources/register", json=bess_body("bess-1"))
        agg = c.app.state.aggregator  # type: ignore[attr-defined]
        follow = next(j for j in jobs(settings, agg, None) if j.name == "dispatch follow-through")
        for _ in range(6):  # three hours, the battery reporting every half hour
            c.post("/telemetry", json={"samples": [sample("bess-1", clock.now, 60)]})
            follow.run()
            clock.advance(minutes=30)
        follow.run()
        scored = _gauges(c)['vpp_forecast_scored_hours{model="fallback"}']
    assert (scored >= 2) if enabled else (scored == 0)


DATA = __import__("pathlib").Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.mark.skipif(not (DATA / "acn_office001").is_dir(), reason="shared/data not beside the repo")
def test_api_serves_the_stored_model(tmp_path, clock: Clock) -> None:  # type: ignore[no-untyped-def]
    from vpp_aggregator.adapters.data.forecasting import train

    models = tmp_path / "models"
    path = train(DATA / "acn_office001" / "sessions_office001.csv", None, "UTC", models)
    version = path.stem.removeprefix("forecast-")
    settings = load_settings(
        DATABASE_URL=f"sqlite:///{tmp_path / 'f.db'}",
        VPP_SITE_TIMEZONE="UTC",
        VPP_MODEL_DIR=str(models),
    )
    with TestClient(create_app(settings, clock=clock)) as c:
        evs = [f"ev-{i}" for i in range(8)]
        for rid in evs:
            c.post("/resources/register", json=ev_body(rid))
        batch = []
        for hours_back in range(1, 21 * 24):
            t = clock.now - timedelta(hours=hours_back)
            work = t.weekday() < 5 and 8 <= t.hour < 17
            batch += [sample(rid, t, 70, plugged=work and i % 4 != 0) for i, rid in enumerate(evs)]
        batch += [sample(rid, clock.now, 70, plugged=True) for rid in evs]
        for i in range(0, len(batch), 10_000):
            assert c.post("/telemetry", json={"samples": batch[i : i + 10_000]}).status_code == 200
        doc = c.get("/capacity/forecast", params={"horizon_hours": 36}).json()
        ForecastOut.model_validate(doc)
        assert doc["model"]["fallback"] is False and doc["model"]["version"] == version
        hours = {i["start"][:13]: i["available_vehicles"] for i in doc["intervals"]}
        night = hours["2026-11-26T02"]["p50"]
        day = hours["2026-11-26T12"]["p50"]
        assert day > night + 1  # the stored model carries the fleet's working-day pattern
        for i in doc["intervals"]:
            q = i["available_vehicles"]
            assert 0 <= q["p10"] <= q["p50"] <= q["p90"] <= len(evs)


def test_forecast_respects_departure_floor_and_live_soc(tmp_path, clock: Clock) -> None:  # type: ignore[no-untyped-def]
    """Where the operator keeps only drivers seen leaving early to their need (the floor of the
    others rises toward their departure)."""
    settings = load_settings(
        DATABASE_URL=f"sqlite:///{tmp_path / 'f.db'}",
        VPP_SITE_TIMEZONE="UTC",
        VPP_NEED_FLOOR_EARLY_LEAVES=2,
    )
    with TestClient(create_app(settings, clock=clock)) as client:
        _departure_floor_and_live_soc(client, clock)


def _departure_floor_and_live_soc(client: TestClient, clock: Clock) -> None:
    client.post("/resources/register", json=ev_body("ev-1"))  # 200 kWh, 60 kW
    now = clock.now
    batch = [sample("ev-1", now - timedelta(hours=h), 90, plugged=True) for h in range(1, 7 * 24)]
    batch.append(sample("ev-1", now, 50, plugged=True))  # came back low today
    client.post("/telemetry", json={"samples": batch})
    trip = {
        "departure": (now + timedelta(minutes=150)).isoformat(),
        "return": (now + timedelta(hours=10)).isoformat(),
        "required_soc_pct": 90,
    }
    client.patch("/resources/ev-1", json={"trips": [trip]})
    iv = client.get("/capacity/forecast", params={"horizon_hours": 4}).json()["intervals"]
    # Energy at the grid: charging stores, and discharging delivers, ETA of each kWh.
    eta = 0.9**0.5
    # Live SoC first (50 %, not the 90 % it usually has), above the floor raised for a departure
    # 1.5 h after this interval: 90 - ETA * 60 kW * 1.5 h / 200 kWh = 47.3 % -> 2.7 % of 200 kWh.
    floor_0 = 90 - eta * 60 * 1.5 / 200 * 100
    assert iv[0]["discharge_kwh"]["p50"] == pytest.approx((50 - floor_0) * 2 * eta, abs=1e-3)
    # 13:00-14:00 ends 30 min before it leaves needing 90 %: floor 90 - ETA * 60 kW * 0.5 h /
    # 200 kWh = 75.8 %, under the SoC it has when plugged in at that hour of day (90 % every day
    # before; today's 50 % is of another hour).
    typical = 90.0
    floor_1 = 90 - eta * 60 * 0.5 / 200 * 100
    assert iv[1]["discharge_kwh"]["p50"] == pytest.approx(
        (typical - floor_1) / 100 * 200 * eta * iv[1]["available_vehicles"]["p50"], rel=1e-3
    )
    # It leaves inside 14:00-15:00: not available then, nor while away.
    assert iv[2]["available_vehicles"]["p50"] == 0 and iv[3]["available_vehicles"]["p50"] == 0


def test_operator_events_scale_availability_and_weather_is_stored(
    client: TestClient, clock: Clock
) -> None:
    client.post("/resources/register", json=ev_body("ev-1", grid_node="NODE_A"))
    client.post("/resources/register", json=ev_body("ev-2", grid_node="NODE_B"))
    now = clock.now
    batch = [
        sample(r, now - timedelta(hours=h), 70) for h in range(0, 7 * 24) for r in ("ev-1", "ev-2")
    ]
    client.post("/telemetry", json={"samples": batch})
    stand_down = {
        "name": "Depot A stand-down",
        "grid_node": "NODE_A",
        "availability_factor": 0.0,
        "start": (now + timedelta(hours=2)).isoformat(),
        "end": (now + timedelta(hours=4)).isoformat(),
    }
    r = client.post("/forecast/events", json=stand_down)
    assert r.status_code == 201 and r.json()["event_id"].startswith("evt-")
    doc = client.get("/capacity/forecast", params={"horizon_hours": 6}).json()
    assert [e["name"] for e in doc["events"]] == ["Depot A stand-down"]
    vehicles = [i["available_vehicles"]["p50"] for i in doc["intervals"]]
    assert vehicles[1] == pytest.approx(2.0, abs=0.05) and vehicles[5] == pytest.approx(
        2.0, abs=0.05
    )
    assert vehicles[2] == pytest.approx(1.0, abs=0.05) and vehicles[3] == pytest.approx(
        1.0, abs=0.05
    )
    bad = {**stand_down, "availability_factor": 5, "grid_node": "NOWHERE"}
    assert {e["field"] for e in client.post("/forecast/events", json=bad).json()["errors"]} == {
        "availability_factor",
        "grid_node",
    }
    hours = [
        {
            "hour_utc": (now + timedelta(hours=h)).isoformat(),
            "temperature_c": 12.5,
            "precipitation_mm": 0.0,
        }
        for h in range(3)
    ]
    assert client.post("/forecast/weather", json={"hours": hours}).json() == {"stored": 3}
    assert (
        client.post(
            "/forecast/weather", json={"hours": [{"hour_utc": "2026-11-25T12:00:00"}]}
        ).status_code
        == 422
    )
    # Physically impossible weather is refused, naming the field.
    for field, value in (("temperature_c", 1e6), ("precipitation_mm", -1.0)):
        r = client.post(
            "/forecast/weather",
            json={"hours": [{"hour_utc": now.isoformat(), field: value}]},
        )
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == f"hours.0.{field}"


def _training_settings(tmp_path: Any) -> Any:
    return load_settings(
        DATABASE_URL=f"sqlite:///{tmp_path / 'f.db'}",
        VPP_SITE_TIMEZONE="UTC",
        VPP_MODEL_DIR=str(tmp_path / "models"),
        # the tests score accuracy themselves: the follow-through tick (which does too) must
        # not make this hour's forecast before the model is trained, on a busy machine
        VPP_DISPATCH_TICK_SECONDS="300",
    )


def _trained(c: TestClient) -> dict[str, Any]:
    """Ask for training and wait (bounded: at most 30 s) until it is no longer running."""
    import time as _time

    assert c.post("/forecast/model/train").status_code == 202
    for _ in range(600):
        state: dict[str, Any] = c.get("/forecast/model").json()["training"]
        if state["state"] != "running":
            break
        _time.sleep(0.05)
    return state


def test_training_runs_in_the_background_and_the_new_model_is_served_and_scored_on_its_own(
    tmp_path, clock: Clock
) -> None:  # type: ignore[no-untyped-def]
    with TestClient(create_app(_training_settings(tmp_path), clock=clock)) as c:
        evs = [f"ev-{i}" for i in range(6)]
        for rid in evs:
            c.post("/resources/register", json=ev_body(rid))
        assert c.get("/forecast/model").json()["current"] is None
        # Too little history: the job reports why and the profile keeps answering.
        assert _trained(c)["state"] == "skipped"
        batch = []
        for hours_back in range(0, 28 * 24):
            t = clock.now - timedelta(hours=hours_back)
            batch += [
                sample(rid, t, 70, plugged=(8 <= t.hour < 17 and i % 3 != 0))
                for i, rid in enumerate(evs)
            ]
        for i in range(0, len(batch), 10_000):
            c.post("/telemetry", json={"samples": batch[i : i + 10_000]})
        state = _trained(c)
        assert state["state"] == "done", state
        status_doc = c.get("/forecast/model").json()
        assert status_doc["current"]["version"] == state["version"]
        doc = c.get("/capacity/forecast", params={"horizon_hours": 24}).json()
        assert doc["model"]["fallback"] is False and doc["model"]["version"] == state["version"]
        ForecastOut.model_validate(doc)
        for i in doc["intervals"]:  # the model's levels rise too: P5 <= P10 <= ... <= P90
            for key in ("available_vehicles", "discharge_kw", "discharge_kwh", "charge_kw"):
                values = [i[key][q] for q in QUANTILES]
                assert values[0] >= 0 and values == sorted(values), (key, i[key])
        # The model's online accuracy is a series of its own beside the fallback's, which goes
        # on being scored on the same hours.
        assert 'model="trained"' not in c.get("/metrics").text
        agg = c.app.state.aggregator  # type: ignore[attr-defined]
        for _ in range(6):  # three hours of the same routine
            plugged = 8 <= clock.now.hour < 17
            now = [
                sample(r, clock.now, 70, plugged=plugged and i % 3 != 0) for i, r in enumerate(evs)
            ]
            c.post("/telemetry", json={"samples": now})
            agg.forecast.track_accuracy()
            clock.advance(minutes=30)
        agg.forecast.track_accuracy()
        g = _gauges(c)
        assert g['vpp_forecast_scored_hours{model="trained"}'] >= 2
        assert (
            g['vpp_forecast_scored_hours{model="trained"}']
            == g['vpp_forecast_scored_hours{model="fallback"}']
        )
        for model in ("trained", "fallback"):
            assert math.isfinite(g[f'vpp_forecast_mape{{model="{model}"}}'])
            assert math.isfinite(g[f'vpp_forecast_wape{{model="{model}"}}'])


def test_training_on_weeks_of_history_with_almost_no_data_is_skipped_with_its_reason(
    tmp_path, clock: Clock
) -> None:  # type: ignore[no-untyped-def]
    """A fleet heard from 25 days ago (inside the forecast's 28 days of history) and now, silent
    between (a telemetry outage): the span passes the 21-day rule but there is nothing to learn
    from; training says so instead of failing inside the tree library."""
    with TestClient(create_app(_training_settings(tmp_path), clock=clock)) as c:
        evs = [f"ev-{i}" for i in range(3)]
        for rid in evs:
            c.post("/resources/register", json=ev_body(rid))
        old = clock.now - timedelta(days=25)
        batch = [sample(r, t, 70, plugged=True) for r in evs for t in (old, clock.now)]
        c.post("/telemetry", json={"samples": batch})
        state = _trained(c)
        assert state["state"] == "skipped", state
        assert "Too little to train on" in state["reason"], state
        assert c.get("/forecast/model").json()["current"] is None


def test_a_model_from_another_version_is_not_served(tmp_path, clock: Clock) -> None:  # type: ignore[no-untyped-def]
    models = tmp_path / "models"
    models.mkdir()
    old = {
        "name": "lightgbm-quantile-direct",
        "version": "20250101T000000Z",
        "model": {
            "features": ["horizon_h", "hour_local"],
            "band_adjust": 0.0,
            "trained_rows": 1,
            "boosters": {},
        },
    }
    (models / "forecast-20250101T000000Z.json").write_text(__import__("json").dumps(old))
    settings = load_settings(
        DATABASE_URL=f"sqlite:///{tmp_path / 'f.db'}",
        VPP_SITE_TIMEZONE="UTC",
        VPP_MODEL_DIR=str(models),
    )
    with TestClient(create_app(settings, clock=clock)) as c:
        c.post("/resources/register", json=ev_body("ev-1"))
        c.post("/telemetry", json={"samples": [sample("ev-1", clock.now, 70, plugged=True)]})
        r = c.get("/capacity/forecast", params={"horizon_hours": 6})
        assert r.status_code == 200 and r.json()["model"]["fallback"] is True
        status = c.get("/forecast/model").json()
        assert status["current"] is None
        assert status["unusable_models"] == ["forecast-20250101T000000Z.json"]


def test_concurrent_forecasts_for_different_nodes_do_not_share_per_call_state(
    client: TestClient, clock: Clock
) -> None:
    """The capacity route (thread pool) and the market loop forecast at once: each call keeps
    its arrays to itself, so a NODE_A stand-down never leaks into NODE_B's answer."""
    client.post("/resources/register", json=ev_body("ev-1", grid_node="NODE_A"))
    for rid in ("ev-2", "ev-3"):
        client.post("/resources/register", json=ev_body(rid, grid_node="NODE_B"))
    now = clock.now
    batch = [
        sample(r, now - timedelta(hours=h), 70)
        for h in range(0, 3 * 24)
        for r in ("ev-1", "ev-2", "ev-3")
    ]
    client.post("/telemetry", json={"samples": batch})
    stand_down = {
        "name": "Depot A stand-down",
        "grid_node": "NODE_A",
        "availability_factor": 0.0,
        "start": (now + timedelta(hours=1)).isoformat(),
        "end": (now + timedelta(hours=5)).isoformat(),
    }
    assert client.post("/forecast/events", json=stand_down).status_code == 201
    service = client.app.state.aggregator.forecast  # type: ignore[attr-defined]
    attributes = set(vars(service))

    def intervals(node: str | None) -> list[Any]:
        return service.capacity_forecast(12, 15, node)["intervals"]  # type: ignore[no-any-return]

    expected = {node: intervals(node) for node in ("NODE_A", "NODE_B", None)}
    assert expected["NODE_A"][8]["available_vehicles"]["p90"] == pytest.approx(0.0, abs=0.01)
    assert expected["NODE_B"][8]["available_vehicles"]["p90"] > 1.5  # the stand-down is A's
    with ThreadPoolExecutor(max_workers=6) as pool:
        jobs = [(node, pool.submit(intervals, node)) for node in ("NODE_A", "NODE_B", None) * 20]
        answers = [(node, job.result(timeout=300)) for node, job in jobs]
    assert all(answer == expected[node] for node, answer in answers)
    assert set(vars(service)) == attributes  # nothing of a call was left on the service
