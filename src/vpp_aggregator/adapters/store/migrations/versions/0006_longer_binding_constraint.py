"""Room for the reason a resource was released ("released: soc_off_plan (79.0 % vs 70.0 %
planned)"): 32 characters made every such re-plan fail on PostgreSQL.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("dispatch_allocations") as batch:
        batch.alter_column(
            "binding_constraint",
            existing_type=sa.String(32),
            type_=sa.String(200),
            existing_nullable=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("dispatch_allocations") as batch:
        batch.alter_column(
            "binding_constraint",
            existing_type=sa.String(200),
            type_=sa.String(32),
            existing_nullable=False,
        )
