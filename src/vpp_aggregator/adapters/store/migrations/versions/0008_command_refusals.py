"""Device refusals of commands, kept for the process that follows the dispatch: the worker that
reads a refusal is often not that process.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

from vpp_aggregator.adapters.store.tables import UTCDateTime

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "command_refusals",
        sa.Column("refusal_id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("dispatch_id", sa.String(64), nullable=False, index=True),
        sa.Column("resource_id", sa.String(128), nullable=False),
        sa.Column("reason", sa.String(200), nullable=False),
        sa.Column("received_at", UTCDateTime, nullable=False),
        sa.Column("handled_at", UTCDateTime, nullable=True, index=True),
    )


def downgrade() -> None:
    op.drop_table("command_refusals")
