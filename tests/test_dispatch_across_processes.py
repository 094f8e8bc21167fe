"""Two service processes on one PostgreSQL database never give one resource to two dispatches:
planning holds a database-wide lock and counts the other processes' dispatches as busy."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from api_helpers import bess_body, sample
from conftest import Clock, pg_copy
from vpp_aggregator.adapters.api.app import create_app
from vpp_aggregator.app.integration import MessageKind
from vpp_aggregator.config import load_settings


@pytest.fixture
def shared_pg(pg_template: str) -> Iterator[str]:
    with pg_copy(pg_template) as url:
        yield url


def _process(url: str, clock: Clock, **extra: str) -> TestClient:
    settings = load_settings(
        DATABASE_URL=url,
        VPP_MARKET_ENABLED="false",
        VPP_FORECAST_RETRAIN_HOURS="0",
        VPP_DISPATCH_LP_MAX_RESOURCES="0",  # the fast allocator: the same order in both processes
        **extra,
    )
    return TestClient(create_app(settings, clock=clock))


@pytest.fixture
def two_processes(shared_pg: str, clock: Clock) -> Iterator[tuple[TestClient, TestClient]]:
    ids = [f"bess-{i}" for i in range(8)]
    with _process(shared_pg, clock) as a:
        for rid in ids:
            assert a.post("/resources/register", json=bess_body(rid, grid_node="NODE_X")).is_success
        with _process(shared_pg, clock) as b:  # starts after the registrations: loads them
            for c in (a, b):  # each process hears the fleet's telemetry (a broker would fan out)
                c.post("/telemetry", json={"samples": [sample(r, clock.now, 90) for r in ids]})
            yield a, b


def _resources(doc: dict[str, object]) -> set[str]:
    return {al["resource_id"] for al in doc["allocations"]}  # type: ignore[attr-defined,index]


def test_a_second_process_plans_around_the_first_ones_dispatch(
    two_processes: tuple[TestClient, TestClient],
) -> None:
    a, b = two_processes
    body = {"target_kw": 30, "duration_minutes": 30, "grid_node": "NODE_X"}  # 3 batteries
    first = a.post("/dispatch", json=body)
    second = b.post("/dispatch", json=body)
    assert first.status_code == second.status_code == 201, (first.text, second.text)
    held_a, held_b = _resources(first.json()), _resources(second.json())
    assert held_a and held_b and not held_a & held_b
    assert second.json()["allocated_kw"] == pytest.approx(30.0)
    # Once the first is cancelled its batteries are free again for the other process.
    assert a.post(f"/dispatch/{first.json()['dispatch_id']}/cancel").status_code == 200
    third = b.post("/dispatch", json=body)
    assert third.status_code == 201 and _resources(third.json()) & held_a


def test_simultaneous_dispatches_in_two_processes_share_no_resource(
    two_processes: tuple[TestClient, TestClient],
) -> None:
    a, b = two_processes
    for _ in range(3):
        start = threading.Barrier(2)
        docs: dict[str, dict[str, object]] = {}

        def post(
            name: str,
            client: TestClient,
            start: threading.Barrier = start,
            docs: dict[str, dict[str, object]] = docs,
        ) -> None:
            start.wait()
            r = client.post(
                "/dispatch", json={"target_kw": 30, "duration_minutes": 20, "grid_node": "NODE_X"}
            )
            assert r.status_code == 201, r.text
            docs[name] = r.json()

        threads = [threading.Thread(target=post, args=(n, c)) for n, c in (("a", a), ("b", b))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        held_a, held_b = _resources(docs["a"]), _resources(docs["b"])
        assert held_a and held_b and not held_a & held_b
        assert docs["a"]["allocated_kw"] == docs["b"]["allocated_kw"] == pytest.approx(30.0)
        for name, client in (("a", a), ("b", b)):
            client.post(f"/dispatch/{docs[name]['dispatch_id']}/cancel")


def test_each_dispatch_is_followed_by_one_process_and_taken_over_when_it_stops(
    shared_pg: str, clock: Clock
) -> None:
    ids = [f"bess-{i}" for i in range(4)]
    with _process(shared_pg, clock) as a:
        for rid in ids:
            a.post("/resources/register", json=bess_body(rid, grid_node="NODE_X"))
        a.post("/telemetry", json={"samples": [sample(r, clock.now, 90) for r in ids]})
        d = a.post("/dispatch", json={"target_kw": 20, "duration_minutes": 30}).json()
        mine = sorted(_resources(d))
        with _process(shared_pg, clock) as b:  # starts while `a` runs and follows `d`
            b.post("/telemetry", json={"samples": [sample(r, clock.now, 90) for r in ids]})
            agg_a, agg_b = (c.app.state.aggregator for c in (a, b))  # type: ignore[attr-defined]
            agg_b.dispatch.tick()
            assert sorted(agg_a.dispatch.held_resources()) == mine
            assert agg_b.dispatch.held_resources() == []  # `a` holds the claim
            # A battery is unplugged: the dispatch is re-planned once, not once per process.
            clock.advance(minutes=2)
            unplugged = [sample(r, clock.now, 89, plugged=r != mine[0]) for r in ids]
            for c in (a, b):
                c.post("/telemetry", json={"samples": unplugged})
            agg_a.dispatch.tick()
            agg_b.dispatch.tick()
            revisions = b.get(f"/dispatch/{d['dispatch_id']}").json()["revisions"]
            assert [x["reason"] for x in revisions] == ["created", "redispatch"], revisions
            # `a` stalls (no tick for longer than its lease): `b` takes the dispatch over, and
            # `a`, when it wakes, lets go of it.
            clock.advance(seconds=31)
            agg_b.dispatch.tick()
            assert set(agg_b.dispatch.held_resources()) >= set(mine[1:])
            agg_a.dispatch.tick()
            assert agg_a.dispatch.held_resources() == []


def test_a_process_that_polls_its_peers_seldom_claims_its_dispatches_as_long(
    shared_pg: str, clock: Clock
) -> None:
    # Polling every 60 s, `a` claims what it follows for 180 s (renewed every 60 s): `b` takes
    # over a dispatch of `a` only once `a` has not renewed for that long.
    ids = [f"bess-{i}" for i in range(2)]
    with _process(shared_pg, clock, VPP_PEER_POLL_SECONDS="60") as a:
        for rid in ids:
            a.post("/resources/register", json=bess_body(rid, grid_node="NODE_X"))
        a.post("/telemetry", json={"samples": [sample(r, clock.now, 90) for r in ids]})
        a.post("/dispatch", json={"target_kw": 20, "duration_minutes": 30})
        with _process(shared_pg, clock) as b:
            agg_a, agg_b = (c.app.state.aggregator for c in (a, b))  # type: ignore[attr-defined]
            held = sorted(agg_a.dispatch.held_resources())
            assert held
            clock.advance(seconds=170)  # longer than the default claim of 30 s
            b.post("/telemetry", json={"samples": [sample(r, clock.now, 89) for r in ids]})
            agg_b.dispatch.tick()
            assert agg_b.dispatch.held_resources() == []
            clock.advance(seconds=11)
            agg_b.dispatch.tick()
            assert sorted(agg_b.dispatch.held_resources()) == held


def test_a_refusal_read_by_another_process_reaches_the_one_that_follows_the_dispatch(
    two_processes: tuple[TestClient, TestClient],
) -> None:
    a, b = two_processes
    d = a.post("/dispatch", json={"target_kw": 30, "duration_minutes": 30}).json()
    refused = sorted(_resources(d))[0]
    agg_a, agg_b = (c.app.state.aggregator for c in (a, b))  # type: ignore[attr-defined]
    ack = {"dispatch_id": d["dispatch_id"], "resource_id": refused, "status": "Rejected"}
    [outcome] = agg_b.integration.handle(MessageKind.COMMAND_ACK, {**ack, "reason": "EVSE fault"})
    assert outcome.outcome == "queued"
    agg_a.dispatch.tick()  # the follower picks it up on its next tick
    doc = a.get(f"/dispatch/{d['dispatch_id']}").json()
    assert [x["reason"] for x in doc["revisions"]] == ["created", "redispatch"]
    assert "command_rejected (EVSE fault)" in str(doc["revisions"][1]["detail"])
    agg_a.dispatch.tick()  # handled once
    assert len(a.get(f"/dispatch/{d['dispatch_id']}").json()["revisions"]) == 2
    # A refusal for a resource that has no part in the dispatch changes nothing.
    [stray] = agg_b.integration.handle(MessageKind.COMMAND_ACK, {**ack, "resource_id": "bess-7x"})
    assert stray.outcome == "ignored"


def test_a_process_looks_for_refusals_others_queued_as_often_as_it_is_told(
    shared_pg: str, clock: Clock
) -> None:
    """`VPP_PEER_POLL_SECONDS`: the follower takes refusals another process queued for its
    dispatch at its first tick, then not again before the period is over."""
    ids = [f"bess-{i}" for i in range(4)]
    with _process(shared_pg, clock, VPP_PEER_POLL_SECONDS="60") as a:
        for rid in ids:
            assert a.post("/resources/register", json=bess_body(rid, grid_node="NODE_X")).is_success
        with _process(shared_pg, clock) as b:
            for c in (a, b):
                c.post("/telemetry", json={"samples": [sample(r, clock.now, 90) for r in ids]})
            d = a.post("/dispatch", json={"target_kw": 30, "duration_minutes": 30}).json()
            first, second = sorted(_resources(d))[:2]
            agg_a, agg_b = (c.app.state.aggregator for c in (a, b))  # type: ignore[attr-defined]

            def refuse(rid: str) -> None:
                ack = {"dispatch_id": d["dispatch_id"], "resource_id": rid, "status": "Rejected"}
                [outcome] = agg_b.integration.handle(MessageKind.COMMAND_ACK, ack)
                assert outcome.outcome == "queued"

            def revisions() -> int:
                return len(a.get(f"/dispatch/{d['dispatch_id']}").json()["revisions"])

            refuse(first)
            agg_a.dispatch.tick()
            assert revisions() == 2  # taken at the first look
            refuse(second)
            clock.advance(seconds=30)
            agg_a.dispatch.tick()
            assert revisions() == 2  # not looked for again within the minute
            clock.advance(seconds=30)
            agg_a.dispatch.tick()
            assert revisions() == 3


def test_a_cancel_received_by_the_other_process_sticks(
    two_processes: tuple[TestClient, TestClient], clock: Clock
) -> None:
    a, b = two_processes
    d = a.post("/dispatch", json={"target_kw": 30, "duration_minutes": 30}).json()
    agg_a, agg_b = (c.app.state.aggregator for c in (a, b))  # type: ignore[attr-defined]
    clock.advance(minutes=5)  # under way: its batteries deliver power that must ramp down
    cancelled = b.post(f"/dispatch/{d['dispatch_id']}/cancel")
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled"
    assert cancelled.json()["allocations"], "the batteries ramp down from where they are"
    # `a` followed it: it lets go instead of re-planning over the cancel.
    unplugged = [sample(f"bess-{i}", clock.now, 89, plugged=False) for i in range(8)]
    a.post("/telemetry", json={"samples": unplugged})
    agg_a.dispatch.tick()
    agg_b.dispatch.tick()
    doc = a.get(f"/dispatch/{d['dispatch_id']}").json()
    assert doc["status"] == "cancelled"
    assert [x["reason"] for x in doc["revisions"]] == ["created", "cancelled"]
    assert agg_a.dispatch.held_resources() == []


def test_the_planning_lock_waits_a_bounded_time_and_nests(shared_pg: str) -> None:
    from sqlalchemy import text

    from vpp_aggregator.adapters.store.database import make_engine
    from vpp_aggregator.adapters.store.dispatch_repository import (
        PLANNING_LOCK_KEY,
        DispatchRepository,
    )
    from vpp_aggregator.app.dispatch_records import PlanningBusyError

    engine = make_engine(shared_pg)
    repo = DispatchRepository(engine)
    with repo.planning_lock(), repo.planning_lock():  # the same thread again: no deadlock
        pass
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as other:
        other.execute(text("SELECT pg_advisory_lock(:k)"), {"k": PLANNING_LOCK_KEY})
        with pytest.raises(PlanningBusyError), repo.planning_lock(timeout_s=0.3):
            pass
        other.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": PLANNING_LOCK_KEY})
    with repo.planning_lock(timeout_s=0.3):  # free again
        pass
    engine.dispose()
