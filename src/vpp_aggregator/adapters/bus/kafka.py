"""Kafka for one process: the outgoing bus, the topics, and (when asked) the consumer, built
from the settings and reported on by readiness."""

from __future__ import annotations

import logging
import socket
import threading
from typing import Any

from vpp_aggregator.adapters.bus.kafka_ingest import KafkaIngest
from vpp_aggregator.adapters.bus.kafka_producer import KafkaBus
from vpp_aggregator.adapters.bus.kafka_topics import Topics, ensure_topics
from vpp_aggregator.adapters.bus.kafka_transactions import (
    MARGIN_S,
    TXN_TIMEOUT_S,
)
from vpp_aggregator.app.integration import IntegrationService
from vpp_aggregator.config import Settings

log = logging.getLogger(__name__)


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
            settings.topic_regulation_signal,
        )
        ensure_topics(
            brokers,
            [
                *topics.inbound(),
                topics.dead_letter,
                settings.topic_v2g_commands,
                settings.topic_market_offers,
                settings.topic_market_settlement,
                settings.topic_aggregate_telemetry,
                settings.topic_regulation_commands,
                settings.topic_regulation_broadcast,
            ],
            settings.kafka_partitions,
            settings.kafka_replication_factor,
        )
        return cls(brokers, KafkaBus(brokers), topics)

    def start_consumer(
        self,
        settings: Settings,
        handlers: IntegrationService,
    ) -> None:
        self.ingest = KafkaIngest(
            self.brokers,
            settings.kafka_group_id,
            self.topics,
            handlers,
            self.bus,
            session_timeout_ms=settings.kafka_session_timeout_ms,
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
