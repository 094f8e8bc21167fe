"""Market access: offers per aggregation at the forecast's P10, awards, settlement from telemetry."""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta

import numpy as np
import pytest
from fastapi.testclient import TestClient

from api_helpers import add_batteries, bess_body, ev_body, sample
from asyncapi_contract import problems
from conftest import Clock
from vpp_aggregator.adapters.api.app import create_app
from vpp_aggregator.config import load_settings
from vpp_aggregator.domain.market import (
    OfferCurve,
    OfferCurveError,
    OfferInputs,
    build_offer,
    delivered_kwh,
)


def test_offer_curve_splits_the_quantity_into_priced_segments() -> None:
    curve = OfferCurve.parse("0.5:40,1.0:120")
    assert curve.segments(1000.0) == [
        {"mw": 0.5, "price_per_mwh": 40.0},
        {"mw": 0.5, "price_per_mwh": 120.0},
    ]
    for bad in ("0.5:40", "1.0:80,0.5:40", "0.5:90,1.0:40", "half:40"):
        with pytest.raises(OfferCurveError):
            OfferCurve.parse(bad)


def test_aggregations_below_the_market_minimum_are_not_offered() -> None:
    curve = OfferCurve.parse("1.0:50")
    x = OfferInputs("N", "2026-11-25T13:00:00+00:00", "2026-11-25T14:00:00+00:00", 99.9, 300, 80, 2)
    assert (
        build_offer(x, curve, min_capacity_kw=100, ramp_kw_per_min_per_resource=10, quantile="p10")
        is None
    )
    y = OfferInputs("N", x.start, x.end, 150.0, 300, 80, 3.0)
    offer = build_offer(
        y, curve, min_capacity_kw=100, ramp_kw_per_min_per_resource=10, quantile="p10"
    )
    assert offer is not None
    assert (offer["quantity_kw"], offer["ramp_rate_kw_per_min"], offer["energy_limit_kwh"]) == (
        150.0,
        30.0,
        300.0,
    )


def test_delivered_energy_holds_each_sample_until_the_next_or_until_it_goes_stale() -> None:
    ts = np.array([0.0, 600.0, 1200.0, 3000.0])
    kw = np.array([50.0, 100.0, -20.0, 80.0])
    # window 300..3600, each sample good for 600 s: 50 kW from 300 to 600, 100 kW 600-1200,
    # -20 kW (charging) 1200-1800, nothing known 1800-3000, 80 kW 3000-3600
    expected = (50 * 300 + 100 * 600 - 20 * 600 + 80 * 600) / 3600
    assert delivered_kwh(ts, kw, 300.0, 3600.0, 600.0) == pytest.approx(expected)
    # with a 300 s limit the first sample is stale before the window opens
    assert delivered_kwh(ts, kw, 300.0, 3600.0, 300.0) == pytest.approx(
        (100 * 300 - 20 * 300 + 80 * 300) / 3600
    )


def wait_until(check: Callable[[], bool], what: str, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.fixture
def market(tmp_path, clock: Clock) -> Iterator[TestClient]:  # type: ignore[no-untyped-def]
    settings = load_settings(
        DATABASE_URL=f"sqlite:///{tmp_path / 'm.db'}",
        VPP_SITE_TIMEZONE="UTC",
        VPP_MARKET_TICK_SECONDS="0.1",
        VPP_OFFER_HORIZON_HOURS="6",
    )
    with TestClient(create_app(settings, clock=clock)) as c:
        for i in range(3):
            c.post("/resources/register", json=bess_body(f"bess-{i}", grid_node="NODE_A"))
        c.post(
            "/resources/register",
            json=ev_body("ev-small", grid_node="NODE_B", max_discharge_kw=20.0),
        )
        c.post(
            "/telemetry",
            json={
                "samples": [sample(f"bess-{i}", clock.now, 90) for i in range(3)]
                + [sample("ev-small", clock.now, 80)]
            },
        )
        yield c


def test_offers_follow_the_forecast_p10_for_aggregations_that_qualify(market: TestClient) -> None:
    created = market.post("/market/offers/generate").json()
    offers = market.get("/market/offers").json()["items"]
    assert {o["aggregation_id"] for o in offers} == {"NODE_A"}  # 20 kW on NODE_B is below 100 kW
    forecast = market.get(
        "/capacity/forecast", params={"horizon_hours": 6, "grid_node": "NODE_A"}
    ).json()
    p10 = {i["start"]: i["discharge_kw"]["p10"] for i in forecast["intervals"]}
    assert len(offers) == 5  # the 5 whole hours ahead; the hour under way is not offered
    for o in offers:
        assert o["quantity_kw"] == pytest.approx(p10[o["interval_start"]])
        assert o["quantity_kw"] == pytest.approx(750.0)  # three 250 kW batteries that stay
        assert sum(s["mw"] for s in o["price_segments"]) == pytest.approx(0.75)
    again = market.post("/market/offers/generate").json()
    assert created["created"] in (0, 5) and again["created"] == 0  # an interval keeps its offer


def test_an_award_dispatches_once_and_settles_from_telemetry(
    market: TestClient, clock: Clock
) -> None:
    # An award clears an offer: the market loop makes them as soon as the fleet reports.
    wait_until(lambda: bool(market.get("/market/offers").json()["items"]), "offers")
    start = clock.now + timedelta(hours=1)
    award = {
        "award_id": "aw-1",
        "aggregation_id": "NODE_A",
        "interval_start": start.isoformat(),
        "interval_end": (start + timedelta(hours=1)).isoformat(),
        "awarded_kw": 300.0,
        "price_per_mwh": 55.0,
    }
    first = market.post("/market/awards", json=award)
    assert first.status_code == 201, first.text
    again = market.post("/market/awards", json=award)
    assert again.status_code == 200 and again.json()["outcome"] == "duplicate"
    dispatches = market.get("/dispatch").json()["items"]
    assert [(d["source"], d["reference"], d["target_kw"]) for d in dispatches] == [
        ("market_award", "aw-1", 300.0)
    ]
    bad = market.post(
        "/market/awards", json={**award, "award_id": "aw-2", "aggregation_id": "NOWHERE"}
    )
    assert bad.status_code == 422 and "NOWHERE" in bad.json()["errors"][0]["message"]
    # The batteries report what they exported during the hour: 100 kW each, every 2 minutes.
    for minute in range(0, 61, 2):
        clock.now = start + timedelta(minutes=minute)
        market.post(
            "/telemetry",
            json={
                "samples": [
                    sample(f"bess-{i}", clock.now, 89 - minute / 10, power=100.0) for i in range(3)
                ]
            },
        )
    clock.now = start + timedelta(hours=1, minutes=1)
    day = start.date().isoformat()

    def settled() -> bool:
        items = market.get("/market/settlement", params={"date": day}).json()["items"]
        return bool(items) and items[0]["status"] == "settled"

    wait_until(settled, "settlement after the interval")
    row = market.get("/market/settlement", params={"date": day}).json()["items"][0]
    assert row["awarded_kwh"] == pytest.approx(300.0)
    allocated = {
        a["resource_id"]
        for a in market.get(f"/dispatch/{dispatches[0]['dispatch_id']}").json()["allocations"]
    }
    assert row["delivered_kwh"] == pytest.approx(100.0 * len(allocated), rel=1e-6)
    assert {r["resource_id"] for r in row["resources"]} == allocated
    text = market.get("/market/settlement", params={"date": day, "format": "csv"}).text
    lines = list(csv.DictReader(io.StringIO(text)))
    assert [line["row"] for line in lines] == ["interval"] * 12 + ["resource"] * len(allocated)
    assert lines[0]["award_id"] == "aw-1"
    assert sum(float(line["delivered_kwh"]) for line in lines[:12]) == pytest.approx(
        row["delivered_kwh"], abs=1e-3
    )
    # What went out to the market gateway and the device gateway keeps to asyncapi.yaml.
    agg = market.app.state.aggregator  # type: ignore[attr-defined]
    sent = {
        name: [m for _, m in agg.bus.recent(getattr(agg.settings, topic))]
        for name, topic in (
            ("Offer", "topic_market_offers"),
            ("Settlement", "topic_market_settlement"),
            ("V2GCommand", "topic_v2g_commands"),
        )
    }
    assert all(sent.values()), {k: len(v) for k, v in sent.items()}
    assert {n: [p for m in ms for p in problems(n, m)] for n, ms in sent.items()} == {
        "Offer": [],
        "Settlement": [],
        "V2GCommand": [],
    }


def test_capacity_a_dispatch_holds_is_not_offered_again(tmp_path, clock: Clock) -> None:  # type: ignore[no-untyped-def]
    settings = load_settings(
        DATABASE_URL=f"sqlite:///{tmp_path / 'h.db'}",
        VPP_SITE_TIMEZONE="UTC",
        VPP_MARKET_ENABLED="false",  # offers only when asked, after the dispatch exists
        VPP_OFFER_HORIZON_HOURS="4",
    )
    with TestClient(create_app(settings, clock=clock)) as c:
        add_batteries(c, clock.now, "NODE_A")
        held = c.post(
            "/dispatch",
            json={"target_kw": 100, "duration_minutes": 150, "resource_ids": ["bess-0"]},
        )
        assert held.status_code == 201, held.text
        held_until = clock.now + timedelta(minutes=150)
        c.post("/market/offers/generate")
        offers = c.get("/market/offers").json()["items"]
        assert len(offers) == 3
        for o in offers:
            start = datetime.fromisoformat(o["interval_start"])
            if start < held_until:  # bess-0 (250 kW, 350 kWh above its floor) is taken
                assert (o["quantity_kw"], o["committed_kw"]) == (pytest.approx(500.0), 250.0)
                assert o["ramp_rate_kw_per_min"] == pytest.approx(20.0)  # two batteries ramp
            else:
                assert (o["quantity_kw"], o["committed_kw"]) == (pytest.approx(750.0), 0.0)
        # An award for a held hour is then one the two free batteries can carry.
        first = next(o for o in offers if o["committed_kw"] > 0)
        award = c.post(
            "/market/awards",
            json={
                "award_id": "aw-held",
                "aggregation_id": "NODE_A",
                "interval_start": first["interval_start"],
                "interval_end": first["interval_end"],
                "awarded_kw": first["quantity_kw"],
            },
        )
        assert award.status_code == 201, award.text
        dispatch = c.get(f"/dispatch/{award.json()['detail']}").json()
        assert dispatch["allocated_kw"] == pytest.approx(first["quantity_kw"])
        assert "bess-0" not in {a["resource_id"] for a in dispatch["allocations"]}
