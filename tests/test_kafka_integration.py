"""The service among the other layers, over a real Kafka-protocol broker (Tansu or KAFKA_BROKERS)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient

from api_helpers import add_batteries, bess_body, ev_body, sample
from asyncapi_contract import problems
from conftest import Clock
from kafka_helpers import produce, read_topic, wait_until
from vpp_aggregator.adapters.api.app import create_app
from vpp_aggregator.config import load_settings


@pytest.fixture
def service(
    tmp_path, clock: Clock, kafka_brokers: str, kafka_topics: dict[str, str]
) -> Iterator[TestClient]:  # type: ignore[no-untyped-def]
    settings = load_settings(
        DATABASE_URL=f"sqlite:///{tmp_path / 'k.db'}", KAFKA_BROKERS=kafka_brokers, **kafka_topics
    )
    with TestClient(create_app(settings, clock=clock)) as c:
        c.post(
            "/resources/register", json=ev_body("ev-1", grid_node="NODE_K", charge_point_id="CP-7")
        )
        c.post("/resources/register", json=bess_body("bess-1", grid_node="NODE_K"))
        yield c


def test_telemetry_and_a_demand_response_event_become_commands_once(
    service: TestClient, clock: Clock, kafka_brokers: str, kafka_topics: dict[str, str]
) -> None:
    t = kafka_topics
    produce(
        kafka_brokers,
        t["VPP_TOPIC_TELEMETRY"],
        [
            ("ev-1", sample("ev-1", clock.now, 80, plugged=True)),
            ("bess-1", {"samples": [sample("bess-1", clock.now, 90)]}),
        ],
    )
    wait_until(
        lambda: (
            service.get("/capacity/available", params={"grid_node": "NODE_K"}).json()[
                "available_resource_count"
            ]
            == 2
        ),
        "telemetry from Kafka to reach capacity",
    )
    event = {
        "event_id": "dr-001",
        "program_id": "cbp",
        "type": "DR",
        "site_id": "NODE_K",
        "v2g_requested": True,
        "der_control": {"op_mode": "discharge", "set_point_kw": 40.0},
        "intervals": [],
        "timestamp": clock.now.isoformat(),
    }
    produce(
        kafka_brokers,
        t["VPP_TOPIC_GRID_SIGNALS"],
        [
            ("dr-001", event),
            ("dr-001", event),
            ("junk", b"{not json"),
            (
                "dr-002",
                {
                    **event,
                    "event_id": "dr-002",
                    "der_control": None,
                    "intervals": [
                        {
                            "id": 0,
                            "intervalPeriod": {"duration": "one hour"},
                            "payloads": [{"type": "DISPATCH_SETPOINT", "values": [10]}],
                        }
                    ],
                },
            ),
        ],
    )
    commands = read_topic(kafka_brokers, t["VPP_TOPIC_V2G_COMMANDS"], want=1)
    dispatches = service.get("/dispatch").json()["items"]
    assert [(d["source"], d["reference"]) for d in dispatches] == [("dr_event", "dr-001")]
    assert dispatches[0]["target_kw"] == 40.0
    mine = [c for c in commands if c[1]["dispatch_id"] == dispatches[0]["dispatch_id"]]
    assert mine and len(mine) == len(commands)  # one dispatch, whatever the duplicate did
    sent = [(c["dispatch_id"], c["resource_id"], c["revision"]) for _, c in mine]
    assert len(sent) == len(set(sent)) == 2  # each command once
    keys = {k for k, _ in mine}
    assert keys <= {"CP-7", "bess-1"}
    assert all(c["mode"] in ("Charge", "Discharge") and "schedule" in c for _, c in mine)
    dead = read_topic(kafka_brokers, t["VPP_TOPIC_DEAD_LETTER"], want=2)
    reasons = sorted(d["reason"] for _, d in dead)
    assert len(dead) == 2
    # Commands and dead letters as they went over Kafka keep to asyncapi.yaml.
    assert [p for _, c in mine for p in problems("V2GCommand", c)] == []
    assert [p for _, d in dead for p in problems("DeadLetter", d)] == []
    assert reasons[0].startswith("duration 'one hour' is not an ISO-8601 duration")
    assert reasons[1].startswith("not JSON")
    # The consumer went on after the bad messages: a later sample still lands.
    clock.advance(seconds=30)
    produce(
        kafka_brokers,
        t["VPP_TOPIC_TELEMETRY"],
        [("ev-1", sample("ev-1", clock.now, 77, plugged=True))],
    )
    wait_until(
        lambda: service.get("/resources/ev-1").json()["telemetry"]["soc_pct"] == 77,
        "a sample after the dead letters",
    )
    ready = service.get("/health/ready").json()
    assert ready["status"] == "ready" and ready["dependencies"]["kafka"]["consuming"] is True
    audit = service.get("/audit", params={"action": "dispatch.create"}).json()["items"]
    assert [(e["actor"], e["target"]) for e in audit] == [
        (f"kafka:{t['VPP_TOPIC_GRID_SIGNALS']}", dispatches[0]["dispatch_id"])
    ]
    text = service.get("/metrics").text
    dead = f'vpp_kafka_messages_total{{outcome="dead_letter",topic="{t["VPP_TOPIC_GRID_SIGNALS"]}"}} 2.0'
    assert dead in text


def test_charger_events_and_physics_alerts_change_availability_at_once(
    service: TestClient, clock: Clock, kafka_brokers: str, kafka_topics: dict[str, str]
) -> None:
    t = kafka_topics
    produce(
        kafka_brokers,
        t["VPP_TOPIC_TELEMETRY"],
        [
            ("ev-1", sample("ev-1", clock.now, 80, plugged=True)),
            ("bess-1", sample("bess-1", clock.now, 90)),
        ],
    )
    wait_until(
        lambda: service.get("/resources/ev-1").json()["availability_factor"] == 1.0,
        "ev-1 available",
    )
    clock.advance(seconds=5)
    produce(
        kafka_brokers,
        t["VPP_TOPIC_CHARGING_EVENTS"],
        [
            (
                "CP-7",
                {
                    "event": "CHARGER_DISCONNECTED",
                    "chargePointId": "CP-7",
                    "timestamp": clock.now.isoformat(),
                },
            ),
            ("CP-9", {"event": "CHARGER_DISCONNECTED", "chargePointId": "CP-9"}),
        ],  # not ours: ignored
    )
    wait_until(
        lambda: service.get("/resources/ev-1").json()["availability_reason"] == "unplugged",
        "the disconnect to make ev-1 unavailable",
    )
    produce(
        kafka_brokers,
        t["VPP_TOPIC_PHYSICS_ALERTS"],
        [
            (
                "bess-1",
                {
                    "event_type": "PHYSICS_FRAUD",
                    "vehicle_id": "bess-1",
                    "fleet_id": "f",
                    "severity": "HIGH",
                    "physics_score": 0.1,
                    "confidence_score": 0.9,
                },
            )
        ],
    )
    wait_until(
        lambda: service.get("/resources/bess-1").json()["status"] == "suspended", "the lockout"
    )
    cap = service.get("/capacity/available", params={"grid_node": "NODE_K"}).json()
    assert cap["available_resource_count"] == 0
    dead = read_topic(kafka_brokers, t["VPP_TOPIC_DEAD_LETTER"], want=0, timeout_s=2)
    assert dead == []


def test_a_broker_outage_delays_commands_but_loses_none(
    tmp_path, clock: Clock, kafka_topics: dict[str, str]
) -> None:  # type: ignore[no-untyped-def]
    """Commands of dispatches made while the broker is down wait in the outbox, readiness says
    Kafka is down, and once it is back every command goes out, in order, once."""
    from conftest import require_apache_kafka
    from devservices.kafka import KafkaCluster

    require_apache_kafka()
    cluster = KafkaCluster(size=1).start()
    node = cluster.nodes[0]
    brokers = cluster.bootstrap
    settings = load_settings(
        DATABASE_URL=f"sqlite:///{tmp_path / 'o.db'}",
        KAFKA_BROKERS=brokers,
        VPP_DISPATCH_TICK_SECONDS="0.5",
        VPP_OUTBOX_SWEEP_SECONDS="0.5",
        VPP_KAFKA_CONSUME="false",
        **kafka_topics,
    )
    topic = kafka_topics["VPP_TOPIC_V2G_COMMANDS"]
    try:
        with TestClient(create_app(settings, clock=clock)) as c:
            for i in range(3):
                c.post("/resources/register", json=bess_body(f"bess-{i}", grid_node="NODE_K"))
            c.post(
                "/telemetry",
                json={"samples": [sample(f"bess-{i}", clock.now, 90) for i in range(3)]},
            )
            first = c.post(
                "/dispatch",
                json={"target_kw": 30, "duration_minutes": 30, "resource_ids": ["bess-0"]},
            )
            assert first.status_code == 201
            assert len(read_topic(brokers, topic, want=1)) == 1
            cluster.kill_node(node)
            during = [
                c.post(
                    "/dispatch",
                    json={"target_kw": 20, "duration_minutes": 30, "resource_ids": [f"bess-{i}"]},
                )
                for i in (1, 2)
            ]
            assert [r.status_code for r in during] == [201, 201]
            ready = c.get("/health/ready")
            assert ready.status_code == 503 and ready.json()["down"] == ["kafka"]
            cluster.start_node(node)  # back with its data: the first command is still there
            got = read_topic(brokers, topic, want=3, timeout_s=90)
            # Every command arrives (Kafka orders per key); those made during the outage came
            # from the outbox once the broker was back. A copy sent again is identical.
            assert {m["dispatch_id"] for _, m in got} == {
                first.json()["dispatch_id"],
                *(r.json()["dispatch_id"] for r in during),
            }
            assert {k for k, _ in got} == {"bess-0", "bess-1", "bess-2"}
            copies: dict[tuple[str, int], set[str]] = {}
            for _, m in got:
                copies.setdefault((m["dispatch_id"], m["revision"]), set()).add(
                    json.dumps(m, sort_keys=True)
                )
            assert all(len(c) == 1 for c in copies.values())
            wait_until(
                lambda: c.get("/health/ready").status_code == 200, "readiness after the outage"
            )
    finally:
        cluster.stop()


def test_offers_go_to_the_market_and_awards_come_back_as_dispatches(
    service: TestClient, clock: Clock, kafka_brokers: str, kafka_topics: dict[str, str]
) -> None:
    t = kafka_topics
    service.post(
        "/telemetry",
        json={"samples": [sample("bess-1", clock.now, 90), sample("ev-1", clock.now, 80)]},
    )
    service.post("/market/offers/generate")
    ahead = {"to": (clock.now + timedelta(days=3)).isoformat()}  # whole operating days
    stored = service.get("/market/offers", params=ahead).json()["items"]
    assert {o["market"] for o in stored} == {"day_ahead", "real_time"}
    assert stored and {o["aggregation_id"] for o in stored} == {"NODE_K"}
    offers = read_topic(kafka_brokers, t["VPP_TOPIC_MARKET_OFFERS"], want=len(stored))
    assert sorted(o["offer_id"] for _, o in offers) == sorted(o["offer_id"] for o in stored)
    assert {k for k, _ in offers} == {"NODE_K"}
    first = stored[0]
    award = {
        "award_id": "aw-k1",
        "aggregation_id": "NODE_K",
        "interval_start": first["interval_start"],
        "interval_end": first["interval_end"],
        "awarded_kw": 120.0,
        "price_per_mwh": 61.0,
    }
    produce(kafka_brokers, t["VPP_TOPIC_MARKET_AWARDS"], [("NODE_K", award), ("NODE_K", award)])
    wait_until(
        lambda: [d["reference"] for d in service.get("/dispatch").json()["items"]] == ["aw-k1"],
        "the award to become a dispatch",
    )
    time.sleep(1.0)  # the duplicate has been handled by now too
    assert len(service.get("/dispatch").json()["items"]) == 1
    # the aggregation's net power and range go out every few seconds on our own topic
    status = read_topic(kafka_brokers, t["VPP_TOPIC_AGGREGATE_TELEMETRY"], want=1)
    assert [k for k, _ in status][:1] == ["NODE_K"]
    assert problems("AggregateTelemetry", status[0][1]) == []
    assert status[0][1]["resources"] == 2
    # a regulation signal for the aggregation is passed on to its devices
    produce(
        kafka_brokers,
        t["VPP_TOPIC_REGULATION_SIGNAL"],
        [("NODE_K", {"value": 0.5, "aggregation_id": "NODE_K"}), ("NODE_K", {"value": 7})],
    )
    passed_on = read_topic(kafka_brokers, t["VPP_TOPIC_REGULATION_BROADCAST"], want=1)
    assert [(k, m["signal"]) for k, m in passed_on] == [("NODE_K", 0.5)]
    assert problems("RegulationBroadcast", passed_on[0][1]) == []
    dead = read_topic(kafka_brokers, t["VPP_TOPIC_DEAD_LETTER"], want=1)
    assert "value" in dead[0][1]["reason"]  # 7 is not within −1…+1


def test_the_asyncapi_file_documents_every_topic_we_use() -> None:
    import yaml

    from vpp_aggregator.config import Settings

    doc = yaml.safe_load(
        (__import__("pathlib").Path(__file__).parents[1] / "asyncapi.yaml").read_text()
    )
    documented = {c["address"] for c in doc["channels"].values()}
    defaults = {
        name: field.default
        for name, field in Settings.model_fields.items()
        if name.startswith("topic_")
    }
    assert {v for v in defaults.values() if v} == documented - {"vpp.command.acks"}
    assert defaults["topic_command_acks"] == ""  # optional, off unless configured
    for channel in doc["channels"].values():
        for message in channel["messages"].values():
            assert message["$ref"].split("/")[-1] in doc["components"]["messages"]


def test_a_refused_command_replans_the_dispatch_without_that_resource(
    tmp_path, clock: Clock, kafka_brokers: str, kafka_topics: dict[str, str]
) -> None:  # type: ignore[no-untyped-def]
    acks = kafka_topics["VPP_TOPIC_TELEMETRY"].replace("telemetry", "acks")
    settings = load_settings(
        DATABASE_URL=f"sqlite:///{tmp_path / 'a.db'}",
        KAFKA_BROKERS=kafka_brokers,
        VPP_TOPIC_COMMAND_ACKS=acks,
        **kafka_topics,
    )
    with TestClient(create_app(settings, clock=clock)) as c:
        add_batteries(c, clock.now, "NODE_K")
        d = c.post(
            "/dispatch", json={"target_kw": 300, "duration_minutes": 30, "grid_node": "NODE_K"}
        ).json()
        used = [
            a["resource_id"]
            for a in d["allocations"]
            if any(p["setpoint_kw"] for p in a["schedule"])
        ]
        assert len(used) >= 2
        refused = used[0]
        produce(
            kafka_brokers,
            acks,
            [
                (
                    refused,
                    {"dispatch_id": d["dispatch_id"], "resource_id": used[1], "status": "Accepted"},
                ),
                (
                    refused,
                    {
                        "dispatch_id": d["dispatch_id"],
                        "resource_id": refused,
                        "status": "Rejected",
                        "reason": "EVSE fault",
                    },
                ),
            ],
        )

        def replanned() -> bool:
            doc = c.get(f"/dispatch/{d['dispatch_id']}").json()
            return len(doc.get("revisions", [])) >= 2  # "created", then the re-plan

        wait_until(replanned, "a re-plan after the refusal")
        doc = c.get(f"/dispatch/{d['dispatch_id']}").json()
        assert "command_rejected (EVSE fault)" in json.dumps(doc["revisions"])
        # The counters move once the handler returns, a moment after the re-plan is stored.
        wanted = [
            f'vpp_kafka_messages_total{{outcome="replanned",topic="{acks}"}} 1.0',
            f'vpp_kafka_messages_total{{outcome="accepted",topic="{acks}"}} 1.0',
        ]
        wait_until(
            lambda: all(w in c.get("/metrics").text for w in wanted), "the outcome counters", 30
        )


def test_compose_runs_the_kafka_version_the_tests_run() -> None:
    """One pinned Apache Kafka version: what operators start with compose is what we test."""
    from pathlib import Path

    from devservices.kafka import KAFKA_VERSION

    compose = (Path(__file__).parents[1] / "docker-compose.yml").read_text()
    assert f"image: apache/kafka:{KAFKA_VERSION}\n" in compose
