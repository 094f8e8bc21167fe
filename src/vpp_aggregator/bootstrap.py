"""The one place a process is put together: the Aggregator and its adapters (store, Kafka,
Redis, audit) and its periodic work, built from the settings. `serve` (through `create_app`) and `worker` both start
here; they differ only in whether this process joins the consumer group, not in how it is
wired. The HTTP app is one adapter on top: it serves what this builds."""

from __future__ import annotations

import gc
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine

from vpp_aggregator.adapters import native_heap, solver_banner
from vpp_aggregator.adapters.api.auth import Authenticator
from vpp_aggregator.adapters.bus.kafka import KafkaParts
from vpp_aggregator.adapters.bus.memory import InProcessBus
from vpp_aggregator.adapters.cache.redis_state import RedisParts
from vpp_aggregator.adapters.openadr import read_event
from vpp_aggregator.adapters.openadr.ven import VenPoller
from vpp_aggregator.adapters.openadr.vtn_client import VtnClient
from vpp_aggregator.adapters.store.audit_repository import AuditRepository
from vpp_aggregator.adapters.store.database import make_engine, migrate
from vpp_aggregator.adapters.store.dispatch_repository import DispatchRepository
from vpp_aggregator.adapters.store.dr_event_repository import DrEventRepository
from vpp_aggregator.adapters.store.market_repository import MarketRepository
from vpp_aggregator.adapters.store.repository import Repository
from vpp_aggregator.adapters.store.state_snapshot import StateSnapshotRepository
from vpp_aggregator.adapters.store.telemetry_daily import TelemetryDaily
from vpp_aggregator.app.aggregator import Aggregator, utc_now
from vpp_aggregator.app.events import (
    DispatchEnded,
    MessageHandled,
    ResourcesChanged,
    TelemetryAccepted,
)
from vpp_aggregator.app.market_cadence import MarketCadence
from vpp_aggregator.app.telemetry_retention import TelemetryRetention
from vpp_aggregator.config import ConfigError, Settings
from vpp_aggregator.scheduler import Job, Scheduler

log = logging.getLogger(__name__)


@dataclass
class Service:
    """One process's aggregator with what it talks to. `kafka` and `shared` are None when the
    settings name no broker or Redis (the embedded mode)."""

    settings: Settings
    engine: Engine
    aggregator: Aggregator
    audit: AuditRepository  # read back by the API; written through `aggregator.audit`
    auth: Authenticator  # both entry points serve the API (the worker for health and metrics)
    kafka: KafkaParts | None
    shared: RedisParts | None
    consume: bool  # this process is a member of the Kafka consumer group

    scheduler: Scheduler  # the periodic work (`jobs`)
    ven: VenPoller | None = None  # polling a utility's VTN, when VPP_OPENADR_VTN_URL is set
    _loading: threading.Thread | None = None
    _stopping: bool = False

    def start(self) -> None:
        """Follow the other processes (Redis) and, in a consumer, the other layers (Kafka);
        start the periodic work. When the live state is not loaded yet, it loads first on a
        thread of its own (the API answers meanwhile, not ready) and the rest follows."""
        if self.aggregator.loaded:
            self._start_inputs()
            return
        self._loading = threading.Thread(target=self._load_then_start, name="live-state-load")
        self._loading.start()

    def _load_then_start(self) -> None:
        try:
            self.aggregator.load()
        except Exception as exc:  # said by readiness; the process stays up to be looked at
            log.exception("loading the live state failed")
            self.aggregator.loader.progress.failed = f"{type(exc).__name__}: {exc}"
            return
        gc.collect()  # what the load made lives as long as the process: not rescanned
        gc.freeze()
        native_heap.trim()  # the image's bytes and the load's batches back to the system
        if not self._stopping:
            self._start_inputs()

    def _start_inputs(self) -> None:
        if self.shared is not None:
            self.shared.start()
        if self.kafka is not None and self.consume:
            self.kafka.start_consumer(self.settings, self.aggregator.integration)
        self.scheduler.start()
        if self.shared is not None or (self.kafka is not None and self.consume):
            try:  # what others stored before this process followed them
                self.aggregator.loader.catch_up_after_start()
            except Exception:
                log.exception("catching up after the start failed; the next image covers it")

    def stop(self) -> None:
        """Inputs first (nothing new arrives), then the periodic work, then the hand-over."""
        self._stopping = True
        if self._loading is not None:
            self._loading.join()
        if self.kafka is not None:
            self.kafka.stop()
        if self.shared is not None:
            self.shared.stop()
        self.scheduler.stop()
        self._close()

    def _close(self) -> None:
        """Hand over what this process followed and keep what it held, then let go of the
        database: another process takes our dispatches at once, not after their lease."""
        try:
            self.aggregator.dispatch.release()
        except Exception:
            log.exception("could not hand over the dispatches this process followed")
        if not self.aggregator.loaded:  # nothing to hand over from a state never loaded
            self.engine.dispose()
            return
        try:
            self.aggregator.snapshotter.flush()
        except Exception:
            log.exception("final telemetry snapshot failed; start-up will replay history instead")
        try:
            self.aggregator.loader.save_image()
        except Exception:
            log.exception("final live-state image failed; the next start replays more instead")
        self.engine.dispose()


def build(
    settings: Settings,
    clock: Callable[[], datetime] = utc_now,
    *,
    run_migrations: bool = True,
    consume: bool | None = None,
    load: bool = True,
) -> Service:
    """The process, ready to start. `consume` defaults to VPP_KAFKA_CONSUME (the `worker`
    command sets it); it needs KAFKA_BROKERS to mean anything. With `load=False` the live state
    loads when the service starts, in the background (`serve` and `worker` listen meanwhile)."""
    native_heap.configure(settings.malloc_arena_max)  # before the request threads exist
    solver_banner.silence()  # before any thread writes to stdout
    auth = Authenticator(settings)  # refuses a weak secret before anything starts
    if auth.dev_mode:
        log.warning("no VPP_JWT_SECRET or VPP_JWT_PUBLIC_KEY: dev mode, every caller is an admin")
    engine = make_engine(settings.database_url, settings.sqlite_synchronous)
    if run_migrations:
        migrate(engine)
    kafka = KafkaParts.connect(settings) if settings.kafka_brokers else None
    audit = AuditRepository(engine)
    aggregator_store = Repository(engine)
    aggregator = Aggregator(
        settings,
        aggregator_store,
        DispatchRepository(engine),
        MarketRepository(engine),
        audit,
        kafka.bus if kafka is not None else InProcessBus(),
        read_event,
        DrEventRepository(engine),
        clock,
        StateSnapshotRepository(engine),
    )
    shared = (
        RedisParts.connect(settings.redis_url, settings.redis_prefix, aggregator)
        if settings.redis_url
        else None
    )
    subscribe_handlers(aggregator, shared)
    ven = (
        VenPoller(
            VtnClient(
                settings.openadr_vtn_url,
                settings.openadr_client_id,
                settings.openadr_client_secret,
            ),
            aggregator.demand_response,
            aggregator.dr_reports,
            ven_name=settings.openadr_ven_name,
            resources=aggregator.state.resource_ids,
            poll_every_s=settings.openadr_poll_seconds,
        )
        if settings.openadr_vtn_url
        else None
    )
    history = TelemetryDaily(engine, aggregator_store.partitions)
    retention = TelemetryRetention(
        history,
        clock,
        settings.telemetry_raw_days,
        settings.telemetry_series_days,
        settings.telemetry_stale_seconds,
    )
    check_retention(settings, aggregator)
    if load:
        aggregator.load()
    return Service(
        settings,
        engine,
        aggregator,
        audit,
        auth,
        kafka,
        shared,
        settings.kafka_consume if consume is None else consume,
        Scheduler(jobs(settings, aggregator, shared, ven, retention)),
        ven,
    )


def check_retention(settings: Settings, aggregator: Aggregator) -> None:
    """The raw history must hold what the forecaster learns from, and the kept series the
    like days of the longest baseline look-back."""
    forecast_days = aggregator.forecast.history_days
    lookback = max(r.lookback_days for r in aggregator.market.meter.policy.rules.values())
    if settings.telemetry_raw_days <= forecast_days:
        raise ConfigError(
            f"VPP_TELEMETRY_RAW_DAYS={settings.telemetry_raw_days}: the forecast learns from "
            f"{forecast_days} days of raw telemetry; keep more than that"
        )
    if settings.telemetry_series_days <= lookback:
        raise ConfigError(
            f"VPP_TELEMETRY_SERIES_DAYS={settings.telemetry_series_days}: baselines look back "
            f"{lookback} days; keep more than that"
        )


def subscribe_handlers(aggregator: Aggregator, shared: RedisParts | None) -> None:
    """The one table of side effects: what follows from each event (`app/events`)."""
    on = aggregator.events.subscribe
    on(
        TelemetryAccepted,
        "forecast history",
        lambda e: aggregator.forecast.record(
            e.resource_ids, e.timestamp_s, e.plugged_in, e.soc_pct, e.rows
        ),
    )
    # Every registry change reaches the running dispatches at once (rules they were planned under).
    on(
        ResourcesChanged,
        "re-check running dispatches",
        lambda e: aggregator.dispatch.resources_changed(e.resource_ids),
    )
    on(
        DispatchEnded,
        "battery recharge",
        lambda e: aggregator.dispatch.recharge_after(e.record, e.at, e.drawn_pct),
    )
    on(
        MessageHandled,
        "audit",
        lambda e: aggregator.audit.record_outcome(e.sender, e.outcome),
        required=True,
    )
    if shared is not None:  # the other replicas follow through Redis
        redis = shared.shared

        def share_samples(e: TelemetryAccepted) -> None:
            if e.here:  # another replica's samples came from Redis already
                redis.publish_samples(
                    e.resource_ids, e.timestamp_s, e.soc_pct, e.plugged_in, e.power_kw
                )

        on(TelemetryAccepted, "share telemetry (Redis)", share_samples)
        on(
            ResourcesChanged,
            "share registry changes (Redis)",
            lambda e: redis.publish_registry_changes(e.resource_ids),
        )


def jobs(
    settings: Settings,
    aggregator: Aggregator,
    shared: RedisParts | None,
    ven: VenPoller | None = None,
    retention: TelemetryRetention | None = None,
) -> list[Job]:
    """Every periodic job a process runs, with its interval from the settings."""

    def follow_through() -> None:
        aggregator.dispatch.tick()
        aggregator.market.follow()  # back-to-back awards: each award's kW as it begins
        aggregator.demand_response.follow()  # later windows of events begin, open ones extend
        if settings.forecast_accuracy_enabled:
            aggregator.forecast.track_accuracy()

    def sweep_outboxes() -> None:
        aggregator.dispatch.publish_pending()
        aggregator.market.relay()

    out = [
        # The database may be away for a while: the rows stay dirty and go with the next run.
        Job(
            "telemetry snapshot", settings.telemetry_snapshot_seconds, aggregator.snapshotter.flush
        ),
        Job("dispatch follow-through", settings.dispatch_tick_seconds, follow_through),
        Job("outbox sweep", settings.outbox_sweep_seconds, sweep_outboxes),
    ]
    if settings.state_snapshot_seconds > 0:  # the live state's image, for the next start
        out.append(
            Job(
                "live-state image",
                settings.state_snapshot_seconds,
                aggregator.loader.save_image,
                quiet=True,
            )
        )
    if shared is not None:  # readiness reports Redis; the API keeps answering meanwhile
        redis = shared
        out.append(
            Job(
                "capacity keys in Redis",
                settings.dispatch_tick_seconds,
                lambda: redis.write_capacity(aggregator.capacity.available(60)),
                quiet=True,
            )
        )
    if retention is not None and settings.telemetry_retention_seconds > 0:
        # a minute after the start, then hourly: rolls up the days leaving the raw history
        out.append(
            Job("telemetry retention", settings.telemetry_retention_seconds, retention.run, 60.0)
        )
    if retention is not None:  # at the start, then hourly: the raw history's next days ready
        out.append(Job("telemetry days ahead", 3600.0, retention.prepare_ahead, 0.0))
    if ven is not None:  # a native VEN: the VTN's events, as on the grid_signals topic
        out.append(Job("OpenADR VTN poll", settings.openadr_poll_seconds, ven.poll, 0.0))
    if settings.aggregate_telemetry_seconds > 0:
        out.append(
            Job(
                "aggregate telemetry",
                settings.aggregate_telemetry_seconds,
                aggregator.aggregate_telemetry.publish,
                quiet=True,
            )
        )
    if settings.regulation_enabled:  # the devices follow the signal; these set their shares
        out.append(
            Job(
                "regulation shares",
                settings.regulation_replan_seconds,
                aggregator.regulation.replan,
            )
        )
        out.append(
            Job(
                "regulation response",
                settings.regulation_sample_seconds,
                aggregator.regulation.sample,
                quiet=True,
            )
        )
    if settings.market_enabled:
        cadence = MarketCadence(aggregator.market)
        out.append(
            Job("market offers and settlement", settings.market_tick_seconds, cadence.run_due, 0.0)
        )
    if settings.forecast_retrain_hours > 0:  # training runs on its own thread: returns at once
        hours = settings.forecast_retrain_hours
        out.append(
            Job("forecast retraining", hours * 3600, aggregator.forecast.models.start_training)
        )
    if settings.malloc_trim_seconds > 0:  # ~6 ms, ~50 ms with 190 MB free (see native_heap)
        out.append(Job("native heap trim", settings.malloc_trim_seconds, native_heap.trim))
    return out
