"""Offers at any of the forecast's quantile levels (P5 to P50, and P90): the trade-off the replay
measures between delivering what is sold and how much is offered."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from fastapi.testclient import TestClient

from api_helpers import ev_body, sample
from conftest import Clock
from vpp_aggregator.adapters.api.app import create_app
from vpp_aggregator.config import ConfigError, load_settings
from vpp_aggregator.domain.forecast.fleet import from_sums
from vpp_aggregator.domain.forecast.quantiles import QUANTILES, column, from_three
from vpp_aggregator.replay.runner import ReplaySpec

FIGURES = ("available_vehicles", "discharge_kw", "discharge_kwh", "charge_kw")
EVS = 30


@contextmanager
def fleet_at(tmp_path: Path, clock: Clock, quantile: str) -> Iterator[TestClient]:
    """Thirty vehicles on one node that were plugged in at random, half the time, for two
    weeks (so the hours ahead are uncertain), offering in the real-time market at `quantile`.
    The same fleet and history each time: the seed is fixed."""
    settings = load_settings(
        DATABASE_URL=f"sqlite:///{tmp_path / f'{quantile}.db'}",
        VPP_SITE_TIMEZONE="UTC",
        VPP_MARKETS="real_time",
        VPP_MIN_CAPACITY_KW="10",
        VPP_MARKET_TICK_SECONDS="3600",  # offers only when the test asks, once the data is in
        VPP_OFFER_QUANTILE=quantile,
    )
    rng = np.random.default_rng(5)
    evs = [f"ev-{i}" for i in range(EVS)]
    with TestClient(create_app(settings, clock=clock)) as c:
        for rid in evs:
            assert c.post("/resources/register", json=ev_body(rid)).status_code == 201
        plugged = rng.random((14 * 24, EVS)) < 0.5
        plugged[0] = True  # all plugged in now
        batch = [
            sample(rid, clock.now - timedelta(hours=h), 70, plugged=bool(plugged[h, i]))
            for h in range(14 * 24)
            for i, rid in enumerate(evs)
        ]
        for i in range(0, len(batch), 5000):
            assert c.post("/telemetry", json={"samples": batch[i : i + 5000]}).status_code == 200
        yield c


def test_the_forecast_answers_every_level_in_order(tmp_path: Path, clock: Clock) -> None:
    with fleet_at(tmp_path, clock, "p10") as c:
        doc = c.get(
            "/capacity/forecast", params={"horizon_hours": 24, "interval_minutes": 15}
        ).json()
    for i in doc["intervals"]:
        for figure in FIGURES:
            assert list(i[figure]) == list(QUANTILES)
            values = [i[figure][q] for q in QUANTILES]
            assert values == sorted(values), (figure, i[figure])
    # The first interval is live (all thirty plugged in, nothing uncertain); the hours after
    # it are not, so the levels spread out: P5 < P10 < P20 < P30 < P50 < P90.
    first, later = doc["intervals"][0]["available_vehicles"], doc["intervals"][8]
    assert set(first.values()) == {EVS}
    for figure in ("available_vehicles", "discharge_kw"):
        values = [later[figure][q] for q in QUANTILES]
        assert all(a < b for a, b in pairwise(values)), values
    # Half of thirty on average, within what is possible.
    assert later["available_vehicles"]["p50"] == pytest.approx(EVS / 2, abs=3)
    assert later["available_vehicles"]["p5"] >= 0 and later["available_vehicles"]["p90"] <= EVS


def test_an_offer_at_p20_sells_between_the_p10_and_the_p50_offer(
    tmp_path: Path, clock: Clock
) -> None:
    made: dict[str, dict[str, float]] = {}
    forecast: dict[str, Any] = {}
    for q in ("p10", "p20", "p50"):
        with fleet_at(tmp_path, clock, q) as c:
            assert c.post("/market/offers/generate").status_code == 200
            window = {
                "from": clock.now.isoformat(),
                "to": (clock.now + timedelta(hours=3)).isoformat(),
            }
            offers = c.get("/market/offers", params=window).json()["items"]
            made[q] = {o["interval_start"]: o["max_power_kw"] for o in offers}
            assert {o["quantile"] for o in offers} == {q}
            if q == "p20":
                forecast = c.get(
                    "/capacity/forecast",
                    params={"horizon_hours": 3, "interval_minutes": 15},
                ).json()
    assert made["p10"].keys() == made["p20"].keys() == made["p50"].keys() and made["p20"]
    for start, kw in made["p20"].items():
        assert made["p10"][start] < kw < made["p50"][start]
    # Each five-minute offer sells the P20 of the quarter hour it falls in.
    quarters = {i["start"]: i["discharge_kw"]["p20"] for i in forecast["intervals"]}
    for start, kw in made["p20"].items():
        minute = int(start[14:16])
        quarter = start[:14] + f"{minute - minute % 15:02d}" + start[16:]
        assert kw == pytest.approx(quarters[quarter], abs=1e-3)


def test_an_offer_quantile_the_forecast_does_not_answer_is_a_clear_config_error() -> None:
    for q in ("p5", "p20", "p30", "p90"):
        assert load_settings(VPP_OFFER_QUANTILE=q).offer_quantile == q
    with pytest.raises(ConfigError) as refused:
        load_settings(VPP_OFFER_QUANTILE="p15")
    message = str(refused.value)
    assert "VPP_OFFER_QUANTILE='p15'" in message
    assert "p5, p10, p20, p30, p50, p90" in message


def test_the_replay_takes_the_same_levels(tmp_path: Path) -> None:
    sessions = tmp_path / "s.csv"
    sessions.write_text("")

    def spec(q: str) -> ReplaySpec:
        return ReplaySpec(sessions, date(2019, 3, 4), date(2019, 3, 5), tmp_path, quantile=q)

    for q in ("p5", "p10", "p20", "p30", "p50"):
        spec(q).check()
    with pytest.raises(ValueError, match="quantile 'p15' is not one of p5, p10, p20, p30, p50"):
        spec("p15").check()


def test_offers_are_documented_at_every_level() -> None:
    doc = yaml.safe_load((Path(__file__).parents[1] / "asyncapi.yaml").read_text())
    found = [
        schema["properties"]["quantile"]["enum"]
        for schema in _schemas(doc)
        if "quantile" in schema.get("properties", {})
    ]
    assert found and all(enum == list(QUANTILES) for enum in found)


def _schemas(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for v in node.values():
            yield from _schemas(v)
    elif isinstance(node, list):
        for v in node:
            yield from _schemas(v)


def test_levels_between_the_trained_three_follow_from_them_in_order() -> None:
    rng = np.random.default_rng(3)
    three = np.sort(rng.gamma(2.0, 5.0, size=(500, 3)), axis=1)
    every = from_three(three[:, 0], three[:, 1], three[:, 2])
    # P10, P50 and P90 come back as they were; every row rises with the level.
    for k, q in enumerate(("p10", "p50", "p90")):
        assert np.allclose(every[:, column(q)], three[:, k])
    assert (np.diff(every, axis=1) >= 0).all()
    # A symmetric band gives a normal law's levels: P20 is 0.657 of the way down to P10.
    sym = from_three(np.array([8.0]), np.array([10.0]), np.array([12.0]))[0]
    assert sym[column("p20")] == pytest.approx(10 - 2 * 0.8416 / 1.2816, abs=1e-3)
    # The fallback's normal approximation: rising levels, clipped to what is possible.
    sums = np.zeros((4, 4, 3))
    sums[:, 0] = [[5.0, 0.0, 9.9], [50.0, 80.0, 99.0], [50.0, 80.0, 99.0], [30.0, 40.0, 60.0]]
    sums[:, 1] = [[2.5, 0.0, 0.09], [250.0, 0.0, 1.0], [250.0, 0.0, 1.0], [100.0, 0.0, 1.0]]
    sums[:, 2] = [[0.0, 0.0, 9.0], [0.0, 0.0, 90.0], [0.0, 0.0, 90.0], [0.0, 0.0, 50.0]]
    sums[:, 3] = [[10.0, 0.0, 10.0], [100.0, 80.0, 100.0], [100.0, 80.0, 100.0], [60.0, 40.0, 60.0]]
    f = from_sums(sums)
    for figure in (f.vehicles, f.discharge_kw, f.discharge_kwh, f.charge_kw):
        assert figure.shape == (3, len(QUANTILES))
        assert (np.diff(figure, axis=1) >= 0).all()
    assert f.vehicles[0, column("p50")] == 5.0 and f.vehicles[0, column("p5")] < 5.0 - 2
    assert (f.vehicles[1] == 0.0).all()  # nobody possible: every level nothing
    assert f.vehicles[2, column("p5")] >= 9.0 and f.vehicles[2, column("p90")] <= 10.0
