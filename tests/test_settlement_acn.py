"""Settlement of a replayed curtailment on real load: ten Caltech garage drivers (ACN-Data,
March-April 2019, shipped in the package) charge as their sessions did, reported as telemetry
every 5 minutes; on Wednesday 17 April 2019 an award for 09:00-10:00 (Pacific) is met by
pausing every vehicle's charging and by one battery exporting 40 kW. The service settles it
against the aggregation's CAISO 10-in-10 or PJM CBL baseline; this file works the same
numbers out by hand, from the same load, in the plainest code it can."""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from fastapi.testclient import TestClient

from api_helpers import bess_body, ev_body, sample
from conftest import Clock
from vpp_aggregator.adapters.api.app import create_app
from vpp_aggregator.config import load_settings
from vpp_aggregator.domain.baseline_days import nerc_holidays

SESSIONS = (
    Path(__file__).parents[1] / "src/vpp_aggregator/demo_data/acn_caltech/sessions_caltech.csv"
)
TZ = {"caiso_10in10": ZoneInfo("America/Los_Angeles"), "pjm_cbl": ZoneInfo("America/New_York")}
EVENT_DAY = date(2019, 4, 17)
CHARGE_KW = 6.6  # a Level 2 charge point: each session charges at this rate until done
SLOT = timedelta(minutes=5)
SLOTS = 288
FIGURES = ("baseline_kwh", "measured_kwh", "delivered_kwh", "awarded_kwh", "delivery_ratio")
FIGURES += ("baseline_adjustment", "baseline_days")


def charging_kw(
    sessions: list[dict[str, str]], at: datetime
) -> float:  # one driver's draw at an instant
    for s in sessions:
        start = datetime.fromisoformat(s["connect_time_utc"].replace("Z", "+00:00"))
        end = datetime.fromisoformat(s["disconnect_time_utc"].replace("Z", "+00:00"))
        done = start + timedelta(hours=float(s["kwh_delivered"]) / CHARGE_KW)
        if start <= at < min(end, done):
            return CHARGE_KW
    return 0.0


def drivers() -> dict[str, list[dict[str, str]]]:
    """The ten drivers with the most sessions from 25 March 2019."""
    rows = list(csv.DictReader(SESSIONS.open()))
    busiest = Counter(r["user_id"] for r in rows if r["connect_time_utc"] >= "2019-03-25")
    return {u: [r for r in rows if r["user_id"] == u] for u, _ in busiest.most_common(10)}


def hand_baseline(
    method: str, load: dict[date, list[float]], event: range, adjust: range
) -> list[float]:
    """The adjusted baseline of EVENT_DAY, worked out as the method reads (docs/settlement.md)."""
    weekdays = [
        EVENT_DAY - timedelta(days=k)
        for k in range(1, 46)
        if (EVENT_DAY - timedelta(days=k)).weekday() < 5 and EVENT_DAY - timedelta(days=k) in load
    ]

    def use(d: date) -> float:
        return sum(load[d][s] for s in event) / len(event)

    if method == "caiso_10in10":
        days = weekdays[:10]
    else:
        five = weekdays[:5]
        low = 0.25 * sum(use(d) for d in five) / 5
        five = [d for d in weekdays if use(d) >= low][:5]
        days = sorted(five, key=use, reverse=True)[:4]
    base = [sum(load[d][s] for d in days) / len(days) for s in range(SLOTS)]
    actual = sum(load[EVENT_DAY][s] for s in adjust) / len(adjust)
    before = sum(base[s] for s in adjust) / len(adjust)
    if method == "caiso_10in10":
        ratio = min(1.2, max(0.8, actual / before))
        return [b * ratio for b in base]
    return [b + (actual - before) for b in base]


@pytest.mark.parametrize("method", ["caiso_10in10", "pjm_cbl"])
def test_settling_a_curtailment_of_real_charging_matches_the_hand_calculation(
    tmp_path: Path, method: str, record_property: Callable[[str, object], None]
) -> None:
    tz = TZ[method]
    midnight = datetime.combine(EVENT_DAY, time(), tz)
    event_start = midnight + timedelta(hours=9)
    clock = Clock(midnight - timedelta(hours=15))  # 09:00 the day before: day-ahead gate open
    settings = load_settings(
        DATABASE_URL=f"sqlite:///{tmp_path / 'acn.db'}",
        VPP_SITE_TIMEZONE=str(tz),
        VPP_MARKET_ENABLED="false",
        VPP_MARKETS="day_ahead",
        VPP_BASELINE_METHODS=f"CALTECH={method}",
    )
    users = drivers()
    ids = {u: f"ev-{u}" for u in users}
    first_day = EVENT_DAY - timedelta(days=28)
    assert not any(
        d in nerc_holidays(2019) for d in (first_day + timedelta(days=k) for k in range(29))
    )  # no holiday to leave out: the hand calculation below does not look for one
    load: dict[date, list[float]] = {}  # the garage's net consumption per local slot

    def replay(c: TestClient, at: datetime, until: datetime) -> None:
        """The drivers' real charging from `at` to `until`, every 5 minutes, as telemetry."""
        batch: list[dict[str, object]] = []
        while at < until:
            kw = {u: charging_kw(users[u], at.astimezone(UTC)) for u in users}
            day, slot = at.date(), (at - datetime.combine(at.date(), time(), tz)) // SLOT
            load.setdefault(day, [0.0] * SLOTS)[slot] = sum(kw.values())
            batch += [sample(ids[u], at, 60.0, power=-kw[u]) for u in users]
            if len(batch) >= 10_000 or at + SLOT >= until:
                assert c.post("/telemetry", json={"samples": batch}).status_code == 200
                batch = []
            at += SLOT

    with TestClient(create_app(settings, clock=clock)) as c:
        for u in users:
            body = ev_body(ids[u], grid_node="CALTECH", max_charge_kw=11.0, max_discharge_kw=11.0)
            assert c.post("/resources/register", json=body).status_code == 201
        for b in ("bess-0", "bess-1"):
            c.post("/resources/register", json=bess_body(b, grid_node="CALTECH"))
        # four weeks of real charging up to the day before, when the day-ahead offers are made
        replay(c, datetime.combine(first_day, time(), tz), clock.now)
        c.post(
            "/telemetry",
            json={"samples": [sample(b, clock.now, 90.0) for b in ("bess-0", "bess-1")]},
        )
        offered = c.post("/market/offers/generate").json()["items"]
        assert event_start.astimezone(UTC).isoformat() in {o["interval_start"] for o in offered}
        award = {
            "award_id": f"acn-{method}",
            "aggregation_id": "CALTECH",
            "interval_start": event_start.isoformat(),
            "interval_end": (event_start + timedelta(hours=1)).isoformat(),
            "awarded_kw": 100.0,
            "price_per_mwh": 80.0,
        }
        assert c.post("/market/awards", json=award).status_code == 201
        # the drivers' charging until the event begins is posted as it begins, and the
        # dispatch's tick (which tracks the award) may come before it
        clock.now = event_start
        c.app.state.aggregator.market.follow()  # type: ignore[attr-defined]
        replay(c, midnight - timedelta(hours=15), event_start)
        # the event: every vehicle's charging paused, bess-1 exporting 40 kW, reported as ever
        for k in range(13):
            clock.now = event_start + k * SLOT
            c.post(
                "/telemetry",
                json={
                    "samples": [sample(ids[u], clock.now, 60.0) for u in users]
                    + [sample("bess-0", clock.now, 90.0)]
                    + [sample("bess-1", clock.now, 90.0 - k * 0.1, power=40.0)]
                },
            )
        clock.now = event_start + timedelta(hours=1, minutes=1)
        day = event_start.astimezone(UTC).date().isoformat()
        assert c.app.state.aggregator.market.settle_due() == 1  # type: ignore[attr-defined]
        row = c.get("/market/settlement", params={"date": day}).json()["items"][0]

    first = 9 * 12
    event, adjust = range(first, first + 12), range(first - 4 * 12, first - 12)
    base = hand_baseline(method, load, event, adjust)
    assert row["baseline_method"] == method
    assert [i["interval_start"] for i in row["intervals"]] == [
        (event_start + k * SLOT).astimezone(UTC).isoformat() for k in range(12)
    ]
    for k, interval in enumerate(row["intervals"]):
        s = first + k
        assert interval["awarded_kwh"] == pytest.approx(100.0 / 12, abs=1e-4)
        assert interval["baseline_kwh"] == pytest.approx(base[s] / 12, abs=1e-4)
        assert interval["measured_kwh"] == pytest.approx(-40.0 / 12, abs=1e-4)  # bess-1's export
        assert interval["delivered_kwh"] == pytest.approx((base[s] + 40.0) / 12, abs=1e-4)
    baseline_kwh = sum(base[s] for s in event) / 12
    assert baseline_kwh > 2.0  # the garage was charging at that hour on like days
    assert row["baseline_kwh"] == pytest.approx(baseline_kwh, abs=1e-3)
    assert row["delivered_kwh"] == pytest.approx(baseline_kwh + 40.0, abs=1e-3)
    assert row["delivery_ratio"] == pytest.approx((baseline_kwh + 40.0) / 100.0, abs=1e-4)
    by_id = {r["resource_id"]: r for r in row["resources"]}
    assert by_id["bess-1"] == {
        "resource_id": "bess-1",
        "baseline_kwh": 0.0,
        "measured_kwh": pytest.approx(-40.0, abs=1e-4),
        "delivered_kwh": pytest.approx(40.0, abs=1e-4),
    }
    assert len(row["baseline_days"]) == (10 if method == "caiso_10in10" else 4)
    record_property(
        "measured",
        {k: row[k] for k in FIGURES},
    )
