"""Settings from the environment, validated once at start-up so a bad value fails loudly and early."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AliasChoices,
    BeforeValidator,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from vpp_aggregator.domain.early_departures import EARLY_FLOOR_FROM, MAX_COUNTED

SqliteSynchronous = Literal["normal", "off", "full"]  # SQLite's PRAGMA synchronous

DEFAULT_SQLITE_PATH = Path("var") / "vpp.db"


class Settings(BaseSettings):
    """Every knob an operator can turn; names are the environment variables."""

    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore")

    min_capacity_kw: float = Field(100.0, ge=0, validation_alias="VPP_MIN_CAPACITY_KW")
    bess_min_soc_pct: float = Field(20.0, ge=0, le=100, validation_alias="VPP_BESS_MIN_SOC")
    forecast_horizon_hours: int = Field(
        72, ge=1, le=24 * 14, validation_alias="VPP_FORECAST_HORIZON_HOURS"
    )
    max_ramp_kw_per_min: float = Field(10.0, gt=0, validation_alias="VPP_MAX_RAMP_KW_PER_MIN")
    telemetry_stale_seconds: float = Field(
        300.0, gt=0, validation_alias="VPP_TELEMETRY_STALE_SECONDS"
    )
    telemetry_max_clock_skew_seconds: float = Field(
        5.0, ge=0, le=300, validation_alias="VPP_TELEMETRY_MAX_CLOCK_SKEW_SECONDS"
    )
    telemetry_max_batch: int = Field(
        10_000, ge=1, le=100_000, validation_alias="VPP_TELEMETRY_MAX_BATCH"
    )
    telemetry_snapshot_seconds: float = Field(
        10.0, gt=0, le=3600, validation_alias="VPP_TELEMETRY_SNAPSHOT_SECONDS"
    )
    telemetry_raw_days: int = Field(35, ge=2, le=3650, validation_alias="VPP_TELEMETRY_RAW_DAYS")
    telemetry_series_days: int = Field(
        90, ge=2, le=3650, validation_alias="VPP_TELEMETRY_SERIES_DAYS"
    )
    telemetry_retention_seconds: float = Field(
        3600.0, ge=0, le=86_400, validation_alias="VPP_TELEMETRY_RETENTION_SECONDS"
    )
    # An image of the whole live state, for a fast start of any process (0: never written).
    state_snapshot_seconds: float = Field(
        60.0, ge=0, le=86_400, validation_alias="VPP_STATE_SNAPSHOT_SECONDS"
    )
    malloc_arena_max: int = Field(2, ge=0, le=64, validation_alias="VPP_MALLOC_ARENA_MAX")
    malloc_trim_seconds: float = Field(
        30.0, ge=0, le=3600, validation_alias="VPP_MALLOC_TRIM_SECONDS"
    )
    dispatch_lp_max_resources: int = Field(
        40, ge=0, le=100_000, validation_alias="VPP_DISPATCH_LP_MAX_RESOURCES"
    )
    dispatch_max_target_kw: float = Field(
        10_000_000.0, gt=0, validation_alias="VPP_DISPATCH_MAX_TARGET_KW"
    )
    need_floor_early_leaves: int = Field(
        EARLY_FLOOR_FROM,
        ge=0,
        le=MAX_COUNTED,
        validation_alias="VPP_NEED_FLOOR_EARLY_LEAVES",
    )
    dispatch_soc_tolerance_pct: float = Field(
        5.0, gt=0, le=50, validation_alias="VPP_DISPATCH_SOC_TOLERANCE_PCT"
    )
    dispatch_tick_seconds: float = Field(
        5.0, gt=0, le=300, validation_alias="VPP_DISPATCH_TICK_SECONDS"
    )
    # Every message is sent when it is stored; the sweep sends what that left behind (a broker
    # away, a process gone before sending).
    outbox_sweep_seconds: float = Field(
        5.0, gt=0, le=3600, validation_alias="VPP_OUTBOX_SWEEP_SECONDS"
    )
    # What other processes sharing the database store for this one (refusals of its dispatches'
    # commands, utilities' site limits) is looked for at most this often; one process alone
    # (the embedded default) may look seldom.
    peer_poll_seconds: float = Field(5.0, gt=0, le=3600, validation_alias="VPP_PEER_POLL_SECONDS")
    round_trip_efficiency: float = Field(
        0.9, gt=0.5, le=1.0, validation_alias="VPP_ROUND_TRIP_EFFICIENCY"
    )
    prefer_bess: bool = Field(True, validation_alias="VPP_PREFER_BESS")
    bess_recharge_target_soc: float = Field(
        80.0, ge=0, le=100, validation_alias="VPP_BESS_RECHARGE_TARGET_SOC"
    )
    recharge_tariff: str = Field("", validation_alias="VPP_RECHARGE_TARIFF")
    site_timezone: str = Field("America/Los_Angeles", validation_alias="VPP_SITE_TIMEZONE")
    model_dir: str = Field("var/models", validation_alias="VPP_MODEL_DIR")
    forecast_retrain_hours: float = Field(
        24.0, ge=0, le=24 * 30, validation_alias="VPP_FORECAST_RETRAIN_HOURS"
    )
    # the hourly forecast scored against what happened (the accuracy gauges); off where no one
    # reads them (a replay scores its forecast by what the fleet delivered)
    forecast_accuracy_enabled: bool = Field(True, validation_alias="VPP_FORECAST_ACCURACY_ENABLED")
    holiday_country: str = Field("US", validation_alias="VPP_HOLIDAY_COUNTRY")
    holiday_subdivision: str = Field("CA", validation_alias="VPP_HOLIDAY_SUBDIVISION")
    topic_v2g_commands: str = Field("migrid.l3.v2g", validation_alias="VPP_TOPIC_V2G_COMMANDS")
    topic_telemetry: str = Field("vpp.telemetry", validation_alias="VPP_TOPIC_TELEMETRY")
    topic_grid_signals: str = Field("grid_signals", validation_alias="VPP_TOPIC_GRID_SIGNALS")
    topic_charging_events: str = Field(
        "charging_events", validation_alias="VPP_TOPIC_CHARGING_EVENTS"
    )
    topic_physics_alerts: str = Field(
        "migrid.physics.alerts", validation_alias="VPP_TOPIC_PHYSICS_ALERTS"
    )
    topic_dead_letter: str = Field("vpp.deadletter", validation_alias="VPP_TOPIC_DEAD_LETTER")
    topic_command_acks: str = Field("", validation_alias="VPP_TOPIC_COMMAND_ACKS")
    kafka_group_id: str = Field("vpp-aggregator", validation_alias="VPP_KAFKA_GROUP_ID")
    kafka_partitions: int = Field(6, ge=1, le=1024, validation_alias="VPP_KAFKA_PARTITIONS")
    kafka_consume: bool = Field(True, validation_alias="VPP_KAFKA_CONSUME")
    kafka_session_timeout_ms: int = Field(
        10_000, ge=1000, le=300_000, validation_alias="VPP_KAFKA_SESSION_TIMEOUT_MS"
    )
    # -1: the cluster's default.replication.factor (operators set 3 there, min.insync.replicas 2).
    kafka_replication_factor: int = Field(
        -1, ge=-1, le=32, validation_alias="VPP_KAFKA_REPLICATION_FACTOR"
    )
    # Dead letters and consumed offsets committed in one Kafka transaction (exactly once).
    kafka_transactions: bool = Field(True, validation_alias="VPP_KAFKA_TRANSACTIONS")
    # Stable per consumer process, so a restarted one aborts its predecessor's open transaction
    # at once; empty: "<group>.<hostname>.<port>".
    kafka_transactional_id: str = Field("", validation_alias="VPP_KAFKA_TRANSACTIONAL_ID")
    topic_market_offers: str = Field(
        "vpp.market.offers", validation_alias="VPP_TOPIC_MARKET_OFFERS"
    )
    topic_market_awards: str = Field(
        "vpp.market.awards", validation_alias="VPP_TOPIC_MARKET_AWARDS"
    )
    topic_market_settlement: str = Field(
        "vpp.market.settlement", validation_alias="VPP_TOPIC_MARKET_SETTLEMENT"
    )
    topic_regulation_signal: str = Field(
        "vpp.regulation.signal", validation_alias="VPP_TOPIC_REGULATION_SIGNAL"
    )
    topic_regulation_commands: str = Field(
        "vpp.regulation.commands", validation_alias="VPP_TOPIC_REGULATION_COMMANDS"
    )
    topic_regulation_broadcast: str = Field(
        "vpp.regulation.broadcast", validation_alias="VPP_TOPIC_REGULATION_BROADCAST"
    )
    regulation_enabled: bool = Field(True, validation_alias="VPP_REGULATION_ENABLED")
    regulation_offer_curve: str = Field("1.0:30", validation_alias="VPP_REGULATION_OFFER_CURVE")
    regulation_replan_seconds: float = Field(
        60.0, gt=0, le=900, validation_alias="VPP_REGULATION_REPLAN_SECONDS"
    )
    regulation_sample_seconds: float = Field(
        2.0, gt=0, le=10, validation_alias="VPP_REGULATION_SAMPLE_SECONDS"
    )
    # the signal's fast changes the participation is sized for: RegA's 99th percentile per minute
    regulation_signal_rate_per_min: float = Field(
        0.4, gt=0, le=4, validation_alias="VPP_REGULATION_SIGNAL_RATE_PER_MIN"
    )
    topic_aggregate_telemetry: str = Field(
        "vpp.aggregation.telemetry", validation_alias="VPP_TOPIC_AGGREGATE_TELEMETRY"
    )
    # every this many seconds, per aggregation: net power and available range; 0 turns it off
    aggregate_telemetry_seconds: float = Field(
        4.0, ge=0, le=3600, validation_alias="VPP_AGGREGATE_TELEMETRY_SECONDS"
    )
    offer_curve: str = Field("0.5:40,1.0:120", validation_alias="VPP_OFFER_CURVE")
    offer_quantile: str = Field("p10", validation_alias="VPP_OFFER_QUANTILE")
    offer_horizon_hours: int = Field(24, ge=1, le=72, validation_alias="VPP_OFFER_HORIZON_HOURS")
    offer_interval_minutes: int = Field(60, validation_alias="VPP_OFFER_INTERVAL_MINUTES")
    # The charge side of offers (a bid: prices fall as it takes more); "" offers discharge only
    offer_charge_curve: str = Field("1.0:20", validation_alias="VPP_OFFER_CHARGE_CURVE")
    markets: str = Field(
        "day_ahead,real_time",
        pattern=r"^(day_ahead|real_time)(,(day_ahead|real_time))?$",
        validation_alias="VPP_MARKETS",
    )
    # Day-ahead gate closure: a local time (VPP_SITE_TIMEZONE) the day before the operating day
    market_da_gate_closure: str = Field(
        "10:00", pattern=r"^([01]\d|2[0-3]):[0-5]\d$", validation_alias="VPP_MARKET_DA_GATE_CLOSURE"
    )
    market_rt_gate_closure_minutes: int = Field(
        75, ge=0, le=24 * 60, validation_alias="VPP_MARKET_RT_GATE_CLOSURE_MINUTES"
    )
    market_rt_horizon_minutes: int = Field(
        60, ge=5, le=24 * 60, validation_alias="VPP_MARKET_RT_HORIZON_MINUTES"
    )
    market_enabled: bool = Field(True, validation_alias="VPP_MARKET_ENABLED")
    market_tick_seconds: float = Field(
        60.0, gt=0, le=3600, validation_alias="VPP_MARKET_TICK_SECONDS"
    )
    dr_policy: str = Field(
        "all_available", pattern="^(all_available|ignore)$", validation_alias="VPP_DR_POLICY"
    )
    dr_default_minutes: int = Field(60, ge=1, le=24 * 60, validation_alias="VPP_DR_DEFAULT_MINUTES")
    # OpenADR target names -> what they are here, JSON: {"VEN-99": {"grid_node": "NODE_A"},
    # "depot": {"fleet_id": "depot-1"}, "bus-7": {"resource_ids": ["ev-7"]}} (docs/openadr.md).
    # OpenADR signals that name no figure: the share of available discharge each SIMPLE level
    # (0,1,2,3) and an ALERT_GRID_EMERGENCY export (docs/openadr.md).
    openadr_simple_levels: str = Field("0,0.25,0.5,1", validation_alias="VPP_OPENADR_SIMPLE_LEVELS")
    openadr_emergency_share: float = Field(
        1.0, ge=0.0, le=1.0, validation_alias="VPP_OPENADR_EMERGENCY_SHARE"
    )
    # A utility's VTN to poll as an OpenADR 3 VEN (off when empty); OAuth2 client credentials.
    openadr_vtn_url: str = Field("", validation_alias="VPP_OPENADR_VTN_URL")
    openadr_client_id: str = Field("", validation_alias="VPP_OPENADR_CLIENT_ID")
    openadr_client_secret: str = Field("", validation_alias="VPP_OPENADR_CLIENT_SECRET")
    openadr_poll_seconds: float = Field(
        30.0, gt=0, le=3600, validation_alias="VPP_OPENADR_POLL_SECONDS"
    )
    # This VEN's name: every replica shifts an event's start alike (randomizeStart), and other
    # VENs running this service shift differently.
    openadr_ven_name: str = Field("", validation_alias="VPP_OPENADR_VEN_NAME")
    openadr_targets: Annotated[
        dict[str, dict[str, str | list[str]]],
        BeforeValidator(lambda v: json.loads(v) if isinstance(v, str) else v),
    ] = Field(default_factory=dict, validation_alias="VPP_OPENADR_TARGETS")
    # Settlement baselines (docs/settlement.md): the method of each aggregation and its numbers
    baseline_default: str = Field("metered", validation_alias="VPP_BASELINE_DEFAULT")
    baseline_methods: str = Field("", validation_alias="VPP_BASELINE_METHODS")
    baseline_parameters: Annotated[
        dict[str, dict[str, str | float | int | bool | None]],
        BeforeValidator(lambda v: json.loads(v) if isinstance(v, str) else v),
    ] = Field(default_factory=dict, validation_alias="VPP_BASELINE_PARAMETERS")
    database_url: str = Field("", validation_alias="DATABASE_URL")
    # SQLite's `PRAGMA synchronous` (PostgreSQL ignores it): with WAL, "normal" (the default)
    # loses no committed write when the process dies, at most the last ones when the machine
    # loses power; "off" may leave the file corrupt after a power cut, so it is only for a store
    # thrown away at the end (a replay's).
    sqlite_synchronous: SqliteSynchronous = Field(
        "normal", validation_alias="VPP_SQLITE_SYNCHRONOUS"
    )
    kafka_brokers: str | None = Field(None, validation_alias="KAFKA_BROKERS")
    redis_url: str | None = Field(None, validation_alias="REDIS_URL")
    redis_prefix: str = Field("vpp", min_length=1, validation_alias="VPP_REDIS_PREFIX")
    jwt_secret: str = Field("", validation_alias="VPP_JWT_SECRET")
    jwt_public_key: str = Field("", validation_alias="VPP_JWT_PUBLIC_KEY")
    jwt_audience: str = Field("", validation_alias="VPP_JWT_AUDIENCE")
    jwt_issuer: str = Field("", validation_alias="VPP_JWT_ISSUER")
    rate_limit_per_minute: int = Field(
        1200, ge=0, le=1_000_000, validation_alias="VPP_RATE_LIMIT_PER_MINUTE"
    )
    max_body_bytes: int = Field(
        16 * 1024 * 1024, ge=1024, le=1024**3, validation_alias="VPP_MAX_BODY_BYTES"
    )
    port: int = Field(3003, ge=1, le=65535, validation_alias="PORT")
    # Loopback unless told otherwise; binding elsewhere needs authentication (or the explicit,
    # loudly reported VPP_ALLOW_INSECURE=1).
    host: str = Field("127.0.0.1", validation_alias=AliasChoices("VPP_HOST", "HOST"))
    allow_insecure: bool = Field(False, validation_alias="VPP_ALLOW_INSECURE")

    @field_validator("offer_curve", "regulation_offer_curve")
    @classmethod
    def _curve(cls, value: str) -> str:
        from vpp_aggregator.domain.market import OfferCurve

        OfferCurve.parse(value)  # raises with the reason
        return value

    @field_validator("offer_quantile")
    @classmethod
    def _offer_quantile(cls, value: str) -> str:
        from vpp_aggregator.domain.forecast.quantiles import QUANTILES

        if value not in QUANTILES:
            raise ValueError(
                f"offers are made at a forecast quantile: one of {', '.join(QUANTILES)}"
            )
        return value

    @field_validator("offer_charge_curve")
    @classmethod
    def _charge_curve(cls, value: str) -> str:
        from vpp_aggregator.domain.market import OfferCurve

        if value:
            OfferCurve.parse(value, falling=True)  # raises with the reason
        return value

    @field_validator("openadr_simple_levels")
    @classmethod
    def _simple_levels(cls, value: str) -> str:
        from vpp_aggregator.domain.dr_asks import Policy

        Policy.parse(value, 1.0)  # raises with the reason
        return value

    @field_validator("baseline_default", "baseline_methods", "baseline_parameters")
    @classmethod
    def _baselines(cls, value: Any, info: ValidationInfo) -> Any:
        from vpp_aggregator.app.baseline_policy import BaselinePolicy

        parts: dict[str, Any] = {"default": "metered", "methods": "", "parameters": {}}
        parts[str(info.field_name).removeprefix("baseline_")] = value
        BaselinePolicy.parse(**parts)  # raises with the reason
        return value

    @model_validator(mode="after")
    def _day_ahead_reachable(self) -> Settings:
        """Day-ahead offers need the operating day in view before its gate closes: within the
        offer horizon, and all of it within the forecast's."""
        if "day_ahead" not in self.markets:
            return self
        hour, minute = (int(x) for x in self.market_da_gate_closure.split(":"))
        to_midnight = 24 - hour - minute / 60  # from the gate to the operating day's start
        if self.offer_horizon_hours <= to_midnight:
            raise ValueError(
                f"VPP_OFFER_HORIZON_HOURS={self.offer_horizon_hours} never sees an operating day "
                f"before VPP_MARKET_DA_GATE_CLOSURE={self.market_da_gate_closure} closes its "
                f"gate: more than {to_midnight:g} hours are needed (or leave day_ahead out of "
                "VPP_MARKETS)"
            )
        if self.forecast_horizon_hours <= to_midnight + 24:
            raise ValueError(
                f"VPP_FORECAST_HORIZON_HOURS={self.forecast_horizon_hours} never covers a whole "
                f"operating day before VPP_MARKET_DA_GATE_CLOSURE={self.market_da_gate_closure}: "
                f"more than {to_midnight + 24:g} hours are needed"
            )
        return self

    @field_validator("offer_interval_minutes")
    @classmethod
    def _market_interval(cls, value: int) -> int:
        if value not in (15, 60):
            raise ValueError("market intervals are 15 or 60 minutes")
        return value

    @field_validator("database_url")
    @classmethod
    def _default_sqlite(cls, value: str) -> str:
        """Empty means the embedded default; bare postgresql:// is routed to psycopg 3."""
        if not value:
            return f"sqlite:///{DEFAULT_SQLITE_PATH}"
        if value.startswith("postgres://"):
            value = "postgresql://" + value[len("postgres://") :]
        if value.startswith("postgresql://"):
            value = "postgresql+psycopg://" + value[len("postgresql://") :]
        if not (value.startswith("sqlite") or value.startswith("postgresql+")):
            raise ValueError("must be a sqlite:/// or postgresql:// URL")
        return value


class ConfigError(RuntimeError):
    """A configuration value an operator must fix before the service can start."""


def load_settings(**overrides: object) -> Settings:
    """Read the environment; turn pydantic's error into one message naming each bad variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            if not err["loc"]:  # a rule between variables: its message names them
                lines.append(f"  {err['msg']}")
                continue
            name = str(err["loc"][0])
            field = Settings.model_fields.get(name)
            alias = field.validation_alias if field is not None else None
            var = alias if isinstance(alias, str) else name.upper()
            lines.append(f"  {var}={err.get('input')!r}: {err['msg']}")
        raise ConfigError("Invalid configuration:\n" + "\n".join(lines)) from None


LOOPBACK_HOSTS = {"127.0.0.1", "::1", "localhost"}


def open_bind_problem(settings: Settings) -> str | None:
    """Why serving on `settings.host` must be refused: an address others can reach with no
    authentication configured (every caller would be an admin). None when it may go ahead."""
    loopback = settings.host in LOOPBACK_HOSTS or settings.host.startswith("127.")
    authenticated = bool(settings.jwt_secret or settings.jwt_public_key)
    if loopback or authenticated or settings.allow_insecure:
        return None
    return (
        f"refusing to listen on {settings.host} without authentication: every caller would be an "
        "admin. Set VPP_JWT_SECRET (random, e.g. `openssl rand -hex 32`) or "
        "VPP_JWT_PUBLIC_KEY, listen on 127.0.0.1 (VPP_HOST), or set VPP_ALLOW_INSECURE=1 to "
        "accept an open admin API"
    )
