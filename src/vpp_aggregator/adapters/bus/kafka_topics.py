"""Topic names from the settings, and creating the missing ones (partitions and replication
chosen for the cluster at hand)."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from vpp_aggregator.adapters.bus.kafka_log import client_log
from vpp_aggregator.app.integration import MessageKind

log = logging.getLogger(__name__)


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
    _wait_listed(admin, [t.topic for t in missing])


def _wait_listed(admin: AdminClient, topics: Sequence[str], timeout_s: float = 30.0) -> None:
    """Until the broker lists the new topics with a leader for every partition: creation is
    asynchronous, and a consumer subscribing before then takes them for missing (it finds them
    only at its next metadata refresh)."""
    deadline = time.monotonic() + timeout_s
    while True:
        listed = admin.list_topics(timeout=10).topics
        waiting = [
            t
            for t in topics
            if t not in listed
            or listed[t].error is not None
            or not listed[t].partitions
            or any(p.leader < 0 for p in listed[t].partitions.values())
        ]
        if not waiting:
            return
        if time.monotonic() > deadline:
            log.warning("topics %s not listed with leaders after %g s", waiting, timeout_s)
            return
        time.sleep(0.2)


@dataclass(frozen=True, slots=True)
class Topics:
    telemetry: str
    grid_signals: str
    charging_events: str
    physics_alerts: str
    market_awards: str
    dead_letter: str
    command_acks: str = ""  # optional: the device gateway's acknowledgements
    regulation_signal: str = ""  # the grid operator's regulation signal

    def kinds(self) -> dict[str, MessageKind]:
        """What each topic we consume carries (the command-acks topic only when configured)."""
        kinds = {
            self.telemetry: MessageKind.TELEMETRY,
            self.grid_signals: MessageKind.GRID_SIGNAL,
            self.charging_events: MessageKind.CHARGING_EVENT,
            self.physics_alerts: MessageKind.PHYSICS_ALERT,
            self.market_awards: MessageKind.MARKET_AWARD,
        }
        if self.command_acks:
            kinds[self.command_acks] = MessageKind.COMMAND_ACK
        if self.regulation_signal:
            kinds[self.regulation_signal] = MessageKind.REGULATION_SIGNAL
        return kinds

    def inbound(self) -> list[str]:
        return list(self.kinds())
