"""Market offers and awards (with their settlement), and a generic outbox for outgoing messages.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

from vpp_aggregator.adapters.store.tables import UTCDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "market_offers",
        sa.Column("offer_id", sa.String(200), primary_key=True),
        sa.Column("aggregation_id", sa.String(128), nullable=False, index=True),
        sa.Column("interval_start", UTCDateTime, nullable=False, index=True),
        sa.Column("interval_end", UTCDateTime, nullable=False),
        sa.Column("payload", sa.JSON, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
    )
    op.create_table(
        "market_awards",
        sa.Column("award_id", sa.String(128), primary_key=True),
        sa.Column("aggregation_id", sa.String(128), nullable=False),
        sa.Column("interval_start", UTCDateTime, nullable=False, index=True),
        sa.Column("interval_end", UTCDateTime, nullable=False),
        sa.Column("awarded_kw", sa.Float, nullable=False),
        sa.Column("price_per_mwh", sa.Float, nullable=True),
        sa.Column("dispatch_id", sa.String(64), nullable=True),
        sa.Column("received_at", UTCDateTime, nullable=False),
        sa.Column("settlement", sa.JSON, nullable=True),
        sa.Column("settled_at", UTCDateTime, nullable=True, index=True),
    )
    op.create_table(
        "outbox",
        sa.Column("message_id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("topic", sa.String(200), nullable=False),
        sa.Column("key", sa.String(200), nullable=False),
        sa.Column("payload", sa.JSON, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("published_at", UTCDateTime, nullable=True, index=True),
    )


def downgrade() -> None:
    op.drop_table("outbox")
    op.drop_table("market_awards")
    op.drop_table("market_offers")
