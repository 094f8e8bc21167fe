"""The outgoing Kafka bus: `publish_many` says which messages the broker acknowledged, so the
outbox relay marks exactly that as sent; whatever did not make it is purged from the client's
queue and sent again from the outbox later (never twice in flight)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from confluent_kafka import (
    KafkaError,
    KafkaException,
    Message,
    Producer,
)

from vpp_aggregator.adapters.bus.kafka_log import client_log

log = logging.getLogger(__name__)


class KafkaBus:
    """Producer for our outgoing topics (commands, offers, dead letters)."""

    def __init__(self, brokers: str, client_id: str = "vpp-aggregator", timeout_s: float = 5.0):
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self._config = {
            "bootstrap.servers": brokers,
            "client.id": client_id,
            "enable.idempotence": True,  # no duplicates or reordering from client retries
            "acks": "all",  # written to every in-sync replica (min.insync.replicas) before acked
            "linger.ms": 5,
            "message.timeout.ms": int(timeout_s * 1000),
            "error_cb": self._on_error,
            "logger": client_log,
        }
        self._fatal = False
        self._producer = Producer(self._config)
        self._down_until = 0.0
        self.published = 0
        self.last_error: str | None = None

    def _on_error(self, err: KafkaError) -> None:
        if err.fatal():  # e.g. the broker lost our producer id: this client can send no more
            self._fatal = True
        self.last_error = str(err)

    def _renew_if_fatal(self) -> None:
        """A fatal idempotent-producer error ends that client; the outbox re-sends its messages."""
        if self._fatal:
            log.warning(
                "Kafka producer hit a fatal error (%s); starting a new one", self.last_error
            )
            self._producer = Producer(self._config)
            self._fatal = False

    def publish(self, topic: str, key: str, payload: Mapping[str, Any]) -> None:
        if not all(self.publish_many(topic, [(key, payload)])):
            raise ConnectionError(
                f"Kafka did not acknowledge a message on {topic}: {self.last_error}"
            )

    def publish_many(
        self, topic: str, items: Sequence[tuple[str, Mapping[str, Any]]]
    ) -> list[bool]:
        """Send in order (Kafka keeps the order per key); which ones the broker acknowledged."""
        if not items:
            return []
        if time.monotonic() < self._down_until:  # broker just failed: leave it to the relay loop
            return [False] * len(items)
        with self._lock:
            self._renew_if_fatal()
            errors: list[KafkaError | None] = [None] * len(items)
            acked = [False] * len(items)

            def on_delivery(i: int) -> Any:
                def done(err: KafkaError | None, _msg: Message) -> None:
                    errors[i] = err
                    acked[i] = err is None

                return done

            for i, (key, payload) in enumerate(items):
                while True:
                    try:
                        self._producer.produce(
                            topic, key=key, value=orjson.dumps(payload), on_delivery=on_delivery(i)
                        )
                        break
                    except BufferError:  # local queue full: let deliveries drain
                        self._producer.poll(0.05)
                    except KafkaException as exc:  # fatal state: stop, renew next time
                        self._fatal = True
                        self.last_error = str(exc)
                        break
                if self._fatal:
                    break
            try:
                left = self._producer.flush(self.timeout_s)
                if left:
                    self._producer.purge()  # what is not acknowledged goes again from the outbox
                    self._producer.flush(0)
            except KafkaException as exc:
                self._fatal = self._fatal or exc.args[0].fatal()
                self.last_error = str(exc)
            if not all(acked):
                first = next((e for e in errors if e is not None), None)
                self.last_error = str(first) if first else "timed out"
                self._down_until = time.monotonic() + 2.0
                log.warning(
                    "Kafka: %d of %d messages to %s not acknowledged (%s)",
                    acked.count(False),
                    len(items),
                    topic,
                    self.last_error,
                )
            else:
                self.last_error = None
            self.published += acked.count(True)
            return acked

    def ping(self, timeout_s: float = 2.0) -> None:
        self._producer.list_topics(timeout=timeout_s)

    def close(self) -> None:
        self._producer.flush(self.timeout_s)
