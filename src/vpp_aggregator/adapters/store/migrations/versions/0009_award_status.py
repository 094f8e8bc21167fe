"""What became of each award (dispatched, rejected, expired, then settled or not_delivered) and
why: an award whose dispatch was rejected answered "dispatched", and one that never ran was later
"settled" with a ratio of 0.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("market_awards") as batch:
        batch.add_column(
            sa.Column("status", sa.String(16), nullable=False, server_default="dispatched")
        )
        batch.add_column(sa.Column("reason", sa.Text, nullable=True))
    # Awards stored before: settled ones stay settled (their settlement was sent); one without a
    # dispatch came after its interval. A rejected dispatch is found again at settlement.
    op.execute(
        "UPDATE market_awards SET status = CASE WHEN settled_at IS NOT NULL THEN 'settled' "
        "WHEN dispatch_id IS NULL THEN 'expired' ELSE 'dispatched' END"
    )


def downgrade() -> None:
    with op.batch_alter_table("market_awards") as batch:
        batch.drop_column("reason")
        batch.drop_column("status")
