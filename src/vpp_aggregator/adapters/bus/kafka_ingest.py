"""The consumer of the other layers' topics: a consumer-group member that handles a polled
batch, dead-letters what can never be handled, and commits offsets only after the batch is
stored; on any other failure it rewinds to the batch's first offsets and tries again."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson
from confluent_kafka import (
    Consumer,
    KafkaError,
    Message,
    TopicPartition,
)

from vpp_aggregator.adapters.bus.kafka_log import client_log
from vpp_aggregator.adapters.bus.kafka_producer import KafkaBus
from vpp_aggregator.adapters.bus.kafka_topics import Topics
from vpp_aggregator.adapters.bus.kafka_transactions import (
    TransactionalCommits,
)
from vpp_aggregator.app.audit import Actor
from vpp_aggregator.app.integration import IntegrationService
from vpp_aggregator.app.message_fields import InvalidMessageError
from vpp_aggregator.app.messages import samples_in, single_samples
from vpp_aggregator.app.outbound import DeadLetter

log = logging.getLogger(__name__)


DEAD_LETTER_VALUE_BYTES = 64 * 1024  # of the original message kept in its dead letter
# librdkafka notices a subscribed topic that did not exist at subscription (or was not yet in the
# answering broker's metadata, as just after its creation on a busy broker) only at its next
# metadata refresh, by default 5 minutes later: that long, nothing of it is consumed.
METADATA_REFRESH_MS = 10_000


class KafkaIngest:
    """One consumer-group member; run several (processes) to share the partitions."""

    def __init__(
        self,
        brokers: str,
        group_id: str,
        topics: Topics,
        handlers: IntegrationService,
        bus: KafkaBus,
        *,
        batch_size: int = 5000,
        session_timeout_ms: int = 10_000,
        ensure_topics: Callable[[], None] | None = None,
        transactional_id: str | None = None,
    ) -> None:
        self.ensure_topics = ensure_topics
        self.topics = topics
        self.kinds = topics.kinds()
        # Who the audit log names for what a topic's messages change.
        self.senders = {t: Actor(f"kafka:{t}", "system", None, "kafka") for t in self.kinds}
        self.handlers = handlers
        self.bus = bus
        self.batch_size = batch_size
        self.stats: Counter[tuple[str, str]] = Counter()
        self._config = {
            "bootstrap.servers": brokers,
            "group.id": group_id,
            "enable.auto.commit": False,  # committed after the batch is stored
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",  # never act on an aborted transaction's message
            "session.timeout.ms": session_timeout_ms,
            "heartbeat.interval.ms": max(500, session_timeout_ms // 4),
            "topic.metadata.refresh.interval.ms": METADATA_REFRESH_MS,
            "error_cb": self._on_error,
            "logger": client_log,
        }
        self._brokers_lost = False
        self._consumer = self._connect()
        self.last_error: str | None = None
        # With a transactional id, a batch's dead letters and its consumed offsets are committed
        # in one Kafka transaction: a crash between the two leaves neither (exactly once).
        self._txn: TransactionalCommits | None = None
        if transactional_id:
            self._txn = TransactionalCommits(
                {
                    "bootstrap.servers": brokers,
                    "transactional.id": transactional_id,
                    "transaction.timeout.ms": 60_000,
                    "acks": "all",
                    "linger.ms": 5,
                    "logger": client_log,
                }
            )

    def _connect(self) -> Consumer:
        consumer = Consumer(self._config)
        consumer.subscribe(self.topics.inbound())
        return consumer

    def _on_error(self, err: KafkaError) -> None:
        if err.code() == KafkaError._ALL_BROKERS_DOWN:
            self._brokers_lost = True
            self.last_error = str(err)

    def _restore_topics_if_brokers_returned(self) -> None:
        """After every broker was lost, recreate our topics once one answers: a broker that came
        back without its data has none, and nobody else creates the ones we only read.
        The consumer is left alone: librdkafka rejoins its group by itself and, finding no
        committed offsets, starts from the earliest. Closing it and joining afresh instead left
        the group stuck in "rebalance in progress" on a broker that came back empty
        (tests/test_faults.py)."""
        if not self._brokers_lost:
            return
        try:
            self.bus.ping(timeout_s=1.0)
            if self.ensure_topics is not None:
                self.ensure_topics()
        except Exception:
            return
        log.warning("Kafka brokers are back: topics checked, the consumer rejoins its group")
        self._brokers_lost = False
        self.last_error = None

    def assignment(self) -> list[TopicPartition]:
        return list(self._consumer.assignment())

    def poll_once(self, timeout_s: float = 0.5) -> int:
        """Handle one polled batch; returns how many messages it held."""
        # Wait for the first message only; then take what is already fetched without waiting
        # (consume() with a timeout waits for a full batch, which would add latency when quiet).
        first = self._consumer.poll(timeout_s)
        if first is None:
            return 0
        received = time.perf_counter()  # a grid signal's reaction is timed from here
        messages = [first, *self._consumer.consume(self.batch_size - 1, 0)]
        real = []
        for m in messages:
            err = m.error()
            if err is None:
                real.append(m)
            elif err.code() in (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC):
                self._brokers_lost = True  # our topics vanished (a broker without its data)
                self.last_error = str(err)
            elif err.code() != KafkaError._PARTITION_EOF:
                log.warning("Kafka consumer: %s", err)
        if not real:
            return 0
        try:
            dead = self._handle(real, received)
            self._complete(real, dead)
            self.last_error = None
        except Exception as exc:  # store or broker away: rewind and try the batch again
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.exception("handling a batch of %d messages failed; rewinding", len(real))
            self._rewind(real)
            time.sleep(1.0)
        return len(real)

    def _rewind(self, messages: list[Message]) -> None:
        first: dict[tuple[str, int], int] = {}
        for m in messages:
            tp = (m.topic() or "", m.partition() or 0)
            first[tp] = min(first.get(tp, m.offset() or 0), m.offset() or 0)
        for (topic, partition), offset in first.items():
            try:
                self._consumer.seek(TopicPartition(topic, partition, offset))
            except Exception:  # partition revoked meanwhile: its next owner starts from the commit
                log.warning("could not rewind %s[%d]", topic, partition)

    def _complete(self, messages: list[Message], dead: list[tuple[Message, str]]) -> None:
        """After the batch is stored: its dead letters out and its offsets committed."""
        items = self._dead_letter_items(dead)
        if self._transactions_on():
            assert self._txn is not None
            self._txn.commit(
                [(self.topics.dead_letter, key, orjson.dumps(value)) for key, value in items],
                self._next_offsets(messages),
                self._consumer.consumer_group_metadata(),
            )
            return
        if items and not all(self.bus.publish_many(self.topics.dead_letter, items)):
            raise ConnectionError("dead-letter topic did not acknowledge; batch will be retried")
        # Asynchronous: a lost commit only means a redelivery, which the handlers absorb.
        self._consumer.commit(asynchronous=True)

    def _transactions_on(self) -> bool:
        if self._txn is None:
            return False
        if self._txn.disabled_reason is not None:
            log.error(
                "Kafka refused transactions (%s): consuming without them; dead letters may be "
                "sent twice after a crash",
                self._txn.disabled_reason,
            )
            self._txn = None
            return False
        return True

    def _start_transactions(self) -> None:
        """Start the transactional producer between batches, so that after a crash our
        predecessor's open transaction is aborted at once (until then the group's committed
        offsets are unstable and nothing is consumed), not when the next batch comes."""
        if not self._transactions_on():
            return
        assert self._txn is not None
        try:
            self._txn.start()
            if self.last_error and self.last_error.startswith("Kafka transactions"):
                self.last_error = None
        except Exception as exc:
            self.last_error = f"Kafka transactions: {type(exc).__name__}: {exc}"
            log.warning("Kafka: could not start the transactional producer: %s", exc)

    def _next_offsets(self, messages: list[Message]) -> list[TopicPartition]:
        """One past the last message of each partition still assigned to us (a partition
        revoked meanwhile is its new owner's to commit)."""
        assigned = {(tp.topic, tp.partition) for tp in self._consumer.assignment()}
        # A partition's messages come in offset order: the last one seen is the newest.
        last = {(m.topic() or "", m.partition() or 0): m.offset() or 0 for m in messages}
        return [TopicPartition(t, p, o + 1) for (t, p), o in last.items() if (t, p) in assigned]

    def _handle(
        self, messages: list[Message], received: float | None = None
    ) -> list[tuple[Message, str]]:
        """Apply and store a batch; returns the messages to dead-letter, with their reasons."""
        telemetry = self.topics.telemetry
        topics = [m.topic() for m in messages]
        if topics.count(telemetry) == len(topics):  # the usual batch: telemetry alone
            return self._telemetry(messages)
        dead: list[tuple[Message, str]] = []
        mixed = []
        for m, topic in zip(messages, topics, strict=True):
            if topic == telemetry:  # handled below, as one batch for all messages
                mixed.append(m)
                continue
            try:
                value = orjson.loads(m.value() or b"")
            except orjson.JSONDecodeError as exc:
                dead.append((m, f"not JSON: {exc}"))
                continue
            kind = self.kinds.get(topic or "")
            try:
                if kind is None:
                    raise InvalidMessageError(f"topic {topic!r} is not one we read")
                outcomes = self.handlers.handle(kind, value, self.senders[topic or ""], received)
                for outcome in outcomes:
                    self.stats[(topic or "", outcome.outcome)] += 1
            except InvalidMessageError as exc:
                dead.append((m, str(exc)))
        return dead + self._telemetry(mixed)

    def _telemetry(self, messages: list[Message]) -> list[tuple[Message, str]]:
        """The telemetry messages of a batch, ingested as one batch of samples. When every
        message is one sample in good JSON (the usual case) they are decoded in one pass, with
        no Python step per message; otherwise message by message, dead-lettering what is not
        JSON or not a telemetry message."""
        if not messages:
            return []
        dead: list[tuple[Message, str]] = []
        try:
            samples: list[Any] = list(map(orjson.loads, [m.value() or b"" for m in messages]))
            owner: list[int] | None = None if single_samples(samples) else []
        except orjson.JSONDecodeError:
            owner = []
        if owner is not None:  # some message is not JSON, or holds a batch: one by one
            samples = []
            for i, m in enumerate(messages):
                try:
                    items = samples_in(orjson.loads(m.value() or b""))
                except orjson.JSONDecodeError as exc:
                    dead.append((m, f"not JSON: {exc}"))
                    continue
                except InvalidMessageError as exc:
                    dead.append((m, str(exc)))
                    continue
                samples += items
                owner += [i] * len(items)
        if samples:
            refused = self.handlers.telemetry_samples(samples)
            bad: dict[int, list[str]] = {}
            for index, reason in refused:
                bad.setdefault(index if owner is None else owner[index], []).append(reason)
            for i, reasons in bad.items():
                dead.append((messages[i], "; ".join(sorted(set(reasons)))))
            self.stats[(self.topics.telemetry, "applied")] += len(samples) - len(refused)
        return dead

    def _dead_letter_items(self, dead: list[tuple[Message, str]]) -> list[tuple[str, DeadLetter]]:
        items: list[tuple[str, DeadLetter]] = []
        for m, reason in dead:
            self.stats[(m.topic() or "", "dead_letter")] += 1
            items.append(
                (
                    (m.key() or b"").decode("utf-8", "replace"),
                    {
                        "reason": reason,
                        "topic": m.topic() or "",
                        "partition": m.partition() or 0,
                        "offset": m.offset() or 0,
                        # Cut, so a dead letter always fits where its message did.
                        "value": (m.value() or b"")[:DEAD_LETTER_VALUE_BYTES].decode(
                            "utf-8", "replace"
                        ),
                        "value_bytes": len(m.value() or b""),
                        "dead_lettered_at": datetime.now(UTC).isoformat(),
                    },
                )
            )
        return items

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self._restore_topics_if_brokers_returned()
                self._start_transactions()
                self.poll_once()
            except Exception as exc:  # the consumer thread must never end by surprise
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("Kafka consumer loop; trying again in a second")
                stop.wait(1.0)

    def close(self, timeout_s: float = 10.0) -> None:
        """Leave the group; bounded, because librdkafka's close waits for a broker that may be
        gone for good (seen: a stop hanging for an hour), and a stop must stop."""
        closer = threading.Thread(target=self._consumer.close, name="kafka-close", daemon=True)
        closer.start()
        closer.join(timeout_s)
        if closer.is_alive():
            log.warning("Kafka consumer did not close within %g s; stopping without it", timeout_s)
