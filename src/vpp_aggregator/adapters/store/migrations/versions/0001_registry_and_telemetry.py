"""Resource registry, telemetry history, latest-sample snapshot.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

from vpp_aggregator.adapters.store.tables import UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "resources",
        sa.Column("resource_id", sa.String(128), primary_key=True),
        sa.Column("resource_type", sa.String(8), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("fleet_id", sa.String(128), nullable=False),
        sa.Column("grid_node", sa.String(128), nullable=False),
        sa.Column("battery_capacity_kwh", sa.Float, nullable=False),
        sa.Column("max_charge_kw", sa.Float, nullable=False),
        sa.Column("max_discharge_kw", sa.Float, nullable=False),
        sa.Column("v2g_capable", sa.Boolean, nullable=False),
        sa.Column("telemetry_enabled", sa.Boolean, nullable=False),
        sa.Column("interconnection_approved", sa.Boolean, nullable=False),
        sa.Column("interconnection_reference", sa.String(200), nullable=False),
        sa.Column("min_soc_pct", sa.Float, nullable=False),
        sa.Column("max_soc_pct", sa.Float, nullable=False),
        sa.Column("departure_schedule", sa.JSON, nullable=False),
        sa.Column("trips", sa.JSON, nullable=False),
        sa.Column("charge_point_id", sa.String(128), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
    )
    op.create_index("ix_resources_fleet_id", "resources", ["fleet_id"])
    op.create_index("ix_resources_grid_node", "resources", ["grid_node"])
    op.create_index("ix_resources_status", "resources", ["status"])
    op.create_table(
        "telemetry_samples",
        sa.Column("ts", UTCDateTime, primary_key=True),
        sa.Column("resource_id", sa.String(128), primary_key=True),
        sa.Column("soc_pct", sa.Float, nullable=False),
        sa.Column("plugged_in", sa.Boolean, nullable=False),
        sa.Column("power_kw", sa.Float, nullable=False),
        sa.Column("received_at", UTCDateTime, nullable=False),
    )
    op.create_index("ix_telemetry_samples_received_at", "telemetry_samples", ["received_at"])
    op.create_table(
        "telemetry_latest",
        sa.Column("resource_id", sa.String(128), primary_key=True),
        sa.Column("ts", UTCDateTime, nullable=False),
        sa.Column("soc_pct", sa.Float, nullable=False),
        sa.Column("plugged_in", sa.Boolean, nullable=False),
        sa.Column("power_kw", sa.Float, nullable=False),
    )
    op.create_table(
        "service_meta",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.String(256), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("service_meta")
    op.drop_table("telemetry_latest")
    op.drop_table("telemetry_samples")
    op.drop_table("resources")
