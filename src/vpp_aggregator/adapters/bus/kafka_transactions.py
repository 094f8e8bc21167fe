"""Exactly once between consuming and producing: a consumed batch's offsets and the messages it
produces (dead letters) are committed in one Kafka transaction, so a crash between the two leaves
neither, and the batch is simply handled again.

librdkafka's rules are followed: a retriable error retries the same call, an abortable one aborts
the transaction, anything else (fatal, fenced, unknown) replaces the producer, whose successor with
the same transactional id fences it and aborts its open transaction. Every call runs on a helper
thread with a deadline, because `send_offsets_to_transaction` can ignore its timeout and block for
good once the group coordinator has gone away (librdkafka issues 5456 and 5511; seen here after a
broker restart, when the consumer stopped for good)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer, TopicPartition

log = logging.getLogger(__name__)

TXN_TIMEOUT_S = 15.0  # the whole transaction, shared between its calls
MARGIN_S = 10.0  # past TXN_TIMEOUT_S + MARGIN_S a call is taken as stuck
# Errors that say this cluster will not do transactions for us: consume without them, loudly.
UNSUPPORTED = {
    KafkaError._NOT_IMPLEMENTED,
    KafkaError._UNSUPPORTED_FEATURE,
    KafkaError.UNSUPPORTED_VERSION,
    KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
    KafkaError.CLUSTER_AUTHORIZATION_FAILED,
}

# Producers whose call is still blocked inside librdkafka, with that call's thread: destroying a
# client while one of its calls runs aborts the process, so each is kept until its call returns.
_STUCK: list[tuple[threading.Thread, Producer]] = []


def _kafka_error(exc: BaseException) -> KafkaError | None:
    if isinstance(exc, KafkaException) and exc.args and isinstance(exc.args[0], KafkaError):
        return exc.args[0]
    return None


class TransactionalCommits:
    def __init__(self, config: dict[str, Any]) -> None:
        self._config = config
        self._producer: Producer | None = None
        self.disabled_reason: str | None = None  # set when the cluster refuses transactions

    def _bounded(self, call: Callable[[], None]) -> None:
        outcome: list[BaseException | None] = []

        def run() -> None:
            try:
                call()
                outcome.append(None)
            except BaseException as exc:  # handed to the caller's thread
                outcome.append(exc)

        helper = threading.Thread(target=run, name="kafka-transaction", daemon=True)
        helper.start()
        helper.join(TXN_TIMEOUT_S + MARGIN_S)
        if helper.is_alive():
            _STUCK[:] = [(t, p) for t, p in _STUCK if t.is_alive()]
            if self._producer is not None:
                _STUCK.append((helper, self._producer))
            self._producer = None
            log.warning(
                "Kafka transaction call still blocked after %g s; a new transactional producer "
                "will fence it (%d stuck in this process)",
                TXN_TIMEOUT_S + MARGIN_S,
                len(_STUCK),
            )
            raise TimeoutError("Kafka transaction blocked; the batch will be handled again")
        if outcome and outcome[0] is not None:
            raise outcome[0]

    def start(self) -> None:
        """Start the producer if there is none; its InitProducerId fences any earlier producer
        with the same transactional id and aborts that one's open transaction."""
        if self._producer is not None or self.disabled_reason is not None:
            return
        producer = self._producer = Producer(self._config)
        try:
            self._bounded(lambda: producer.init_transactions(TXN_TIMEOUT_S))
        except Exception as exc:
            self._producer = None
            err = _kafka_error(exc)
            if err is not None and (err.fatal() or err.code() in UNSUPPORTED):
                self.disabled_reason = str(err)
            raise

    def commit(
        self,
        messages: Sequence[tuple[str, str, bytes]],
        offsets: list[TopicPartition],
        group_metadata: Any,
    ) -> None:
        """Produce `messages` (topic, key, value) and commit `offsets`, all or nothing."""
        self.start()
        producer = self._producer
        assert producer is not None
        deadline = time.monotonic() + TXN_TIMEOUT_S

        def left() -> float:
            return max(0.5, deadline - time.monotonic())

        def retrying(call: Callable[[], None]) -> None:
            while True:
                try:
                    call()
                    return
                except KafkaException as exc:
                    err = _kafka_error(exc)
                    if err is None or not err.retriable() or time.monotonic() > deadline:
                        raise

        def transaction() -> None:
            producer.begin_transaction()
            try:
                for topic, key, value in messages:
                    producer.produce(topic, key=key, value=value)
                retrying(
                    lambda: producer.send_offsets_to_transaction(offsets, group_metadata, left())
                )
                retrying(lambda: producer.commit_transaction(left()))
            except BaseException as exc:
                err = _kafka_error(exc)
                if err is None or err.txn_requires_abort():
                    producer.abort_transaction(left())  # raises if it cannot: replaced below
                    raise _Aborted(str(exc)) from exc
                raise

        try:
            self._bounded(transaction)
        except _Aborted as exc:
            raise ConnectionError(f"Kafka transaction aborted: {exc}") from exc
        except Exception:
            self._producer = None  # fatal, fenced or unknown state: the next one fences it
            raise


class _Aborted(Exception):
    """The transaction was aborted cleanly; the producer can be used again."""
