"""What the day's offers keep back for members drawing beyond the baseline (`domain/makeup`,
`app/makeup`): learnt from what the last award days' dispatches had to make up, hour by hour."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from fastapi.testclient import TestClient

from api_helpers import bess_body, sample
from conftest import Clock
from test_award_tracking import AWARD, START, Meter, Powers
from vpp_aggregator.adapters.api.app import create_app
from vpp_aggregator.app.award_tracking import AwardTracking
from vpp_aggregator.app.makeup import MakeupLog
from vpp_aggregator.config import load_settings
from vpp_aggregator.domain.makeup import reserve_by_hour

LA = ZoneInfo("America/Los_Angeles")


def test_the_reserve_is_a_running_total_at_the_offers_quantile() -> None:
    days = np.zeros((10, 24))
    days[:, 8] = np.arange(10) * 10.0  # 0, 10, ... 90 kWh made up from 08:00 to 09:00
    days[:, 9] = 5.0
    p10 = reserve_by_hour(days, 0.10)  # nine days in ten needed at most this
    assert p10[:8].tolist() == [0.0] * 8
    assert p10[8] == pytest.approx(np.quantile(days[:, 8], 0.9))
    assert p10[9:].tolist() == pytest.approx([p10[8] + 5.0] * 15)  # kept for the rest of the day
    assert reserve_by_hour(days, 0.50)[8] == pytest.approx(45.0)  # P50: the median day
    assert reserve_by_hour(np.zeros((0, 24)), 0.10).tolist() == [0.0] * 24


def test_the_log_adds_up_what_each_tick_made_up_and_keeps_the_last_days() -> None:
    log = MakeupLog(LA, days_kept=2)
    day = datetime(2019, 1, 8, 8, 0, tzinfo=LA)
    for minute in range(61):  # a tick a minute from 08:00 to 09:00, 60 kW beyond the award
        log.note("N", day + timedelta(minutes=minute), 60.0)
    log.note("N", day + timedelta(hours=3), 60.0)  # after 2 h without an award: not counted
    log.note("N", day + timedelta(hours=3, minutes=1), -40.0)  # members drew less: nothing
    ends = [datetime(2019, 1, 9, h, tzinfo=LA) for h in range(1, 24)] + [
        datetime(2019, 1, 10, 0, tzinfo=LA)
    ]
    kept = log.reserve("N", ends, 0.5)
    assert kept[7] == 0.0  # by 08:00 nothing
    assert kept[8] == pytest.approx(59.0)  # 08:01 to 09:00 at 60 kW (09:00 is the next hour's)
    assert kept[9] == pytest.approx(60.0) and kept[-1] == pytest.approx(60.0)
    two_days = log.reserve("N", [*ends, datetime(2019, 1, 10, 9, tzinfo=LA)], 0.5)
    assert two_days[-1] == pytest.approx(60.0 + 59.0)  # the next day keeps its own on top
    assert log.reserve("OTHER", ends, 0.5).tolist() == [0.0] * 24
    for d in (9, 10):  # two more award days with nothing made up: the 8th is forgotten
        log.note("N", datetime(2019, 1, d, 8, tzinfo=LA), 0.0)
    assert log.reserve("N", ends, 0.5).tolist() == [0.0] * 24


def test_the_award_tracking_logs_what_it_asks_beyond_the_award() -> None:
    log = MakeupLog(ZoneInfo("UTC"))
    award = AWARD
    # vehicles outside the dispatch draw 110 kW where the baseline expects 60
    tracking = AwardTracking(Meter(60.0), Powers(100.0 - 110.0, 100.0), log)  # type: ignore[arg-type]
    for minute in range(31):
        tracking.targets([(award, ["bess-1"])], START + timedelta(minutes=minute))
    kept = log.reserve("NODE_A", [START + timedelta(hours=1)], 0.1)
    assert kept[0] == pytest.approx(50.0 * 0.5)  # 50 kW beyond the award for half an hour


def test_day_ahead_offers_keep_back_what_the_last_award_days_made_up(
    tmp_path,
    clock: Clock,  # type: ignore[no-untyped-def]
) -> None:
    """Three batteries hold 996 kWh above their floors: nine hours of the 100 kW market minimum
    (`test_market`). After award days on which the dispatch made up 300 kWh for members drawing
    beyond the baseline by 03:00, the day sells six."""
    settings = load_settings(
        DATABASE_URL=f"sqlite:///{tmp_path / 'm.db'}",
        VPP_SITE_TIMEZONE="UTC",
        VPP_MARKET_ENABLED="false",
        VPP_MARKETS="day_ahead",
        VPP_OFFER_HORIZON_HOURS="48",
    )
    with TestClient(create_app(settings, clock=clock)) as c:
        for i in range(3):
            c.post("/resources/register", json=bess_body(f"bess-{i}", grid_node="NODE_A"))
        c.post(
            "/telemetry", json={"samples": [sample(f"bess-{i}", clock.now, 90) for i in range(3)]}
        )
        log = c.app.state.aggregator.market.maker.makeup  # type: ignore[attr-defined]
        for d in (1, 2, 3):  # 100 kW beyond the award from 00:00 to 03:00 on three days
            midnight = datetime(2026, 11, 20 + d, tzinfo=UTC)
            for minute in range(3 * 60 + 1):
                log.note("NODE_A", midnight + timedelta(minutes=minute), 100.0)
        made = c.post("/market/offers/generate").json()["items"]
        sold = [o for o in made if o["market"] == "day_ahead" and o["max_power_kw"] > 0]
        day = datetime(2026, 11, 27, tzinfo=UTC)
        assert [o["interval_start"] for o in sold] == [
            (day + timedelta(hours=h)).isoformat() for h in range(6)
        ]


def test_what_was_made_up_is_stored_for_every_process_and_survives_a_restart(
    database_url: str, clock: Clock
) -> None:
    """Two processes follow awards of one aggregation; a third (after a restart) makes the
    offers: it keeps back what both made up, hour by hour, from the store."""
    settings = load_settings(DATABASE_URL=database_url, VPP_SITE_TIMEZONE="UTC")
    with TestClient(create_app(settings, clock=clock)) as c:
        repo = c.app.state.aggregator.market.repo  # type: ignore[attr-defined]
        zone = ZoneInfo("UTC")
        a, b = MakeupLog(zone, repo), MakeupLog(zone, repo)
        day = datetime(2026, 11, 24, 8, tzinfo=UTC)
        for minute in range(61):  # each made up 30 kW beyond its award for an hour
            a.note("NODE_A", day + timedelta(minutes=minute), 30.0)
            b.note("NODE_A", day + timedelta(minutes=minute), 30.0)
        a.note("NODE_A", day + timedelta(hours=2), 0.0)  # a's 08:00 hour is over: stored
        b.reserve("NODE_A", [], 0.1)  # b stores what it noted so far before reading
    with TestClient(create_app(settings, clock=clock)) as c:
        log = c.app.state.aggregator.market.maker.makeup  # type: ignore[attr-defined]
        kept = log.reserve("NODE_A", [datetime(2026, 11, 25, h, tzinfo=UTC) for h in (8, 9)], 0.1)
        # each made up 29.5 kWh by 09:00 (its notes of 08:01 to 08:59; 09:00 is the next hour's)
        assert kept.tolist() == pytest.approx([0.0, 2 * 29.5])
