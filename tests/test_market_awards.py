"""Awards answer what became of them: refused beyond the offer, rejected when no resource could
take them, and settled as not delivered when nothing ran for them."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api_helpers import add_batteries, ev_body, sample
from conftest import Clock
from kafka_helpers import produce, read_topic, wait_until
from vpp_aggregator.adapters.api.app import create_app
from vpp_aggregator.config import load_settings


def settings_for(tmp_path, **extra: str):  # type: ignore[no-untyped-def]
    return load_settings(
        DATABASE_URL=f"sqlite:///{tmp_path / 'aw.db'}",
        VPP_SITE_TIMEZONE="UTC",
        VPP_MARKET_TICK_SECONDS="0.1",  # settlement follows the clock at once
        VPP_MARKETS="real_time",  # 5-minute intervals from 13:15 to 14:15
        **extra,
    )


def offers_made(c: TestClient) -> list[dict[str, Any]]:
    """The offers the market loop makes once the fleet reports (three 250 kW batteries on
    NODE_A: 750 kW, for each real-time interval whose gate is open: 13:15 to 14:15)."""

    def offers() -> list[dict[str, Any]]:
        return list(c.get("/market/offers", params={"aggregation_id": "NODE_A"}).json()["items"])

    wait_until(lambda: bool(offers()), "the market loop's offers", 15)
    made = offers()
    assert all(o["quantity_kw"] == pytest.approx(750.0) for o in made)
    return made


def first_offer(c: TestClient) -> dict[str, Any]:
    return offers_made(c)[0]


def award_for(offer: dict[str, Any], award_id: str, awarded_kw: Any) -> dict[str, Any]:
    return {
        "award_id": award_id,
        "aggregation_id": offer["aggregation_id"],
        "interval_start": offer["interval_start"],
        "interval_end": offer["interval_end"],
        "awarded_kw": awarded_kw,
        "price_per_mwh": 55.0,
    }


@pytest.fixture
def market(tmp_path, clock: Clock) -> Iterator[TestClient]:  # type: ignore[no-untyped-def]
    with TestClient(create_app(settings_for(tmp_path), clock=clock)) as c:
        add_batteries(c, clock.now, "NODE_A")
        yield c


def settlement_row(c: TestClient, offer: dict[str, Any]) -> dict[str, Any]:
    """The one award of the offer's day, once its interval has been measured."""

    def done() -> bool:
        rows = c.get("/market/settlement", params={"date": offer["interval_start"][:10]}).json()
        return len(rows["items"]) == 1 and rows["items"][0]["status"] in SETTLED

    wait_until(done, "the settlement after the interval", 15)
    rows = c.get("/market/settlement", params={"date": offer["interval_start"][:10]}).json()
    return dict(rows["items"][0])


SETTLED = ("settled", "not_delivered")


def test_an_award_beyond_the_offer_or_on_a_side_not_offered_is_refused(
    market: TestClient,
) -> None:
    offer = first_offer(market)
    down = -offer["min_power_kw"]
    assert down >= 100.0  # the charge side is offered too
    cases = {
        100_000: ("awarded_kw", "750"),  # 300 was offered in the issue; here 750
        -(down + 1): ("awarded_kw", "more charging than offered"),
        0: ("awarded_kw", "must not be 0"),
        750.5: ("awarded_kw", "750"),
    }
    for kw, (field, offered) in cases.items():
        r = market.post("/market/awards", json=award_for(offer, f"aw-{kw}", kw))
        assert r.status_code == 422, (kw, r.text)
        error = r.json()["errors"][0]
        assert error["field"] == field and offered in error["message"], (kw, error)
    later = datetime.fromisoformat(offer["interval_start"]) + timedelta(minutes=2)
    off_grid = {
        **award_for(offer, "aw-off-grid", 300.0),
        "interval_start": later.isoformat(),
        "interval_end": (later + timedelta(minutes=5)).isoformat(),
    }
    r = market.post("/market/awards", json=off_grid)
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "interval_start", r.text
    assert "0 kW" in r.json()["errors"][0]["message"]
    hourly = {**award_for(offer, "aw-hourly", 300.0), "interval_end": "2026-11-25T14:15:00Z"}
    r = market.post("/market/awards", json=hourly)  # the real-time offer is for 5 minutes
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "interval_end", r.text
    assert offer["interval_end"] in r.json()["errors"][0]["message"]
    for loose in ("300", True):
        r = market.post("/market/awards", json=award_for(offer, "aw-loose", loose))
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "awarded_kw", r.text
    assert market.get("/dispatch").json()["items"] == []
    assert market.get("/market/awards/aw-100000").status_code == 404  # refused: not recorded
    whole = market.post("/market/awards", json=award_for(offer, "aw-whole", 750))
    assert whole.status_code == 201 and whole.json()["status"] == "dispatched", whole.text


def test_an_award_whose_dispatch_is_rejected_says_so_and_is_never_settled_as_delivered(
    market: TestClient, clock: Clock
) -> None:
    offer = first_offer(market)
    # After the offer, an operator takes every battery until well past the offered hour.
    for i in range(3):
        held = market.post(
            "/dispatch",
            json={"target_kw": 100, "duration_minutes": 150, "resource_ids": [f"bess-{i}"]},
        )
        assert held.status_code == 201 and held.json()["status"] == "active", held.text
    r = market.post("/market/awards", json=award_for(offer, "aw-held", 300.0))
    body = r.json()
    assert body["outcome"] == "rejected", r.text  # was "dispatched" (201)
    assert (r.status_code, body["status"]) == (201, "rejected")
    assert body["reason"]
    dispatch = market.get(f"/dispatch/{body['dispatch_id']}").json()
    assert dispatch["status"] == "rejected"
    got = market.get("/market/awards/aw-held").json()
    assert (got["status"], got["reason"], got["dispatch_id"]) == (
        "rejected",
        body["reason"],
        body["dispatch_id"],
    )
    again = market.post("/market/awards", json=award_for(offer, "aw-held", 300.0))
    assert again.status_code == 200 and again.json()["status"] == "rejected"
    clock.now = datetime.fromisoformat(offer["interval_end"]) + timedelta(minutes=1)
    row = settlement_row(market, offer)
    assert (row["award_id"], row["status"]) == ("aw-held", "not_delivered")
    assert row["reason"] == body["reason"] and row["delivery_ratio"] is None
    assert market.get("/market/awards/aw-held").json()["status"] == "not_delivered"


def test_an_award_that_came_after_its_interval_is_not_delivered_not_settled(
    market: TestClient, clock: Clock
) -> None:
    offer = first_offer(market)
    clock.now = datetime.fromisoformat(offer["interval_end"]) + timedelta(minutes=5)
    r = market.post("/market/awards", json=award_for(offer, "aw-late", 300.0))
    row = settlement_row(market, offer)
    assert (row["status"], row["delivery_ratio"]) == ("not_delivered", None)  # was settled, 0
    assert "after its interval ended" in row["reason"]
    assert r.status_code == 201 and r.json()["status"] == "expired", r.text
    assert market.get("/dispatch").json()["items"] == []
    assert market.get("/market/awards/aw-late").json()["status"] == "not_delivered"
    sent = market.app.state.aggregator.market.bus.recent("vpp.market.settlement")  # type: ignore[attr-defined]
    assert [(m["award_id"], m["status"], m["delivery_ratio"]) for _, m in sent] == [
        ("aw-late", "not_delivered", None)
    ]


def test_an_award_whose_dispatch_was_cancelled_before_the_interval_is_not_delivered(
    market: TestClient, clock: Clock
) -> None:
    offer = first_offer(market)
    r = market.post("/market/awards", json=award_for(offer, "aw-cancelled", 300.0))
    assert r.status_code == 201, r.text
    dispatch_id = market.get("/dispatch").json()["items"][0]["dispatch_id"]
    assert market.post(f"/dispatch/{dispatch_id}/cancel").status_code == 200
    clock.now = datetime.fromisoformat(offer["interval_end"]) + timedelta(minutes=1)
    row = settlement_row(market, offer)
    assert (row["status"], row["delivery_ratio"]) == ("not_delivered", None)  # was settled, 0
    assert "cancelled before" in row["reason"]


def test_over_kafka_the_same_rules_hold_and_settlement_says_not_delivered(
    tmp_path, clock: Clock, kafka_brokers: str, kafka_topics: dict[str, str]
) -> None:  # type: ignore[no-untyped-def]
    t = kafka_topics
    settings = settings_for(tmp_path, KAFKA_BROKERS=kafka_brokers, **t)
    with TestClient(create_app(settings, clock=clock)) as c:
        add_batteries(c, clock.now, "NODE_A")
        late, held = first_offer(c), offers_made(c)[-1]
        for i in range(3):  # every battery taken until 14:30, over the last offered interval
            c.post(
                "/dispatch",
                json={"target_kw": 100, "duration_minutes": 150, "resource_ids": [f"bess-{i}"]},
            )
        clock.now = datetime.fromisoformat(late["interval_end"]) + timedelta(minutes=5)
        produce(
            kafka_brokers,
            t["VPP_TOPIC_MARKET_AWARDS"],
            [
                ("NODE_A", award_for(late, "aw-k-big", 100_000.0)),
                ("NODE_A", award_for(late, "aw-k-late", 300.0)),
                ("NODE_A", award_for(held, "aw-k-held", 300.0)),
            ],
        )
        dead = read_topic(kafka_brokers, t["VPP_TOPIC_DEAD_LETTER"], want=1)
        assert len(dead) == 1
        assert dead[0][1]["reason"].startswith("awarded_kw: ") and "750" in dead[0][1]["reason"]
        settled = read_topic(kafka_brokers, t["VPP_TOPIC_MARKET_SETTLEMENT"], want=1)
        assert [(m["award_id"], m["status"]) for _, m in settled] == [
            ("aw-k-late", "not_delivered")
        ]
        assert c.get("/market/awards/aw-k-big").status_code == 404
        rejected = c.get("/market/awards/aw-k-held").json()
        assert rejected["status"] == "rejected" and rejected["reason"], rejected
        assert "aw-k-big" not in {d["reference"] for d in c.get("/dispatch").json()["items"]}
        audit = c.get("/audit", params={"action": "dispatch.create"}).json()["items"]
        entry = next(e for e in audit if e["target"] == rejected["dispatch_id"])
        assert (entry["detail"]["outcome"], entry["detail"]["reason"]) == (
            "rejected",
            rejected["reason"],
        )
        counted = f'vpp_kafka_messages_total{{outcome="rejected",topic="{t["VPP_TOPIC_MARKET_AWARDS"]}"}} 1.0'
        wait_until(lambda: counted in c.get("/metrics").text, "the rejected award counted", 15)


def test_a_charge_side_award_dispatches_charging(market: TestClient, clock: Clock) -> None:
    offer = first_offer(market)
    r = market.post("/market/awards", json=award_for(offer, "aw-charge", -60.0))
    assert r.status_code == 201 and r.json()["status"] == "dispatched", r.text
    dispatch = market.get(f"/dispatch/{r.json()['dispatch_id']}").json()
    assert (dispatch["target_kw"], dispatch["source"]) == (-60.0, "market_award")
    assert dispatch["allocated_kw"] == pytest.approx(-60.0)
    assert all(a["setpoint_kw"] < 0 for a in dispatch["allocations"])  # every one charges
    agg = market.app.state.aggregator  # type: ignore[attr-defined]
    clock.now = datetime.fromisoformat(offer["interval_start"])  # the dispatch starts

    def commands() -> list[dict[str, Any]]:
        return [m for _, m in agg.bus.recent(agg.settings.topic_v2g_commands)]

    wait_until(lambda: bool(commands()), "the dispatch's commands", 15)
    assert {m["mode"] for m in commands()} == {"Charge"}


def test_an_award_for_a_product_not_offered_names_the_product(market: TestClient) -> None:
    offer = first_offer(market)  # real-time energy only: regulation is offered day-ahead
    r = market.post(
        "/market/awards", json={**award_for(offer, "aw-reg", 50.0), "product": "regulation"}
    )
    assert r.status_code == 422
    error = r.json()["errors"][0]
    assert error["field"] == "product" and "offered no regulation" in error["message"]
    assert "only energy" in error["message"]


def test_back_to_back_awards_share_one_dispatch_that_takes_each_awards_kw(
    market: TestClient, clock: Clock
) -> None:
    """Two awards of one aggregation, the second beginning where the first ends: one dispatch
    serves both (two would each find the batteries held by the other's ramp-down, and the
    second be rejected), and it gives the second award's kW once the second begins."""
    first, second = offers_made(market)[:2]
    assert first["interval_end"] == second["interval_start"]
    a = market.post("/market/awards", json=award_for(first, "aw-1", 300.0)).json()
    b = market.post("/market/awards", json=award_for(second, "aw-2", 450.0)).json()
    assert (a["status"], b["status"]) == ("dispatched", "dispatched"), (a, b)
    assert a["dispatch_id"] == b["dispatch_id"]
    dispatch = market.get(f"/dispatch/{a['dispatch_id']}").json()
    assert dispatch["target_kw"] == pytest.approx(300.0)
    ends = datetime.fromisoformat(dispatch["start"]) + timedelta(
        minutes=dispatch["duration_minutes"]
    )
    assert ends == datetime.fromisoformat(second["interval_end"])

    def report() -> None:  # the batteries keep reporting as the clock moves on
        samples = [sample(f"bess-{i}", clock.now, 90.0) for i in range(3)]
        assert market.post("/telemetry", json={"samples": samples}).status_code == 200

    clock.now = datetime.fromisoformat(first["interval_start"]) + timedelta(seconds=1)
    report()
    # planned 75 minutes ahead: planned again as it starts (short of 300 kW then, so "partial")
    wait_until(
        lambda: (
            market.get(f"/dispatch/{a['dispatch_id']}").json()["revisions"][-1]["reason"]
            == "starts: re-planned from the fleet as it is now"
        ),
        "the plan made again at the start",
        15,
    )
    clock.now = datetime.fromisoformat(second["interval_start"]) + timedelta(seconds=1)
    report()
    wait_until(
        lambda: market.get(f"/dispatch/{a['dispatch_id']}").json()["target_kw"] == 450.0,
        "the second award's kW",
        15,
    )


def test_an_awards_dispatch_ramps_in_before_the_interval_so_it_pays_from_the_first_minute(
    market: TestClient,
) -> None:
    """Three batteries at 10 kW/min each need 10 minutes to reach 300 kW: the award's dispatch
    begins that much before the interval, holds 300 kW from its first minute and ends with it."""
    offer = first_offer(market)
    r = market.post("/market/awards", json=award_for(offer, "aw-ramp", 300.0))
    assert r.status_code == 201 and r.json()["status"] == "dispatched", r.text
    dispatch = market.get(f"/dispatch/{r.json()['dispatch_id']}").json()
    begins = datetime.fromisoformat(offer["interval_start"])
    start = datetime.fromisoformat(dispatch["start"])
    assert start == begins - timedelta(minutes=10)
    ends = start + timedelta(minutes=dispatch["duration_minutes"])
    assert ends == datetime.fromisoformat(offer["interval_end"])
    plan = dispatch["plan_kw"]
    assert plan[0] == pytest.approx(0.0, abs=1e-6)  # from rest, at the ramp limit
    inside = plan[10 : 10 + int((ends - begins).total_seconds() // 60)]
    assert min(inside) == pytest.approx(300.0, abs=1e-3)
    assert dispatch["ramp_complete_at"] is not None
    assert datetime.fromisoformat(dispatch["ramp_complete_at"]) <= begins


def test_while_an_award_runs_its_dispatch_makes_up_for_a_vehicle_charging_outside_it(
    market: TestClient, clock: Clock
) -> None:
    """Settlement meters the whole aggregation: a vehicle that plugs in and charges at 40 kW on
    its own during a 150 kW award would leave 110 kW on the meter. With no baseline yet (no
    past days), the dispatch is raised to 190 kW while it charges and goes back to 150 kW
    when it stops."""
    assert market.post("/resources/register", json=ev_body("ev-1")).status_code == 201
    offer = first_offer(market)
    r = market.post("/market/awards", json=award_for(offer, "aw-track", 150.0))
    assert r.status_code == 201 and r.json()["status"] == "dispatched", r.text
    dispatch_id = r.json()["dispatch_id"]
    assert {
        a["resource_id"] for a in market.get(f"/dispatch/{dispatch_id}").json()["allocations"]
    } == {"bess-0", "bess-1", "bess-2"}

    def report(ev_kw: float) -> None:
        samples = [sample(f"bess-{i}", clock.now, 89.0, power=50.0) for i in range(3)]
        samples.append(sample("ev-1", clock.now, 50.0, power=ev_kw))
        assert market.post("/telemetry", json={"samples": samples}).status_code == 200

    def target() -> float:
        return float(market.get(f"/dispatch/{dispatch_id}").json()["target_kw"])

    clock.now = datetime.fromisoformat(offer["interval_start"]) + timedelta(seconds=5)
    report(-40.0)
    wait_until(lambda: target() == pytest.approx(190.0), "the target raised by 40 kW", 15)
    reasons = [v["reason"] for v in market.get(f"/dispatch/{dispatch_id}").json()["revisions"]]
    assert any("so the meter shows its 150 kW" in x for x in reasons), reasons
    clock.now += timedelta(seconds=30)
    report(0.0)
    wait_until(lambda: target() == pytest.approx(150.0), "the target back at the award", 15)
