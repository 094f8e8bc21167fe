"""Which product an award is for: energy (a dispatch) or regulation (capacity that follows the
grid operator's signal).

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("market_awards") as batch:
        batch.add_column(
            sa.Column("product", sa.String(16), nullable=False, server_default="energy")
        )
        batch.create_index("ix_market_awards_product_end", ["product", "interval_end"])


def downgrade() -> None:
    with op.batch_alter_table("market_awards") as batch:
        batch.drop_index("ix_market_awards_product_end")
        batch.drop_column("product")
