"""The native VEN against a test VTN over HTTP (tests/openadr_vtn.py, written from the 3.1.1
definition): a token by OAuth2 client credentials (form-encoded, as `clientCredentialRequest`
says), renewed on a 401; events created, modified and deleted at the VTN become dispatches
created, re-planned and ramped down (UG 7.9: a deleted event is no longer acted on)."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api_helpers import bess_body, sample
from conftest import Clock
from devservices.ports import free_port
from openadr_vtn import TestVtn, validator
from vpp_aggregator.adapters.api.app import create_app
from vpp_aggregator.adapters.openadr.ven import VenPoller
from vpp_aggregator.adapters.openadr.vtn_client import VtnClient
from vpp_aggregator.bootstrap import jobs
from vpp_aggregator.config import load_settings


@pytest.fixture
def vtn() -> Iterator[TestVtn]:
    with TestVtn().running() as running:
        yield running


@pytest.fixture
def client(tmp_path: Path, clock: Clock) -> Iterator[TestClient]:
    settings = load_settings(DATABASE_URL=f"sqlite:///{tmp_path / 'v.db'}")
    with TestClient(create_app(settings, clock=clock)) as c:
        c.post("/resources/register", json=bess_body("bess-1", grid_node="NODE_A"))
        c.post("/telemetry", json={"samples": [sample("bess-1", clock.now, 50.0)]})
        yield c


def poller(client: TestClient, vtn: TestVtn) -> VenPoller:
    events = client.app.state.aggregator.demand_response  # type: ignore[attr-defined]
    reports = client.app.state.aggregator.dr_reports  # type: ignore[attr-defined]
    return VenPoller(VtnClient(vtn.url, vtn.client_id, vtn.client_secret), events, reports)


def charge_event(clock: Clock, kw: float) -> dict[str, Any]:
    return {
        "programID": "program-1",
        "eventName": "charge now",
        "targets": ["NODE_A"],
        "intervalPeriod": {"start": clock.now.isoformat(), "duration": "PT1H"},
        "payloadDescriptors": [
            {"objectType": "EVENT_PAYLOAD_DESCRIPTOR", "payloadType": "DISPATCH_SETPOINT", "units": "KW"}
        ],
        "intervals": [{"id": 0, "payloads": [{"type": "DISPATCH_SETPOINT", "values": [kw]}]}],
    }  # fmt: skip


def dr_dispatches(client: TestClient) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = client.get("/dispatch", params={"source": "dr_event"}).json()[
        "items"
    ]
    return items


def test_events_created_modified_and_deleted_at_the_vtn_become_dispatch_revisions(
    client: TestClient, clock: Clock, vtn: TestVtn
) -> None:
    ven = poller(client, vtn)
    event = vtn.create(charge_event(clock, 100.0))
    assert validator("event").is_valid(json.loads(json.dumps(event)))  # the VTN speaks 3.1.1
    assert ven.poll() == 1
    [d] = dr_dispatches(client)
    assert (d["reference"], d["target_kw"], d["status"]) == (event["id"], -100.0, "active")
    assert ven.poll() == 1 and len(dr_dispatches(client)) == 1  # unchanged: a duplicate
    shown = client.get("/dr/events").json()["items"][0]["outcomes"]
    assert [o["outcome"] for o in shown] == ["dispatched"]  # what it became stays shown
    clock.advance(minutes=2)
    vtn.modify(event["id"], intervals=charge_event(clock, 150.0)["intervals"])
    ven.poll()
    [d] = dr_dispatches(client)
    assert (d["target_kw"], d["revision"]) == (-150.0, 2)
    clock.advance(minutes=2)
    vtn.delete(event["id"])
    assert ven.poll() == 0
    [d] = dr_dispatches(client)
    assert d["status"] == "cancelled"
    shown = client.get("/dr/events").json()["items"][0]
    assert shown["deleted"] is True and shown["outcomes"][0]["outcome"] == "cancelled"


def test_the_token_is_form_encoded_client_credentials_and_renewed_on_a_401(
    client: TestClient, clock: Clock, vtn: TestVtn
) -> None:
    ven = poller(client, vtn)
    vtn.create(charge_event(clock, 50.0))
    ven.poll()
    assert vtn.token_requests == [
        {
            "grant_type": ["client_credentials"],
            "client_id": [vtn.client_id],
            "client_secret": [vtn.client_secret],
        }
    ]
    vtn.tokens.clear()  # the VTN revokes every token
    assert ven.poll() == 1 and ven.client.tokens_fetched == 2 and ven.failures == 0


def test_a_vtn_that_is_down_is_tried_again_and_stops_nothing(client: TestClient) -> None:
    events = client.app.state.aggregator.demand_response  # type: ignore[attr-defined]
    ven = VenPoller(VtnClient(f"http://127.0.0.1:{free_port()}/", "id", "secret"), events)
    assert ven.poll() == 0 and ven.failures == 1 and "ConnectError" in (ven.last_error or "")
    assert client.get("/health").status_code == 200


def test_the_ven_polls_when_a_vtn_is_configured_and_a_vtn_down_is_said_not_fatal(
    tmp_path: Path,
) -> None:
    """With VPP_OPENADR_VTN_URL set the process polls it; readiness names the VTN (here one that
    does not answer) without going not-ready, and the metrics count the failed polls."""
    settings = load_settings(
        DATABASE_URL=f"sqlite:///{tmp_path / 'j.db'}",
        VPP_OPENADR_VTN_URL=f"http://127.0.0.1:{free_port()}/",
        VPP_OPENADR_POLL_SECONDS="15",
    )
    with TestClient(create_app(settings)) as c:
        aggregator = c.app.state.aggregator  # type: ignore[attr-defined]
        ven = c.app.state.ven  # type: ignore[attr-defined]
        names = {j.name: j.every_s for j in jobs(settings, aggregator, None, ven)}
        assert names["OpenADR VTN poll"] == 15.0
        deadline = time.monotonic() + 60
        while ven.failures == 0 and time.monotonic() < deadline:  # the first poll runs at start
            time.sleep(0.05)
        ready = c.get("/health/ready")
        assert ready.status_code == 200
        vtn = ready.json()["dependencies"]["openadr_vtn"]
        assert vtn["ok"] is True and vtn["reachable"] is False and "ConnectError" in vtn["detail"]
        counted = re.search(
            r"^vpp_openadr_poll_failures_total (\S+)$", c.get("/metrics").text, re.M
        )
        assert counted is not None and float(counted.group(1)) >= 1


def test_an_event_asking_for_reports_is_answered_after_its_last_interval(
    client: TestClient, clock: Clock, vtn: TestVtn
) -> None:
    """A report answers the event (`eventID`), per its `reportDescriptors`, "at end of last
    interval" (`startInterval` -1, the default): USAGE and DEMAND per interval from telemetry,
    the battery's charge level as it stands. The VTN validates it against `reportRequest`."""
    ven = poller(client, vtn)
    body = charge_event(clock, 100.0)
    body["intervalPeriod"]["duration"] = "PT30M"
    body["reportDescriptors"] = [
        {"payloadType": "USAGE", "units": "KWH"},
        {"payloadType": "DEMAND", "units": "KW"},
        {"payloadType": "STORAGE_CHARGE_LEVEL", "units": "PERCENT"},
        {"payloadType": "READING", "readingType": "DIRECT_READ"},  # not ours: left out
    ]
    event = vtn.create(body)
    ven.poll()
    for minute in range(0, 31, 5):  # the battery charges at 100 kW, telemetry every 5 min
        t = clock.advance(seconds=1) if minute == 0 else clock.advance(minutes=5)
        soc = 50.0 + minute * 100.0 / 60.0 / 500.0 * 100.0
        client.post("/telemetry", json={"samples": [sample("bess-1", t, soc, power=-100.0)]})
        ven.poll()
        assert vtn.reports == [] or minute == 30
    clock.advance(minutes=1)
    ven.poll()
    assert vtn.refused_reports == []
    [report] = vtn.reports
    assert report["eventID"] == event["id"] and report["clientName"] == "vpp-aggregator"
    [resource] = report["resources"]
    assert resource["resourceName"] == "bess-1"
    window, now = resource["intervals"]
    usage = {p["type"]: p["values"][0] for p in window["payloads"]}
    assert usage["USAGE"] == pytest.approx(50.0, abs=0.5)  # 100 kW for half an hour
    assert usage["DEMAND"] == pytest.approx(100.0, abs=1.0)
    assert now["payloads"] == [
        {"type": "STORAGE_CHARGE_LEVEL", "values": [pytest.approx(0.6, abs=0.01)]}
    ]
    ven.poll()
    assert len(vtn.reports) == 1 and ven.reports_sent == 1  # once per version


def test_the_ven_and_its_resources_are_registered_once_even_by_two_replicas(
    client: TestClient, vtn: TestVtn
) -> None:
    """The VEN registers itself (`VEN_VEN_REQUEST`, found by `venName` when it exists) and each
    resource of ours (`VEN_RESOURCE_REQUEST`); the VTN validates both requests against the
    definition. A second replica finds them and adds nothing."""
    events = client.app.state.aggregator.demand_response  # type: ignore[attr-defined]
    state = client.app.state.aggregator.state  # type: ignore[attr-defined]

    def replica() -> VenPoller:
        link = VtnClient(vtn.url, vtn.client_id, vtn.client_secret)
        return VenPoller(link, events, ven_name="VEN-99", resources=state.resource_ids)

    first, second = replica(), replica()
    first.poll()
    first.poll()
    second.poll()
    assert [v["venName"] for v in vtn.vens.values()] == ["VEN-99"]
    assert [(r["resourceName"], r["venID"]) for r in vtn.resources.values()] == [
        ("bess-1", first.ven_id)
    ]
    assert second.ven_id == first.ven_id and first.failures == second.failures == 0


def test_a_vtn_that_stays_down_is_polled_less_and_less_often(client: TestClient) -> None:
    """Failed polls back off: each wait doubles (from the poll interval, to at most ten
    minutes), so a VTN that is down is not hammered; one good poll resets it."""
    events = client.app.state.aggregator.demand_response  # type: ignore[attr-defined]
    now = [0.0]
    ven = VenPoller(
        VtnClient(f"http://127.0.0.1:{free_port()}/", "id", "secret"),
        events,
        monotonic=lambda: now[0],
        poll_every_s=10.0,
    )
    tried = []
    for t in range(0, 101, 10):  # the job calls poll every 10 s
        now[0] = float(t)
        before = ven.failures
        ven.poll()
        if ven.failures > before:
            tried.append(t)
    assert tried == [0, 10, 30, 70]  # 10, 20, 40 s apart; the next try would be at 150 s


def test_one_event_that_cannot_be_handled_stops_neither_the_others_nor_deletions(
    client: TestClient, clock: Clock, vtn: TestVtn
) -> None:
    """An event refused by the handler (it targets two grid nodes at once) is logged and
    counted; the event after it is dispatched, and a later deletion is still seen."""
    client.post("/resources/register", json=bess_body("bess-2", grid_node="NODE_B"))
    ven = poller(client, vtn)
    both = charge_event(clock, 40.0)
    both["targets"] = ["NODE_A", "NODE_B"]
    vtn.create(both)
    good = vtn.create(charge_event(clock, 60.0))
    ven.poll()
    assert [d["reference"] for d in dr_dispatches(client)] == [good["id"]]
    assert ven.side_failures == 1 and ven.failures == 0
    vtn.delete(good["id"])
    ven.poll()
    assert dr_dispatches(client)[0]["status"] == "cancelled"


def test_a_vtn_serving_short_pages_is_read_whole_and_nothing_looks_deleted(
    client: TestClient, clock: Clock, vtn: TestVtn
) -> None:
    """Pages are read until one brings nothing new (a VTN may serve 20 where 50 were asked);
    an event only deleted when the VTN answers 404 for it."""
    vtn.page_cap = 20
    ven = poller(client, vtn)
    for _ in range(45):
        vtn.create({**charge_event(clock, 1.0), "targets": ["NOWHERE"]})
    assert ven.poll() == 45
    assert ven.poll() == 45 and ven.known == set(vtn.events)
