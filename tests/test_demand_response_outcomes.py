"""A demand-response event says what became of it wherever the service reports it (the Kafka
message counter, the audit log, the dispatch): `rejected` with the reason when its dispatch found
no resource to take it, as an award does, not `dispatched`."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api_helpers import add_batteries
from conftest import Clock
from kafka_helpers import produce, wait_until
from vpp_aggregator.adapters.api.app import create_app
from vpp_aggregator.config import load_settings


@pytest.fixture
def service(
    tmp_path, clock: Clock, kafka_brokers: str, kafka_topics: dict[str, str]
) -> Iterator[TestClient]:  # type: ignore[no-untyped-def]
    settings = load_settings(
        DATABASE_URL=f"sqlite:///{tmp_path / 'dr.db'}", KAFKA_BROKERS=kafka_brokers, **kafka_topics
    )
    with TestClient(create_app(settings, clock=clock)) as c:
        add_batteries(c, clock.now, "NODE_K")  # bess-0..2, 250 kW each
        yield c


def dr_event(event_id: str, clock: Clock, set_point_kw: float) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "program_id": "cbp",
        "type": "DR",
        "site_id": "NODE_K",
        "v2g_requested": True,
        "der_control": {"op_mode": "discharge", "set_point_kw": set_point_kw},
        "intervals": [],
        "timestamp": clock.now.isoformat(),
    }


def audited(c: TestClient, topic: str) -> list[dict[str, Any]]:
    """The audit entries the grid-signal consumer wrote, oldest first."""
    query = {"action": "dispatch.create", "actor": f"kafka:{topic}"}
    return sorted(c.get("/audit", params=query).json()["items"], key=lambda e: e["entry_id"])


def test_an_event_whose_dispatch_is_rejected_is_reported_rejected_with_the_reason(
    service: TestClient, clock: Clock, kafka_brokers: str, kafka_topics: dict[str, str]
) -> None:
    grid = kafka_topics["VPP_TOPIC_GRID_SIGNALS"]
    for i in range(3):  # an operator holds every battery for the next 150 minutes
        held = service.post(
            "/dispatch",
            json={"target_kw": 100, "duration_minutes": 150, "resource_ids": [f"bess-{i}"]},
        )
        assert held.status_code == 201 and held.json()["status"] == "active", held.text
    produce(kafka_brokers, grid, [("dr-held", dr_event("dr-held", clock, 40.0))])
    wait_until(lambda: bool(audited(service, grid)), "the event handled and audited", 30)

    made = [d for d in service.get("/dispatch").json()["items"] if d["source"] == "dr_event"]
    assert [(d["reference"], d["status"]) for d in made] == [("dr-held", "rejected")]
    dispatch = service.get(f"/dispatch/{made[0]['dispatch_id']}").json()
    assert dispatch["allocations"] == []  # nothing is commanded for it
    (entry,) = audited(service, grid)
    assert entry["target"] == dispatch["dispatch_id"]
    assert entry["detail"]["outcome"] == "rejected", entry  # was "dispatched"
    reason = entry["detail"]["reason"]
    assert reason.startswith(f"dispatch {dispatch['dispatch_id']} was rejected: ")
    assert all(r["rule"] in reason for r in dispatch["shortfall_reasons"]), reason
    metrics = service.get("/metrics").text
    assert f'vpp_kafka_messages_total{{outcome="rejected",topic="{grid}"}} 1.0' in metrics
    assert f'outcome="dispatched",topic="{grid}"' not in metrics


def test_an_event_whose_dispatch_runs_is_reported_dispatched_without_a_reason(
    service: TestClient, clock: Clock, kafka_brokers: str, kafka_topics: dict[str, str]
) -> None:
    grid = kafka_topics["VPP_TOPIC_GRID_SIGNALS"]
    produce(kafka_brokers, grid, [("dr-free", dr_event("dr-free", clock, 40.0))])
    wait_until(lambda: bool(audited(service, grid)), "the event handled and audited", 30)
    (entry,) = audited(service, grid)
    made = service.get(f"/dispatch/{entry['target']}").json()
    assert (made["source"], made["status"]) == ("dr_event", "active")
    assert (entry["detail"]["outcome"], entry["detail"]["reason"]) == ("dispatched", None)
    metrics = service.get("/metrics").text
    assert f'vpp_kafka_messages_total{{outcome="dispatched",topic="{grid}"}} 1.0' in metrics
