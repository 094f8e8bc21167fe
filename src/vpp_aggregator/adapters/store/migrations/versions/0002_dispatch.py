"""Dispatches, their allocations and revisions, and the control-command outbox.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

from vpp_aggregator.adapters.store.tables import UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "dispatches",
        sa.Column("dispatch_id", sa.String(64), primary_key=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("reference", sa.String(200), nullable=True),
        sa.Column("idempotency_key", sa.String(200), nullable=True, unique=True),
        sa.Column("target_kw", sa.Float, nullable=False),
        sa.Column("start_at", UTCDateTime, nullable=False),
        sa.Column("duration_minutes", sa.Integer, nullable=False),
        sa.Column("end_at", UTCDateTime, nullable=False),
        sa.Column("scope", sa.JSON, nullable=False),
        sa.Column("solver", sa.String(16), nullable=False),
        sa.Column("allocated_kw", sa.Float, nullable=False),
        sa.Column("shortfall_kw", sa.Float, nullable=False),
        sa.Column("shortfall_reasons", sa.JSON, nullable=False),
        sa.Column("ramp_complete_at", UTCDateTime, nullable=True),
        sa.Column("response_time_ms", sa.Float, nullable=False),
        sa.Column("revision", sa.Integer, nullable=False),
        sa.Column("plan_kw", sa.JSON, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
    )
    op.create_index("ix_dispatches_status", "dispatches", ["status"])
    op.create_index("ix_dispatches_end_at", "dispatches", ["end_at"])
    op.create_table(
        "dispatch_allocations",
        sa.Column("dispatch_id", sa.String(64), primary_key=True),
        sa.Column("revision", sa.Integer, primary_key=True),
        sa.Column("resource_id", sa.String(128), primary_key=True),
        sa.Column("resource_type", sa.String(8), nullable=False),
        sa.Column("charge_point_id", sa.String(128), nullable=False),
        sa.Column("setpoint_kw", sa.Float, nullable=False),
        sa.Column("schedule_start", UTCDateTime, nullable=False),
        sa.Column("schedule_kw", sa.JSON, nullable=False),
        sa.Column("start_soc_pct", sa.Float, nullable=False),
        sa.Column("expected_end_soc_pct", sa.Float, nullable=False),
        sa.Column("binding_constraint", sa.String(32), nullable=False),
    )
    op.create_table(
        "dispatch_revisions",
        sa.Column("dispatch_id", sa.String(64), primary_key=True),
        sa.Column("revision", sa.Integer, primary_key=True),
        sa.Column("at", UTCDateTime, nullable=False),
        sa.Column("reason", sa.String(64), nullable=False),
        sa.Column("detail", sa.JSON, nullable=False),
    )
    op.create_table(
        "control_commands",
        sa.Column("command_id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("dispatch_id", sa.String(64), nullable=False),
        sa.Column("revision", sa.Integer, nullable=False),
        sa.Column("resource_id", sa.String(128), nullable=False),
        sa.Column("charge_point_id", sa.String(128), nullable=False),
        sa.Column("payload", sa.JSON, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("published_at", UTCDateTime, nullable=True),
    )
    op.create_index("ix_control_commands_dispatch_id", "control_commands", ["dispatch_id"])
    op.create_index("ix_control_commands_published_at", "control_commands", ["published_at"])


def downgrade() -> None:
    op.drop_table("control_commands")
    op.drop_table("dispatch_revisions")
    op.drop_table("dispatch_allocations")
    op.drop_table("dispatches")
