"""Messages from the other layers are read once, as types, and routed by a table: a message that
can never be handled is refused with every field at fault, never crashes the consumer (a
crash rewinds the batch and retries it for ever), and HTTP and Kafka read an award alike."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api_helpers import ev_body, sample
from conftest import Clock
from vpp_aggregator.adapters.api.app import create_app
from vpp_aggregator.app.audit import Actor
from vpp_aggregator.app.integration import IntegrationService, MessageKind
from vpp_aggregator.app.message_fields import InvalidMessageError
from vpp_aggregator.config import load_settings


@pytest.fixture
def client(tmp_path, clock: Clock) -> Iterator[TestClient]:  # type: ignore[no-untyped-def]
    settings = load_settings(DATABASE_URL=f"sqlite:///{tmp_path / 'm.db'}")
    with TestClient(create_app(settings, clock=clock)) as c:
        c.post("/resources/register", json=ev_body("ev-1", charge_point_id="CP-1"))
        c.post("/telemetry", json={"samples": [sample("ev-1", clock.now, 80)]})
        yield c


def integration(client: TestClient) -> IntegrationService:
    service: IntegrationService = client.app.state.aggregator.integration  # type: ignore[attr-defined]
    return service


def refused(client: TestClient, kind: MessageKind, message: Any) -> str:
    with pytest.raises(InvalidMessageError) as caught:
        integration(client).handle(kind, message)
    return str(caught.value)


@pytest.mark.parametrize(
    "event",
    [
        {"event_id": "e1", "targets": 5},  # was a TypeError: the batch retried for ever
        {"event_id": "e1", "targets": [{"type": "GRID_NODE", "values": 7}]},
        {
            "event_id": "e1",
            "intervals": [{"payloads": [{"type": "DISPATCH_SETPOINT", "values": {}}]}],
        },
    ],
)
def test_a_malformed_event_is_refused_with_its_field_not_crashed_on(
    client: TestClient, event: dict[str, Any]
) -> None:
    reason = refused(client, MessageKind.GRID_SIGNAL, event)
    assert reason.split(":")[0] in ("targets", "targets[0]", "intervals[0].payloads[0].values")


def test_every_problem_of_an_event_is_named_at_once(client: TestClient) -> None:
    event = {
        "event_id": "",
        "intervalPeriod": {"start": "2026-11-25T12:00:00"},
        "intervals": [{"intervalPeriod": {"duration": "one hour"}}],
    }
    reason = refused(client, MessageKind.GRID_SIGNAL, event)
    assert reason.startswith("event_id: must be a non-empty string; ")
    assert "intervalPeriod.start: needs a time zone offset" in reason
    assert "duration 'one hour' is not an ISO-8601 duration" in reason
    assert "(at intervals[0].intervalPeriod.duration)" in reason


def test_fields_sent_in_other_shapes_are_read_as_before(client: TestClient) -> None:
    """A site id that is not a string, a `v2g_requested` that is not true and a `der_control`
    that is not an object count as not sent: the event asks nothing and is ignored, not
    dead-lettered."""
    event = {"event_id": "e2", "site_id": 5, "v2g_requested": "yes", "der_control": "off"}
    [outcome] = integration(client).handle(MessageKind.GRID_SIGNAL, event)
    assert outcome.outcome == "ignored"


def test_charging_events_need_a_charge_point_only_when_they_change_availability(
    client: TestClient,
) -> None:
    handle = integration(client).handle
    assert handle(MessageKind.CHARGING_EVENT, {"event": "HEARTBEAT"})[0].outcome == "ignored"
    reason = refused(client, MessageKind.CHARGING_EVENT, {"event": "CHARGER_DISCONNECTED"})
    assert reason == "chargePointId: is required"
    assert refused(client, MessageKind.CHARGING_EVENT, [1]) == "event: must be a JSON object"
    unplug = {"event": "CHARGER_DISCONNECTED", "chargePointId": "CP-1"}
    assert handle(MessageKind.CHARGING_EVENT, unplug)[0].detail == "ev-1 unplugged"


def test_alerts_and_acknowledgements_are_refused_with_the_field_at_fault(
    client: TestClient,
) -> None:
    alert = {"event_type": "PHYSICS_FRAUD", "vehicle_id": ""}
    assert refused(client, MessageKind.PHYSICS_ALERT, alert) == (
        "vehicle_id: must be a non-empty string"
    )
    ack = {"dispatch_id": "d-1", "chargePointId": "CP-unknown", "status": "Rejected"}
    assert "needs resource_id" in refused(client, MessageKind.COMMAND_ACK, ack)


def test_telemetry_samples_name_each_field_at_fault(client: TestClient, clock: Clock) -> None:
    bad = {"resource_id": "", "timestamp": 5, "soc_pct": True, "plugged_in": 1}
    refusals = integration(client).telemetry_samples([sample("ev-1", clock.now, 70), bad, 3])
    assert refusals == [
        (
            1,
            "resource_id: must not be empty; timestamp: must be an ISO-8601 date-time string; "
            "soc_pct: must be a number; plugged_in: must be true or false",
        ),
        (2, "sample: must be a JSON object"),
    ]


def test_an_award_is_refused_alike_over_http_and_kafka(client: TestClient) -> None:
    award = {
        "award_id": "a" * 129,
        "aggregation_id": "NODE_A",
        "interval_start": "2026-11-25T13:00:00+00:00",
        "interval_end": "2026-11-25T14:00:00+00:00",
        "awarded_kw": 10,
    }
    reason = refused(client, MessageKind.MARKET_AWARD, award)
    answer = client.post("/market/awards", json=award)
    assert answer.status_code == 422
    assert [f"{e['field']}: {e['message']}" for e in answer.json()["errors"]] == [reason]
    assert reason == "award_id: must be 1 to 128 characters"


def test_an_acknowledgement_names_its_dispatch_and_status(client: TestClient) -> None:
    reason = refused(client, MessageKind.COMMAND_ACK, {"resource_id": "ev-1", "status": 5})
    assert reason == "dispatch_id: is required; status: must be a non-empty string"


def test_what_a_message_changes_is_audited_as_its_sender_at_the_service_clock(
    client: TestClient, clock: Clock
) -> None:
    sender = Actor("kafka:alerts", "system", None, "kafka")
    alert = {"event_type": "PHYSICS_FRAUD", "vehicle_id": "ev-1"}
    [outcome] = integration(client).handle(MessageKind.PHYSICS_ALERT, alert, sender)
    assert outcome.outcome == "locked"
    integration(client).handle(MessageKind.PHYSICS_ALERT, {**alert, "event_type": "NOISE"}, sender)
    entries = client.get("/audit", params={"actor": "kafka:alerts"}).json()["items"]
    assert [(e["action"], e["target"], e["remote_addr"]) for e in entries] == [
        ("resource.change", "ev-1", "kafka")
    ]  # the ignored alert changed nothing, so it is not there
    assert entries[0]["at"].startswith(clock.now.isoformat()[:19])


def test_durations_are_iso_8601_as_openadr_writes_them() -> None:
    """Read by pydantic's ISO-8601 reader; clock forms, negative and bare designators refused."""
    from datetime import timedelta

    from vpp_aggregator.app.message_fields import _duration

    assert _duration("PT1H") == timedelta(hours=1)
    assert _duration("P1DT2H30M") == timedelta(days=1, hours=2, minutes=30)
    assert _duration("PT0.5H") == timedelta(minutes=30)
    for bad in ("P", "PT", "one hour", "01:00:00", "PT-1H", 3600):
        with pytest.raises(Exception, match="is not an ISO-8601 duration"):
            _duration(bad)


@pytest.mark.parametrize("where", ["event", "interval"])
def test_an_open_ended_openadr_duration_dispatches_for_the_longest_window(
    client: TestClient, where: str
) -> None:
    """OpenADR 3.1 (User Guide, "intervalPeriod duration"): "P9999Y" stands for infinity. It is
    valid ISO 8601 and must not overflow a date: the event runs for the longest dispatch."""
    period = {"duration": "P9999Y"}
    event: dict[str, Any] = {
        "event_id": f"forever-{where}",
        "targets": [{"type": "GRID_NODE", "values": ["NODE_A"]}],
        "intervals": [
            {
                "id": 0,
                "payloads": [{"type": "DISPATCH_SETPOINT", "values": [20.0]}],
                **({"intervalPeriod": period} if where == "interval" else {}),
            }
        ],
        **({"intervalPeriod": period} if where == "event" else {}),
    }
    [outcome] = integration(client).handle(MessageKind.GRID_SIGNAL, event)
    assert outcome.outcome == "dispatched", outcome
    d = client.get("/dispatch", params={"source": "dr_event"}).json()["items"][0]
    assert d["duration_minutes"] == 24 * 60
