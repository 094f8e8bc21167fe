"""Regulation in service: offered beside energy, awarded, followed. The devices here do what
their commands say (base + participation × signal, reported as telemetry every 2 s), the
signal is PJM's real RegA, and the service scores the response as PJM would and settles the
award with that score."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api_helpers import bess_body, sample
from conftest import Clock
from vpp_aggregator.adapters.api.app import create_app
from vpp_aggregator.cli_regulation import REGA
from vpp_aggregator.config import load_settings
from vpp_aggregator.demo.regulation import read_signal
from vpp_aggregator.domain.dispatch.safety import ResourceFacts
from vpp_aggregator.domain.regulation_safety import RegulationCommand, check_regulation

HOUR = datetime(2026, 11, 26, tzinfo=UTC)


def _service(tmp_path, clock: Clock, **battery: float) -> Iterator[TestClient]:  # type: ignore[no-untyped-def]
    settings = load_settings(
        DATABASE_URL=f"sqlite:///{tmp_path / 'reg.db'}",
        VPP_SITE_TIMEZONE="UTC",
        VPP_MARKET_ENABLED="false",
        VPP_MARKETS="day_ahead",
        VPP_REGULATION_REPLAN_SECONDS="900",  # the test re-plans itself
    )
    clock.now = datetime(2026, 11, 25, 9, tzinfo=UTC)  # before the gate for the 26th
    with TestClient(create_app(settings, clock=clock)) as c:
        for i in range(8):
            c.post("/resources/register", json=bess_body(f"b{i}", grid_node="NODE_R", **battery))
        c.post("/telemetry", json={"samples": [sample(f"b{i}", clock.now, 60) for i in range(8)]})
        yield c


@pytest.fixture
def service(tmp_path, clock: Clock) -> Iterator[TestClient]:  # type: ignore[no-untyped-def]
    yield from _service(tmp_path, clock)


@pytest.fixture
def power_bound(tmp_path, clock: Clock) -> Iterator[TestClient]:  # type: ignore[no-untyped-def]
    """Batteries with more energy than a day at full power needs (2,000 kWh, 25 kW each): the
    day-ahead energy offer is not cut to share energy over the day, so the two products compete
    for power alone."""
    yield from _service(
        tmp_path, clock, battery_capacity_kwh=2000.0, max_discharge_kw=25.0, max_charge_kw=25.0
    )


def test_regulation_is_offered_awarded_followed_scored_and_settled(
    service: TestClient, clock: Clock
) -> None:
    c = service
    agg = c.app.state.aggregator  # type: ignore[attr-defined]
    made = c.post("/market/offers/generate").json()["items"]
    regulation = [o for o in made if o["product"] == "regulation"]
    assert len(regulation) == 24  # every hour of the 26th, beside its energy offer
    first = regulation[0]
    # eight batteries each carry at most 10 kW/min over RegA's 0.4 per minute: 200 kW
    assert (first["quantity_kw"], first["min_power_kw"]) == (200.0, -200.0)
    award = {
        "award_id": "reg-1",
        "aggregation_id": "NODE_R",
        "interval_start": HOUR.isoformat(),
        "interval_end": (HOUR + timedelta(hours=1)).isoformat(),
        "awarded_kw": 200.0,
        "product": "regulation",
    }
    r = c.post("/market/awards", json=award)
    assert r.status_code == 201 and r.json()["status"] == "regulating", r.text
    assert (
        c.post("/market/awards", json={**award, "award_id": "reg-2", "awarded_kw": -5}).status_code
        == 422
    )
    assert c.get("/dispatch").json()["items"] == []  # no energy is dispatched for it

    # the hour begins: each battery gets its share, proven safe, once
    clock.now = HOUR
    soc = {f"b{i}": 60.0 for i in range(8)}
    c.post("/telemetry", json={"samples": [sample(r, clock.now, s) for r, s in soc.items()]})
    assert agg.regulation.replan() == 8
    sent = [m for _, m in agg.bus.recent(agg.settings.topic_regulation_commands)]
    shares = {m["resource_id"]: m for m in sent}
    assert sum(m["participation_kw"] for m in sent) == pytest.approx(200.0, abs=0.01)
    assert abs(sum(m["base_kw"] for m in sent)) < 0.01  # all at 60 %: nothing to rebalance
    for m in sent:
        assert m["participation_kw"] * 0.4 <= 10.0 + 1e-9  # never asked to out-ramp itself
        facts = ResourceFacts(m["resource_id"], True, 500.0, 20.0, 100.0, 250.0, 250.0)
        cmd = RegulationCommand(m["resource_id"], m["base_kw"], m["participation_kw"], 10.0, 900.0)
        assert (
            check_regulation(
                cmd,
                facts,
                soc_pct=60.0,
                departure_in_s=None,
                max_ramp_kw_per_min=10.0,
                round_trip_efficiency=0.9,
            )
            == []
        )
    assert agg.regulation.replan() == 0  # nothing changed: nothing sent

    # 20 minutes of RegA, every 2 s; the batteries follow their commands exactly
    _, signal, _ = read_signal(REGA)
    start = 1800  # an hour into the file, where it moves
    for k in range(600):
        clock.now = HOUR + timedelta(seconds=2 * k)
        value = float(signal[start + k])
        if k % 50 == 0:
            assert (
                c.post("/regulation/signal", json={"value": value}).json()["outcome"] == "applied"
            )
        else:
            agg.regulation.signal(value, clock.now)
        samples = []
        for rid, m in shares.items():
            kw = m["base_kw"] + m["participation_kw"] * value
            soc[rid] -= kw * 2 / 3600 / 500 * 100
            samples.append(sample(rid, clock.now, soc[rid], power=kw))
        c.post("/telemetry", json={"samples": samples})
        agg.regulation.sample()
    # twenty minutes on, the 15-minute commands are renewed before the devices let go
    assert agg.regulation.replan() == 8
    renewed = [m for _, m in agg.bus.recent(agg.settings.topic_regulation_commands)][-8:]
    assert all(datetime.fromisoformat(m["valid_until"]) > clock.now for m in renewed)
    status = c.get("/regulation/status").json()
    node = status["aggregations"][0]
    assert (node["aggregation_id"], node["capacity_kw"], status["commands_refused"]) == (
        "NODE_R",
        200.0,
        0,
    )
    assert node["hours"][0]["score"] >= 0.95
    broadcast = agg.bus.recent(agg.settings.topic_regulation_broadcast)
    assert len(broadcast) >= 500 and broadcast[-1][1]["aggregation_id"] == "NODE_R"
    assert 'vpp_regulation_score{aggregation="NODE_R",part="score"}' in c.get("/metrics").text

    # the hour is over: settled with its score, no kWh claimed
    clock.now = HOUR + timedelta(hours=1, minutes=1)
    assert agg.market.settle_due() == 1
    row: dict[str, Any] = c.get("/market/settlement", params={"date": "2026-11-26"}).json()[
        "items"
    ][0]
    assert (row["product"], row["status"]) == ("regulation", "settled")
    assert row["performance_score"] == pytest.approx(node["hours"][0]["score"], abs=0.02)


def test_energy_and_regulation_are_not_sold_twice(power_bound: TestClient, clock: Clock) -> None:
    c = power_bound
    made = c.post("/market/offers/generate").json()["items"]
    hour = {o["product"]: o for o in made if o["interval_start"] == HOUR.isoformat()}
    energy, regulation = hour["energy"], hour["regulation"]
    assert energy["max_power_kw"] == energy["power_limit_kw"] == pytest.approx(200.0)
    span = {
        "aggregation_id": "NODE_R",
        "interval_start": HOUR.isoformat(),
        "interval_end": (HOUR + timedelta(hours=1)).isoformat(),
    }
    reg = c.post(
        "/market/awards",
        json={**span, "award_id": "reg-a", "awarded_kw": 150.0, "product": "regulation"},
    )
    assert reg.status_code == 201, reg.text
    # the energy offered that hour still counts the 150 kW regulation holds up and down
    too_much = energy["max_power_kw"] - 150.0 + 1.0
    refused = c.post("/market/awards", json={**span, "award_id": "en-a", "awarded_kw": too_much})
    assert refused.status_code == 422
    assert "150 kW of regulation already awarded" in refused.json()["errors"][0]["message"]
    fits = c.post("/market/awards", json={**span, "award_id": "en-b", "awarded_kw": too_much - 2.0})
    assert fits.status_code == 201, fits.text
    assert regulation["quantity_kw"] == 200.0


def test_a_later_offer_already_net_of_regulation_is_not_cut_twice(tmp_path, clock: Clock) -> None:  # type: ignore[no-untyped-def]
    settings = load_settings(
        DATABASE_URL=f"sqlite:///{tmp_path / 'net.db'}",
        VPP_SITE_TIMEZONE="UTC",
        VPP_MARKET_ENABLED="false",
    )
    clock.now = datetime(2026, 11, 25, 9, tzinfo=UTC)
    # At 80 % the batteries hold energy for every real-time interval of the hour at full power,
    # so power, not energy, limits the offer this test reads.
    with TestClient(create_app(settings, clock=clock)) as c:
        for i in range(8):
            c.post("/resources/register", json=bess_body(f"b{i}", grid_node="NODE_R"))
        c.post("/telemetry", json={"samples": [sample(f"b{i}", clock.now, 80) for i in range(8)]})
        c.post("/market/offers/generate")
        span = {"aggregation_id": "NODE_R", "interval_start": HOUR.isoformat()}
        reg = c.post(
            "/market/awards",
            json={
                **span,
                "interval_end": (HOUR + timedelta(hours=1)).isoformat(),
                "award_id": "reg-n",
                "awarded_kw": 150.0,
                "product": "regulation",
            },
        )
        assert reg.status_code == 201, reg.text
        # the evening before, the real-time offers for the hour are made, 150 kW lighter
        clock.now = HOUR - timedelta(minutes=75)
        c.post("/telemetry", json={"samples": [sample(f"b{i}", clock.now, 80) for i in range(8)]})
        made = c.post("/market/offers/generate").json()["items"]
        rt = next(
            o
            for o in made
            if o["market"] == "real_time" and o["interval_start"] == HOUR.isoformat()
        )
        assert rt["max_power_kw"] == pytest.approx(8 * 250.0 - 150.0)  # eight batteries, less it
        whole = c.post(
            "/market/awards",
            json={
                **span,
                "interval_end": rt["interval_end"],
                "award_id": "rt-n",
                "awarded_kw": rt["max_power_kw"],
            },
        )
        assert whole.status_code == 201, whole.text  # all of it: regulation is off it already
