"""A driver who unplugs well before the departure they gave takes what the vehicle held then. The
service remembers, per vehicle, which of its last 10 stays ended more than an hour early. A
discharge draws on such vehicles only after those whose drivers keep to their word, and one whose
driver left early twice keeps its next trip's whole need as its floor. In the Caltech replay
every missed departure was a driver leaving hours early (docs/concepts.md, "Floors")."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from api_helpers import ev_body, sample
from conftest import Clock
from factories import ev
from vpp_aggregator.adapters.api.app import create_app
from vpp_aggregator.adapters.store.state_snapshot import decode, encode
from vpp_aggregator.config import ConfigError, load_settings
from vpp_aggregator.domain.early_departures import early_count, remember
from vpp_aggregator.domain.fleet_image import restore_image, take_image
from vpp_aggregator.domain.fleet_state import FleetState


@pytest.fixture
def client(tmp_path: Any, clock: Clock) -> Iterator[TestClient]:
    """Only drivers seen leaving early twice are kept to their need (drivers first, the
    default, keeps every one: the last test)."""
    settings = load_settings(
        DATABASE_URL=f"sqlite:///{tmp_path / 'e.db'}", VPP_NEED_FLOOR_EARLY_LEAVES=2
    )
    with TestClient(create_app(settings, clock=clock)) as c:
        yield c


def stay(client: TestClient, clock: Clock, rid: str, stated_h: float, leaves_h: float) -> None:
    """One stay: plugged in now, saying it leaves in `stated_h`; seen unplugged at `leaves_h`."""
    trip = {
        "departure": (clock.now + timedelta(hours=stated_h)).isoformat(),
        "required_soc_pct": 60,
    }
    client.patch(f"/resources/{rid}", json={"trips": [trip]}).raise_for_status()
    client.post("/telemetry", json={"samples": [sample(rid, clock.now, 80.0)]}).raise_for_status()
    clock.advance(hours=leaves_h)
    gone = sample(rid, clock.now, 80.0, plugged=False)
    client.post("/telemetry", json={"samples": [gone]}).raise_for_status()
    clock.advance(hours=24 - leaves_h)


def early(client: TestClient, rid: str) -> int:
    return int(client.get(f"/resources/{rid}").json()["early_departures"])


def test_a_stay_ended_more_than_an_hour_early_is_counted(client: TestClient, clock: Clock) -> None:
    client.post("/resources/register", json=ev_body("ev-1")).raise_for_status()
    stay(client, clock, "ev-1", stated_h=8, leaves_h=5)  # 3 h early
    assert early(client, "ev-1") == 1
    stay(client, clock, "ev-1", stated_h=8, leaves_h=7.5)  # 30 min early: on time enough
    stay(client, clock, "ev-1", stated_h=8, leaves_h=9)  # late
    assert early(client, "ev-1") == 1
    stay(client, clock, "ev-1", stated_h=8, leaves_h=2)
    assert early(client, "ev-1") == 2


def test_only_the_last_ten_stays_count_and_at_most_five(client: TestClient, clock: Clock) -> None:
    client.post("/resources/register", json=ev_body("ev-1")).raise_for_status()
    for _ in range(7):
        stay(client, clock, "ev-1", stated_h=8, leaves_h=3)
    assert early(client, "ev-1") == 5  # seven of seven, counted up to five
    for _ in range(7):
        stay(client, clock, "ev-1", stated_h=8, leaves_h=8)
    assert early(client, "ev-1") == 3  # three of the last ten
    for _ in range(3):
        stay(client, clock, "ev-1", stated_h=8, leaves_h=8)
    assert early(client, "ev-1") == 0


def test_discharge_draws_on_the_vehicle_whose_driver_keeps_to_their_word(
    client: TestClient, clock: Clock
) -> None:
    for rid in ("ev-a", "ev-b"):
        client.post("/resources/register", json=ev_body(rid)).raise_for_status()
    for _ in range(2):
        stay(client, clock, "ev-a", stated_h=8, leaves_h=4)  # ev-a's driver leaves early
        stay(client, clock, "ev-b", stated_h=8, leaves_h=8)
    assert (early(client, "ev-a"), early(client, "ev-b")) == (2, 0)
    # Both plugged in again, ev-a a little fuller: without the record it would be drawn first.
    trip = {"departure": (clock.now + timedelta(hours=10)).isoformat(), "required_soc_pct": 60}
    for rid, soc in (("ev-a", 85.0), ("ev-b", 80.0)):
        client.patch(f"/resources/{rid}", json={"trips": [trip]}).raise_for_status()
        client.post("/telemetry", json={"samples": [sample(rid, clock.now, soc)]})
    d = client.post("/dispatch", json={"target_kw": 40, "duration_minutes": 30})
    assert d.status_code == 201, d.text
    plans = {a["resource_id"]: a for a in d.json()["allocations"]}
    assert plans["ev-b"]["setpoint_kw"] == 40.0  # the whole target, once ramped up
    # ev-a only covers ev-b's ramps (10 kW/min) at either end of the window.
    kwmin = {rid: sum(p["setpoint_kw"] for p in a["schedule"]) for rid, a in plans.items()}
    assert kwmin.get("ev-a", 0.0) < 0.1 * kwmin["ev-b"]


def test_the_record_survives_a_restart_from_the_stored_image() -> None:
    now = datetime(2026, 3, 2, 8, tzinfo=UTC)
    state = FleetState(bess_min_soc_pct=20.0, stale_seconds=900.0, round_trip_efficiency=0.9)
    state.upsert(ev("ev-1", departs_in=timedelta(hours=8), now=now), now)
    rows = state.rows_of(["ev-1"])
    for plugged, hours in ((True, 0.0), (False, 2.0)):  # left 6 h before its trip
        at = now + timedelta(hours=hours)
        state.apply_telemetry(
            rows,
            np.array([at.timestamp()]),
            np.array([70.0]),
            np.array([plugged]),
            np.array([0.0]),
            at,
        )
    assert state.live("ev-1", now + timedelta(hours=3)).early_departures == 1  # type: ignore[union-attr]
    image = decode(encode(take_image(state, now + timedelta(hours=3))))
    assert image is not None
    fresh = FleetState(bess_min_soc_pct=20.0, stale_seconds=900.0, round_trip_efficiency=0.9)
    restore_image(fresh, image, now + timedelta(hours=4))
    assert fresh.live("ev-1", now + timedelta(hours=4)).early_departures == 1  # type: ignore[union-attr]


def test_the_record_keeps_ten_stays() -> None:
    bits = np.zeros(1, dtype=np.uint16)
    for is_early in [True] * 10 + [False] * 9:
        bits = remember(bits, np.array([is_early]))
    assert early_count(bits).tolist() == [1]
    bits = remember(bits, np.array([False]))
    assert early_count(bits).tolist() == [0]


def ev_discharge(client: TestClient) -> tuple[float, float]:
    cap = client.get("/capacity/available", params={"duration_minutes": 60}).json()
    ev = cap["by_type"].get("EV", {"discharge": {"kw": 0.0, "kwh": 0.0}})
    return float(ev["discharge"]["kw"]), float(ev["discharge"]["kwh"])


def test_a_vehicle_whose_driver_left_early_twice_keeps_its_next_trips_need(
    client: TestClient, clock: Clock
) -> None:
    """Capacity and dispatch both keep it: below its need it serves nothing and is not held
    (its own charging goes on); above, only the charge beyond the need counts. Once is not
    enough: the floor still rises only toward the departure given."""
    client.post("/resources/register", json=ev_body("ev-1")).raise_for_status()
    for left_early in (1, 2):
        trip = {"departure": (clock.now + timedelta(hours=8)).isoformat(), "required_soc_pct": 70}
        client.patch("/resources/ev-1", json={"trips": [trip]}).raise_for_status()
        client.post("/telemetry", json={"samples": [sample("ev-1", clock.now, 50.0)]})
        assert ev_discharge(client)[0] > 0  # 8 h are enough to recharge
        assert client.get("/resources/ev-1").json()["floor_now_soc_pct"] == 30.0
        clock.advance(hours=1)
        gone = sample("ev-1", clock.now, 50.0, plugged=False)  # 7 h before the time given
        client.post("/telemetry", json={"samples": [gone]}).raise_for_status()
        assert early(client, "ev-1") == left_early
        clock.advance(hours=20)

    trip = {"departure": (clock.now + timedelta(hours=8)).isoformat(), "required_soc_pct": 70}
    client.patch("/resources/ev-1", json={"trips": [trip]}).raise_for_status()
    client.post("/telemetry", json={"samples": [sample("ev-1", clock.now, 50.0, power=-11.0)]})
    assert ev_discharge(client) == (0.0, 0.0)
    assert client.get("/resources/ev-1").json()["floor_now_soc_pct"] == 70.0  # kept to its need
    d = client.post("/dispatch", json={"target_kw": 20, "duration_minutes": 30})
    assert d.status_code == 201, d.text
    assert d.json()["allocations"] == []  # not even held at zero: it goes on charging

    clock.advance(minutes=1)
    client.post("/telemetry", json={"samples": [sample("ev-1", clock.now, 80.0)]})
    kwh = ev_discharge(client)[1]
    assert 0 < kwh <= 200.0 * 0.10 + 1e-6  # 10 % of 200 kWh above the 70 % it needs


def test_by_default_every_vehicle_keeps_its_need_from_the_first_stay(
    tmp_path: Any, clock: Clock
) -> None:
    """Drivers first (`VPP_NEED_FLOOR_EARLY_LEAVES` 0, the default). A vehicle no driver ever
    left early is treated as one that did: below its need it serves nothing and its charging is
    not held."""
    settings = load_settings(DATABASE_URL=f"sqlite:///{tmp_path / 'first.db'}")
    with TestClient(create_app(settings, clock=clock)) as c:
        c.post("/resources/register", json=ev_body("ev-1")).raise_for_status()
        trip = {"departure": (clock.now + timedelta(hours=8)).isoformat(), "required_soc_pct": 70}
        c.patch("/resources/ev-1", json={"trips": [trip]}).raise_for_status()
        c.post("/telemetry", json={"samples": [sample("ev-1", clock.now, 50.0, power=-11.0)]})
        assert early(c, "ev-1") == 0
        shown = c.get("/resources/ev-1").json()  # the operator sees why it is not dispatched
        assert (shown["floor_soc_pct"], shown["floor_now_soc_pct"]) == (30.0, 70.0)
        assert ev_discharge(c) == (0.0, 0.0)  # kept to drivers seen leaving early, 8 h would do
        d = c.post("/dispatch", json={"target_kw": 20, "duration_minutes": 30})
        assert d.status_code == 201, d.text
        assert d.json()["allocations"] == []
    with pytest.raises(ConfigError, match="VPP_NEED_FLOOR_EARLY_LEAVES=6"):
        load_settings(VPP_NEED_FLOOR_EARLY_LEAVES=6)  # more than the record counts
