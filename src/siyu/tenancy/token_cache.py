"""A short-lived per-process cache of authenticated bearer tokens.

Every API request authenticates, and reading ``auth_tokens`` (plus ``staff`` for a staff token)
was a database round trip per request, even for answers that need nothing else from the
database (a flash-sale refusal). ``service.authenticate`` now asks this cache first.

What is cached: the token's columns (id, merchant, kind, subject, role, expiry), keyed by the
SHA-256 of the token (the plaintext is never kept), per engine (one process may talk to several
databases, e.g. tests), for at most ``TTL_SECONDS``; at most ``MAX_ENTRIES`` entries (oldest
dropped first). Only tokens that were valid when read are cached; expiry is checked on every hit.

Revocation:

- **In this process: at once.** A session listener marks any transaction that touches
  ``auth_tokens`` or ``staff`` (an ORM change such as ``revoked_at = now``, a staff account
  disabled, or an ORM ``UPDATE auth_tokens ...`` such as the privacy deletion's) and the whole
  cache is dropped when that transaction ends. A read that raced the revocation is not put
  into the cache (``_generation`` changed meanwhile).
- **In other processes (API replicas, workers): within ``TTL_SECONDS``** (30 s). A token revoked
  elsewhere, or by raw SQL outside the ORM, may still be accepted for that long by a process
  that cached it. That is the documented bound; shorten ``TTL_SECONDS`` to tighten it (every
  token is then re-read from the database once per period per process).
"""

from __future__ import annotations

import datetime as dt
import threading
import time
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy.orm import ORMExecuteState, Session, SessionTransaction, UOWTransaction

from siyu.tenancy.models import AuthToken, Staff

TTL_SECONDS = 30.0
MAX_ENTRIES = 100_000

_DIRTY = "siyu.tenancy.tokens_dirty"


@dataclass(frozen=True)
class CachedToken:
    id: int
    merchant_id: int
    kind: str
    subject_id: int | None
    role: str | None
    name: str | None
    expires_at: dt.datetime | None
    created_at: dt.datetime
    created_by: int | None
    cached_at: float  # time.monotonic()

    @classmethod
    def of(cls, token: AuthToken) -> CachedToken:
        return cls(
            id=token.id, merchant_id=token.merchant_id, kind=token.kind, subject_id=token.subject_id,
            role=token.role, name=token.name, expires_at=token.expires_at, created_at=token.created_at,
            created_by=token.created_by, cached_at=_clock(),
        )

    def as_token(self, token_hash: str) -> AuthToken:
        """A detached (transient) ``AuthToken`` with the cached columns, for read-only use."""
        return AuthToken(
            id=self.id, merchant_id=self.merchant_id, token_hash=token_hash, kind=self.kind,
            subject_id=self.subject_id, role=self.role, name=self.name, expires_at=self.expires_at,
            revoked_at=None, created_at=self.created_at, created_by=self.created_by,
        )


def _clock() -> float:
    return time.monotonic()


_lock = threading.Lock()
_caches: weakref.WeakKeyDictionary[Engine, OrderedDict[str, CachedToken]] = weakref.WeakKeyDictionary()
_generation = 0


def _engine(session: Session) -> Engine | None:
    try:
        bind = session.get_bind()
    except Exception:  # an unbound session: no cache
        return None
    return bind if isinstance(bind, Engine) else bind.engine


def generation() -> int:
    return _generation


def get(session: Session, token_hash: str) -> CachedToken | None:
    engine = _engine(session)
    if engine is None:
        return None
    cache = _caches.get(engine)
    if cache is None:
        return None
    found = cache.get(token_hash)
    if found is None:
        return None
    if _clock() - found.cached_at >= TTL_SECONDS:
        with _lock:
            cache.pop(token_hash, None)
        return None
    return found


def put(session: Session, token_hash: str, token: AuthToken, read_at_generation: int) -> None:
    """Remember a token that was valid when read, unless a revocation committed since the read began."""
    engine = _engine(session)
    if engine is None or session.info.get(_DIRTY):
        return  # this very transaction changes tokens or staff: it may still roll back
    entry = CachedToken.of(token)
    with _lock:
        if _generation != read_at_generation:
            return
        cache = _caches.get(engine)
        if cache is None:
            cache = _caches[engine] = OrderedDict()
        cache[token_hash] = entry
        while len(cache) > MAX_ENTRIES:
            cache.popitem(last=False)


def clear() -> None:
    """Forget every cached token (all engines)."""
    global _generation
    with _lock:
        _generation += 1
        for cache in _caches.values():
            cache.clear()


def size() -> int:
    return sum(len(c) for c in _caches.values())


# -- invalidation: any committed change to tokens or staff in this process drops the cache ----------


def _touches(objects: Any) -> bool:
    return any(isinstance(obj, (AuthToken, Staff)) for obj in objects)


@event.listens_for(Session, "before_flush")
def _before_flush(session: Session, flush_context: UOWTransaction, instances: Any) -> None:
    # New tokens (a login) need no purge; a changed or deleted token or staff row does.
    if _touches(session.dirty) or _touches(session.deleted):
        session.info[_DIRTY] = True


@event.listens_for(Session, "do_orm_execute")
def _do_orm_execute(state: ORMExecuteState) -> None:
    if not (state.is_update or state.is_delete):
        return
    mapper = state.bind_mapper
    if mapper is not None and mapper.class_ in (AuthToken, Staff):
        state.session.info[_DIRTY] = True


@event.listens_for(Session, "after_transaction_end")
def _after_transaction_end(session: Session, transaction: SessionTransaction) -> None:
    # The root transaction ended (committed or rolled back; clearing on a rollback is merely early).
    if transaction.parent is None and session.info.pop(_DIRTY, False):
        clear()
