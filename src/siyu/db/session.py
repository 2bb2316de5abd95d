"""Sessions and the unit of work.

Services never commit. The boundary that owns the work commits once at the end or rolls back
on any error: the request dependency (``siyu.api.deps.db_session``) for HTTP, and
``unit_of_work`` for workers, the CLI and tests.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from siyu.db import final_write


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False, autoflush=True)


@contextmanager
def unit_of_work(factory: sessionmaker[Session]) -> Iterator[Session]:
    """Open a session, commit when the block ends, roll back if it raises."""
    session = factory()
    try:
        yield session
        final_write.commit(session)
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
