"""allows_order_promotions on group buys and bargains

- group_buys.allows_order_promotions, bargain_activities.allows_order_promotions: whether the
  activity's lines count toward (and take) spend-and-save / spend-and-gift / add-on thresholds,
  as flash sales and promotions already state. Existing rows get false (``server_default``),
  which is what their lines did before this revision (always ``no_order_promotions``), so no
  running activity changes its prices. Batch mode for SQLite; the downgrade drops the columns.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05 16:29:00.447162
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

TABLES = ("group_buys", "bargain_activities")


def upgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(
                sa.Column("allows_order_promotions", sa.Boolean(), nullable=False, server_default=sa.false())
            )


def downgrade() -> None:
    for table in reversed(TABLES):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column("allows_order_promotions")
