"""librdkafka's reconnect chatter is thinned to a line a minute per kind while a broker is down."""

from __future__ import annotations

import logging
import time

import pytest
from confluent_kafka import Producer

from conftest import _free_port
from vpp_aggregator.adapters.bus.kafka_log import client_log
from vpp_aggregator.log_filter import RepeatFilter


def _record(msg: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord("t", logging.ERROR, __file__, 1, msg, args, None)


def test_lines_differing_only_in_numbers_pass_once_per_window_then_report_the_count() -> None:
    now = [0.0]
    f = RepeatFilter(window_s=60.0, clock=lambda: now[0])
    fail = "%s [%s] %s"
    seen = []
    for i in range(100):  # twenty a second for five seconds, as during an outage
        now[0] = i * 0.05
        rec = _record(fail, "FAIL", "producer-1", f"127.0.0.1:9092: refused (after {i % 3}ms)")
        if f.filter(rec):
            seen.append(rec.getMessage())
    assert seen == ["FAIL [producer-1] 127.0.0.1:9092: refused (after 0ms)"]
    other = _record("%s", "Disconnected from the group coordinator")
    assert f.filter(other)  # another kind of line is not held back
    second_broker = _record(fail, "FAIL", "producer-1", "127.0.0.1:9093: refused (after 0ms)")
    assert f.filter(second_broker)  # another broker going down is news
    now[0] = 61.0
    rec = _record(fail, "FAIL", "producer-1", "127.0.0.1:9092: refused (after 7ms)")
    assert f.filter(rec)
    assert rec.getMessage().endswith("(99 more like it in the last 60 s)")


def test_a_producer_without_a_broker_logs_a_few_lines_not_hundreds(
    caplog: pytest.LogCaptureFixture,
) -> None:
    port = _free_port()  # nothing listens there
    producer = Producer(
        {"bootstrap.servers": f"127.0.0.1:{port}", "logger": client_log, "message.timeout.ms": 3000}
    )
    with caplog.at_level(logging.DEBUG, logger=client_log.name):
        producer.produce("t", b"x")
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            producer.poll(0.1)
    failures = [r for r in caplog.records if "Connect to" in r.getMessage()]
    assert 1 <= len(failures) <= 3, [r.getMessage() for r in failures]
