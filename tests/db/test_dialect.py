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


def test_bulk_update_twice_in_one_transaction_with_other_columns(engine: Engine) -> None:
    from siyu.db.dialect import bulk_update

    metadata = MetaData()
    table = Table(
        f"tmp_bulk_update_{uuid.uuid4().hex[:8]}", metadata,
        Column("id", Integer, primary_key=True), Column("a", Integer), Column("b", Integer),
    )
    metadata.create_all(engine)
    try:
        with Session(engine) as s:
            s.execute(table.insert(), [{"id": 1, "a": 0, "b": 0}, {"id": 2, "a": 0, "b": 0}])
            bulk_update(s, table, ["id"], [{"id": 1, "a": 10}, {"id": 2, "a": 20}])
            bulk_update(s, table, ["id"], [{"id": 1, "b": 11}, {"id": 2, "b": 21}])  # other columns, same table
            s.commit()
            assert sorted(s.execute(table.select()).all()) == [(1, 10, 11), (2, 20, 21)]
    finally:
        metadata.drop_all(engine)
