"""A start restores the stored image of the live state, then takes in what changed after it: the
capacity after a restart is the capacity before it. Until loaded, the service says it is not ready
and answers no figures."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event

from api_helpers import bess_body, ev_body, sample
from conftest import Clock
from factories import bess, ev
from vpp_aggregator.adapters.api.app import create_app
from vpp_aggregator.adapters.store.database import make_engine
from vpp_aggregator.adapters.store.state_snapshot import StateSnapshotRepository, decode, encode
from vpp_aggregator.bootstrap import build
from vpp_aggregator.config import load_settings
from vpp_aggregator.domain.fleet_image import COLUMNS, restore_image, take_image
from vpp_aggregator.domain.fleet_state import FleetState
from vpp_aggregator.domain.resources import RecurringDeparture

RULES: dict[str, Any] = {
    "bess_min_soc_pct": 20.0,
    "stale_seconds": 300.0,
    "round_trip_efficiency": 0.9,
}
WEEKDAYS = RecurringDeparture(
    ("mon", "tue", "wed", "thu", "fri"), "07:30", "17:30", 80.0, "America/Los_Angeles"
)


def _flat(doc: Any, path: str = "") -> dict[str, Any]:
    if isinstance(doc, dict):
        return {k: v for key, sub in doc.items() for k, v in _flat(sub, f"{path}.{key}").items()}
    return {path: doc}


def _figures(client: TestClient, **params: Any) -> dict[str, Any]:
    """Every figure of a capacity answer, by its path in the document."""
    r = client.get("/capacity/available", params=params)
    assert r.status_code == 200, r.text
    doc = r.json()
    doc.pop("shared_state_age_seconds", None)
    return _flat(doc)


def test_an_image_restores_the_same_state_and_capacity(clock: Clock) -> None:
    now = clock.now
    state = FleetState(**RULES, initial_rows=16)
    fleet = [
        bess("b1", grid_node="N1"),
        bess("b2", grid_node="N2", fleet_id="fleet-b", charge_point_id="cp-9"),
        ev("e1", departs_in=timedelta(hours=2), now=now),
        ev("e2", departure_schedule=(WEEKDAYS,), grid_node="N2"),
        ev("e3", departure_schedule=(WEEKDAYS,)),
        ev("gone"),
    ]
    state.upsert_many(fleet, now)
    state.upsert(ev("gone", status=fleet[0].status.INACTIVE), now)  # leaves a free row behind
    rows = state.rows_of(["b1", "b2", "e1", "e2", "e3"])
    state.apply_telemetry(
        rows,
        np.full(5, now.timestamp() - 10),
        np.array([15.0, 80.0, 55.0, 90.0, 40.0]),  # b1 below its floor: locked out
        np.array([True, True, True, False, True]),
        np.array([0.0, -5.0, 3.0, 0.0, 0.0]),
        now,
    )
    image = decode(encode(take_image(state, now)))
    assert image is not None
    again = FleetState(**RULES)
    restore_image(again, image, now)
    assert sorted(again.resource_ids()) == ["b1", "b2", "e1", "e2", "e3"]
    for rid in again.resource_ids():
        assert again.live(rid, now) == state.live(rid, now)
    assert again.lockouts() == ["b1"] and again.charge_point("b2") == "cp-9"
    for minutes in (15.0, 60.0, 240.0):
        for node in (None, "N1", "N2"):
            assert again.capacity(now, minutes, grid_node=node) == state.capacity(
                now, minutes, grid_node=node
            )
    later = now + timedelta(hours=20)  # departures roll on the same way in both
    assert again.capacity(later, 60) == state.capacity(later, 60)
    assert set(image.columns) == set(COLUMNS)
    with pytest.raises(ValueError, match="empty"):
        restore_image(again, image, now)
    stricter = FleetState(**{**RULES, "bess_min_soc_pct": 25.0})
    assert not image.fits(stricter)  # its floors were computed under 20 %: a start rebuilds
    with pytest.raises(ValueError, match="VPP_BESS_MIN_SOC"):
        restore_image(stricter, image, now)


def test_capacity_after_a_restart_equals_capacity_before_it(
    database_url: str, clock: Clock
) -> None:
    """Image taken, then registry changes and telemetry, then the process dies (no final image):
    the next start restores the image and replays what came after it."""
    settings = load_settings(DATABASE_URL=database_url)
    first = TestClient(create_app(settings, clock=clock))  # no lifespan: nothing at exit
    for i in range(3):
        first.post("/resources/register", json=bess_body(f"bess-{i}", grid_node=f"N{i % 2}"))
    for i in range(4):
        body = ev_body(f"ev-{i}", grid_node=f"N{i % 2}", fleet_id=f"depot-{i % 2}")
        if i % 2:
            body["departure_schedule"] = [
                {
                    "days": ["mon", "tue", "wed", "thu", "fri"],
                    "departure": "07:30",
                    "return": "17:30",
                    "required_soc_pct": 80,
                    "timezone": "America/Los_Angeles",
                }
            ]
        first.post("/resources/register", json=body)
    ids = [f"bess-{i}" for i in range(3)] + [f"ev-{i}" for i in range(4)]
    first.post("/telemetry", json={"samples": [sample(r, clock.now, 70) for r in ids]})
    agg = first.app.state.aggregator  # type: ignore[attr-defined]
    assert agg.loader.save_image() > 0
    clock.advance(minutes=3)  # past the replay margin: only the replay brings what follows
    assert first.patch("/resources/bess-0", json={"min_soc_pct": 45}).status_code == 200
    assert first.delete("/resources/ev-2").status_code == 200
    first.post("/resources/register", json=bess_body("bess-new", grid_node="N3"))
    first.post(
        "/telemetry",
        json={
            "samples": [
                sample("bess-1", clock.now, 33),
                sample("bess-new", clock.now, 90),
                sample("ev-1", clock.now, 20, plugged=False),
            ]
        },
    )
    scopes = [(), (("grid_node", "N0"),), (("grid_node", "N3"),), (("fleet_id", "depot-1"),)]
    before = {
        (minutes, scope): _figures(first, duration_minutes=minutes, **dict(scope))
        for minutes in (30, 60)
        for scope in scopes
    }
    live_before = {r: first.get(f"/resources/{r}").json() for r in [*ids, "bess-new"]}

    second = create_app(settings, clock=clock)
    loader = second.state.aggregator.loader
    assert loader.restored_from is not None  # from the image, not a rebuild
    with TestClient(second) as c:
        assert c.get("/health/ready").json()["dependencies"]["live_state"]["ok"] is True
        for (minutes, scope), figures in before.items():
            after = _figures(c, duration_minutes=minutes, **dict(scope))
            assert after == pytest.approx(figures), (minutes, scope)
        for rid, doc in live_before.items():
            assert c.get(f"/resources/{rid}").json() == doc
        assert c.get("/resources/bess-0").json()["min_soc_pct"] == 45
        assert c.get("/resources/ev-2").json()["status"] == "inactive"


def test_not_ready_and_no_figures_until_the_live_state_is_loaded(
    tmp_path: Any, clock: Clock
) -> None:
    settings = load_settings(DATABASE_URL=f"sqlite:///{tmp_path / 'vpp.db'}")
    with TestClient(create_app(settings, clock=clock)) as c:  # an image to start from
        c.post("/resources/register", json=bess_body())
        c.post("/telemetry", json={"samples": [sample("bess-1", clock.now, 60)]})
        loaded = _figures(c)
    service = build(settings, clock, load=False)
    images = service.aggregator.loader.images
    assert images is not None
    release = threading.Event()
    real_load = images.load

    def held_load() -> Any:
        release.wait(30)
        return real_load()

    images.load = held_load  # type: ignore[method-assign]
    with TestClient(create_app(service=service)) as c:
        r = c.get("/health/ready")
        assert r.status_code == 503
        doc = r.json()
        assert "live_state" in doc["down"]
        assert doc["dependencies"]["live_state"]["detail"].startswith("loading live state")
        assert c.get("/health").status_code == 200  # alive, only not ready
        for path in ("/capacity/available", "/resources/bess-1", "/metrics"):
            r = c.get(path)
            assert r.status_code == 503 and "loading" in r.json()["detail"], path
        assert c.post("/telemetry", json={"samples": []}).status_code == 503
        release.set()
        assert service.aggregator.loader.progress.ready.wait(30)
        assert c.get("/health/ready").status_code == 200
        assert _figures(c) == pytest.approx(loaded)


def test_an_image_taken_under_other_rules_is_not_used(tmp_path: Any, clock: Clock) -> None:
    url = f"sqlite:///{tmp_path / 'vpp.db'}"
    with TestClient(create_app(load_settings(DATABASE_URL=url), clock=clock)) as c:
        c.post("/resources/register", json=bess_body(min_soc_pct=20.0))
        c.post("/telemetry", json={"samples": [sample("bess-1", clock.now, 60)]})
    stricter = create_app(load_settings(DATABASE_URL=url, VPP_BESS_MIN_SOC=30), clock=clock)
    assert stricter.state.aggregator.loader.restored_from is None  # rebuilt from the registry
    with TestClient(stricter) as c:
        # 500 kWh between the 30 % floor and 60 %, at the grid.
        assert _figures(c)[".discharge.kwh"] == pytest.approx(150.0 * 0.9**0.5, abs=1e-3)


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_two_processes_saving_the_first_image_at_once_both_succeed(
    database_url: str, clock: Clock
) -> None:
    """Two workers that stop together both find no image and both insert one: the loser of the
    race replaces the winner's image (if its own is newer) instead of failing its stop."""
    engine = make_engine(database_url)
    images = StateSnapshotRepository(engine)
    state = FleetState(**RULES, initial_rows=16)
    state.upsert_many([bess("b1")], clock.now)
    older, newer = take_image(state, clock.now), take_image(state, clock.now + timedelta(seconds=1))
    both_selected = threading.Barrier(2, timeout=30)
    inserts = threading.local()

    @event.listens_for(engine, "before_cursor_execute")
    def _hold_first_insert(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        # Each thread's first insert waits until the other has found no image either.
        if statement.startswith("INSERT INTO state_snapshots") and not getattr(
            inserts, "done", False
        ):
            inserts.done = True
            both_selected.wait()

    saved: list[int] = []
    errors: list[BaseException] = []

    def save(image: Any) -> None:
        try:
            saved.append(images.save(image))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=save, args=(i,)) for i in (older, newer)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert images.taken_at() == newer.taken_at  # the newer image is the one kept
    assert len(saved) == 2
    engine.dispose()
