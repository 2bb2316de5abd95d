"""virtual products, payee names, paid-order covering indexes, flash-sale stock shards

- products.kind (physical | virtual) and order_lines.is_virtual: a paid card needs no address;
- withdrawals.payee_name_enc / payee_name_masked: WeChat transfers from 2,000 yuan send the
  payee's real name;
- ix_orders_paid_member / ix_order_lines_order_cover: purchase conditions of segments read an
  index only (the covering one replaces ix_order_lines_order, which it starts with);
- flash_sale_stock_shards: an item's unsold activity units over 8 rows, filled here from
  ``activity_stock - sold`` (a closed item's rows are empty), then ``flash_sale_items.sold`` goes:
  it is now ``activity_stock - sum(remaining)``.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 13:33:21.686711
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


SHARDS = 8  # flash_sales.models.SHARDS when this revision was written

PAID = "status IN ('paid', 'shipped', 'completed')"


def upgrade() -> None:
    op.create_table(
        "flash_sale_stock_shards",
        sa.Column("item_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("shard", sa.Integer(), nullable=False),
        sa.Column("remaining", sa.Integer(), nullable=False),
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("merchant_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.CheckConstraint("remaining >= 0", name=op.f("ck_flash_sale_stock_shards_remaining_nonneg")),
        sa.ForeignKeyConstraint(
            ["item_id"],
            ["flash_sale_items.id"],
            name=op.f("fk_flash_sale_stock_shards_item_id_flash_sale_items"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_flash_sale_stock_shards")),
        sa.UniqueConstraint("item_id", "shard", name=op.f("uq_flash_sale_stock_shards_item_id_shard")),
    )
    with op.batch_alter_table("flash_sale_stock_shards", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_flash_sale_stock_shards_merchant_id"), ["merchant_id"], unique=False
        )

    shards = sa.table(
        "flash_sale_stock_shards",
        sa.column("merchant_id", sa.BigInteger()),
        sa.column("item_id", sa.BigInteger()),
        sa.column("shard", sa.Integer()),
        sa.column("remaining", sa.Integer()),
    )
    items = (
        op.get_bind()
        .execute(
            sa.text("SELECT id, merchant_id, activity_stock, sold, closed FROM flash_sale_items ORDER BY id")
        )
        .all()
    )
    rows: list[dict[str, int]] = []
    for item_id, merchant_id, stock, sold, closed in items:
        left = 0 if closed else max(0, stock - sold)
        base, extra = divmod(left, SHARDS)
        rows.extend(
            {"merchant_id": merchant_id, "item_id": item_id, "shard": k, "remaining": base + (k < extra)}
            for k in range(SHARDS)
        )
    if rows:
        op.bulk_insert(shards, rows)

    with op.batch_alter_table("flash_sale_items", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_flash_sale_items_sold_within_stock"), type_="check")
        batch_op.drop_column("sold")
        batch_op.create_check_constraint(op.f("ck_flash_sale_items_stock_nonneg"), "activity_stock >= 0")

    with op.batch_alter_table("order_lines", schema=None) as batch_op:
        batch_op.add_column(sa.Column("is_virtual", sa.Boolean(), server_default=sa.false(), nullable=False))
        batch_op.create_index(
            "ix_order_lines_order_cover",
            ["merchant_id", "order_id", "product_id", "payable_amount", "refunded_amount"],
            unique=False,
        )
        batch_op.drop_index("ix_order_lines_order")  # the covering index starts with the same columns

    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.create_index(
            "ix_orders_paid_member",
            ["merchant_id", "member_id", "paid_at", "paid_amount", "refunded_amount", "id"],
            unique=False,
            postgresql_where=sa.text(PAID),
            sqlite_where=sa.text(PAID),
        )

    with op.batch_alter_table("products", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("kind", sa.String(length=16), server_default="physical", nullable=False)
        )
        batch_op.create_check_constraint(op.f("ck_products_kind_valid"), "kind IN ('physical', 'virtual')")

    with op.batch_alter_table("withdrawals", schema=None) as batch_op:
        batch_op.add_column(sa.Column("payee_name_enc", sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column("payee_name_masked", sa.String(length=40), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("withdrawals", schema=None) as batch_op:
        batch_op.drop_column("payee_name_masked")
        batch_op.drop_column("payee_name_enc")

    with op.batch_alter_table("products", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_products_kind_valid"), type_="check")
        batch_op.drop_column("kind")

    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.drop_index(
            "ix_orders_paid_member", postgresql_where=sa.text(PAID), sqlite_where=sa.text(PAID)
        )

    with op.batch_alter_table("order_lines", schema=None) as batch_op:
        batch_op.create_index("ix_order_lines_order", ["merchant_id", "order_id"], unique=False)
        batch_op.drop_index("ix_order_lines_order_cover")
        batch_op.drop_column("is_virtual")

    with op.batch_alter_table("flash_sale_items", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_flash_sale_items_stock_nonneg"), type_="check")
        batch_op.add_column(sa.Column("sold", sa.Integer(), nullable=False, server_default="0"))
    op.execute(
        "UPDATE flash_sale_items SET sold = activity_stock - COALESCE((SELECT SUM(s.remaining) "
        "FROM flash_sale_stock_shards s WHERE s.item_id = flash_sale_items.id), 0)"
    )
    with op.batch_alter_table("flash_sale_items", schema=None) as batch_op:
        batch_op.create_check_constraint(
            op.f("ck_flash_sale_items_sold_within_stock"), "sold >= 0 AND sold <= activity_stock"
        )

    with op.batch_alter_table("flash_sale_stock_shards", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_flash_sale_stock_shards_merchant_id"))
    op.drop_table("flash_sale_stock_shards")
