"""Forecast inputs: hourly weather and operator events.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

from vpp_aggregator.adapters.store.tables import UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "forecast_weather",
        sa.Column("hour_utc", UTCDateTime, primary_key=True),
        sa.Column("temperature_c", sa.Float, nullable=True),
        sa.Column("precipitation_mm", sa.Float, nullable=True),
    )
    op.create_table(
        "forecast_events",
        sa.Column("event_id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("grid_node", sa.String(128), nullable=True),
        sa.Column("start_at", UTCDateTime, nullable=False),
        sa.Column("end_at", UTCDateTime, nullable=False),
        sa.Column("availability_factor", sa.Float, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("forecast_events")
    op.drop_table("forecast_weather")
