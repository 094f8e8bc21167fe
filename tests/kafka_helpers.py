"""Producing to and reading from the run's broker in tests, as the other layers would."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, Producer


def produce(brokers: str, topic: str, messages: list[tuple[str, Any]]) -> None:
    p = Producer({"bootstrap.servers": brokers})
    for key, value in messages:
        raw = value if isinstance(value, bytes) else json.dumps(value).encode()
        p.produce(topic, key=key, value=raw)
    assert p.flush(30) == 0


def read_topic(
    brokers: str,
    topic: str,
    want: int,
    timeout_s: float = 30.0,
    isolation: str = "read_committed",
) -> list[tuple[str, Any]]:
    """Everything on a topic from the start (a fresh group), once at least `want` have come."""
    c = Consumer(
        {
            "bootstrap.servers": brokers,
            "group.id": f"reader-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "session.timeout.ms": 6000,
            "isolation.level": isolation,
        }
    )
    c.subscribe([topic])
    out: list[tuple[str, Any]] = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            for m in c.consume(500, 0.5):
                if m.error() is None:
                    out.append(((m.key() or b"").decode(), json.loads(m.value())))
            if len(out) >= want:
                # a little longer: anything beyond `want` would be a duplicate to catch
                for m in c.consume(500, 1.0):
                    if m.error() is None:
                        out.append(((m.key() or b"").decode(), json.loads(m.value())))
                break
    finally:
        c.close()
    return out


def wait_until(check: Callable[[], bool], what: str, timeout_s: float = 30.0) -> float:
    """Seconds it took."""
    began = time.monotonic()
    deadline = began + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)
    return time.monotonic() - began


def wait_healthy(port: int, timeout_s: float = 240.0) -> float:
    """Wait for a service started on loopback to answer with its live state loaded (headroom for
    a busy machine)."""
    import httpx

    def up() -> bool:
        try:
            ready = httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=2).json()
            return bool(ready["dependencies"]["live_state"]["ok"])  # loaded: answers for real
        except httpx.HTTPError:
            return False

    return wait_until(up, "the service to answer", timeout_s)
