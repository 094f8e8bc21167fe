"""Awards clear what was offered: refused beyond the offer, on a side or an interval not offered."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api_helpers import add_batteries
from conftest import Clock
from kafka_helpers import wait_until
from vpp_aggregator.adapters.api.app import create_app
from vpp_aggregator.config import load_settings


def settings_for(tmp_path, **extra: str):  # type: ignore[no-untyped-def]
    return load_settings(
        DATABASE_URL=f"sqlite:///{tmp_path / 'aw.db'}",
        VPP_SITE_TIMEZONE="UTC",
        VPP_MARKET_TICK_SECONDS="0.1",  # settlement follows the clock at once
        VPP_OFFER_HORIZON_HOURS="4",
        **extra,
    )


def first_offer(c: TestClient) -> dict[str, Any]:
    """The first of the offers the market loop makes once the fleet reports (three 250 kW
    batteries on NODE_A: 750 kW an hour)."""

    def offers() -> list[dict[str, Any]]:
        return list(c.get("/market/offers", params={"aggregation_id": "NODE_A"}).json()["items"])

    wait_until(lambda: bool(offers()), "the market loop's offers", 15)
    first = offers()[0]
    assert first["quantity_kw"] == pytest.approx(750.0)
    return first


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


def test_an_award_beyond_the_offer_or_on_a_side_not_offered_is_refused(
    market: TestClient,
) -> None:
    offer = first_offer(market)
    cases = {
        100_000: ("awarded_kw", "750"),  # 300 was offered in the issue; here 750
        -50: ("awarded_kw", "750"),  # down (charging) was not offered: up only
        0: ("awarded_kw", "750"),
        750.5: ("awarded_kw", "750"),
    }
    for kw, (field, offered) in cases.items():
        r = market.post("/market/awards", json=award_for(offer, f"aw-{kw}", kw))
        assert r.status_code == 422, (kw, r.text)
        error = r.json()["errors"][0]
        assert error["field"] == field and offered in error["message"], (kw, error)
    later = datetime.fromisoformat(offer["interval_start"]) + timedelta(minutes=30)
    off_grid = {
        **award_for(offer, "aw-half-past", 300.0),
        "interval_start": later.isoformat(),
        "interval_end": (later + timedelta(hours=1)).isoformat(),
    }
    r = market.post("/market/awards", json=off_grid)
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "interval_start", r.text
    assert "0 kW" in r.json()["errors"][0]["message"]
    for loose in ("300", True):
        r = market.post("/market/awards", json=award_for(offer, "aw-loose", loose))
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "awarded_kw", r.text
    assert market.get("/dispatch").json()["items"] == []
    whole = market.post("/market/awards", json=award_for(offer, "aw-whole", 750))
    assert whole.status_code == 201 and whole.json()["outcome"] == "dispatched", whole.text
