"""zero-amount refunds of zero-paid orders

A line refund of an order whose payable was 0 (coupons, points-only exchange) is a refund of
amount 0 with no payment behind it: ``refunds.payment_id`` becomes nullable and the amount check
allows 0.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-05 20:17:32.892780
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("refunds", schema=None) as batch_op:
        batch_op.alter_column("payment_id", existing_type=sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                              nullable=True)
        batch_op.drop_constraint(op.f("ck_refunds_amount_pos"), type_="check")
        batch_op.create_check_constraint(op.f("ck_refunds_amount_nonneg"), "amount >= 0")


def downgrade() -> None:
    # Refunds of zero-paid orders have no payment and amount 0: they cannot exist under the old rules.
    op.execute("DELETE FROM refunds WHERE payment_id IS NULL OR amount = 0")
    with op.batch_alter_table("refunds", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_refunds_amount_nonneg"), type_="check")
        batch_op.create_check_constraint(op.f("ck_refunds_amount_pos"), "amount > 0")
        batch_op.alter_column("payment_id", existing_type=sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                              nullable=False)
