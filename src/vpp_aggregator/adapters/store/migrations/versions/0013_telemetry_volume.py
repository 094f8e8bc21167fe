"""Telemetry history built for volume: on PostgreSQL `telemetry_samples` becomes a table
partitioned by UTC day (a day's samples are dropped whole when they age out), and
`telemetry_daily` keeps each resource's five-minute energy series past that.

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

COLUMNS = "ts, resource_id, soc_pct, plugged_in, power_kw, received_at"


def upgrade() -> None:
    op.create_table(
        "telemetry_daily",
        sa.Column("day", sa.String(10), primary_key=True),
        sa.Column("resource_id", sa.String(128), primary_key=True),
        sa.Column("energy_kwh", sa.LargeBinary, nullable=False),
        sa.Column("covered_s", sa.LargeBinary, nullable=False),
        sa.Column("samples", sa.Integer, nullable=False),
    )
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("ALTER TABLE telemetry_samples RENAME TO telemetry_samples_flat")
    op.execute(
        "ALTER TABLE telemetry_samples_flat RENAME CONSTRAINT telemetry_samples_pkey "
        "TO telemetry_samples_flat_pkey"
    )
    op.execute("ALTER INDEX ix_telemetry_samples_received_at RENAME TO ix_telemetry_flat_received")
    op.execute(
        "CREATE TABLE telemetry_samples (ts timestamptz NOT NULL, resource_id varchar(128) NOT NULL, "
        "soc_pct double precision NOT NULL, plugged_in boolean NOT NULL, "
        "power_kw double precision NOT NULL, received_at timestamptz NOT NULL, "
        "CONSTRAINT telemetry_samples_pkey PRIMARY KEY (ts, resource_id)) PARTITION BY RANGE (ts)"
    )
    op.execute("CREATE INDEX ix_telemetry_samples_received_at ON telemetry_samples (received_at)")
    days = op.get_bind().exec_driver_sql(
        "SELECT DISTINCT (ts AT TIME ZONE 'UTC')::date FROM telemetry_samples_flat"
    )
    for (day,) in days.all():
        op.execute(
            f"CREATE TABLE telemetry_samples_p{day:%Y%m%d} PARTITION OF telemetry_samples "
            f"FOR VALUES FROM ('{day.isoformat()} 00:00+00') TO "
            f"('{day.isoformat()} 00:00+00'::timestamptz + interval '1 day')"
        )
    op.execute(
        f"INSERT INTO telemetry_samples ({COLUMNS}) SELECT {COLUMNS} FROM telemetry_samples_flat"
    )
    op.execute("DROP TABLE telemetry_samples_flat")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE telemetry_samples RENAME TO telemetry_samples_parted")
        op.execute(
            "ALTER TABLE telemetry_samples_parted RENAME CONSTRAINT telemetry_samples_pkey "
            "TO telemetry_samples_parted_pkey"
        )
        op.execute("ALTER INDEX ix_telemetry_samples_received_at RENAME TO ix_parted_received")
        op.execute(
            "CREATE TABLE telemetry_samples (ts timestamptz NOT NULL, resource_id varchar(128) "
            "NOT NULL, soc_pct double precision NOT NULL, plugged_in boolean NOT NULL, "
            "power_kw double precision NOT NULL, received_at timestamptz NOT NULL, "
            "CONSTRAINT telemetry_samples_pkey PRIMARY KEY (ts, resource_id))"
        )
        op.execute(
            "CREATE INDEX ix_telemetry_samples_received_at ON telemetry_samples (received_at)"
        )
        op.execute(
            f"INSERT INTO telemetry_samples ({COLUMNS}) SELECT {COLUMNS} FROM telemetry_samples_parted"
        )
        op.execute("DROP TABLE telemetry_samples_parted CASCADE")
    op.drop_table("telemetry_daily")
