"""The flash-sale gate: who gets one of the N units, never N + 1.

Two interchangeable implementations of one interface::

    gate.try_acquire(merchant_id, item_id, member_id, qty, limit) -> Acquired | Refused(reason)
    gate.release(merchant_id, item_id, member_id, qty)

``reason`` is ``sold_out`` or ``limit_reached``.

**DatabaseGate** (the truth). Conditional updates in the caller's transaction, no read before
the write. The item's unsold units live in ``SHARDS`` stock rows (``flash_sale_stock_shards``),
so concurrent buyers update different rows and the item row is not written by a purchase::

    INSERT INTO flash_sale_member_counters ... ON CONFLICT DO UPDATE        -- the member's count,
       SET bought = bought + :q WHERE bought + :q <= :limit                 -- within the limit
    UPDATE flash_sale_stock_shards SET remaining = remaining - :q           -- the member's own
     WHERE item_id = :id AND shard = member_id % SHARDS AND remaining >= :q -- shard (fast path)

When the member's shard is short, all the item's shards are locked in shard order
(``SELECT ... ORDER BY shard FOR UPDATE``) and the units taken from them together (slow path):
"sold out" is decided only with every shard seen, never while another shard holds units, and a
quantity may span shards. On PostgreSQL (READ COMMITTED) a second updater of a row waits for the
first and re-evaluates the ``WHERE`` on the committed row, so no shard goes below zero (``CHECK
(remaining >= 0)`` backs it up) and the sum never exceeds the stock. SQLite serialises writers
with ``BEGIN IMMEDIATE``. Lock order, the same for everyone: the member's counter, then the item
row (only release, end and stock changes take it), then shards (one, or all in shard order).
The fast path runs in a savepoint, rolled back when it fails: PostgreSQL keeps the lock of a row
whose recheck failed, and holding one shard while locking all in order could deadlock.

Once every shard was seen empty, "sold out" is remembered per process for ``SOLD_OUT_TTL``
(1 s): the crowd that arrives after the last unit costs no statement. A release or added stock
in this process forgets it at once; one committed by another process is seen when the memo
lapses (meanwhile a refusal there is as if the freed unit had been taken by another buyer).
A refusal undoes what this call changed, so ``Refused`` leaves the transaction as it found it.

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
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import redis
from sqlalchemy import Engine, Table, bindparam, case, event, select, update
from sqlalchemy.orm import Session, SessionTransaction

from siyu.db.dialect import insert_or_add_capped, is_postgres
from siyu.flash_sales.models import SHARDS, FlashSaleItem, FlashSaleMemberCounter, FlashSaleStockShard

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


_shards: Table = FlashSaleStockShard.__table__  # type: ignore[assignment]
_items: Table = FlashSaleItem.__table__  # type: ignore[assignment]
_counters: Table = FlashSaleMemberCounter.__table__  # type: ignore[assignment]
_OF_ITEM = (_shards.c.merchant_id == bindparam("m"), _shards.c.item_id == bindparam("i"))
# Core statements built once, run on the session's connection: they run on every attempt, and
# building, cache-keying and ORM-compiling a statement per call cost more client CPU than the
# database spends running it.
_TAKE_OWN_SHARD = (
    update(_shards)
    .where(*_OF_ITEM, _shards.c.shard == bindparam("h"), _shards.c.remaining >= bindparam("q"))
    .values(remaining=_shards.c.remaining - bindparam("q"))
)
_SHARDS_IN_ORDER = select(_shards.c.id, _shards.c.remaining).where(*_OF_ITEM).order_by(_shards.c.shard)
_LOCK_SHARDS = _SHARDS_IN_ORDER.with_for_update()
_TAKE_FROM_SHARD = (
    update(_shards)
    .where(_shards.c.id == bindparam("sid"), _shards.c.remaining >= bindparam("take"))
    .values(remaining=_shards.c.remaining - bindparam("take"))
)
_GIVE_TO_SHARD = (
    update(_shards)
    .where(*_OF_ITEM, _shards.c.shard == bindparam("h"))
    .values(remaining=_shards.c.remaining + bindparam("q"))
)
_UNCOUNT = (
    update(_counters)
    .where(
        _counters.c.merchant_id == bindparam("m"),
        _counters.c.item_id == bindparam("i"),
        _counters.c.member_id == bindparam("u"),
        _counters.c.bought >= bindparam("q"),
    )
    .values(bought=_counters.c.bought - bindparam("q"))
)
_RELEASE_ITEM = (
    update(_items)
    .where(_items.c.merchant_id == bindparam("m"), _items.c.id == bindparam("i"),
           _items.c.activity_stock >= bindparam("q"))
    .values(
        activity_stock=case((_items.c.closed.is_(True), _items.c.activity_stock - bindparam("q")),
                            else_=_items.c.activity_stock),
        returned_stock=case((_items.c.closed.is_(True), _items.c.returned_stock + bindparam("q")),
                            else_=_items.c.returned_stock),
    )
    .returning(_items.c.sku_id, _items.c.closed)
)


_SAVEPOINT = "siyu_fs_own_shard"


def shard_of(member_id: int) -> int:
    """The member's own stock row: spreads concurrent buyers over the item's shards."""
    return member_id % SHARDS


def split_units(units: int) -> list[int]:
    """``units`` over ``SHARDS`` rows, as evenly as possible (the first rows get the rest)."""
    base, extra = divmod(units, SHARDS)
    return [base + (1 if s < extra else 0) for s in range(SHARDS)]


# "Sold out", remembered per process for a moment so the losing crowd costs no statement at all.
# Set only when every shard was seen empty under lock (a committed fact, whatever the observing
# transaction does next); forgotten at once when this process gives units back or adds stock
# (and again when that transaction commits). A release committed by *another* process is seen
# here within SOLD_OUT_TTL seconds at the latest: during that moment an attempt may be refused
# "sold out" for a unit freed elsewhere, as if it had lost the race to it.
SOLD_OUT_TTL = 1.0
# Keyed by database (not by engine): an API's engine and an in-process worker's engine (the demo,
# tests) are two objects for one database, and a release through either must reach the memo.
_SOLD_OUT: dict[str, dict[tuple[int, int], float]] = {}
_DB_KEYS: weakref.WeakKeyDictionary[Engine, str] = weakref.WeakKeyDictionary()


def memo_key(engine: Engine) -> str:
    key = _DB_KEYS.get(engine)
    if key is None:
        key = _DB_KEYS[engine] = engine.url.render_as_string(hide_password=True)
    return key


def _engine(session: Session) -> Engine:
    bind = session.get_bind()
    return bind if isinstance(bind, Engine) else bind.engine


def known_sold_out(session: Session, merchant_id: int, item_id: int) -> bool:
    memo = _SOLD_OUT.get(memo_key(_engine(session)))
    if not memo:
        return False
    until = memo.get((merchant_id, item_id))
    if until is None:
        return False
    if until > time.monotonic():
        return True
    memo.pop((merchant_id, item_id), None)
    return False


def _remember_sold_out(session: Session, merchant_id: int, item_id: int) -> None:
    key = memo_key(_engine(session))
    memo = _SOLD_OUT.get(key)
    if memo is None:
        memo = _SOLD_OUT[key] = {}
    if len(memo) > 10_000:
        memo.clear()
    memo[(merchant_id, item_id)] = time.monotonic() + SOLD_OUT_TTL


def forget_sold_out(session: Session, merchant_id: int, item_id: int) -> None:
    """Units came back (or were added): drop the memo now and when the transaction commits."""
    key = memo_key(_engine(session))

    def forget() -> None:
        memo = _SOLD_OUT.get(key)
        if memo:
            memo.pop((merchant_id, item_id), None)

    forget()
    on_commit(session, forget)


def take_from_all(session: Session, merchant_id: int, item_id: int, qty: int) -> tuple[bool, int]:
    """The slow path: lock every shard of the item in shard order and take ``qty`` units from
    them together; returns (taken, units left in all shards). Deadlock-free with every other
    holder of shard locks: the fast path holds one shard and waits for no other, and all who
    lock several lock them in shard order."""
    conn = session.connection()
    params = {"m": merchant_id, "i": item_id}
    rows = conn.execute(_LOCK_SHARDS if is_postgres(session) else _SHARDS_IN_ORDER, params).all()
    total = sum(int(r[1]) for r in rows)
    if total < qty:
        return False, total
    need = qty
    for sid, remaining in rows:
        take = min(int(remaining), need)
        if take > 0:
            conn.execute(_TAKE_FROM_SHARD, {"sid": sid, "take": take})
            need -= take
        if need == 0:
            break
    return True, total - qty


def add_units(session: Session, merchant_id: int, item_id: int, units: int) -> None:
    """Spread ``units`` over the item's shards (activity stock raised)."""
    conn = session.connection()
    for shard, q in enumerate(split_units(units)):
        if q:
            conn.execute(_GIVE_TO_SHARD, {"m": merchant_id, "i": item_id, "h": shard, "q": q})
    forget_sold_out(session, merchant_id, item_id)


class DatabaseGate:
    """Conditional updates in ``session``'s transaction (the caller commits or rolls back)."""

    def __init__(self, session: Session, *, use_memo: bool = True) -> None:
        """``use_memo=False``: ask the shards even when this process remembers "sold out" (the
        Redis gate just granted the units: a release it saw may not have reached the memo yet)."""
        self.session = session
        self.use_memo = use_memo

    def try_acquire(self, merchant_id: int, item_id: int, member_id: int, qty: int, limit: int) -> Outcome:
        _check_args(qty, limit)
        s = self.session
        if self.use_memo and known_sold_out(s, merchant_id, item_id):
            return Refused(SOLD_OUT)
        if qty > limit:
            return Refused(LIMIT_REACHED)
        # The member's count, inserted or raised within the limit, in one statement.
        counted = insert_or_add_capped(
            s, _counters,
            {"merchant_id": merchant_id, "item_id": item_id, "member_id": member_id, "bought": qty},
            ["item_id", "member_id"], "bought", limit,
        )
        if not counted:
            return Refused(LIMIT_REACHED)
        conn = s.connection()
        params = {"m": merchant_id, "i": item_id, "h": shard_of(member_id), "q": qty}
        postgres = is_postgres(s)
        if postgres:
            # A conditional UPDATE that waited for the row and then found its condition false
            # still holds the row lock to the end of the transaction (PostgreSQL keeps the lock
            # it took to recheck). Holding our own shard while locking all of them in shard order
            # below could deadlock with another slow path: the savepoint gives that lock back.
            conn.exec_driver_sql(f"SAVEPOINT {_SAVEPOINT}")
        taken = conn.execute(_TAKE_OWN_SHARD, params)
        if getattr(taken, "rowcount", 0) == 1:
            return Acquired()  # the savepoint stays (no round trip to release it): harmless
        if postgres:
            conn.exec_driver_sql(f"ROLLBACK TO SAVEPOINT {_SAVEPOINT}")
        # The member's own shard is short: all shards together decide (never a false "sold out"
        # while another shard holds units).
        ok, left = take_from_all(s, merchant_id, item_id, qty)
        if ok:
            return Acquired(remaining=left)
        if left == 0:
            _remember_sold_out(s, merchant_id, item_id)
        # Undo our own count (we hold the member's row lock since our update above).
        conn.execute(_UNCOUNT, {"m": merchant_id, "i": item_id, "u": member_id, "q": qty})
        return Refused(SOLD_OUT)

    def release(self, merchant_id: int, item_id: int, member_id: int, qty: int) -> None:
        self.release_units(merchant_id, item_id, member_id, qty)

    def release_units(self, merchant_id: int, item_id: int, member_id: int, qty: int) -> tuple[int, bool] | None:
        """Give ``qty`` units back; returns ``(sku_id, closed)`` of the item, or None if nothing moved.

        On an item whose activity already ended (``closed``: its unsold stock went back to the
        SKU) the unit leaves the activity too (``activity_stock - q``), and the caller returns
        it to the SKU's normal stock; otherwise it goes into the member's shard.
        """
        if qty <= 0:
            raise ValueError("qty must be positive")
        s = self.session
        conn = s.connection()
        # The member's row first, then the item's (against ``end`` closing it meanwhile), then a
        # shard: the order every acquire, end and stock change takes them in.
        conn.execute(_UNCOUNT, {"m": merchant_id, "i": item_id, "u": member_id, "q": qty})
        row = conn.execute(_RELEASE_ITEM, {"m": merchant_id, "i": item_id, "q": qty}).first()
        if row is None:
            return None
        sku_id, closed = int(row[0]), bool(row[1])
        if not closed:
            conn.execute(_GIVE_TO_SHARD, {"m": merchant_id, "i": item_id, "h": shard_of(member_id), "q": qty})
            forget_sold_out(s, merchant_id, item_id)
        return sku_id, closed


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

    def _evalsha_acquire(self, keys: list[str], member_id: int, qty: int, limit: int) -> int:
        """One ``EVALSHA`` of the acquire script: the whole Redis cost of an attempt.

        Called directly rather than through the registered ``Script`` object (which wraps the
        same ``EVALSHA`` in a few more layers per call); a Redis that lost its scripts (a
        restart) gets the script loaded once and the command sent again."""
        try:
            return int(self.client.evalsha(self._acquire.sha, 2, keys[0], keys[1], member_id, qty, limit))
        except redis.exceptions.NoScriptError:
            self.client.script_load(ACQUIRE_LUA)
            return int(self.client.evalsha(self._acquire.sha, 2, keys[0], keys[1], member_id, qty, limit))

    def try_acquire(self, merchant_id: int, item_id: int, member_id: int, qty: int, limit: int) -> Outcome:
        _check_args(qty, limit)
        keys = self.keys(merchant_id, item_id)
        code = self._evalsha_acquire(keys, member_id, qty, limit)
        if code == NOT_LOADED:
            if self.loader is None:
                raise GateNotLoaded(f"flash-sale item {item_id} is not loaded into Redis")
            remaining, members = self.loader(merchant_id, item_id)
            self.load(merchant_id, item_id, remaining, members)
            code = self._evalsha_acquire(keys, member_id, qty, limit)
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
