"""Demand-response events as last received: later intervals of an event are acted on when they
begin, from the stored event, and the dashboard shows what each event was read as.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

from vpp_aggregator.adapters.store.tables import UTCDateTime

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "dr_events",
        sa.Column("event_id", sa.String(200), primary_key=True),
        sa.Column("version", sa.String(40), nullable=False),
        sa.Column("received_at", UTCDateTime(), nullable=False),
        sa.Column("body", sa.JSON, nullable=False),
        sa.Column("read_as", sa.JSON, nullable=False),
    )
    op.create_index("ix_dr_events_received_at", "dr_events", ["received_at"])


def downgrade() -> None:
    op.drop_index("ix_dr_events_received_at", table_name="dr_events")
    op.drop_table("dr_events")
