"""purchase facts on order lines, distributor personal data encrypted, points accounts fillfactor

- order_lines.member_id / bought_at: the order's member and, while the order counts as bought
  (paid, shipped, completed), its payment time; segments' product and category conditions read
  the lines alone through the partial covering index ix_order_lines_bought. Filled here from
  orders with one ``UPDATE ... FROM`` (PostgreSQL, SQLite >= 3.33); afterwards ORM events keep
  them (``audience.purchase_facts``).
- distributors.real_name / phone (plaintext) become real_name_enc / phone_enc (AES-GCM bound to
  the row, key from ``SIYU_SECRET_KEY``) plus masked copies. The data step runs in Python, so
  ``siyu db upgrade`` must run with the production secret key; downgrade decrypts them back.
- points_accounts keeps half of each page free (fillfactor 50, PostgreSQL only): an award's
  balance update stays a HOT update.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05 10:24:31.651834
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import siyu.db.types

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# the statuses that count as bought when this revision was written (orders.models.PAID_STATUSES)
BOUGHT = "('paid', 'shipped', 'completed')"


def _secret_key() -> str:
    from siyu.config import get_settings

    return get_settings().secret_key


def upgrade() -> None:
    with op.batch_alter_table("distributors", schema=None) as batch_op:
        batch_op.add_column(sa.Column("real_name_enc", sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column("real_name_masked", sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column("phone_enc", sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column("phone_masked", sa.String(length=20), nullable=True))

    from siyu.referral.pii import encrypt_plaintext_columns

    encrypt_plaintext_columns(op.get_bind(), _secret_key())

    with op.batch_alter_table("distributors", schema=None) as batch_op:
        batch_op.drop_column("real_name")
        batch_op.drop_column("phone")

    with op.batch_alter_table("order_lines", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("member_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True)
        )
        batch_op.add_column(sa.Column("bought_at", siyu.db.types.UTCDateTime(timezone=True), nullable=True))

    op.execute(
        "UPDATE order_lines SET member_id = orders.member_id, "
        f"bought_at = CASE WHEN orders.status IN {BOUGHT} THEN orders.paid_at END "
        "FROM orders WHERE orders.id = order_lines.order_id AND orders.merchant_id = order_lines.merchant_id"
    )

    with op.batch_alter_table("order_lines", schema=None) as batch_op:
        batch_op.create_index(
            "ix_order_lines_bought",
            [
                "merchant_id",
                "product_id",
                "bought_at",
                "member_id",
                "order_id",
                "payable_amount",
                "refunded_amount",
            ],
            unique=False,
            postgresql_where=sa.text("bought_at IS NOT NULL"),
            sqlite_where=sa.text("bought_at IS NOT NULL"),
        )

    if op.get_context().dialect.name == "postgresql":
        op.execute("ALTER TABLE points_accounts SET (fillfactor = 50)")


def _decrypt_distributors() -> None:
    """Downgrade's data step: the encrypted name and phone back into the plaintext columns."""
    from siyu.kit.crypto import bind
    from siyu.referral.pii import distributor_box

    box = distributor_box(_secret_key())
    d = sa.table(
        "distributors",
        sa.column("id", sa.BigInteger),
        sa.column("merchant_id", sa.BigInteger),
        sa.column("real_name", sa.String),
        sa.column("phone", sa.String),
        sa.column("real_name_enc", sa.String),
        sa.column("phone_enc", sa.String),
    )
    conn = op.get_bind()
    rows = conn.execute(
        sa.select(d.c.id, d.c.merchant_id, d.c.real_name_enc, d.c.phone_enc).where(
            sa.or_(d.c.real_name_enc.is_not(None), d.c.phone_enc.is_not(None))
        )
    ).all()
    for row_id, merchant_id, name_enc, phone_enc in rows:
        values = {
            "real_name": box.decrypt(name_enc, aad=bind("distributors", "real_name_enc", merchant_id, row_id))
            if name_enc
            else None,
            "phone": box.decrypt(phone_enc, aad=bind("distributors", "phone_enc", merchant_id, row_id))
            if phone_enc
            else None,
        }
        conn.execute(sa.update(d).where(d.c.id == row_id).values(values))


def downgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        op.execute("ALTER TABLE points_accounts RESET (fillfactor)")

    with op.batch_alter_table("order_lines", schema=None) as batch_op:
        batch_op.drop_index(
            "ix_order_lines_bought",
            postgresql_where=sa.text("bought_at IS NOT NULL"),
            sqlite_where=sa.text("bought_at IS NOT NULL"),
        )
        batch_op.drop_column("bought_at")
        batch_op.drop_column("member_id")

    with op.batch_alter_table("distributors", schema=None) as batch_op:
        batch_op.add_column(sa.Column("phone", sa.VARCHAR(length=20), nullable=True))
        batch_op.add_column(sa.Column("real_name", sa.VARCHAR(length=32), nullable=True))

    _decrypt_distributors()

    with op.batch_alter_table("distributors", schema=None) as batch_op:
        batch_op.drop_column("phone_masked")
        batch_op.drop_column("phone_enc")
        batch_op.drop_column("real_name_masked")
        batch_op.drop_column("real_name_enc")
