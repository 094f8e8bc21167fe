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

import jsonschema_rs
import pytest
import yaml
from fastapi.testclient import TestClient

from api_helpers import bess_body, sample
from conftest import Clock
from devservices.ports import free_port
from openadr_vtn import TestVtn
from vpp_aggregator.adapters.api.app import create_app
from vpp_aggregator.adapters.openadr.ven import VenPoller
from vpp_aggregator.adapters.openadr.vtn_client import VtnClient
from vpp_aggregator.bootstrap import jobs
from vpp_aggregator.config import load_settings


class _NoDates(yaml.SafeLoader):
    """YAML as JSON Schema reads it: the examples' timestamps stay text."""


_NoDates.yaml_implicit_resolvers = {
    k: [r for r in v if r[0] != "tag:yaml.org,2002:timestamp"]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
SPEC = yaml.load(
    (Path(__file__).parent / "data" / "openadr" / "spec" / "openadr3-3.1.1.yaml").read_text(),
    Loader=_NoDates,
)


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
    return VenPoller(VtnClient(vtn.url, vtn.client_id, vtn.client_secret), events)


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
    validator = jsonschema_rs.validator_for(
        {"$ref": "#/components/schemas/event", "components": SPEC["components"]}
    )
    assert validator.is_valid(json.loads(json.dumps(event)))  # the test VTN speaks 3.1.1
    assert ven.poll() == 1
    [d] = dr_dispatches(client)
    assert (d["reference"], d["target_kw"], d["status"]) == (event["id"], -100.0, "active")
    assert ven.poll() == 1 and len(dr_dispatches(client)) == 1  # unchanged: a duplicate
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
