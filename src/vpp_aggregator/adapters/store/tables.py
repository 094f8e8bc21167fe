"""Table definitions shared by the repository and the migrations."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Dialect,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
)
from sqlalchemy.types import TypeDecorator


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC in, aware UTC out, on PostgreSQL (timestamptz) and on SQLite (naive text)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def param_mark(dialect: str) -> str:
    """The mark a bound value takes in raw SQL for this driver: sqlite3's qmark, psycopg's format."""
    return "?" if dialect == "sqlite" else "%s"


STAMP_BLOCK = 16_384  # timestamps formatted at a time for SQLite (see `driver_stamps`)


def driver_stamps(timestamp_s: NDArray[np.float64], dialect: str) -> list[Any]:
    """`UTCDateTime` values ready for the driver, bypassing SQLAlchemy: SQLite's naive UTC
    text as SQLAlchemy writes it (so stored text compares in time order), aware datetimes for
    psycopg."""
    micros = np.round(np.asarray(timestamp_s) * 1e6).astype("datetime64[us]")
    if dialect != "sqlite":
        return [d.replace(tzinfo=UTC) for d in micros.astype(datetime).tolist()]
    if micros.size > 1 and micros[0] == micros[-1] and (micros == micros[0]).all():
        # One time for the whole batch (a gateway's reading of its fleet): formatted once.
        return [np.datetime_as_string(micros[0], unit="us").replace("T", " ")] * micros.size
    # In blocks: numpy formats dates holding the GIL (0.6 s for a million at once, which
    # the API's requests waited out); a block is ~10 ms.
    out: list[Any] = []
    for i in range(0, micros.size, STAMP_BLOCK):
        text = np.datetime_as_string(micros[i : i + STAMP_BLOCK], unit="us").tolist()
        out += [s.replace("T", " ") for s in text]
    return out


def epoch_seconds(stored: Sequence[Any]) -> NDArray[np.float64]:
    """`UTCDateTime` values as read without their type (SQLite's naive UTC text, parsed by numpy
    at once; datetimes as PostgreSQL's driver gives them) in epoch seconds, as `timestamp()`."""
    if len(stored) and isinstance(stored[0], str):
        return np.array(stored, dtype="datetime64[us]").astype(np.int64) / 1e6
    return np.fromiter((v.timestamp() for v in stored), np.float64, len(stored))


metadata = MetaData()

resources = Table(
    "resources",
    metadata,
    Column("resource_id", String(128), primary_key=True),
    Column("resource_type", String(8), nullable=False),
    Column("name", String(200), nullable=False),
    Column("fleet_id", String(128), nullable=False, index=True),
    Column("grid_node", String(128), nullable=False, index=True),
    Column("battery_capacity_kwh", Float, nullable=False),
    Column("max_charge_kw", Float, nullable=False),
    Column("max_discharge_kw", Float, nullable=False),
    Column("v2g_capable", Boolean, nullable=False),
    Column("telemetry_enabled", Boolean, nullable=False),
    Column("interconnection_approved", Boolean, nullable=False),
    Column("interconnection_reference", String(200), nullable=False),
    Column("min_soc_pct", Float, nullable=False),
    Column("max_soc_pct", Float, nullable=False),
    Column("departure_schedule", JSON, nullable=False),
    Column("trips", JSON, nullable=False),
    Column("charge_point_id", String(128), nullable=True),
    Column("status", String(16), nullable=False, index=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Index("ix_resources_updated_at", "updated_at"),
)

# History is keyed (ts, resource_id): new samples land at the end of the index, so ingest cost
# stays flat as history grows (keyed by resource first, every insert dirtied a random page).
telemetry_samples = Table(
    "telemetry_samples",
    metadata,
    Column("ts", UTCDateTime, primary_key=True),
    Column("resource_id", String(128), primary_key=True),
    Column("soc_pct", Float, nullable=False),
    Column("plugged_in", Boolean, nullable=False),
    Column("power_kw", Float, nullable=False),
    Column("received_at", UTCDateTime, nullable=False),
    Index("ix_telemetry_samples_received_at", "received_at"),
)

# The newest sample per resource, written in the background by the snapshotter; at start-up it
# is read back and the history received since the last snapshot is replayed on top.
telemetry_latest = Table(
    "telemetry_latest",
    metadata,
    Column("resource_id", String(128), primary_key=True),
    Column("ts", UTCDateTime, nullable=False),
    Column("soc_pct", Float, nullable=False),
    Column("plugged_in", Boolean, nullable=False),
    Column("power_kw", Float, nullable=False),
)

# Telemetry kept past the raw retention: one row per resource and UTC day, holding its 288
# five-minute intervals (energy as float32 kWh, positive = export, and seconds covered as
# uint16), measured by the one sample-and-hold rule before the day's raw samples are dropped.
telemetry_daily = Table(
    "telemetry_daily",
    metadata,
    Column("day", String(10), primary_key=True),  # ISO date, UTC
    Column("resource_id", String(128), primary_key=True),
    Column("energy_kwh", LargeBinary, nullable=False),
    Column("covered_s", LargeBinary, nullable=False),
    Column("samples", Integer, nullable=False),
)

# The live state's image (`adapters/store/state_snapshot`): one row, rewritten now and then; a
# start restores it and replays only what changed after `taken_at`.
state_snapshots = Table(
    "state_snapshots",
    metadata,
    Column("name", String(32), primary_key=True),
    Column("taken_at", UTCDateTime, nullable=False),
    Column("resources", Integer, nullable=False),
    Column("data", LargeBinary, nullable=False),
)

service_meta = Table(
    "service_meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", String(256), nullable=False),
)

dispatches = Table(
    "dispatches",
    metadata,
    Column("dispatch_id", String(64), primary_key=True),
    Column("status", String(16), nullable=False, index=True),
    Column("source", String(32), nullable=False),
    Column("reference", String(200), nullable=True),
    Column("idempotency_key", String(200), nullable=True, unique=True),
    Column("target_kw", Float, nullable=False),
    Column("start_at", UTCDateTime, nullable=False),
    Column("duration_minutes", Integer, nullable=False),
    Column("end_at", UTCDateTime, nullable=False, index=True),
    Column("scope", JSON, nullable=False),
    Column("solver", String(16), nullable=False),
    Column("allocated_kw", Float, nullable=False),
    Column("shortfall_kw", Float, nullable=False),
    Column("shortfall_reasons", JSON, nullable=False),
    Column("ramp_complete_at", UTCDateTime, nullable=True),
    Column("response_time_ms", Float, nullable=False),
    Column("revision", Integer, nullable=False),
    Column("plan_kw", JSON, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("owner", String(64), nullable=True),  # the process following it through
    Column("lease_until", UTCDateTime, nullable=True),  # its claim lapses then unless renewed
)

dispatch_allocations = Table(
    "dispatch_allocations",
    metadata,
    Column("dispatch_id", String(64), primary_key=True),
    Column("revision", Integer, primary_key=True),
    Column("resource_id", String(128), primary_key=True),
    Column("resource_type", String(8), nullable=False),
    Column("charge_point_id", String(128), nullable=False),
    Column("setpoint_kw", Float, nullable=False),
    Column("schedule_start", UTCDateTime, nullable=False),
    Column("schedule_kw", JSON, nullable=False),
    Column("start_soc_pct", Float, nullable=False),
    Column("expected_end_soc_pct", Float, nullable=False),
    Column("binding_constraint", String(200), nullable=False),
)

dispatch_revisions = Table(
    "dispatch_revisions",
    metadata,
    Column("dispatch_id", String(64), primary_key=True),
    Column("revision", Integer, primary_key=True),
    Column("at", UTCDateTime, nullable=False),
    Column("reason", String(64), nullable=False),
    Column("detail", JSON, nullable=False),
)

# Transactional outbox: commands are stored with their dispatch, then published.
control_commands = Table(
    "control_commands",
    metadata,
    Column("command_id", Integer, primary_key=True, autoincrement=True),
    Column("dispatch_id", String(64), nullable=False, index=True),
    Column("revision", Integer, nullable=False),
    Column("resource_id", String(128), nullable=False),
    Column("charge_point_id", String(128), nullable=False),
    Column("payload", JSON, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("published_at", UTCDateTime, nullable=True, index=True),
)

# Refusals read by a process that does not follow the dispatch, for the one that does.
command_refusals = Table(
    "command_refusals",
    metadata,
    Column("refusal_id", Integer, primary_key=True, autoincrement=True),
    Column("dispatch_id", String(64), nullable=False, index=True),
    Column("resource_id", String(128), nullable=False),
    Column("reason", String(200), nullable=False),
    Column("received_at", UTCDateTime, nullable=False),
    Column("handled_at", UTCDateTime, nullable=True, index=True),
)

forecast_weather = Table(
    "forecast_weather",
    metadata,
    Column("hour_utc", UTCDateTime, primary_key=True),
    Column("temperature_c", Float, nullable=True),
    Column("precipitation_mm", Float, nullable=True),
)

forecast_events = Table(
    "forecast_events",
    metadata,
    Column("event_id", String(64), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("grid_node", String(128), nullable=True),
    Column("start_at", UTCDateTime, nullable=False),
    Column("end_at", UTCDateTime, nullable=False),
    Column("availability_factor", Float, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)

market_offers = Table(
    "market_offers",
    metadata,
    Column("offer_id", String(200), primary_key=True),  # aggregation and interval start
    Column("aggregation_id", String(128), nullable=False, index=True),
    Column("interval_start", UTCDateTime, nullable=False, index=True),
    Column("interval_end", UTCDateTime, nullable=False),
    Column("payload", JSON, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)

market_awards = Table(
    "market_awards",
    metadata,
    Column("award_id", String(128), primary_key=True),
    Column("aggregation_id", String(128), nullable=False),
    Column("interval_start", UTCDateTime, nullable=False, index=True),
    Column("interval_end", UTCDateTime, nullable=False),
    Column("awarded_kw", Float, nullable=False),
    Column("price_per_mwh", Float, nullable=True),
    Column("dispatch_id", String(64), nullable=True),
    Column("received_at", UTCDateTime, nullable=False),
    # dispatched | rejected | expired, then settled | not_delivered once the interval is over
    Column("status", String(16), nullable=False, server_default="dispatched"),
    Column("reason", Text, nullable=True),  # why it was rejected, expired or not delivered
    Column("settlement", JSON, nullable=True),  # set once the interval is over and measured
    Column("settled_at", UTCDateTime, nullable=True, index=True),
    Column("product", String(16), nullable=False, server_default="energy"),  # or regulation
    Index("ix_market_awards_product_end", "product", "interval_end"),
)

# What award dispatches made up for members drawing beyond the baseline, by local operating day
# and hour (`app/makeup`): the day's offers keep it back.
makeup_hours = Table(
    "makeup_hours",
    metadata,
    Column("aggregation_id", String(128), primary_key=True),
    Column("day", String(10), primary_key=True),  # local date, ISO
    Column("hour", Integer, primary_key=True),  # local hour of day, 0-23
    Column("kwh", Float, nullable=False),
)

outbox = Table(
    "outbox",
    metadata,
    Column("message_id", Integer, primary_key=True, autoincrement=True),
    Column("topic", String(200), nullable=False),
    Column("key", String(200), nullable=False),
    Column("payload", JSON, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("published_at", UTCDateTime, nullable=True, index=True),
)

# Append-only: rows are inserted, never updated or deleted by the service.
audit_log = Table(
    "audit_log",
    metadata,
    Column("entry_id", Integer, primary_key=True, autoincrement=True),
    Column("at", UTCDateTime, nullable=False, index=True),
    Column("actor", String(200), nullable=False, index=True),
    Column("role", String(20), nullable=False),
    Column("fleet_id", String(128), nullable=True),
    Column("action", String(64), nullable=False, index=True),
    Column("target", String(200), nullable=True),
    Column("remote_addr", String(64), nullable=True),
    Column("detail", JSON, nullable=False),
)


# Demand-response events as last received (one row per event, the newest version): what later
# intervals ask is read from here when they begin, and the dashboard shows what each was read as.
dr_events = Table(
    "dr_events",
    metadata,
    Column("event_id", String(200), primary_key=True),
    Column("version", String(40), nullable=False),  # modificationDateTime in UTC ISO, or ""
    Column("received_at", UTCDateTime, nullable=False, index=True),
    Column("body", JSON, nullable=False),  # the message as it came
    Column("read_as", JSON, nullable=False),  # what each window asked, and the outcomes
)
