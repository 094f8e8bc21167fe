"""Kafka transport (confluent-kafka): the outgoing bus and the consumer of the other layers' topics.

Out: `publish_many` says which messages the broker acknowledged, so the outbox relay
marks exactly that as sent; whatever did not make it is purged from the client's queue and sent
again from the outbox later (never twice in flight). In: a consumer-group member that handles a
polled batch, dead-letters what can never be handled, and commits offsets only after the batch
is stored; on any other failure it rewinds to the batch's first offsets and tries again.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from vpp_aggregator.adapters.bus.kafka_transactions import (
    MARGIN_S,
    TXN_TIMEOUT_S,
    TransactionalCommits,
)
from vpp_aggregator.app.integration import IntegrationService, InvalidMessageError, Outcome
from vpp_aggregator.config import Settings
from vpp_aggregator.log_filter import RepeatFilter

log = logging.getLogger(__name__)
# librdkafka's own log lines (connection failures and the like), once per minute per kind of line.
client_log = logging.getLogger("vpp_aggregator.kafka.client")
client_log.addFilter(RepeatFilter(window_s=60.0))


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

    def publish(self, topic: str, key: str, payload: dict[str, Any]) -> None:
        if not all(self.publish_many(topic, [(key, payload)])):
            raise ConnectionError(
                f"Kafka did not acknowledge a message on {topic}: {self.last_error}"
            )

    def publish_many(self, topic: str, items: Sequence[tuple[str, dict[str, Any]]]) -> list[bool]:
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


def ensure_topics(
    brokers: str, topics: Sequence[str], partitions: int, replication_factor: int = -1
) -> None:
    """Create missing topics (operators may pre-create them; an existing topic is kept as is).
    Replication -1 takes the cluster's default.replication.factor."""
    config: dict[str, Any] = {"bootstrap.servers": brokers, "logger": client_log}
    admin = AdminClient(config)
    try:
        _create_missing(admin, topics, partitions, replication_factor)
    finally:
        admin.poll(0)  # hands librdkafka's queued log lines to `client_log`


def _create_missing(
    admin: AdminClient, topics: Sequence[str], partitions: int, replication_factor: int
) -> None:
    existing = set(admin.list_topics(timeout=10).topics)
    missing = [
        NewTopic(t, num_partitions=partitions, replication_factor=replication_factor)
        for t in topics
        if t not in existing
    ]
    if not missing:
        return
    for topic, future in admin.create_topics(missing).items():
        try:
            future.result(timeout=10)
        except Exception as exc:  # raced with another worker creating it: fine
            if "exist" not in str(exc).lower():
                raise
            log.info("topic %s already created", topic)


@dataclass(frozen=True, slots=True)
class Topics:
    telemetry: str
    grid_signals: str
    charging_events: str
    physics_alerts: str
    market_awards: str
    dead_letter: str
    command_acks: str = ""  # optional: the device gateway's acknowledgements

    def inbound(self) -> list[str]:
        topics = [
            self.telemetry,
            self.grid_signals,
            self.charging_events,
            self.physics_alerts,
            self.market_awards,
        ]
        return [*topics, self.command_acks] if self.command_acks else topics


DEAD_LETTER_VALUE_BYTES = 64 * 1024  # of the original message kept in its dead letter

AUDITED = {  # outcomes that change something an operator must be able to trace
    "dispatched": "dispatch.create",
    "rejected": "dispatch.create",  # a DR event's or an award's dispatch that found no resource
    "replanned": "dispatch.replan",
    "locked": "resource.change",
    "cleared": "resource.change",
}


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
        audit: Callable[[dict[str, Any]], None] | None = None,
        ensure_topics: Callable[[], None] | None = None,
        transactional_id: str | None = None,
    ) -> None:
        self.ensure_topics = ensure_topics
        self.audit = audit  # changes made from messages go to the audit log like the API's
        self.topics = topics
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
            dead = self._handle(real)
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
        last: dict[tuple[str, int], int] = {}
        for m in messages:
            tp = (m.topic() or "", m.partition() or 0)
            if tp in assigned:
                last[tp] = max(last.get(tp, -1), m.offset() or 0)
        return [TopicPartition(t, p, o + 1) for (t, p), o in last.items()]

    def _handle(self, messages: list[Message]) -> list[tuple[Message, str]]:
        """Apply and store a batch; returns the messages to dead-letter, with their reasons."""
        dead: list[tuple[Message, str]] = []
        samples: list[Any] = []
        owner: list[int] = []
        for i, m in enumerate(messages):
            topic = m.topic()
            try:
                value = orjson.loads(m.value() or b"")
            except orjson.JSONDecodeError as exc:
                dead.append((m, f"not JSON: {exc}"))
                continue
            if topic == self.topics.telemetry:
                items = (
                    value.get("samples")
                    if isinstance(value, dict) and "samples" in value
                    else [value]
                )
                if not isinstance(items, list):
                    dead.append((m, "samples must be a list"))
                    continue
                samples += items
                owner += [i] * len(items)
                continue
            try:
                outcomes: list[Outcome] = []
                if topic == self.topics.grid_signals:
                    outcomes = self.handlers.grid_signal(value)
                elif topic == self.topics.charging_events:
                    outcomes = [self.handlers.charging_event(value)]
                elif topic == self.topics.physics_alerts:
                    outcomes = [self.handlers.physics_alert(value)]
                elif topic == self.topics.market_awards:
                    outcomes = [self.handlers.market_award(value)]
                elif topic == self.topics.command_acks:
                    outcomes = [self.handlers.command_ack(value)]
                for outcome in outcomes:
                    self.stats[(topic or "", outcome.outcome)] += 1
                    self._audit(topic or "", outcome)
            except InvalidMessageError as exc:
                dead.append((m, str(exc)))
        if samples:
            refused = self.handlers.telemetry_samples(samples)
            bad: dict[int, list[str]] = {}
            for index, reason in refused:
                bad.setdefault(owner[index], []).append(reason)
            for i, reasons in bad.items():
                dead.append((messages[i], "; ".join(sorted(set(reasons)))))
            self.stats[(self.topics.telemetry, "applied")] += len(samples) - len(refused)
        return dead

    def _audit(self, topic: str, outcome: Outcome) -> None:
        action = AUDITED.get(outcome.outcome)
        if self.audit is None or action is None:
            return
        self.audit(
            {
                "at": datetime.now(UTC),
                "actor": f"kafka:{topic}",
                "role": "system",
                "fleet_id": None,
                "action": action,
                "target": outcome.detail.split(" ")[0],
                "remote_addr": "kafka",
                "detail": {
                    "outcome": outcome.outcome,
                    "detail": outcome.detail,
                    "reason": outcome.reason,
                },
            }
        )

    def _dead_letter_items(self, dead: list[tuple[Message, str]]) -> list[tuple[str, Any]]:
        items = []
        for m, reason in dead:
            self.stats[(m.topic() or "", "dead_letter")] += 1
            items.append(
                (
                    (m.key() or b"").decode("utf-8", "replace"),
                    {
                        "reason": reason,
                        "topic": m.topic(),
                        "partition": m.partition(),
                        "offset": m.offset(),
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
            self._restore_topics_if_brokers_returned()
            self._start_transactions()
            self.poll_once()

    def close(self, timeout_s: float = 10.0) -> None:
        """Leave the group; bounded, because librdkafka's close waits for a broker that may be
        gone for good (seen: a stop hanging for an hour), and a stop must stop."""
        closer = threading.Thread(target=self._consumer.close, name="kafka-close", daemon=True)
        closer.start()
        closer.join(timeout_s)
        if closer.is_alive():
            log.warning("Kafka consumer did not close within %g s; stopping without it", timeout_s)


class KafkaParts:
    """The process's Kafka side: one producer, and (in a worker) one consumer thread."""

    def __init__(self, brokers: str, bus: KafkaBus, topics: Topics) -> None:
        self.brokers = brokers
        self.bus = bus
        self.topics = topics
        self.ingest: KafkaIngest | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def connect(cls, settings: Settings) -> KafkaParts:
        brokers = settings.kafka_brokers or ""
        topics = Topics(
            settings.topic_telemetry,
            settings.topic_grid_signals,
            settings.topic_charging_events,
            settings.topic_physics_alerts,
            settings.topic_market_awards,
            settings.topic_dead_letter,
            settings.topic_command_acks,
        )
        ensure_topics(
            brokers,
            [
                *topics.inbound(),
                topics.dead_letter,
                settings.topic_v2g_commands,
                settings.topic_market_offers,
                settings.topic_market_settlement,
            ],
            settings.kafka_partitions,
            settings.kafka_replication_factor,
        )
        return cls(brokers, KafkaBus(brokers), topics)

    def start_consumer(
        self,
        settings: Settings,
        handlers: IntegrationService,
        audit: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.ingest = KafkaIngest(
            self.brokers,
            settings.kafka_group_id,
            self.topics,
            handlers,
            self.bus,
            session_timeout_ms=settings.kafka_session_timeout_ms,
            audit=audit,
            ensure_topics=lambda: ensure_topics(
                self.brokers,
                self.topics.inbound(),
                settings.kafka_partitions,
                settings.kafka_replication_factor,
            ),
            transactional_id=(
                (
                    settings.kafka_transactional_id
                    or f"{settings.kafka_group_id}.{socket.gethostname()}.{settings.port}"
                )
                if settings.kafka_transactions
                else None
            ),
        )
        self._thread = threading.Thread(
            target=self.ingest.run, args=(self._stop,), name="kafka-ingest", daemon=True
        )
        self._thread.start()

    def status(self) -> dict[str, Any]:
        """For readiness: can we reach the broker, and is the consumer handling its batches?"""
        try:
            self.bus.ping()
            reachable, detail = True, None
        except Exception as exc:
            reachable, detail = False, f"{type(exc).__name__}: {exc}"
        consumer_error = self.ingest.last_error if self.ingest is not None else None
        return {
            "ok": reachable and consumer_error is None and self.bus.last_error is None,
            "detail": detail or consumer_error or self.bus.last_error,
            "consuming": self.ingest is not None,
        }

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:  # a batch's transaction may take its whole deadline
            self._thread.join(timeout=TXN_TIMEOUT_S + MARGIN_S + 5)
        if self.ingest is not None:
            self.ingest.close()
        self.bus.close()
