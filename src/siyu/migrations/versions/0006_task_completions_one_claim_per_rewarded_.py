"""task completions: one claim per rewarded task report

- task_completions: one row per rewarded task report, its idempotency key
  (``task:<task>:<member>:<ref>``) unique per merchant. ``loyalty.service.complete_task`` inserts
  it before the day's counter moves, so a report with the ref of another one (also a parallel
  one) never takes a slot of the daily cap. Filled here from the task rewards already written
  (points and growth entries with a ``task:`` key), so a ref rewarded before this revision stays
  a duplicate; the downgrade drops the table (the entries keep the history).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05 14:28:37.382837
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import siyu.db.types

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "task_completions",
        sa.Column("merchant_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("member_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("idempotency_key", sa.String(length=120), nullable=False),
        sa.Column("created_at", siyu.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_task_completions")),
        sa.UniqueConstraint(
            "merchant_id", "idempotency_key", name=op.f("uq_task_completions_merchant_id_idempotency_key")
        ),
    )
    op.execute(
        "INSERT INTO task_completions (merchant_id, member_id, idempotency_key, created_at)"
        " SELECT merchant_id, MIN(member_id), idempotency_key, MIN(created_at) FROM ("
        "  SELECT merchant_id, member_id, idempotency_key, created_at FROM points_entries"
        "   WHERE idempotency_key LIKE 'task:%'"
        "  UNION ALL"
        "  SELECT merchant_id, member_id, idempotency_key, created_at FROM growth_entries"
        "   WHERE idempotency_key LIKE 'task:%'"
        " ) AS rewarded GROUP BY merchant_id, idempotency_key"
    )


def downgrade() -> None:
    op.drop_table("task_completions")
