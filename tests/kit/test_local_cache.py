"""``kit.local_cache.LocalCache``: per engine, bounded, expires after its TTL, dropped at once when
this process changes a watched row (ORM change or ORM UPDATE), and a read that raced such a change
is not stored."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, String, create_engine, update
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from siyu.kit.local_cache import LocalCache


class _Base(DeclarativeBase):
    pass


class Thing(_Base):
    __tablename__ = "things"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(20))


class Other(_Base):
    __tablename__ = "others"
    id: Mapped[int] = mapped_column(primary_key=True)


def _engine(path: Path) -> Engine:
    engine = create_engine(f"sqlite:///{path}")
    _Base.metadata.create_all(engine)
    with Session(engine) as s, s.begin():
        s.add_all([Thing(id=1, name="a"), Other(id=1)])
    return engine


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    return _engine(tmp_path / "a.db")


@pytest.fixture
def cache() -> Iterator[LocalCache[str]]:
    c: LocalCache[str] = LocalCache("test", ttl=5.0, max_entries=3, watch=(Thing,), watch_statements=True)
    yield c
    c.close()


def _put(cache: LocalCache[str], engine: Engine, key: int, value: str) -> None:
    with Session(engine) as s:
        cache.put(s, key, value, read_at=cache.generation())


def _get(cache: LocalCache[str], engine: Engine, key: int) -> str | None:
    with Session(engine) as s:
        return cache.get(s, key)


def test_entries_expire_after_the_ttl(cache: LocalCache[str], engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    now = [100.0]
    monkeypatch.setattr(cache, "clock", lambda: now[0])
    _put(cache, engine, 1, "a")
    now[0] += 4.9
    assert _get(cache, engine, 1) == "a"
    now[0] += 0.2
    assert _get(cache, engine, 1) is None
    assert cache.size() == 0


def test_each_engine_has_its_own_entries(cache: LocalCache[str], engine: Engine, tmp_path: Path) -> None:
    other = _engine(tmp_path / "b.db")
    _put(cache, engine, 1, "a")
    assert _get(cache, other, 1) is None
    assert _get(cache, engine, 1) == "a"


def test_the_oldest_entry_goes_first_past_the_bound(cache: LocalCache[str], engine: Engine) -> None:
    for key in range(1, 5):
        _put(cache, engine, key, str(key))
    assert [_get(cache, engine, k) for k in range(1, 5)] == [None, "2", "3", "4"]


def test_a_change_to_a_watched_row_drops_the_cache_when_its_transaction_ends(
    cache: LocalCache[str], engine: Engine
) -> None:
    _put(cache, engine, 1, "a")
    with Session(engine) as s, s.begin():
        s.add(Thing(id=2, name="new"))  # a new row: nothing cached describes it
        s.get_one(Other, 1)
    assert _get(cache, engine, 1) == "a"
    with Session(engine) as s:
        s.get_one(Thing, 1).name = "b"
        s.flush()
        assert _get(cache, engine, 1) == "a"  # not yet: the transaction may still roll back
        cache.put(s, 9, "inside", read_at=cache.generation())  # a read inside that transaction is not kept
        s.commit()
    assert _get(cache, engine, 1) is None
    assert _get(cache, engine, 9) is None


def test_an_orm_update_statement_drops_the_cache(cache: LocalCache[str], engine: Engine) -> None:
    _put(cache, engine, 1, "a")
    with Session(engine) as s, s.begin():
        s.execute(update(Thing).where(Thing.id == 1).values(name="c"))
    assert _get(cache, engine, 1) is None


def test_a_read_that_raced_a_drop_is_not_stored(cache: LocalCache[str], engine: Engine) -> None:
    read_at = cache.generation()
    cache.clear()  # another thread's change committed while this read was in flight
    with Session(engine) as s:
        cache.put(s, 1, "stale", read_at=read_at)
    assert _get(cache, engine, 1) is None
