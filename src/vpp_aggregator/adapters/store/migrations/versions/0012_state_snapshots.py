"""The live state's image, so a start restores it instead of rebuilding every resource; registry
rows by time of change, so a start finds those changed since the image.

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

from vpp_aggregator.adapters.store.tables import UTCDateTime

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "state_snapshots",
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("taken_at", UTCDateTime, nullable=False),
        sa.Column("resources", sa.Integer, nullable=False),
        sa.Column("data", sa.LargeBinary, nullable=False),
    )
    op.create_index("ix_resources_updated_at", "resources", ["updated_at"])


def downgrade() -> None:
    op.drop_index("ix_resources_updated_at", table_name="resources")
    op.drop_table("state_snapshots")
