"""Apache Kafka itself, as operators run it: a three-broker KRaft cluster losing a broker mid-stream,
a broker restart with messages not yet consumed, and a process killed inside a Kafka transaction.

The service's delivery promises are checked end to end: nothing acknowledged is lost, nothing is
stored twice, each command (dispatch, revision, resource) takes effect once even where it is
delivered twice, and the consumer group carries on. Recovery times are measured and shown at the
end of the run ("measured: ...")."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource
from fastapi.testclient import TestClient
from sqlalchemy import func, select, text

from api_helpers import bess_body, sample
from conftest import kafka_kind, pg_copy, require_apache_kafka
from devservices.kafka import KafkaCluster
from kafka_helpers import produce, read_topic, wait_until
from vpp_aggregator.adapters.api.app import create_app
from vpp_aggregator.adapters.store import tables
from vpp_aggregator.adapters.store.database import make_engine
from vpp_aggregator.config import load_settings

NODE = "NODE_C"


@pytest.fixture
def cluster() -> Iterator[KafkaCluster]:
    require_apache_kafka()
    c = KafkaCluster(size=3, heap_mb=384)
    try:
        yield c.start()
    finally:
        c.stop()


def service_settings(brokers: str, database_url: str, topics: dict[str, str], tmp: Path) -> Any:
    return load_settings(
        **{
            **topics,
            "DATABASE_URL": database_url,
            "KAFKA_BROKERS": brokers,
            "VPP_KAFKA_PARTITIONS": "3",
            "VPP_DISPATCH_TICK_SECONDS": "0.5",
            "VPP_OUTBOX_SWEEP_SECONDS": "0.5",
            "VPP_MARKET_ENABLED": "false",
            "VPP_FORECAST_RETRAIN_HOURS": "0",
            "VPP_MODEL_DIR": str(tmp / "models"),
        }
    )


class TelemetryStream:
    """Samples for every battery every 50 ms, idempotent and acks=all, as the physics engine
    sends them; every tenth tick the previous samples go again (a duplicate delivery)."""

    def __init__(self, brokers: str, topic: str, ids: list[str]) -> None:
        self.topic, self.ids = topic, ids
        self.producer = Producer(
            {
                "bootstrap.servers": brokers,
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 5,
                "message.timeout.ms": 180_000,  # ride out a failover instead of dropping
            }
        )
        self.acked: set[tuple[str, str]] = set()
        self.ack_times: list[tuple[float, float]] = []  # (produced at, acknowledged at)
        self.failed = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _send(self, rid: str, at: str, soc: float) -> None:
        produced = time.monotonic()

        def done(err: Any, _msg: Any) -> None:
            if err is None:
                self.acked.add((rid, at))
                self.ack_times.append((produced, time.monotonic()))
            else:
                self.failed += 1

        value = orjson.dumps(
            {"resource_id": rid, "timestamp": at, "soc_pct": soc, "plugged_in": True}
        )
        self.producer.produce(self.topic, key=rid, value=value, on_delivery=done)

    def _run(self) -> None:
        tick, previous = 0, ""
        while not self.stop.is_set():
            tick += 1
            at = datetime.now(UTC).isoformat()
            for rid in self.ids:
                self._send(rid, at, 80.0)
                if tick % 10 == 0 and previous:
                    self._send(rid, previous, 80.0)
            previous = at
            self.producer.poll(0)
            time.sleep(0.05)
        assert self.producer.flush(180) == 0

    def first_ack_after(self, t: float) -> float:
        """Seconds from `t` to the first acknowledgement of a message produced after `t`."""
        return min(acked for produced, acked in self.ack_times if produced > t) - t


def stored_samples(engine: Any) -> set[tuple[str, str]]:
    samples = tables.telemetry_samples
    with engine.connect() as c:
        rows = c.execute(select(samples.c.resource_id, samples.c.ts)).all()
    return {(rid, ts.astimezone(UTC).isoformat()) for rid, ts in rows}


def newest_stored(engine: Any) -> datetime | None:
    with engine.connect() as c:
        ts = c.execute(select(func.max(tables.telemetry_samples.c.ts))).scalar_one()
    return ts.astimezone(UTC) if ts is not None else None


def full_isr(admin: AdminClient, topics: list[str], replicas: int) -> bool:
    try:
        meta = admin.list_topics(timeout=5)
    except Exception:  # metadata not answered yet: ask again
        return False
    return all(
        t in meta.topics
        and all(len(p.isrs) == replicas for p in meta.topics[t].partitions.values())
        for t in topics
    )


GROUP_SEEN: list[str] = []


def group_members(admin: AdminClient, group: str) -> int:
    """Members of a stable group; -1 while it rebalances or the coordinator does not answer."""
    try:
        described = admin.describe_consumer_groups([group])[group].result(timeout=10)
    except Exception as exc:
        GROUP_SEEN.append(f"{type(exc).__name__}: {exc}")
        return -1
    GROUP_SEEN.append(f"{described.state} {[m.member_id for m in described.members]}")
    return len(described.members) if str(described.state).endswith("STABLE") else -1


def group_coordinator(admin: AdminClient, group: str) -> int:
    described = admin.describe_consumer_groups([group])[group].result(timeout=10)
    return int(described.coordinator.id)


def test_a_broker_killed_mid_stream_and_dispatch_loses_nothing_and_applies_everything_once(
    cluster: KafkaCluster,
    pg_template: str,
    kafka_topics: dict[str, str],
    tmp_path: Path,
    record_property: Any,
) -> None:
    t = kafka_topics
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
    ids = [f"bess-{i:02d}" for i in range(20)]
    with pg_copy(pg_template) as url:
        engine = make_engine(url)
        with TestClient(create_app(service_settings(cluster.bootstrap, url, t, tmp_path))) as api:
            for rid in ids:
                api.post(
                    "/resources/register", json=bess_body(rid, grid_node=NODE)
                ).raise_for_status()
            # The topics the service created are replicated as the cluster says (3, min ISR 2).
            ours = [
                t["VPP_TOPIC_TELEMETRY"],
                t["VPP_TOPIC_GRID_SIGNALS"],
                t["VPP_TOPIC_V2G_COMMANDS"],
            ]
            wait_until(lambda: full_isr(admin, ours, 3), "the new topics fully replicated", 60)
            config = admin.describe_configs([ConfigResource("topic", ours[0])])
            described = next(iter(config.values())).result(timeout=10)
            assert described["min.insync.replicas"].value == "2"

            stream = TelemetryStream(cluster.bootstrap, t["VPP_TOPIC_TELEMETRY"], ids)
            stream.thread.start()
            wait_until(lambda: len(stored_samples(engine)) >= 200, "the consumer to store", 120)

            # A demand-response event, delivered twice, and a dispatch by the API: their commands
            # are on their way while the group coordinator's broker dies.
            event = {
                "event_id": "dr-cluster-1",
                "program_id": "cbp",
                "type": "DR",
                "site_id": NODE,
                "v2g_requested": True,
                "der_control": {"op_mode": "discharge", "set_point_kw": 60.0},
                "intervals": [],
                "timestamp": datetime.now(UTC).isoformat(),
            }
            produce(cluster.bootstrap, t["VPP_TOPIC_GRID_SIGNALS"], [("dr-cluster-1", event)] * 2)
            victim = next(
                n
                for n in cluster.nodes
                if n.node_id == group_coordinator(admin, t["VPP_KAFKA_GROUP_ID"])
            )
            first = api.post(
                "/dispatch", json={"target_kw": 30, "duration_minutes": 30, "resource_ids": ids[:2]}
            )
            assert first.status_code == 201, first.text
            killed_at = time.monotonic()
            killed_wall = datetime.now(UTC)
            cluster.kill_node(victim)
            during = api.post(
                "/dispatch",
                json={"target_kw": 30, "duration_minutes": 30, "resource_ids": ids[2:4]},
            )
            assert during.status_code == 201, during.text

            consumer_s = wait_until(
                lambda: (newest_stored(engine) or killed_wall) > killed_wall,
                "the consumer group to store a sample sent after the kill",
                180,
            )
            dispatch_wait = wait_until(
                lambda: any(
                    d["reference"] == "dr-cluster-1" for d in api.get("/dispatch").json()["items"]
                ),
                "the demand-response dispatch",
                180,
            )
            time.sleep(3)
            restarted_at = time.monotonic()
            cluster.start_node(victim)
            isr_s = wait_until(
                lambda: full_isr(admin, ours, 3), "the restarted broker back in every ISR", 180
            )
            time.sleep(3)  # the stream runs on with all three brokers
            stream.stop.set()
            stream.thread.join(timeout=240)
            assert not stream.thread.is_alive() and stream.failed == 0

            # Nothing acknowledged is lost, nothing stored twice (duplicates were sent on purpose).
            wait_until(
                lambda: stored_samples(engine) >= stream.acked, "every acked sample stored", 180
            )
            assert stored_samples(engine) == stream.acked

            # The event delivered twice made one dispatch.
            dispatches = api.get("/dispatch").json()["items"]
            assert [d["reference"] for d in dispatches].count("dr-cluster-1") == 1
            # The consumer group is whole again: one member, stable.
            # (A fresh admin client: the one from before the kill may keep the dead coordinator.)
            fresh = AdminClient({"bootstrap.servers": cluster.bootstrap})
            try:
                wait_until(lambda: group_members(fresh, t["VPP_KAFKA_GROUP_ID"]) == 1, "", 120)
            except AssertionError:
                raise AssertionError(
                    f"the consumer group never settled: {GROUP_SEEN[-3:]}"
                ) from None
        # The service has stopped (its outbox flushed): every command it stored is on the topic once
        # per (dispatch, revision, resource); any redelivery is an identical copy.
        with engine.connect() as c:
            stored = {
                (d, r, int(v))
                for d, r, v in c.execute(
                    text("SELECT dispatch_id, resource_id, revision FROM control_commands")
                )
            }
            unpublished = c.execute(
                text("SELECT count(*) FROM control_commands WHERE published_at IS NULL")
            ).scalar_one()
        engine.dispose()
        assert unpublished == 0
        sent = read_topic(cluster.bootstrap, t["VPP_TOPIC_V2G_COMMANDS"], len(stored), 120)
        by_key: dict[tuple[str, str, int], list[bytes]] = {}
        for _, m in sent:
            key = (m["dispatch_id"], m["resource_id"], int(m["revision"]))
            by_key.setdefault(key, []).append(orjson.dumps(m, option=orjson.OPT_SORT_KEYS))
        assert set(by_key) == stored
        assert all(len(set(copies)) == 1 for copies in by_key.values())
        redelivered = sum(len(c) - 1 for c in by_key.values())

    producer_s = stream.first_ack_after(killed_at)
    figures = {
        "brokers": 3,
        "killed": f"node {victim.node_id} (group coordinator)",
        "producer_acks_resumed_s": round(producer_s, 1),
        "consumer_group_storing_again_s": round(consumer_s, 1),
        "dr_dispatch_made_after_kill_s": round(consumer_s + dispatch_wait, 1),
        "restarted_broker_in_every_isr_s": round(isr_s, 1),
        "outage_s": round(restarted_at - killed_at, 1),
        "samples_acked_and_stored": len(stream.acked),
        "commands": len(stored),
        "command_copies_redelivered": redelivered,
    }
    record_property("measured", figures)
    print(f"three-broker fault test: {figures}")


def test_a_message_produced_before_a_broker_restart_is_consumed_after_it(
    kafka_topics: dict[str, str], tmp_path: Path, record_property: Any
) -> None:
    """Apache Kafka keeps its log across a restart: what nobody had consumed yet still arrives."""
    require_apache_kafka()
    t = kafka_topics
    cluster = KafkaCluster(size=1).start()
    try:
        settings = service_settings(
            cluster.bootstrap, f"sqlite:///{tmp_path / 'r.db'}", t, tmp_path
        )
        engine = make_engine(settings.database_url)
        ids = [f"bess-{i}" for i in range(5)]
        with TestClient(create_app(settings)) as api:
            for rid in ids:
                api.post("/resources/register", json=bess_body(rid, grid_node=NODE))
            first = datetime.now(UTC)
            produce(
                cluster.bootstrap,
                t["VPP_TOPIC_TELEMETRY"],
                [(rid, sample(rid, first, 70)) for rid in ids],
            )
            wait_until(lambda: len(stored_samples(engine)) == 5, "the first samples", 60)
        # The service is gone; samples arrive and are acknowledged, then the broker crashes.
        later = datetime.now(UTC)
        waiting = [(rid, sample(rid, later, 71)) for rid in ids]
        produce(cluster.bootstrap, t["VPP_TOPIC_TELEMETRY"], waiting)
        node = cluster.nodes[0]
        cluster.kill_node(node)
        cluster.start_node(node)
        cluster.wait_ready()
        began = time.monotonic()
        with TestClient(create_app(settings)):
            wait_until(
                lambda: len(stored_samples(engine)) == 10,
                "samples produced before the restart to be consumed after it",
                120,
            )
            took = time.monotonic() - began
        assert {ts for _, ts in stored_samples(engine)} == {first.isoformat(), later.isoformat()}
        engine.dispose()
    finally:
        cluster.stop()
    record_property("measured", {"consumed_after_restart_s": round(took, 1)})


CRASHING_SERVICE = Path(__file__).with_name("crash_inside_transaction.py")


def test_a_process_killed_inside_its_transaction_leaves_no_trace_and_is_redone_once(
    kafka_brokers: str, kafka_topics: dict[str, str], tmp_path: Path
) -> None:
    """The consumer stores a batch, writes its dead letter and offsets in a Kafka transaction,
    and dies before committing it. Readers never see that dead letter; the restarted process
    (same transactional id) aborts the transaction, handles the batch again and commits once."""
    if kafka_kind() != "apache":
        require_apache_kafka()
        pytest.skip("transactions are tested on Apache Kafka (the run uses another broker)")
    t = {**kafka_topics, "VPP_KAFKA_TRANSACTIONAL_ID": f"crash-{uuid.uuid4().hex[:8]}"}
    db = f"sqlite:///{tmp_path / 'c.db'}"
    settings = service_settings(kafka_brokers, db, t, tmp_path)
    ids = ["bess-1", "bess-2", "bess-3"]
    with TestClient(create_app(settings.model_copy(update={"kafka_consume": False}))) as api:
        for rid in ids:
            api.post("/resources/register", json=bess_body(rid, grid_node=NODE))
    env = {
        **os.environ,
        **t,
        "DATABASE_URL": db,
        "KAFKA_BROKERS": kafka_brokers,
        "VPP_MARKET_ENABLED": "false",
        "VPP_FORECAST_RETRAIN_HOURS": "0",
        "VPP_MODEL_DIR": str(tmp_path / "models"),
        "VPP_KAFKA_PARTITIONS": "3",
    }
    log = tmp_path / "crashing.log"
    with log.open("wb") as out:
        crashing = subprocess.Popen(
            [sys.executable, str(CRASHING_SERVICE)], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    now = datetime.now(UTC)
    messages: list[tuple[str, Any]] = [(rid, sample(rid, now, 75)) for rid in ids]
    produce(kafka_brokers, t["VPP_TOPIC_TELEMETRY"], [*messages, ("junk", b"{not json")])
    try:
        code = crashing.wait(timeout=180)
    except subprocess.TimeoutExpired:
        crashing.kill()
        raise AssertionError(
            f"the service never reached the crash point:\n{log.read_text()}"
        ) from None
    assert code == 70, log.read_text()
    dead_topic = t["VPP_TOPIC_DEAD_LETTER"]
    # The dead letter was written inside the open transaction: committed readers do not see it
    # (the last stable offset stops before it, while the log's end is past it).
    assert len(read_topic(kafka_brokers, dead_topic, 1, 60, "read_uncommitted")) == 1
    assert _log_ends(kafka_brokers, dead_topic) == {"committed": 0, "written": 1}

    engine = make_engine(db)
    with TestClient(create_app(settings)):
        wait_until(lambda: len(stored_samples(engine)) == 3, "the batch handled again", 120)
        committed = read_topic(kafka_brokers, dead_topic, 1, 60, "read_committed")
        assert [d["reason"][:8] for _, d in committed] == ["not JSON"]
        # The aborted copy is still in the log, marked aborted: only read_uncommitted sees it.
        assert len(read_topic(kafka_brokers, dead_topic, 2, 15, "read_uncommitted")) == 2
        wait_until(
            lambda: _committed_offsets(kafka_brokers, t) == 4,
            "the group to commit past every message",
            60,
        )
    assert stored_samples(engine) == {(rid, now.isoformat()) for rid in ids}
    engine.dispose()


def _log_ends(brokers: str, topic: str) -> dict[str, int]:
    """Summed over the topic's partitions: the end committed readers see (the last stable
    offset, which stops before an open transaction) and the end of what is written (the high
    watermark)."""
    from confluent_kafka import IsolationLevel
    from confluent_kafka.admin import OffsetSpec

    admin = AdminClient({"bootstrap.servers": brokers})
    parts = admin.list_topics(topic, timeout=10).topics[topic].partitions
    ends = {}
    for name, level in (
        ("committed", IsolationLevel.READ_COMMITTED),
        ("written", IsolationLevel.READ_UNCOMMITTED),
    ):
        asked = {TopicPartition(topic, p): OffsetSpec.latest() for p in parts}
        found = admin.list_offsets(asked, isolation_level=level)
        ends[name] = sum(f.result(timeout=30).offset for f in found.values())
    return ends


def _committed_offsets(brokers: str, topics: dict[str, str]) -> int:
    """The group's committed offsets over the telemetry topic's partitions, summed."""
    c = Consumer({"bootstrap.servers": brokers, "group.id": topics["VPP_KAFKA_GROUP_ID"]})
    try:
        parts = [TopicPartition(topics["VPP_TOPIC_TELEMETRY"], p) for p in range(3)]
        return sum(max(tp.offset, 0) for tp in c.committed(parts, timeout=10))
    finally:
        c.close()
