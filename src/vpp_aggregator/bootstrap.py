"""The one place a process is put together: the Aggregator and its adapters (store, Kafka,
Redis, audit), built from the settings. `serve` (through `create_app`) and `worker` both start
here; they differ only in whether this process joins the consumer group, not in how it is
wired. The HTTP app is one adapter on top: it serves what this builds."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine

from vpp_aggregator.adapters import native_heap
from vpp_aggregator.adapters.api.auth import Authenticator
from vpp_aggregator.adapters.bus.kafka import KafkaParts
from vpp_aggregator.adapters.bus.memory import InProcessBus
from vpp_aggregator.adapters.cache.redis_state import RedisParts
from vpp_aggregator.adapters.store.audit_repository import AuditRepository
from vpp_aggregator.adapters.store.database import make_engine, migrate
from vpp_aggregator.adapters.store.dispatch_repository import DispatchRepository
from vpp_aggregator.adapters.store.market_repository import MarketRepository
from vpp_aggregator.adapters.store.repository import Repository
from vpp_aggregator.app.aggregator import Aggregator, utc_now
from vpp_aggregator.config import Settings

log = logging.getLogger(__name__)


@dataclass
class Service:
    """One process's aggregator with what it talks to. `kafka` and `shared` are None when the
    settings name no broker or Redis (the embedded mode)."""

    settings: Settings
    engine: Engine
    aggregator: Aggregator
    audit: AuditRepository
    auth: Authenticator  # both entry points serve the API (the worker for health and metrics)
    kafka: KafkaParts | None
    shared: RedisParts | None
    consume: bool  # this process is a member of the Kafka consumer group

    def start_inputs(self) -> None:
        """Follow the other processes (Redis) and, in a consumer, the other layers (Kafka)."""
        if self.shared is not None:
            self.shared.start()
        if self.kafka is not None and self.consume:
            self.kafka.start_consumer(self.settings, self.aggregator.integration, self.audit.append)

    def stop_inputs(self) -> None:
        if self.kafka is not None:
            self.kafka.stop()
        if self.shared is not None:
            self.shared.stop()

    def close(self) -> None:
        """Hand over what this process followed and keep what it held, then let go of the
        database: another process takes our dispatches at once, not after their lease."""
        try:
            self.aggregator.dispatch.release()
        except Exception:
            log.exception("could not hand over the dispatches this process followed")
        try:
            self.aggregator.snapshotter.flush()
        except Exception:
            log.exception("final telemetry snapshot failed; start-up will replay history instead")
        self.engine.dispose()


def build(
    settings: Settings,
    clock: Callable[[], datetime] = utc_now,
    *,
    run_migrations: bool = True,
    consume: bool | None = None,
) -> Service:
    """The process, loaded and ready to start. `consume` defaults to VPP_KAFKA_CONSUME (the
    `worker` command sets it); it needs KAFKA_BROKERS to mean anything."""
    native_heap.configure(settings.malloc_arena_max)  # before the request threads exist
    auth = Authenticator(settings)  # refuses a weak secret before anything starts
    if auth.dev_mode:
        log.warning("no VPP_JWT_SECRET or VPP_JWT_PUBLIC_KEY: dev mode, every caller is an admin")
    engine = make_engine(settings.database_url)
    if run_migrations:
        migrate(engine)
    kafka = KafkaParts.connect(settings) if settings.kafka_brokers else None
    aggregator = Aggregator(
        settings,
        Repository(engine),
        DispatchRepository(engine),
        MarketRepository(engine),
        kafka.bus if kafka is not None else InProcessBus(),
        clock,
    )
    shared = (
        RedisParts.connect(settings.redis_url, settings.redis_prefix, aggregator)
        if settings.redis_url
        else None
    )
    aggregator.load()
    return Service(
        settings,
        engine,
        aggregator,
        AuditRepository(engine),
        auth,
        kafka,
        shared,
        settings.kafka_consume if consume is None else consume,
    )
