"""Market access: offers per aggregation at the forecast's P10, awards, settlement from telemetry."""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

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
        VPP_OFFER_HORIZON_HOURS="48",  # 12:00 on the 25th: the 27th's day-ahead gate is open
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


def test_offers_follow_the_forecast_p10_in_both_markets_and_both_directions(
    market: TestClient, clock: Clock
) -> None:
    created = market.post("/market/offers/generate").json()
    window = {"from": clock.now.isoformat(), "to": (clock.now + timedelta(days=3)).isoformat()}
    offers = market.get("/market/offers", params=window).json()["items"]
    assert {o["aggregation_id"] for o in offers} == {"NODE_A"}  # 20 kW on NODE_B is below 100 kW
    forecast = market.get(
        "/capacity/forecast", params={"horizon_hours": 72, "grid_node": "NODE_A"}
    ).json()
    hourly = {i["start"]: i for i in forecast["intervals"]}
    day_ahead = [o for o in offers if o["market"] == "day_ahead"]
    # 12:00 on 25 November: the gate for the 26th closed at 10:00; the 27th's closes tomorrow.
    # Every offer of the day may be awarded, so the day's offers together fit the energy the
    # three batteries hold above their floors: 3 x (90 - 20) % of 500 kWh, less the losses on
    # the way out (√0.9), 996 kWh. Spread evenly that is 41.5 kW an hour, below the 100 kW
    # market minimum, so the minimum is offered in as many hours as it lasts: nine.
    day = datetime(2026, 11, 27, tzinfo=UTC)
    assert [o["interval_start"] for o in day_ahead] == [
        (day + timedelta(hours=h)).isoformat() for h in range(24)
    ][: len(day_ahead)]
    sold = [o for o in day_ahead if o["max_power_kw"] > 0]
    assert [o["interval_start"] for o in sold] == [
        (day + timedelta(hours=h)).isoformat() for h in range(9)
    ]
    usable_kwh = 3 * 0.70 * 500.0 * 0.9**0.5
    assert sum(o["max_power_kw"] for o in day_ahead) == pytest.approx(900.0)
    assert sum(o["max_power_kw"] for o in day_ahead) <= usable_kwh
    for o in day_ahead:
        p10 = hourly[o["interval_start"]]
        assert o["max_power_kw"] <= p10["discharge_kw"]["p10"] + 1e-6  # never above the P10
        assert o["quantity_kw"] == o["max_power_kw"] in (0.0, 100.0)
        assert o["energy_limit_kwh"] == pytest.approx(usable_kwh, rel=1e-3)
        assert o["min_power_kw"] == pytest.approx(-p10["charge_kw"]["p10"])  # the charge side
        assert o["min_power_kw"] <= -100.0
        charge, discharge = o["price_segments"][:1], o["price_segments"][1:]
        assert charge == [
            {"mw": pytest.approx(o["min_power_kw"] / 1000, abs=1e-4), "price_per_mwh": 20.0}
        ]
        assert sum(s["mw"] for s in discharge) == pytest.approx(o["max_power_kw"] / 1000)
        assert o["state_of_charge_kwh"] == pytest.approx(3 * 450.0)  # 90 % of 500 kWh each
    real_time = [o for o in offers if o["market"] == "real_time"]
    # every 5-minute interval whose gate (75 minutes before it) is open, over the next hour
    assert [o["interval_start"] for o in real_time] == [
        (clock.now + timedelta(minutes=75 + 5 * k)).isoformat() for k in range(12)
    ]
    assert all(
        datetime.fromisoformat(o["interval_end"]) - datetime.fromisoformat(o["interval_start"])
        == timedelta(minutes=5)
        for o in real_time
    )
    again = market.post("/market/offers/generate").json()
    # the market loop offers too, at once: between them each of the 36 intervals is offered once
    assert 0 <= created["created"] <= 36 and len(offers) == 36
    assert again["created"] == 0  # an interval keeps its offer
    clock.advance(minutes=5)  # one more real-time interval's gate opens; none closes unoffered
    opened = (clock.now + timedelta(minutes=130)).isoformat()
    made = [o["interval_start"] for o in market.post("/market/offers/generate").json()["items"]]
    assert made in ([], [opened])  # [] when the market loop offered it first
    window["to"] = (clock.now + timedelta(days=3)).isoformat()
    listed = market.get("/market/offers", params={**window, "market": "real_time"}).json()
    assert [o["interval_start"] for o in listed["items"]].count(opened) == 1


def test_the_day_ahead_gate_closes_at_its_local_time_the_day_before(tmp_path, clock: Clock) -> None:  # type: ignore[no-untyped-def]
    settings = load_settings(
        DATABASE_URL=f"sqlite:///{tmp_path / 'gate.db'}",
        VPP_SITE_TIMEZONE="America/Los_Angeles",
        VPP_MARKET_ENABLED="false",
        VPP_MARKETS="day_ahead",
        VPP_MARKET_DA_GATE_CLOSURE="10:00",
        VPP_OFFER_HORIZON_HOURS="24",
    )
    clock.now = datetime(2026, 11, 25, 17, 59, tzinfo=UTC)  # 09:59 in Los Angeles
    with TestClient(create_app(settings, clock=clock)) as c:
        add_batteries(c, clock.now, "NODE_A")
        made = c.post("/market/offers/generate").json()["items"]
        # the 26th, local midnight to midnight: 08:00 UTC on the 26th to 08:00 on the 27th
        assert [o["interval_start"] for o in made] == [
            (datetime(2026, 11, 26, 8, tzinfo=UTC) + timedelta(hours=h)).isoformat()
            for h in range(24)
        ]
        clock.now += timedelta(minutes=1)  # 10:00: the gate has closed
        c.post(
            "/telemetry", json={"samples": [sample(f"bess-{i}", clock.now, 90) for i in range(3)]}
        )
        assert c.post("/market/offers/generate").json()["created"] == 0


def test_a_day_ahead_day_is_offered_once_so_its_energy_is_sold_once(tmp_path, clock: Clock) -> None:  # type: ignore[no-untyped-def]
    # One 500 kWh battery at 90 % holds 350 kWh above its 20 % floor; its 50 kW charge side is
    # below the market minimum, so the hours its energy cannot cover get no offer at all. The
    # market ticks again and again before any award comes back (awards follow the gate's
    # closure): each tick used to offer three more hours of 100 kW from the same energy.
    settings = load_settings(
        DATABASE_URL=f"sqlite:///{tmp_path / 'once.db'}",
        VPP_SITE_TIMEZONE="UTC",
        VPP_MARKET_ENABLED="false",
        VPP_MARKETS="day_ahead",
        VPP_OFFER_HORIZON_HOURS="48",  # 12:00 on the 25th: the 27th's gate is open
    )
    with TestClient(create_app(settings, clock=clock)) as c:
        c.post("/resources/register", json=bess_body("bess-0", grid_node="N", max_charge_kw=50.0))
        c.post("/telemetry", json={"samples": [sample("bess-0", clock.now, 90)]})
        first = c.post("/market/offers/generate").json()["items"]
        usable_kwh = 0.70 * 500.0 * 0.9**0.5  # less the losses on the way out
        assert 0 < sum(o["max_power_kw"] for o in first) <= usable_kwh
        assert {o["interval_start"][:10] for o in first} == {"2026-11-27"}
        for _ in range(3):
            clock.advance(seconds=10)
            c.post("/telemetry", json={"samples": [sample("bess-0", clock.now, 90)]})
            assert c.post("/market/offers/generate").json()["created"] == 0
        clock.advance(hours=24)  # the 28th's gate opens: that day is offered, once
        c.post("/telemetry", json={"samples": [sample("bess-0", clock.now, 90)]})
        next_day = c.post("/market/offers/generate").json()["items"]
        assert {o["interval_start"][:10] for o in next_day} == {"2026-11-28"}
        assert 0 < sum(o["max_power_kw"] for o in next_day) <= usable_kwh
        assert c.post("/market/offers/generate").json()["created"] == 0


def test_real_time_intervals_sell_the_stored_energy_once(tmp_path, clock: Clock) -> None:  # type: ignore[no-untyped-def]
    # README "Two markets": one 500 kWh battery at 40 % holds 100 kWh above its 20 % floor
    # (94.9 at the grid). Each 5-minute interval of the hour offered together was offered at
    # the 250 kW the battery gives for five minutes: 250 kWh sold from 94.9.
    settings = load_settings(
        DATABASE_URL=f"sqlite:///{tmp_path / 'rt.db'}",
        VPP_SITE_TIMEZONE="UTC",
        VPP_MARKET_ENABLED="false",
        VPP_MARKETS="real_time",
    )
    usable_kwh = 0.20 * 500.0 * 0.9**0.5

    def sold_kwh(offers: list[dict[str, Any]]) -> float:
        return sum(
            o["max_power_kw"]
            * (
                datetime.fromisoformat(o["interval_end"])
                - datetime.fromisoformat(o["interval_start"])
            ).total_seconds()
            / 3600.0
            for o in offers
        )

    with TestClient(create_app(settings, clock=clock)) as c:
        c.post("/resources/register", json=bess_body("bess-0", grid_node="N", max_charge_kw=50.0))
        c.post("/telemetry", json={"samples": [sample("bess-0", clock.now, 40)]})
        first = c.post("/market/offers/generate").json()["items"]
        assert len(first) >= 6 and {o["market"] for o in first} == {"real_time"}
        assert 0.9 * usable_kwh <= sold_kwh(first) <= usable_kwh
        # The next interval opens before any award came back: those offered may all be awarded.
        clock.advance(minutes=5)
        c.post("/telemetry", json={"samples": [sample("bess-0", clock.now, 40)]})
        assert c.post("/market/offers/generate").json()["created"] == 0
        # Once the intervals offered are over without an award, their energy is offered again.
        clock.advance(hours=3)
        c.post("/telemetry", json={"samples": [sample("bess-0", clock.now, 40)]})
        later = c.post("/market/offers/generate").json()["items"]
        assert 0.9 * usable_kwh <= sold_kwh(later) <= usable_kwh


def test_real_time_keeps_the_energy_a_later_day_ahead_award_of_the_day_takes(
    tmp_path, clock: Clock
) -> None:  # type: ignore[no-untyped-def]
    # README "Two markets": the 25th's 02:00 hour is awarded 100 kW the morning before. At
    # 23:00 the battery holds 237 kWh above its floor (70 %, at the grid): the real-time hour
    # from 00:15 may sell 137 of them, and would have sold them all.
    settings = load_settings(
        DATABASE_URL=f"sqlite:///{tmp_path / 'both.db'}",
        VPP_SITE_TIMEZONE="UTC",
        VPP_MARKET_ENABLED="false",
        VPP_MARKETS="day_ahead,real_time",
        VPP_OFFER_HORIZON_HOURS="48",
    )
    clock.now = datetime(2026, 11, 24, 9, tzinfo=UTC)  # the 25th's gate closes at 10:00
    with TestClient(create_app(settings, clock=clock)) as c:
        c.post("/resources/register", json=bess_body("bess-0", grid_node="N", max_charge_kw=50.0))
        c.post("/telemetry", json={"samples": [sample("bess-0", clock.now, 90)]})
        offers = c.post("/market/offers/generate").json()["items"]
        two = next(
            o
            for o in offers
            if o["market"] == "day_ahead" and o["interval_start"] == "2026-11-25T02:00:00+00:00"
        )
        award = {
            "award_id": "da-02",
            "aggregation_id": "N",
            "interval_start": two["interval_start"],
            "interval_end": two["interval_end"],
            "awarded_kw": 100.0,
        }
        assert c.post("/market/awards", json=award).status_code == 201
        clock.now = datetime(2026, 11, 24, 23, tzinfo=UTC)
        c.post("/telemetry", json={"samples": [sample("bess-0", clock.now, 70)]})
        rt = [
            o
            for o in c.post("/market/offers/generate").json()["items"]
            if o["market"] == "real_time"
        ]
        assert rt and all(o["interval_end"] <= "2026-11-25T01:15:00+00:00" for o in rt)
        usable_kwh = 0.50 * 500.0 * 0.9**0.5
        assert 0.9 * (usable_kwh - 100.0) <= sum(o["max_power_kw"] * 5 / 60 for o in rt)
        assert (
            sum(o["max_power_kw"] * 5 / 60 for o in rt) <= usable_kwh - 100.0 + 0.01
        )  # kW to 3 places


def test_an_award_dispatches_once_and_settles_from_telemetry(
    market: TestClient, clock: Clock
) -> None:
    # An award clears an offer: the market loop makes them as soon as the fleet reports.
    wait_until(lambda: bool(market.get("/market/offers").json()["items"]), "offers")
    start = clock.now + timedelta(minutes=75)  # the first real-time interval still open
    award = {
        "award_id": "aw-1",
        "aggregation_id": "NODE_A",
        "interval_start": start.isoformat(),
        "interval_end": (start + timedelta(minutes=5)).isoformat(),
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
    # The batteries report what they exported during the interval: 100 kW each, every minute.
    agg = market.app.state.aggregator  # type: ignore[attr-defined]
    for minute in range(0, 6):
        clock.now = start + timedelta(minutes=minute)
        market.post(
            "/telemetry",
            json={
                "samples": [
                    sample(f"bess-{i}", clock.now, 89 - minute / 10, power=100.0) for i in range(3)
                ]
            },
        )
        if minute == 0:  # planned 75 minutes ahead: its commands go out as it is planned again
            wait_until(
                lambda: bool(agg.bus.recent(agg.settings.topic_v2g_commands)),
                "the dispatch's commands as it starts",
            )
    clock.now = start + timedelta(minutes=6)
    day = start.date().isoformat()

    def settled() -> bool:
        items = market.get("/market/settlement", params={"date": day}).json()["items"]
        return bool(items) and items[0]["status"] == "settled"

    wait_until(settled, "settlement after the interval")
    row = market.get("/market/settlement", params={"date": day}).json()["items"][0]
    assert row["awarded_kwh"] == pytest.approx(25.0)  # 300 kW for 5 minutes
    allocated = {
        a["resource_id"]
        for a in market.get(f"/dispatch/{dispatches[0]['dispatch_id']}").json()["allocations"]
    }
    assert row["delivered_kwh"] == pytest.approx(100.0 * len(allocated) / 12, rel=1e-6)
    assert row["baseline_method"] == "metered" and row["baseline_kwh"] == 0.0
    assert {r["resource_id"] for r in row["resources"]} == {"bess-0", "bess-1", "bess-2"}
    text = market.get("/market/settlement", params={"date": day, "format": "csv"}).text
    lines = list(csv.DictReader(io.StringIO(text)))
    assert [line["row"] for line in lines] == ["interval"] + ["resource"] * 3
    assert lines[0]["award_id"] == "aw-1"
    assert sum(float(line["delivered_kwh"]) for line in lines[:1]) == pytest.approx(
        row["delivered_kwh"], abs=1e-3
    )
    # What went out to the market gateway and the device gateway keeps to asyncapi.yaml.
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
        VPP_MARKETS="real_time",
        VPP_MARKET_RT_GATE_CLOSURE_MINUTES="120",  # 14:00 to 15:00, every 5 minutes
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
        assert len(offers) == 12
        free_from = held_until + timedelta(minutes=15)  # its ramp back to 0 kW done
        assert any(datetime.fromisoformat(o["interval_start"]) >= free_from for o in offers)
        for o in offers:
            start = datetime.fromisoformat(o["interval_start"])
            if start < held_until:  # bess-0 (250 kW, 350 kWh above its floor) is taken
                assert (o["quantity_kw"], o["committed_kw"]) == (pytest.approx(500.0), 250.0)
                assert o["ramp_rate_kw_per_min"] == pytest.approx(20.0)  # two batteries ramp
            elif start >= free_from:
                assert (o["quantity_kw"], o["committed_kw"]) == (pytest.approx(750.0), 0.0)
        # An award in a held interval is then one the two free batteries carry (in five
        # minutes, at 10 kW/min each, they reach 100 kW: the market reads the offer's ramp rate)
        first = next(o for o in offers if o["committed_kw"] > 0)
        award = c.post(
            "/market/awards",
            json={
                "award_id": "aw-held",
                "aggregation_id": "NODE_A",
                "interval_start": first["interval_start"],
                "interval_end": first["interval_end"],
                "awarded_kw": 60.0,
            },
        )
        assert award.status_code == 201, award.text
        dispatch = c.get(f"/dispatch/{award.json()['detail']}").json()
        assert dispatch["allocated_kw"] == pytest.approx(60.0)
        assert "bess-0" not in {a["resource_id"] for a in dispatch["allocations"]}


def test_aggregate_telemetry_reports_each_aggregations_net_power_and_range(
    tmp_path, clock: Clock
) -> None:  # type: ignore[no-untyped-def]
    settings = load_settings(
        DATABASE_URL=f"sqlite:///{tmp_path / 'agg.db'}",
        VPP_SITE_TIMEZONE="UTC",
        VPP_MARKET_ENABLED="false",
        VPP_AGGREGATE_TELEMETRY_SECONDS="0.1",
    )
    with TestClient(create_app(settings, clock=clock)) as c:
        add_batteries(c, clock.now, "NODE_A", count=2)
        c.post("/resources/register", json=ev_body("ev-1", grid_node="NODE_B"))
        clock.advance(seconds=1)  # newer than the batteries' first samples
        c.post(
            "/telemetry",
            json={
                "samples": [
                    sample("bess-0", clock.now, 60, power=120.0),  # exporting
                    sample("bess-1", clock.now, 60, power=-30.0),  # charging
                    sample("ev-1", clock.now - timedelta(hours=1), 50, power=-11.0),  # stale
                ]
            },
        )
        agg = c.app.state.aggregator  # type: ignore[attr-defined]
        topic = agg.settings.topic_aggregate_telemetry

        def latest() -> dict[str, dict[str, Any]]:
            return {m["aggregation_id"]: m for _, m in agg.bus.recent(topic)}

        wait_until(lambda: {"NODE_A", "NODE_B"} <= set(latest()), "aggregate telemetry")
        wait_until(lambda: latest()["NODE_A"]["net_power_kw"] == 90.0, "the latest samples")
        a, b = latest()["NODE_A"], latest()["NODE_B"]
        capacity = c.get("/capacity/available", params={"grid_node": "NODE_A"}).json()
        assert (a["resources"], a["resources_reporting"]) == (2, 2)
        assert a["available_discharge_kw"] == pytest.approx(capacity["discharge"]["kw"])
        assert a["available_charge_kw"] == pytest.approx(capacity["charge"]["kw"])
        assert a["stored_energy_kwh"] == pytest.approx(2 * 300.0)  # 60 % of 500 kWh each
        # a vehicle whose last sample is an hour old is counted, not measured
        assert (b["net_power_kw"], b["resources"], b["resources_reporting"]) == (0.0, 1, 0)
        assert problems("AggregateTelemetry", a) == []


def test_settings_that_could_never_offer_a_whole_day_ahead_are_refused_at_start() -> None:
    from vpp_aggregator.config import ConfigError

    with pytest.raises(ConfigError, match="VPP_OFFER_HORIZON_HOURS=12 never sees"):
        load_settings(VPP_OFFER_HORIZON_HOURS="12")  # 10:00 gate: the day starts 14 h later
    with pytest.raises(ConfigError, match="more than 38 hours"):
        load_settings(VPP_FORECAST_HORIZON_HOURS="36")
    assert load_settings(VPP_OFFER_HORIZON_HOURS="12", VPP_MARKETS="real_time").markets
