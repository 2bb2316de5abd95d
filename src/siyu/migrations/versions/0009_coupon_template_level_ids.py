"""coupon template level ids

- coupon_templates.level_ids: a level-exclusive coupon (等级专属券) names the loyalty levels whose
  members may receive it. Existing rows get ``[]`` (``server_default``): everyone, which is what
  every template meant before this revision, so no template changes who receives it. Batch mode
  for SQLite; the downgrade drops the column.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05 19:11:09.527860
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("coupon_templates", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "level_ids",
                sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
                server_default="[]",
                nullable=False,
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("coupon_templates", schema=None) as batch_op:
        batch_op.drop_column("level_ids")
