"""A topic the consumer subscribed to before it existed (an operator creates it later, or the
broker did not list it yet just after its creation) is consumed within seconds of appearing,
not at librdkafka's default metadata refresh five minutes later: this is how a loaded CI machine
once stored none of 30,000 samples in four minutes."""

from __future__ import annotations

import time
from typing import Any

import orjson
from confluent_kafka import Producer
from fastapi.testclient import TestClient

from api_helpers import ev_body, sample
from conftest import Clock, require_apache_kafka
from vpp_aggregator.adapters.api.app import create_app
from vpp_aggregator.adapters.bus.kafka_ingest import KafkaIngest
from vpp_aggregator.adapters.bus.kafka_producer import KafkaBus
from vpp_aggregator.adapters.bus.kafka_topics import Topics, ensure_topics
from vpp_aggregator.config import load_settings


def test_a_telemetry_topic_created_after_subscription_is_consumed_soon(
    tmp_path: Any, kafka_brokers: str, kafka_topics: dict[str, str], clock: Clock
) -> None:
    require_apache_kafka()
    t = kafka_topics
    topics = Topics(
        t["VPP_TOPIC_TELEMETRY"],
        t["VPP_TOPIC_GRID_SIGNALS"],
        t["VPP_TOPIC_CHARGING_EVENTS"],
        t["VPP_TOPIC_PHYSICS_ALERTS"],
        t["VPP_TOPIC_MARKET_AWARDS"],
        t["VPP_TOPIC_DEAD_LETTER"],
    )
    others = [name for name in topics.inbound() if name != topics.telemetry]
    ensure_topics(kafka_brokers, [*others, topics.dead_letter], 2, 1)
    settings = load_settings(DATABASE_URL=f"sqlite:///{tmp_path / 'late.db'}")
    with TestClient(create_app(settings, clock=clock)) as c:
        assert c.post("/resources/register", json=ev_body("ev-0")).status_code == 201
        state = c.app.state.aggregator.state  # type: ignore[attr-defined]
        bus = KafkaBus(kafka_brokers)
        ingest = KafkaIngest(
            kafka_brokers,
            t["VPP_KAFKA_GROUP_ID"],
            topics,
            c.app.state.aggregator.integration,  # type: ignore[attr-defined]
            bus,
            session_timeout_ms=6000,
        )
        try:  # polled here, between the checks (a consumer is not for two threads at once)
            deadline = time.monotonic() + 120
            while not ingest.assignment():  # in the group, holding the topics that exist
                assert time.monotonic() < deadline, "the consumer never joined its group"
                ingest.poll_once(0.2)
            ensure_topics(kafka_brokers, [topics.telemetry], 2, 1)
            producer = Producer({"bootstrap.servers": kafka_brokers})
            producer.produce(
                topics.telemetry, key="ev-0", value=orjson.dumps(sample("ev-0", clock.now, 64))
            )
            assert producer.flush(30) == 0
            began = time.monotonic()
            # Well under librdkafka's default five minutes; the refresh we set is 10 s.
            while (live := state.live("ev-0", clock.now)) is None or live.soc_pct != 64:
                assert time.monotonic() - began < 90, "the new topic's sample was never consumed"
                ingest.poll_once(0.2)
        finally:
            ingest.close()
            bus.close()
