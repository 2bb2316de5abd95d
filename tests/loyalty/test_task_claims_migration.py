"""Revision 0006 fills ``task_completions`` from the task rewards written before it (points and growth
entries with a ``task:`` key), on SQLite and PostgreSQL: a ref rewarded before the upgrade stays a
duplicate after it."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from alembic.script import ScriptDirectory
from sqlalchemy import Engine, text

from siyu.db.migrate import alembic_config, downgrade, upgrade
from tests.db.test_migrations import _fill, _on_fresh_postgresql, _on_fresh_sqlite

REVISION = "0006"
AT = dt.datetime(2026, 5, 1, 4, 0, tzinfo=dt.UTC)


def _claims_from_rewards(engine: Engine) -> None:
    before = ScriptDirectory.from_config(alembic_config()).get_revision(REVISION).down_revision
    assert isinstance(before, str)
    upgrade(engine, before)
    with engine.begin() as conn:
        _fill(conn, "merchants", id=1, status="active")
        for member in (7, 8):
            _fill(conn, "members", id=member, merchant_id=1)
        points = [  # (id, member, key, at)
            (1, 7, "task:share:7:p1", AT),
            (2, 7, "task:complete_profile:7:profile", AT + dt.timedelta(hours=1)),
            (3, 8, "order:5:earn", AT),  # not a task
            (4, 8, "task:share:8:p1", AT),
        ]
        for entry_id, member, key, at in points:
            _fill(conn, "points_entries", id=entry_id, merchant_id=1, member_id=member, idempotency_key=key,
                  created_at=at, delta=5, balance_after=5, shortfall=0)
        growth = [  # the same report's growth, a growth-only task, an order's growth
            (1, 7, "task:share:7:p1", AT + dt.timedelta(minutes=5)),
            (2, 8, "task:first_review:8:review:3", AT + dt.timedelta(days=1)),
            (3, 7, "order:5:growth", AT),
        ]
        for entry_id, member, key, at in growth:
            _fill(conn, "growth_entries", id=entry_id, merchant_id=1, member_id=member, idempotency_key=key,
                  created_at=at, delta=2)
    upgrade(engine)
    with engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT merchant_id, member_id, idempotency_key FROM task_completions ORDER BY idempotency_key")).all()
        first = conn.execute(text(
            "SELECT created_at FROM task_completions WHERE idempotency_key = 'task:share:7:p1'")).scalar_one()
    assert [tuple(r) for r in rows] == [
        (1, 7, "task:complete_profile:7:profile"),
        (1, 8, "task:first_review:8:review:3"),
        (1, 7, "task:share:7:p1"),
        (1, 8, "task:share:8:p1"),
    ]
    assert str(first).startswith("2026-05-01 04:00:00")  # the report's first entry
    downgrade(engine, before)
    upgrade(engine)  # and up again: filled the same way


def test_0006_fills_task_claims_from_rewards_sqlite(tmp_path: Path) -> None:
    _on_fresh_sqlite(tmp_path, _claims_from_rewards)


def test_0006_fills_task_claims_from_rewards_postgresql() -> None:
    _on_fresh_postgresql("siyu_migrations_0006", _claims_from_rewards)
