"""A polled batch of telemetry is read in one pass when every message is one sample in good JSON,
and message by message otherwise; either way each message that cannot be stored is
dead-lettered with the same reason, and the good samples of the batch are stored."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from api_helpers import ev_body, sample
from conftest import Clock
from vpp_aggregator.adapters.api.app import create_app
from vpp_aggregator.adapters.bus.kafka_ingest import KafkaIngest
from vpp_aggregator.adapters.bus.kafka_topics import Topics
from vpp_aggregator.config import load_settings

TOPICS = Topics("t.telemetry", "t.grid", "t.charging", "t.alerts", "t.awards", "t.dead")


class FakeMessage:
    """What `KafkaIngest` reads of a consumed message."""

    def __init__(self, topic: str, value: Any, offset: int) -> None:
        self._topic = topic
        self._value = value if isinstance(value, bytes) else orjson.dumps(value)
        self._offset = offset

    def topic(self) -> str:
        return self._topic

    def value(self) -> bytes:
        return self._value

    def key(self) -> bytes:
        return b"k"

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._offset


@pytest.fixture
def ingest(tmp_path, clock: Clock) -> Iterator[KafkaIngest]:  # type: ignore[no-untyped-def]
    settings = load_settings(DATABASE_URL=f"sqlite:///{tmp_path / 'k.db'}")
    with TestClient(create_app(settings, clock=clock)) as c:
        for i in range(4):
            assert c.post("/resources/register", json=ev_body(f"ev-{i}")).status_code == 201
        service = c.app.state.aggregator.integration  # type: ignore[attr-defined]
        # No broker: the consumer is made but never polled; `_handle` is what is tested.
        yield KafkaIngest("127.0.0.1:9", "g", TOPICS, service, bus=None)  # type: ignore[arg-type]


def handled(ingest: KafkaIngest, values: list[tuple[str, Any]]) -> dict[int, str]:
    messages = [FakeMessage(t, v, i) for i, (t, v) in enumerate(values)]
    return {m.offset(): reason for m, reason in ingest._handle(messages)}  # type: ignore[arg-type]


def test_a_batch_of_single_samples_and_one_read_message_by_message_refuse_alike(
    ingest: KafkaIngest, clock: Clock
) -> None:
    tel = TOPICS.telemetry
    singles = [
        (tel, sample("ev-0", clock.now, 50)),
        (tel, sample("ev-404", clock.now, 50)),  # unknown resource
        (tel, {**sample("ev-1", clock.now, 50), "soc_pct": "50"}),  # not a number
        (tel, sample("ev-2", clock.now, 120)),  # out of range
        (tel, [1, 2]),  # JSON, but not a sample
    ]
    fast = handled(ingest, singles)
    assert sorted(fast) == [1, 2, 3, 4]
    assert "unknown" in fast[1] and fast[2].startswith("soc_pct") and "between" in fast[3]
    # A message that is not JSON, or one in the batch form, sends the batch message by message:
    # the same messages are refused for the same reasons.
    slow = handled(
        ingest,
        [
            *singles,
            (tel, b"{not json"),
            (tel, {"samples": [sample("ev-3", clock.now, 60), sample("ev-3", clock.now, -1)]}),
        ],
    )
    assert {i: slow[i] for i in fast} == fast
    assert slow[5].startswith("not JSON") and "between" in slow[6] and len(slow) == 6
    assert ingest.stats[(tel, "applied")] == 1 + 2  # ev-0 twice, ev-3's good sample once


def test_other_topics_in_a_batch_are_handled_one_by_one_beside_the_telemetry(
    ingest: KafkaIngest, clock: Clock
) -> None:
    dead = handled(
        ingest,
        [
            (TOPICS.telemetry, sample("ev-0", clock.now, 50)),
            (TOPICS.physics_alerts, {"vehicle_id": ""}),  # refused: an empty vehicle id
            ("t.unknown", {"x": 1}),
            (TOPICS.telemetry, sample("ev-404", clock.now, 50)),
            (TOPICS.charging_events, b"nope"),
        ],
    )
    assert sorted(dead) == [1, 2, 3, 4]
    assert "vehicle_id" in dead[1] and "not one we read" in dead[2]
    assert "unknown" in dead[3] and dead[4].startswith("not JSON")
    assert ingest.stats[(TOPICS.telemetry, "applied")] == 1
