"""A short-lived per-process cache of database rows, dropped when this process changes them.

Hot read paths (the bearer token of every request, a flash-sale item on every buy attempt) read
rows that almost never change. ``LocalCache`` keeps such rows in memory for ``ttl`` seconds:

- **per engine**: one process may talk to several databases (tests do), and an entry read from
  one is never answered for another;
- **bounded**: at most ``max_entries``, the oldest dropped first;
- **never stale for this process's own writes**: a session listener marks any transaction that
  changes or deletes an instance of a ``watch``-ed model (or, with ``watch_statements``, runs an
  ORM ``UPDATE``/``DELETE`` on one), and the whole cache is dropped when that transaction ends.
  A read that raced such a change is not stored: ``put`` takes the ``generation()`` read before
  the database was asked and stores nothing if a drop happened since;
- **other processes drop theirs too** when Redis is configured: the drop is announced on a
  Redis channel that every API process and worker listens to (``kit.cache_bus``);
- **stale for at most ``ttl``** for changes made by other processes without Redis (or while it
  is unreachable), or by raw SQL. Callers state what that bound means for them.

Values should be immutable or detached copies: they are shared between threads.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any, Generic, TypeVar

from sqlalchemy import Engine, event
from sqlalchemy.orm import ORMExecuteState, Session, SessionTransaction, UOWTransaction

from siyu.kit import cache_bus

V = TypeVar("V")


def session_engine(session: Session) -> Engine | None:
    """The engine a session is bound to, or None for an unbound session (no caching then)."""
    try:
        bind = session.get_bind()
    except Exception:
        return None
    return bind if isinstance(bind, Engine) else bind.engine


class LocalCache(Generic[V]):
    def __init__(
        self, name: str, *, ttl: float, max_entries: int, watch: tuple[type, ...], watch_statements: bool = False
    ) -> None:
        self.name = name
        self.ttl = ttl
        self.max_entries = max_entries
        self.watch = watch
        self.clock: Callable[[], float] = time.monotonic
        self._dirty_key = f"siyu.local_cache.{name}.dirty"
        self._lock = threading.Lock()
        self._caches: weakref.WeakKeyDictionary[Engine, OrderedDict[Hashable, tuple[float, V]]] = (
            weakref.WeakKeyDictionary()
        )
        self._generation = 0
        self._listeners: list[tuple[str, Callable[..., Any]]] = [
            ("before_flush", self._before_flush), ("after_transaction_end", self._after_transaction_end)
        ]
        if watch_statements:
            self._listeners.append(("do_orm_execute", self._do_orm_execute))
        for name_, fn in self._listeners:
            event.listen(Session, name_, fn)
        cache_bus.register(name, self.clear)

    def close(self) -> None:
        """Stop listening to sessions (for caches that do not live as long as the process)."""
        for name_, fn in self._listeners:
            event.remove(Session, name_, fn)
        self._listeners = []
        cache_bus.unregister(self.name, self.clear)
        self.clear()

    def generation(self) -> int:
        return self._generation

    def get(self, session: Session, key: Hashable) -> V | None:
        """The fresh entry for ``key`` in the session's database, else None (never reads the database)."""
        engine = session_engine(session)
        cache = self._caches.get(engine) if engine is not None else None
        if cache is None:
            return None
        hit = cache.get(key)
        if hit is None:
            return None
        if self.clock() >= hit[0]:
            with self._lock:
                cache.pop(key, None)
            return None
        return hit[1]

    def put(self, session: Session, key: Hashable, value: V, *, read_at: int) -> None:
        """Remember ``value``, read when ``generation()`` was ``read_at``, unless a drop happened since
        or this very transaction changes watched rows (it may still roll back)."""
        engine = session_engine(session)
        if engine is None or session.info.get(self._dirty_key):
            return
        with self._lock:
            if self._generation != read_at:
                return
            cache = self._caches.get(engine)
            if cache is None:
                cache = self._caches[engine] = OrderedDict()
            cache[key] = (self.clock() + self.ttl, value)
            cache.move_to_end(key)
            while len(cache) > self.max_entries:
                cache.popitem(last=False)

    def clear(self) -> None:
        """Forget every entry (all engines); reads in flight will not be stored."""
        with self._lock:
            self._generation += 1
            for cache in self._caches.values():
                cache.clear()

    def size(self) -> int:
        return sum(len(c) for c in self._caches.values())

    # -- invalidation -----------------------------------------------------------------------------

    def _touches(self, objects: Any) -> bool:
        return any(isinstance(obj, self.watch) for obj in objects)

    def _before_flush(self, session: Session, flush_context: UOWTransaction, instances: Any) -> None:
        # New rows need no drop (nothing cached can describe them); changed or deleted ones do.
        if self._touches(session.dirty) or self._touches(session.deleted):
            session.info[self._dirty_key] = True

    def _do_orm_execute(self, state: ORMExecuteState) -> None:
        if not (state.is_update or state.is_delete):
            return
        mapper = state.bind_mapper
        if mapper is not None and issubclass(mapper.class_, self.watch):
            state.session.info[self._dirty_key] = True

    def _after_transaction_end(self, session: Session, transaction: SessionTransaction) -> None:
        # The root transaction ended (committed or rolled back; dropping on a rollback is merely early).
        if transaction.parent is None and session.info.pop(self._dirty_key, False):
            self.clear()
            cache_bus.announce(self.name)
