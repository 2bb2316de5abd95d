"""activity tag rules

- activity_tag_rules: the tags an activity (coupon template, flash sale, group buy, bargain
  activity, promotion) gives to the members who take part, at a moment (``joined`` | ``paid``);
  one row per (merchant, activity kind, activity id, tag, moment). A new table, nothing to
  backfill; the downgrade drops it.

Written by hand: the generator could not run while 0009 (written at the same time) already
named this revision as its parent.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05 19:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import siyu.db.types

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

BIGID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "activity_tag_rules",
        sa.Column("activity_kind", sa.String(length=20), nullable=False),
        sa.Column("activity_id", BIGID, nullable=False),
        sa.Column("tag_id", BIGID, nullable=False),
        sa.Column("moment", sa.String(length=10), nullable=False),
        sa.Column("id", BIGID, autoincrement=True, nullable=False),
        sa.Column("merchant_id", BIGID, nullable=False),
        sa.Column(
            "created_at",
            siyu.db.types.UTCDateTime(timezone=True),
            server_default=sa.text("(CURRENT_TIMESTAMP)"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            siyu.db.types.UTCDateTime(timezone=True),
            server_default=sa.text("(CURRENT_TIMESTAMP)"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_activity_tag_rules")),
        sa.UniqueConstraint(
            "merchant_id", "activity_kind", "activity_id", "tag_id", "moment", name="uq_activity_tag_rules_rule"
        ),
    )
    with op.batch_alter_table("activity_tag_rules", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_activity_tag_rules_merchant_id"), ["merchant_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("activity_tag_rules", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_activity_tag_rules_merchant_id"))
    op.drop_table("activity_tag_rules")
