"""A short-lived per-process cache of authenticated bearer tokens.

Every API request authenticates, and reading ``auth_tokens`` (plus ``staff`` for a staff token)
was a database round trip per request, even for answers that need nothing else from the
database (a flash-sale refusal). ``service.authenticate`` now asks this cache first.

What is cached: the token's columns (id, merchant, kind, subject, role, expiry), keyed by the
SHA-256 of the token (the plaintext is never kept), per engine (one process may talk to several
databases, e.g. tests), for at most ``TTL_SECONDS``; at most ``MAX_ENTRIES`` entries (oldest
dropped first). Only tokens that were valid when read are cached; expiry is checked on every hit.

Revocation (``kit.local_cache`` does the bookkeeping):

- **In this process: at once.** A session listener marks any transaction that touches
  ``auth_tokens`` or ``staff`` (an ORM change such as ``revoked_at = now``, a staff account
  disabled, or an ORM ``UPDATE auth_tokens ...`` such as the privacy deletion's) and the whole
  cache is dropped when that transaction ends. A read that raced the revocation is not put
  into the cache (``_generation`` changed meanwhile).
- **In other processes (API replicas, workers), with Redis: at once.** The drop is announced on
  Redis and every process drops its cache too (``kit.cache_bus``; measured end to end in
  ``tests/kit/test_cache_bus.py``).
- **Without Redis (or while it is unreachable): within ``TTL_SECONDS``** (30 s). A token revoked
  elsewhere, or by raw SQL outside the ORM, may still be accepted for that long by a process
  that cached it. That is the documented bound; shorten ``TTL_SECONDS`` to tighten it (every
  token is then re-read from the database once per period per process).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy.orm import Session

from siyu.kit.local_cache import LocalCache
from siyu.tenancy.models import AuthToken, Staff

TTL_SECONDS = 30.0
MAX_ENTRIES = 100_000


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

    @classmethod
    def of(cls, token: AuthToken) -> CachedToken:
        return cls(
            id=token.id, merchant_id=token.merchant_id, kind=token.kind, subject_id=token.subject_id,
            role=token.role, name=token.name, expires_at=token.expires_at, created_at=token.created_at,
            created_by=token.created_by,
        )

    def as_token(self, token_hash: str) -> AuthToken:
        """A detached (transient) ``AuthToken`` with the cached columns, for read-only use."""
        return AuthToken(
            id=self.id, merchant_id=self.merchant_id, token_hash=token_hash, kind=self.kind,
            subject_id=self.subject_id, role=self.role, name=self.name, expires_at=self.expires_at,
            revoked_at=None, created_at=self.created_at, created_by=self.created_by,
        )


# A changed or deleted token or staff row (a revocation, a disabled account, the privacy
# deletion's ORM ``UPDATE auth_tokens``) drops the cache; a new token (a login) does not.
CACHE: LocalCache[CachedToken] = LocalCache(
    "tenancy.tokens", ttl=TTL_SECONDS, max_entries=MAX_ENTRIES, watch=(AuthToken, Staff), watch_statements=True
)


def generation() -> int:
    return CACHE.generation()


def get(session: Session, token_hash: str) -> CachedToken | None:
    return CACHE.get(session, token_hash)


def put(session: Session, token_hash: str, token: AuthToken, read_at_generation: int) -> None:
    """Remember a token that was valid when read, unless a revocation committed since the read began."""
    CACHE.put(session, token_hash, CachedToken.of(token), read_at=read_at_generation)


def clear() -> None:
    """Forget every cached token (all engines)."""
    CACHE.clear()


def size() -> int:
    return CACHE.size()
