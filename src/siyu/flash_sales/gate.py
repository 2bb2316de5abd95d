"""The flash-sale gate: who gets one of the N units, never N + 1.

Two interchangeable implementations of one interface::

    gate.try_acquire(merchant_id, item_id, member_id, qty, limit) -> Acquired | Refused(reason)
    gate.release(merchant_id, item_id, member_id, qty)

``reason`` is ``sold_out`` or ``limit_reached``.

**DatabaseGate** (the truth). Two conditional updates in the caller's transaction, no read
before the write::

    INSERT INTO flash_sale_member_counters ... ON CONFLICT DO NOTHING   -- bought = 0
    UPDATE flash_sale_member_counters SET bought = bought + :q
     WHERE merchant_id = :m AND item_id = :id AND member_id = :u AND bought + :q <= :limit
    UPDATE flash_sale_items SET sold = sold + :q
     WHERE merchant_id = :m AND id = :id AND NOT closed AND sold + :q <= activity_stock

On PostgreSQL (READ COMMITTED) a second updater of the same row waits for the first to end and
re-evaluates the ``WHERE`` on the committed row, so the condition is checked against the latest
``sold``: no oversell under any concurrency; ``CHECK (sold <= activity_stock)`` backs it up.
SQLite serialises writers with ``BEGIN IMMEDIATE``. Everyone (acquire and release) takes the
member's own counter row first and the shared item row second, so two transactions never wait
on each other in opposite orders (no deadlock), and a member already at the limit is refused
without touching the hot item row. A refusal undoes what this call changed, so ``Refused``
leaves the transaction as it found it.

**RedisGate** (the bouncer). One Lua script (``register_script``) checks the remaining units
and the member's count and moves both, atomically (Redis runs a script alone)::

    {prefix}:{<merchant>:<item>}:stock     remaining units (string integer)
    {prefix}:{<merchant>:<item>}:members   hash member_id -> units held

(The ``{merchant:item}`` hash tag keeps both keys in one Redis Cluster slot.) It answers from
memory in ~0.1 ms, so the thousands of attempts that are going to lose never touch the
database. The keys are loaded from the database when the activity starts (``load``: idempotent,
``SET`` only if absent, from ``activity_stock - sold`` and the ledger's per-member units), and
lazily by the gate if they are missing (a Redis restart).

**Together** (Redis configured). Redis says yes first, then the database gate runs inside the
order transaction: the database is the truth, Redis only filters. The two can disagree only in
these ways, each handled:

1. *The order transaction fails after Redis said yes* (the DB refused, a later step raised,
   the commit failed). ``on_rollback`` gives the Redis units back when the transaction ends
   without committing (``after_transaction_end`` of the root transaction; cleared on commit).
2. *The process dies between the Lua acquire and the commit* (nothing runs any more). Redis now
   holds fewer units than the database: units are *lost*, never oversold. The periodic job
   ``flash_sales.reconcile`` rewrites Redis from the ledger (``activity_stock - sold`` and the
   per-member units of purchases not released), bringing them back.
3. *A release (cancelled unpaid order) commits in the database but the process dies before
   the Redis release* (it runs ``on_commit``). Same as 2: understated until the reconcile.
4. *Reconcile races an in-flight purchase* (Redis already decremented, DB not yet committed).
   The rewrite counts that unit as still free, so Redis may overstate by the in-flight units
   for one period. Overstating is safe: the extra attempts reach the database gate, which
   refuses them (``sold_out``); the next reconcile converges.

5. *Redis says "limit reached" but the database does not* (a retry of the same buy request is
   still in flight and its unit is counted in Redis; or a stranded unit from case 2). Only
   "sold out" from Redis is final: a "limit reached" is confirmed by the database gate, and
   when the database grants the units Redis counts them too (``mirror``, given back on
   rollback), so the retry replays one order instead of refusing.

So every disagreement is either "Redis is stricter than the truth" (fixed by the next
reconcile, no unit lost for good) or "Redis lets a few more attempts through to the database"
(the database refuses): a unit is never sold twice and never lost permanently. If Redis is
unreachable the gate falls back to the database alone (slower, same answers).
"""

from __future__ import annotations

import copy
import logging
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import redis
from sqlalchemy import Engine, Table, bindparam, case, event, select, update
from sqlalchemy.orm import Session, SessionTransaction

from siyu.db.dialect import insert_or_add_capped
from siyu.flash_sales.models import FlashSaleItem, FlashSaleMemberCounter

log = logging.getLogger("siyu.flash_sales")

SOLD_OUT: Literal["sold_out"] = "sold_out"
LIMIT_REACHED: Literal["limit_reached"] = "limit_reached"
DEFAULT_PREFIX = "siyu:fs"


@dataclass(frozen=True)
class Acquired:
    remaining: int | None = None  # units left after this acquire, when the gate knows it


@dataclass(frozen=True)
class Refused:
    reason: Literal["sold_out", "limit_reached"]
    # Sold out while the member holds units of the item (Redis gate only): a retry of a request
    # that was granted may be among these, so the caller checks its idempotency key.
    holds_units: bool = False


Outcome = Acquired | Refused


class Gate(Protocol):
    def try_acquire(self, merchant_id: int, item_id: int, member_id: int, qty: int, limit: int) -> Outcome: ...

    def release(self, merchant_id: int, item_id: int, member_id: int, qty: int) -> None: ...


def _check_args(qty: int, limit: int) -> None:
    if qty <= 0:
        raise ValueError("qty must be positive")
    if limit <= 0:
        raise ValueError("limit must be positive")


# -- database ---------------------------------------------------------------------------------------


_items: Table = FlashSaleItem.__table__  # type: ignore[assignment]
_ITEM_HAS_UNITS = (
    _items.c.merchant_id == bindparam("m"),
    _items.c.id == bindparam("i"),
    _items.c.closed.is_(False),
    _items.c.sold + bindparam("q") <= _items.c.activity_stock,
)
# Core statements built once, run on the session's connection: they run on every attempt, and
# building, cache-keying and ORM-compiling a statement per call cost more client CPU than the
# database spends running it.
_OPEN_UNITS = select(_items.c.id).where(*_ITEM_HAS_UNITS)
_TAKE_UNITS = update(_items).where(*_ITEM_HAS_UNITS).values(sold=_items.c.sold + bindparam("q"))


class DatabaseGate:
    """Conditional updates in ``session``'s transaction (the caller commits or rolls back)."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def try_acquire(self, merchant_id: int, item_id: int, member_id: int, qty: int, limit: int) -> Outcome:
        _check_args(qty, limit)
        s = self.session
        # A filter, not the guard: a committed read that says "sold out" refuses at once, so the
        # crowd that arrives after the last unit costs one indexed read and no write. The
        # conditional update below is still what decides.
        params = {"m": merchant_id, "i": item_id, "q": qty}
        conn = s.connection()
        open_units = conn.execute(_OPEN_UNITS, params).first()
        if open_units is None:
            return Refused(SOLD_OUT)
        if qty > limit:
            return Refused(LIMIT_REACHED)
        # The member's count, inserted or raised within the limit, in one statement.
        counted = insert_or_add_capped(
            s, FlashSaleMemberCounter.__table__,  # type: ignore[arg-type]
            {"merchant_id": merchant_id, "item_id": item_id, "member_id": member_id, "bought": qty},
            ["item_id", "member_id"], "bought", limit,
        )
        if not counted:
            return Refused(LIMIT_REACHED)
        taken = conn.execute(_TAKE_UNITS, params)
        if getattr(taken, "rowcount", 0) != 1:
            # Undo our own count (we hold the member's row lock since our update above).
            s.execute(
                update(FlashSaleMemberCounter)
                .where(
                    FlashSaleMemberCounter.merchant_id == merchant_id,
                    FlashSaleMemberCounter.item_id == item_id,
                    FlashSaleMemberCounter.member_id == member_id,
                )
                .values(bought=FlashSaleMemberCounter.bought - qty)
                .execution_options(synchronize_session=False)
            )
            return Refused(SOLD_OUT)
        return Acquired()

    def release(self, merchant_id: int, item_id: int, member_id: int, qty: int) -> None:
        self.release_units(merchant_id, item_id, member_id, qty)

    def release_units(self, merchant_id: int, item_id: int, member_id: int, qty: int) -> tuple[int, bool] | None:
        """Give ``qty`` units back; returns ``(sku_id, closed)`` of the item, or None if nothing moved.

        On an item whose activity already ended (``closed``: its unsold stock went back to the
        SKU) the unit leaves the activity too (``activity_stock - q``), and the caller returns
        it to the SKU's normal stock.
        """
        if qty <= 0:
            raise ValueError("qty must be positive")
        s = self.session
        # The member's row first, the item's second: the order every acquire takes them in.
        s.execute(
            update(FlashSaleMemberCounter)
            .where(
                FlashSaleMemberCounter.merchant_id == merchant_id,
                FlashSaleMemberCounter.item_id == item_id,
                FlashSaleMemberCounter.member_id == member_id,
                FlashSaleMemberCounter.bought >= qty,
            )
            .values(bought=FlashSaleMemberCounter.bought - qty)
            .execution_options(synchronize_session=False)
        )
        row = s.execute(
            update(FlashSaleItem)
            .where(
                FlashSaleItem.merchant_id == merchant_id,
                FlashSaleItem.id == item_id,
                FlashSaleItem.sold >= qty,
            )
            .values(
                sold=FlashSaleItem.sold - qty,
                activity_stock=case(
                    (FlashSaleItem.closed.is_(True), FlashSaleItem.activity_stock - qty),
                    else_=FlashSaleItem.activity_stock,
                ),
                returned_stock=case(
                    (FlashSaleItem.closed.is_(True), FlashSaleItem.returned_stock + qty),
                    else_=FlashSaleItem.returned_stock,
                ),
            )
            .returning(FlashSaleItem.sku_id, FlashSaleItem.closed)
            .execution_options(synchronize_session=False)
        ).first()
        if row is None:
            return None
        return int(row[0]), bool(row[1])


# -- redis ------------------------------------------------------------------------------------------

# KEYS[1] stock, KEYS[2] members hash; ARGV: member, qty, limit.
# Returns remaining units (>= 0) on success, -1 not loaded, -2 limit reached, -3 sold out,
# -4 sold out to a member who holds units of the item (a retry of a granted request may be
# among those: the caller looks its order up; everyone else's "sold out" needs no database).
ACQUIRE_LUA = """
local stock = redis.call('GET', KEYS[1])
if not stock then return -1 end
local qty = tonumber(ARGV[2])
local held = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
if held + qty > tonumber(ARGV[3]) then return -2 end
stock = tonumber(stock)
if stock < qty then
  if held > 0 then return -4 end
  return -3
end
redis.call('HINCRBY', KEYS[2], ARGV[1], qty)
return redis.call('DECRBY', KEYS[1], qty)
"""

# Give units back (only onto loaded keys: an absent key is rebuilt from the database anyway).
RELEASE_LUA = """
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local qty = tonumber(ARGV[2])
local held = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
if held <= qty then redis.call('HDEL', KEYS[2], ARGV[1]) else redis.call('HINCRBY', KEYS[2], ARGV[1], -qty) end
return redis.call('INCRBY', KEYS[1], qty)
"""

# ARGV: mode ("nx" load only if absent | "force" overwrite), remaining, then member, units pairs.
LOAD_LUA = """
if ARGV[1] == 'nx' and redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('DEL', KEYS[2])
for i = 3, #ARGV, 2 do redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1]) end
redis.call('SET', KEYS[1], ARGV[2])
return 1
"""

# Count units the database gate granted although Redis had refused them for the member's limit
# (a retry racing its own first try, see ``service.take_units``): Redis mirrors the truth.
MIRROR_LUA = """
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local qty = tonumber(ARGV[2])
redis.call('HINCRBY', KEYS[2], ARGV[1], qty)
return redis.call('DECRBY', KEYS[1], qty)
"""

# Raise or lower the remaining units of a loaded item (activity stock changed by an operator).
ADJUST_LUA = """
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
return redis.call('INCRBY', KEYS[1], ARGV[1])
"""

NOT_LOADED = -1

Snapshot = tuple[int, Mapping[int, int]]  # (remaining units, member_id -> units held)
Loader = Callable[[int, int], Snapshot]


class GateNotLoaded(LookupError):
    pass


class RedisGate:
    """The Lua gate. ``loader(merchant_id, item_id)`` reads the database snapshot when the keys
    are missing (e.g. after a Redis restart); without one a missing key raises ``GateNotLoaded``."""

    def __init__(self, client: redis.Redis, *, prefix: str = DEFAULT_PREFIX, loader: Loader | None = None) -> None:
        self.client = client
        self.prefix = prefix
        self.loader = loader
        self._acquire = client.register_script(ACQUIRE_LUA)
        self._release = client.register_script(RELEASE_LUA)
        self._load = client.register_script(LOAD_LUA)
        self._adjust = client.register_script(ADJUST_LUA)
        self._mirror = client.register_script(MIRROR_LUA)

    def keys(self, merchant_id: int, item_id: int) -> list[str]:
        base = f"{self.prefix}:{{{merchant_id}:{item_id}}}"
        return [f"{base}:stock", f"{base}:members"]

    @staticmethod
    def _outcome(code: int) -> Outcome:
        if code == -2:
            return Refused(LIMIT_REACHED)
        if code == -3:
            return Refused(SOLD_OUT)
        if code == -4:
            return Refused(SOLD_OUT, holds_units=True)
        return Acquired(remaining=code)

    def with_loader(self, loader: Loader | None) -> RedisGate:
        """This gate (its registered scripts) with another loader: no script registration again."""
        other = copy.copy(self)
        other.loader = loader
        return other

    def try_acquire(self, merchant_id: int, item_id: int, member_id: int, qty: int, limit: int) -> Outcome:
        _check_args(qty, limit)
        keys = self.keys(merchant_id, item_id)
        code = int(self._acquire(keys=keys, args=[member_id, qty, limit]))
        if code == NOT_LOADED:
            if self.loader is None:
                raise GateNotLoaded(f"flash-sale item {item_id} is not loaded into Redis")
            remaining, members = self.loader(merchant_id, item_id)
            self.load(merchant_id, item_id, remaining, members)
            code = int(self._acquire(keys=keys, args=[member_id, qty, limit]))
            if code == NOT_LOADED:  # deleted again in between (activity ended): nothing to sell
                return Refused(SOLD_OUT)
        return self._outcome(code)

    def try_acquire_many(self, attempts: Iterable[tuple[int, int, int, int, int]]) -> list[Outcome | None]:
        """Pipelined attempts ``(merchant_id, item_id, member_id, qty, limit)``: one round trip.

        ``None`` marks an attempt on keys that are not loaded (call ``load`` and retry it).
        """
        batch = list(attempts)
        for _, _, _, qty, limit in batch:
            _check_args(qty, limit)

        def run() -> list[Any]:
            # Plain EVALSHA: a script object on a pipeline costs a SCRIPT EXISTS round trip per batch.
            pipe = self.client.pipeline(transaction=False)
            for merchant_id, item_id, member_id, qty, limit in batch:
                pipe.evalsha(self._acquire.sha, 2, *self.keys(merchant_id, item_id), member_id, qty, limit)
            return list(pipe.execute())

        try:
            codes = run()
        except redis.exceptions.NoScriptError:  # Redis restarted: no command of the batch ran
            self.client.script_load(ACQUIRE_LUA)
            codes = run()
        return [None if int(c) == NOT_LOADED else self._outcome(int(c)) for c in codes]

    def release(self, merchant_id: int, item_id: int, member_id: int, qty: int) -> None:
        if qty <= 0:
            raise ValueError("qty must be positive")
        self._release(keys=self.keys(merchant_id, item_id), args=[member_id, qty])

    def mirror(self, merchant_id: int, item_id: int, member_id: int, qty: int) -> None:
        """Count ``qty`` units the database granted, unconditionally (only onto loaded keys)."""
        if qty <= 0:
            raise ValueError("qty must be positive")
        self._mirror(keys=self.keys(merchant_id, item_id), args=[member_id, qty])

    def load(self, merchant_id: int, item_id: int, remaining: int, members: Mapping[int, int], *, force: bool = False) -> bool:
        """Put the database snapshot into Redis; without ``force`` only if absent (idempotent)."""
        args: list[Any] = ["force" if force else "nx", max(0, remaining)]
        for member_id, units in members.items():
            if units > 0:
                args += [member_id, units]
        return bool(self._load(keys=self.keys(merchant_id, item_id), args=args))

    def adjust(self, merchant_id: int, item_id: int, delta: int) -> None:
        if delta:
            self._adjust(keys=self.keys(merchant_id, item_id), args=[delta])

    def clear(self, merchant_id: int, item_id: int) -> None:
        self.client.delete(*self.keys(merchant_id, item_id))

    def remaining(self, merchant_id: int, item_ids: list[int]) -> dict[int, int]:
        """Remaining units of the loaded items (one MGET); absent items are left out."""
        if not item_ids:
            return {}
        values = self.client.mget([self.keys(merchant_id, i)[0] for i in item_ids])
        return {i: int(v) for i, v in zip(item_ids, values, strict=True) if v is not None}

    def snapshot(self, merchant_id: int, item_id: int) -> Snapshot | None:
        stock_key, members_key = self.keys(merchant_id, item_id)
        pipe = self.client.pipeline(transaction=True)
        pipe.get(stock_key)
        pipe.hgetall(members_key)
        stock, members = pipe.execute()
        if stock is None:
            return None
        return int(stock), {int(k): int(v) for k, v in members.items()}


_GATES: weakref.WeakKeyDictionary[redis.Redis, dict[str, RedisGate]] = weakref.WeakKeyDictionary()


def gate_for(client: redis.Redis, prefix: str) -> RedisGate:
    """One ``RedisGate`` (its registered scripts) per client and prefix, reused by every request."""
    by_prefix = _GATES.get(client)
    if by_prefix is None:
        by_prefix = _GATES[client] = {}
    found = by_prefix.get(prefix)
    if found is None:
        found = by_prefix[prefix] = RedisGate(client, prefix=prefix)
    return found


# -- which Redis, and compensation tied to the transaction -----------------------------------------

_SESSION_KEY = "siyu.flash_sales.redis"
_PREFIX_KEY = "siyu.flash_sales.prefix"
_BY_ENGINE: weakref.WeakKeyDictionary[Engine, tuple[redis.Redis | None, str]] = weakref.WeakKeyDictionary()


def use_redis(session: Session, client: redis.Redis | None, *, prefix: str | None = None) -> None:
    """Tell the flash-sale code in this session which Redis to use (None: the database alone)."""
    session.info[_SESSION_KEY] = client
    if prefix is not None:
        session.info[_PREFIX_KEY] = prefix


def bind_engine(engine: Engine, client: redis.Redis | None, *, prefix: str = DEFAULT_PREFIX) -> None:
    """Make ``client`` the Redis of every session on ``engine``. The app does this at startup
    (``endpoints.lifespan``), so ``/checkout/submit`` finds the app's Redis although the orders
    module knows nothing of it."""
    _BY_ENGINE[engine] = (client, prefix)


def unbind_engine(engine: Engine) -> None:
    _BY_ENGINE.pop(engine, None)


def is_bound(engine: Engine) -> bool:
    return engine in _BY_ENGINE


def _engine_binding(session: Session) -> tuple[redis.Redis | None, str] | None:
    bind = session.get_bind()
    engine = bind if isinstance(bind, Engine) else bind.engine
    return _BY_ENGINE.get(engine)


def redis_for(session: Session) -> redis.Redis | None:
    """The session's own choice (``use_redis``), else its engine's binding, else None."""
    if _SESSION_KEY in session.info:
        client: redis.Redis | None = session.info[_SESSION_KEY]
        return client
    binding = _engine_binding(session)
    return binding[0] if binding else None


def prefix_for(session: Session) -> str:
    if _PREFIX_KEY in session.info:
        return str(session.info[_PREFIX_KEY])
    binding = _engine_binding(session)
    return binding[1] if binding else DEFAULT_PREFIX


_ROLLBACK = "siyu.flash_sales.on_rollback"
_COMMIT = "siyu.flash_sales.on_commit"
_LISTENING = "siyu.flash_sales.listening"


def _ensure_listening(session: Session) -> None:
    if session.info.get(_LISTENING):
        return
    session.info[_LISTENING] = True
    event.listen(session, "after_commit", _after_commit)
    event.listen(session, "after_transaction_end", _after_transaction_end)


def _run(callbacks: list[Callable[[], None]], what: str) -> None:
    for fn in callbacks:
        try:
            fn()
        except Exception:  # Redis trouble: the reconcile job repairs it; never break the caller
            log.exception("flash-sale %s callback failed; reconcile will repair Redis", what)


def _after_commit(session: Session) -> None:
    if session.in_nested_transaction():
        return  # a savepoint was released; the outer transaction can still roll back
    session.info.pop(_ROLLBACK, None)
    _run(session.info.pop(_COMMIT, []), "on-commit")


def _after_transaction_end(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is not None:
        return  # a savepoint or subtransaction; only the outermost one decides
    session.info.pop(_COMMIT, None)
    _run(session.info.pop(_ROLLBACK, []), "compensation")


def on_rollback(session: Session, fn: Callable[[], None]) -> None:
    """Run ``fn`` if the session's current transaction ends without committing. A session with no
    transaction yet begins one (no connection until a statement runs), so closing it also counts
    as ending without a commit."""
    _ensure_listening(session)
    if not session.in_transaction():
        session.begin()
    session.info.setdefault(_ROLLBACK, []).append(fn)


def on_commit(session: Session, fn: Callable[[], None]) -> None:
    """Run ``fn`` after the session's current transaction commits (dropped on rollback)."""
    _ensure_listening(session)
    session.info.setdefault(_COMMIT, []).append(fn)
