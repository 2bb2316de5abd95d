"""Writes that ride with the COMMIT: one round trip for a transaction's last statement and its commit.

A conditional decrement of a hot row (a SKU's stock) keeps that row locked until the
transaction ends. Sent as an ordinary statement, the lock also lasts while the API process
gets its answer, is scheduled again (two cores shared by the API processes, PostgreSQL and the
load, and a GIL inside each process) and sends the COMMIT: under 32 clients that gap, not the
server's work, made the lock queue on 20 hot SKUs (29-48 % of the backends' non-idle time).

``defer`` records such a statement; ``commit`` sends it and ``COMMIT`` in one psycopg
pipeline, so the row is locked for the server's own work only. Nobody reads the statement's
result before the commit, so it must *raise* to refuse (a ``CHECK`` constraint: the stock's
``stock >= 0``); the transaction is then rolled back and the statement's ``refused`` callback
turns the database error into the domain's (it may read with the session, in a new transaction).

Every other way a session commits still runs the statements, the ordinary way, just before
the commit (a ``before_commit`` hook), and a rollback drops them: ``defer`` never changes
*what* is committed, only how many round trips the commit takes. PostgreSQL only: on SQLite a
round trip is a function call, and callers write at once (``take_many``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Session

_KEY = "siyu.final_writes"


@dataclass(frozen=True)
class FinalWrite:
    sql: str  # driver style (``%(name)s``)
    params: dict[str, Any]
    refused: Callable[[Session, BaseException], BaseException | None]


def defer(
    session: Session,
    sql: str,
    params: dict[str, Any],
    refused: Callable[[Session, BaseException], BaseException | None],
) -> None:
    """Run ``sql`` (driver parameter style) at this session's next commit, with the COMMIT.

    Not inside a savepoint: a savepoint's rollback could not take back a write not yet sent."""
    if session.in_nested_transaction():
        raise RuntimeError("a final write cannot be deferred inside a savepoint")
    session.connection()  # the transaction it belongs to has begun: its rollback drops the write
    session.info.setdefault(_KEY, []).append(FinalWrite(sql, params, refused))


def pending(session: Session) -> list[FinalWrite]:
    return list(session.info.get(_KEY, ()))


def commit(session: Session) -> None:
    """Commit the session; on PostgreSQL its deferred writes go in the COMMIT's round trip.

    A refused write rolls the whole transaction back and raises what its ``refused`` callback
    returns (or the database error)."""
    writes: list[FinalWrite] = session.info.pop(_KEY, [])
    if not writes:
        session.commit()
        return
    session.flush()  # everything the ORM still holds goes first, inside the transaction
    driver: Any = session.connection().connection.driver_connection  # psycopg.Connection
    try:
        with driver.pipeline():
            for write in writes:
                driver.execute(write.sql, write.params, prepare=False)
            driver.execute("COMMIT")
    except BaseException as exc:
        session.rollback()
        for write in writes:
            translated = write.refused(session, exc)
            if translated is not None:
                session.rollback()  # whatever the callback read
                raise translated from exc
        raise
    # The server's transaction is over (psycopg sends nothing for a commit when idle); this
    # ends the session's and returns the connection to the pool.
    session.commit()


@event.listens_for(Session, "before_commit")
def _run_deferred_writes(session: Session) -> None:
    """A commit that did not go through ``commit``: run the writes as ordinary statements
    (a savepoint's release leaves them for the outer commit)."""
    if session.in_nested_transaction():
        return
    writes: list[FinalWrite] = session.info.pop(_KEY, [])
    if writes:
        session.flush()
        driver: Any = session.connection().connection.driver_connection
        for write in writes:
            driver.execute(write.sql, write.params, prepare=False)


@event.listens_for(Session, "after_transaction_end")
def _drop_deferred_writes(session: Session, transaction: Any) -> None:
    """The outermost transaction ended without running them (a rollback): they are void."""
    if transaction.parent is None:
        session.info.pop(_KEY, None)
