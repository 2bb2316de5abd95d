"""The dialect helpers answer the same on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid

from sqlalchemy import Column, Engine, Integer, MetaData, String, Table, UniqueConstraint
from sqlalchemy.orm import Session

from siyu.db.dialect import insert_ignore


def test_insert_ignore_says_whether_it_inserted(engine: Engine) -> None:
    metadata = MetaData()
    table = Table(
        f"tmp_insert_ignore_{uuid.uuid4().hex[:8]}", metadata,
        Column("id", Integer, primary_key=True, autoincrement=True), Column("k", String(10)), UniqueConstraint("k"),
    )
    metadata.create_all(engine)
    try:
        with Session(engine) as s:
            assert insert_ignore(s, table, {"k": "a"}, ["k"]) is True
            assert insert_ignore(s, table, {"k": "a"}, ["k"]) is False  # PostgreSQL once said True here
            assert insert_ignore(s, table, {"k": "b"}, ["k"]) is True
            s.commit()
            assert len(s.execute(table.select()).all()) == 2
    finally:
        metadata.drop_all(engine)
