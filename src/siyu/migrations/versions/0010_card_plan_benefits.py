"""card plan benefits

- card_plans.member_discount_bp / free_shipping / points_multiplier_percent: a paid card grants
  benefits of its own for its term, with or without a level. Existing plans get 0 / false / 100
  (``server_default``): no benefit besides their level, which is what every plan granted before
  this revision, so no holder's benefits change. Batch mode for SQLite; the downgrade drops the
  columns.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-05 19:26:12.070506
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("card_plans", schema=None) as batch_op:
        batch_op.add_column(sa.Column("member_discount_bp", sa.Integer(), server_default="0", nullable=False))
        batch_op.add_column(sa.Column("free_shipping", sa.Boolean(), server_default=sa.false(), nullable=False))
        batch_op.add_column(sa.Column("points_multiplier_percent", sa.Integer(), server_default="100", nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("card_plans", schema=None) as batch_op:
        batch_op.drop_column("points_multiplier_percent")
        batch_op.drop_column("free_shipping")
        batch_op.drop_column("member_discount_bp")
