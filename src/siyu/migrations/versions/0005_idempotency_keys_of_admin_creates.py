"""idempotency keys of admin creates

- idempotent_requests: one row per admin create made under an ``Idempotency-Key`` header (the
  key, the hash of the request's values, the first answer sealed), unique per merchant, scope
  (route and principal) and key; kept 24 h (``siyu.idempotency``). A new, empty table: nothing to
  fill, and the downgrade only forgets keys (a retry then creates again, as before this revision).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05 14:26:44.891566
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import siyu.db.types

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "idempotent_requests",
        sa.Column("merchant_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("scope", sa.String(length=255), nullable=False),
        sa.Column("key", sa.String(length=120), nullable=False),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("response_enc", sa.Text(), nullable=True),
        sa.Column("created_at", siyu.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_idempotent_requests")),
        sa.UniqueConstraint(
            "merchant_id", "scope", "key", name=op.f("uq_idempotent_requests_merchant_id_scope_key")
        ),
    )
    with op.batch_alter_table("idempotent_requests", schema=None) as batch_op:
        batch_op.create_index(
            "ix_idempotent_requests_merchant_created", ["merchant_id", "created_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("idempotent_requests", schema=None) as batch_op:
        batch_op.drop_index("ix_idempotent_requests_merchant_created")
    op.drop_table("idempotent_requests")
