"""What award dispatches made up for members drawing beyond the baseline, by aggregation, local
day and hour: the day-ahead offers keep it back (`app/makeup`).

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "makeup_hours",
        sa.Column("aggregation_id", sa.String(128), primary_key=True),
        sa.Column("day", sa.String(10), primary_key=True),
        sa.Column("hour", sa.Integer, primary_key=True),
        sa.Column("kwh", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("makeup_hours")
