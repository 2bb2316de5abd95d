"""Loyalty points: the ledger of entries, expiring lots and balances.

``award`` / ``spend`` / ``reverse`` / ``adjust`` are what other modules call. Each takes an
``idempotency_key`` (unique per merchant on ``points_entries``): a retried call returns the
first entry and changes nothing. Each runs in a savepoint of the caller's transaction:

1. the account balance moves with one conditional update (``balance >= n`` for a debit), which
   also takes the account's row lock — the member's points mutex for the rest of the
   transaction, so lots are only ever touched by one transaction at a time;
2. the entry is inserted (a concurrent call with the same key fails on the unique index here,
   the savepoint is rolled back and the winner is returned);
3. the lots move: an award opens a lot with the merchant's expiry; a spend takes from the
   soonest-expiring lots first and records each take in ``points_lot_uses``.

On PostgreSQL ``award`` and ``spend`` do all of this in one statement each (``db/ledger.py``:
data-modifying CTEs; a spend that raced another writer of the account takes a second one); the
merchant's rules and zone come from a per-process cache the award statement validates.

Invariant: ``balance == sum(entries.delta) == sum(open lots.remaining)``.

Reversals (``reverse``) undo part or all of an earlier entry, never more than it moved:

- of an earn: points are taken back from the earn's own lot first, then from the
  soonest-expiring lots. **If the member has already spent them, only what is there is
  taken; the balance never goes negative and the entry records the rest as ``shortfall``**
  (the merchant can see it on the statement and settle it by a manual adjustment);
- of a spend: points go back to the lots the spend took them from; a lot that has expired in
  the meantime does not get them back — they go into a new lot with the merchant's expiry
  counted from now.

After a member merge (``merge.merge_members``) the merged member's points live on the kept
member's account, so a reversal of one of its entries (an order placed before the merge and
cancelled or refunded after it) works on the kept member's account: an earn is taken back from
the kept member's soonest-expiring lots, a spend's points come back in new lots of the kept
member with the expiry of the lots they came from (``repo.holder`` finds the kept member).

Expiry runs in the hourly job (``loyalty.hourly``): a lot past its expiry can still be spent
until that job has written its ``expire`` entry (spends take the soonest-expiring lots first,
so they take those). ``points.expiring`` is emitted once per lot, ``notice_days`` before.

Levels live in ``service`` and read the account's ``earned_total``; an award that may lift a
level calls back into them at call time (the one import cycle, kept out of module load).
``earned_total`` counts earning (orders, check-in, tasks, rewards) net of reversals; an
operator's adjustment is a correction and stays out of it unless marked ``counts_as_earned``.
"""

from __future__ import annotations

import datetime as dt
import logging
import weakref
from typing import Any, NamedTuple

from sqlalchemy import inspect
from sqlalchemy.orm import Session, make_transient_to_detached
from sqlalchemy.orm.attributes import instance_state

from siyu.db import ledger
from siyu.db.dialect import insert_ignore_many, is_postgres
from siyu.kit import audit
from siyu.kit.errors import DomainError, register_messages
from siyu.kit.events import emit, subscribers
from siyu.kit.timeutil import utcnow
from siyu.loyalty import repository as repo
from siyu.loyalty.models import (
    ADJUST,
    EARN,
    EXPIRE,
    REVERSE,
    SPEND,
    LoyaltySettings,
    PointsAccount,
    PointsEntry,
    PointsLot,
    PointsLotUse,
)
from siyu.loyalty.rules import expiry_for, get_rules, merchant_tz
from siyu.loyalty.schemas import LoyaltyRules, PointsOut

log = logging.getLogger(__name__)

register_messages(
    {
        "points_invalid": (422, "积分数量必须大于 0", "Points must be greater than 0"),
        "points_insufficient": (
            409, "积分不足（当前 {balance}，需要 {needed}）", "Not enough points (balance {balance}, needed {needed})"
        ),
        "points_key_reused": (
            409, "该幂等键已用于另一位会员的积分操作", "This idempotency key was used for another member's points"
        ),
    }
)

Actor = tuple[str, int | None]
EXPIRY_BATCH = 500
LOT_BATCH = 50


def _evaluate_level(session: Session, merchant_id: int, member_id: int, now: dt.datetime | None = None) -> None:
    from siyu.loyalty.service import evaluate_level

    evaluate_level(session, merchant_id, member_id, now)


def _ladder_uses(session: Session, merchant_id: int, threshold: str) -> bool:
    from siyu.loyalty.service import _ladder_uses as uses

    return uses(session, merchant_id, threshold)


def _replay(found: PointsEntry, member_id: int) -> PointsEntry:
    if found.member_id != member_id:
        raise DomainError("points_key_reused")
    return found


def _check_points(points: int) -> None:
    if not isinstance(points, int) or isinstance(points, bool) or points <= 0:
        raise DomainError("points_invalid")


def _new_entry(
    session: Session, merchant_id: int, member_id: int, delta: int, kind: str, reason: str, ref: str | None, key: str,
    balance: int, now: dt.datetime,
) -> PointsEntry | None:
    """Insert the ledger row unless the key exists (``ON CONFLICT DO NOTHING``); None on a conflict."""
    values: dict[str, Any] = {
        "merchant_id": merchant_id, "member_id": member_id, "delta": delta, "kind": kind, "reason": reason[:64],
        "ref": ref, "idempotency_key": key, "balance_after": balance, "shortfall": 0, "reverses_entry_id": None,
        "created_at": now,
    }
    ids = insert_ignore_many(
        session, PointsEntry.__table__, [values], ["merchant_id", "idempotency_key"], "id"  # type: ignore[arg-type]
    )
    if not ids:
        return None
    return _persistent_entry(session, ids[0], values)  # the row is written: no re-read


def _winner(session: Session, merchant_id: int, member_id: int, key: str) -> PointsEntry:
    found = repo.entry_by_key(session, merchant_id, key)
    assert found is not None, "a conflicting key must have a committed entry"
    return _replay(found, member_id)


def award(
    session: Session,
    merchant_id: int,
    member_id: int,
    points: int,
    *,
    reason: str,
    ref: str | None = None,
    idempotency_key: str,
    kind: str = EARN,
    now: dt.datetime | None = None,
    expires_at: dt.datetime | bool | None = True,
    counts_as_earned: bool = True,
) -> PointsEntry:
    """Add points in a new lot (expiry per the merchant's rules unless ``expires_at`` is given).

    ``counts_as_earned=False`` (an operator's correction, see ``adjust``) moves the balance but not
    the account's ``earned_total``, the "points earned" that the ``min_points`` level rule reads.

    The balance moves first (conditional update, row lock), then the entry is inserted with
    ``ON CONFLICT DO NOTHING``; if the key already exists (a retry, or a concurrent one that
    committed first) the credit is taken back in the same transaction and the first entry is
    returned. PostgreSQL: one statement (``db.ledger.award_points``) in the common case, the
    rules and zone from a per-process cache that the statement itself validates; elsewhere
    four statements.
    """
    _check_points(points)
    now = now or utcnow()
    earned = points if counts_as_earned else 0
    fast = _award_one_statement(session, merchant_id, member_id, points, earned=earned, reason=reason, ref=ref,
                                key=idempotency_key, kind=kind, now=now, expires_at=expires_at)
    if fast is not None:
        return fast
    if expires_at is True:
        expires = expiry_for(get_rules(session, merchant_id), merchant_tz(session, merchant_id), now)
    else:
        expires = expires_at if isinstance(expires_at, dt.datetime) else None
    balance = repo.credit(session, merchant_id, member_id, points, earned=earned)
    entry = _new_entry(session, merchant_id, member_id, points, kind, reason, ref, idempotency_key, balance, now)
    if entry is None:
        back = repo.debit(session, merchant_id, member_id, points, unearned=earned)
        assert back is not None  # we hold the row lock and just added them
        return _winner(session, merchant_id, member_id, idempotency_key)
    session.add(PointsLot(
        merchant_id=merchant_id, member_id=member_id, entry_id=entry.id, points=points, remaining=points,
        expires_at=expires, created_at=now,
    ))
    session.flush()
    _emit_points(session, merchant_id, "points.earned", entry, points)
    if earned and _ladder_uses(session, merchant_id, "min_points"):
        _evaluate_level(session, merchant_id, member_id, now)
    return entry


class _ExpiryInputs(NamedTuple):
    version: dt.datetime | None  # loyalty_settings.updated_at the rules were read with
    tz: str | None
    rules: LoyaltyRules


# engine -> merchant id -> the rules and zone last read in this process. Never trusted blindly:
# the award statement returns the current settings version and zone, and an award that finds
# them changed re-reads them and corrects its lot's expiry in the same transaction. Keyed by the
# engine object (weakly: a disposed engine's entries go with it), not its URL: hashing a URL
# renders and quotes it: some 20 of the ~650 Python calls of an award.
_EXPIRY_CACHE: weakref.WeakKeyDictionary[Any, dict[int, _ExpiryInputs]] = weakref.WeakKeyDictionary()


def _load_expiry_inputs(session: Session, merchant_id: int, per_engine: dict[int, _ExpiryInputs]) -> _ExpiryInputs:
    from sqlalchemy import select

    from siyu.tenancy.models import Merchant

    row = session.execute(
        select(LoyaltySettings.updated_at, LoyaltySettings.rules).where(LoyaltySettings.merchant_id == merchant_id)
    ).first()
    tz = session.scalar(select(Merchant.timezone).where(Merchant.id == merchant_id))
    if tz is None:
        merchant_tz(session, merchant_id)  # no such merchant: the same 404 as everywhere else
    rules = LoyaltyRules.model_validate(row[1]) if row is not None else LoyaltyRules()
    found = per_engine[merchant_id] = _ExpiryInputs(row[0] if row is not None else None, tz, rules)
    return found


def _award_one_statement(
    session: Session, merchant_id: int, member_id: int, points: int, *, earned: int, reason: str, ref: str | None,
    key: str, kind: str, now: dt.datetime, expires_at: dt.datetime | bool | None,
) -> PointsEntry | None:
    """The PostgreSQL award (see ``db.ledger``); None on another database."""
    bind = session.get_bind().engine
    per_engine = _EXPIRY_CACHE.get(bind)
    if per_engine is None:
        per_engine = _EXPIRY_CACHE.setdefault(bind, {})
    inputs = per_engine.get(merchant_id)
    if expires_at is True:
        if inputs is None:
            if not is_postgres(session):
                return None
            inputs = _load_expiry_inputs(session, merchant_id, per_engine)
        expires = expiry_for(inputs.rules, inputs.tz or "UTC", now)
    else:
        expires = expires_at if isinstance(expires_at, dt.datetime) else None
    done = ledger.award_points(
        session, merchant_id=merchant_id, member_id=member_id, points=points, earned=earned, kind=kind,
        reason=reason[:64], ref=ref, key=key, expires_at=expires, now=now,
    )
    if done is None:
        return None
    _forget_account(session, done.account_id)
    if done.entry_id is None:  # the key exists: take the credit back, return the first entry
        back = repo.debit(session, merchant_id, member_id, points, unearned=earned)
        assert back is not None  # we hold the row lock and just added them
        return _winner(session, merchant_id, member_id, key)
    if inputs is None or (done.rules_version, done.timezone) != (inputs.version, inputs.tz):
        fresh = _load_expiry_inputs(session, merchant_id, per_engine)
        if expires_at is True:
            right = expiry_for(fresh.rules, fresh.tz or "UTC", now)
            if right != expires:
                repo.set_lot_expiry(session, merchant_id, done.entry_id, right)
    entry = _persistent_entry(session, done.entry_id, {
        "merchant_id": merchant_id, "member_id": member_id, "delta": points, "kind": kind, "reason": reason[:64],
        "ref": ref, "idempotency_key": key, "balance_after": done.balance, "shortfall": 0, "reverses_entry_id": None,
        "created_at": now,
    })
    _emit_points(session, merchant_id, "points.earned", entry, points)
    if earned and done.ladder_uses_points:
        _evaluate_level(session, merchant_id, member_id, now)
    return entry


_ENTRY_MANAGER = inspect(PointsEntry).class_manager


def _persistent_entry(session: Session, entry_id: int, values: dict[str, Any]) -> PointsEntry:
    """The entry just written, attached to the session as persistent (no re-read).

    Built from the values as a loaded row is (the instance's dict filled directly), not through
    ``PointsEntry(...)``: the constructor fires an attribute event per column and records each
    as a pending change that ``make_transient_to_detached`` then discards — a sixth of an
    award's Python time for nothing."""
    entry: PointsEntry = _ENTRY_MANAGER.new_instance()
    state = instance_state(entry)
    state.dict.update(values)
    state.dict["id"] = entry_id
    make_transient_to_detached(entry)
    session.add(entry)
    return entry


def _forget_account(session: Session, account_id: int) -> None:
    """A statement outside the ORM moved the account: drop a loaded copy's stale values."""
    if not session.identity_map:  # nothing loaded (the hot path): skip building the identity key
        return
    loaded = session.identity_map.get(session.identity_key(PointsAccount, (account_id,)))
    if loaded is not None:
        session.expire(loaded)


def _emit_points(session: Session, merchant_id: int, event: str, entry: PointsEntry, points: int) -> None:
    if subscribers(event):
        emit(session, merchant_id, event,
             {"member_id": entry.member_id, "entry_id": entry.id, "points": points, "reason": entry.reason,
              "ref": entry.ref, "balance": entry.balance_after}, key=f"entry:{entry.id}")


def _take_from_lots(
    session: Session, merchant_id: int, member_id: int, entry_id: int, points: int, first_lot: PointsLot | None = None
) -> int:
    """Take ``points`` from the member's open lots (``first_lot`` first, then soonest expiry); returns what was taken."""
    left = points

    def take_from(lt: PointsLot) -> None:
        nonlocal left
        take = min(left, lt.remaining)
        if take > 0:
            lt.remaining -= take
            session.add(PointsLotUse(merchant_id=merchant_id, entry_id=entry_id, lot_id=lt.id, points=take,
                                     returned=0))
            left -= take

    if first_lot is not None:
        session.refresh(first_lot)
        if first_lot.expired_at is None:
            take_from(first_lot)
            session.flush()
    # Soonest-expiring lots in batches: a member with thousands of open lots loads only what
    # this take needs (lots emptied by a batch drop out of the next query).
    while left > 0:
        batch = repo.open_lots(session, merchant_id, member_id, limit=LOT_BATCH)
        for lt in batch:
            if left <= 0:
                break
            take_from(lt)
        session.flush()
        if len(batch) < LOT_BATCH:
            break
    if left:
        log.warning("points lots short by %s for member %s (entry %s)", left, member_id, entry_id)
    return points - left


def spend(
    session: Session,
    merchant_id: int,
    member_id: int,
    points: int,
    *,
    reason: str,
    ref: str | None = None,
    idempotency_key: str,
    kind: str = SPEND,
    now: dt.datetime | None = None,
) -> PointsEntry:
    """Take points (soonest-expiring lots first); ``points_insufficient`` when the balance is short.

    The conditional debit (``balance >= n``) comes first, so a refusal writes nothing; a key
    that already exists gives the points back in the same transaction and returns the first
    entry (also when the retry finds the balance already too low: the first spend took it).
    PostgreSQL: one statement when no other transaction changed the account since it started
    (``db.ledger.spend_points_at_once``), else the debit and then one statement for the lots.
    """
    _check_points(points)
    now = now or utcnow()
    at_once = ledger.spend_points_at_once(
        session, merchant_id=merchant_id, member_id=member_id, points=points, spent=points if kind == SPEND else 0,
        kind=kind, reason=reason[:64], ref=ref, key=idempotency_key, now=now,
    )
    if at_once is not None and at_once.account_id is not None:  # PostgreSQL, uncontended: one statement
        _forget_account(session, at_once.account_id)
        if at_once.entry_id is None:  # the key exists: give the points back, return the first entry
            repo.credit(session, merchant_id, member_id, points, earned=0, unspent=points if kind == SPEND else 0)
            return _winner(session, merchant_id, member_id, idempotency_key)
        return _spent(session, merchant_id, member_id, points, at_once.entry_id, at_once.balance or 0, at_once.taken,
                      kind=kind, reason=reason, ref=ref, key=idempotency_key, now=now)
    balance = repo.debit(session, merchant_id, member_id, points, spent=points if kind == SPEND else 0)
    if balance is None:
        found = repo.entry_by_key(session, merchant_id, idempotency_key)
        if found is not None:
            return _replay(found, member_id)
        acct = repo.account(session, merchant_id, member_id)
        raise DomainError("points_insufficient", balance=acct.balance if acct else 0, needed=points)
    done = ledger.spend_points(
        session, merchant_id=merchant_id, member_id=member_id, points=points, kind=kind, reason=reason[:64], ref=ref,
        key=idempotency_key, balance=balance, now=now,
    )
    if done is None:  # not PostgreSQL: the portable statements
        entry = _new_entry(session, merchant_id, member_id, -points, kind, reason, ref, idempotency_key, balance, now)
        if entry is not None:
            _take_from_lots(session, merchant_id, member_id, entry.id, points)
    elif done.entry_id is None:
        entry = None
    else:
        return _spent(session, merchant_id, member_id, points, done.entry_id, balance, done.taken, kind=kind,
                      reason=reason, ref=ref, key=idempotency_key, now=now)
    if entry is None:
        repo.credit(session, merchant_id, member_id, points, earned=0, unspent=points if kind == SPEND else 0)
        return _winner(session, merchant_id, member_id, idempotency_key)
    _emit_points(session, merchant_id, "points.spent", entry, points)
    return entry


def _spent(
    session: Session, merchant_id: int, member_id: int, points: int, entry_id: int, balance: int, taken: int, *,
    kind: str, reason: str, ref: str | None, key: str, now: dt.datetime,
) -> PointsEntry:
    """The entry a PostgreSQL spend statement wrote, as a persistent instance; ``points.spent``."""
    entry = _persistent_entry(session, entry_id, {
        "merchant_id": merchant_id, "member_id": member_id, "delta": -points, "kind": kind, "reason": reason[:64],
        "ref": ref, "idempotency_key": key, "balance_after": balance, "shortfall": 0, "reverses_entry_id": None,
        "created_at": now,
    })
    if taken != points:
        log.warning("points lots short by %s for member %s (entry %s)", points - taken, member_id, entry_id)
    _emit_points(session, merchant_id, "points.spent", entry, points)
    return entry


def _reversed_so_far(session: Session, merchant_id: int, original: PointsEntry) -> int:
    from sqlalchemy import func, select

    row = session.execute(
        select(func.coalesce(func.sum(PointsEntry.delta), 0), func.coalesce(func.sum(PointsEntry.shortfall), 0)).where(
            PointsEntry.merchant_id == merchant_id, PointsEntry.reverses_entry_id == original.id
        )
    ).one()
    return abs(int(row[0])) + int(row[1])


def reverse(
    session: Session,
    merchant_id: int,
    original_key: str,
    points: int | None = None,
    *,
    reason: str,
    ref: str | None = None,
    idempotency_key: str,
    now: dt.datetime | None = None,
) -> PointsEntry | None:
    """Undo ``points`` (default: all that is left) of the entry with ``original_key``.

    Returns the reversal entry, or None when there is nothing (left) to reverse.
    """
    existing = repo.entry_by_key(session, merchant_id, idempotency_key)
    if existing is not None:
        return existing
    original = repo.entry_by_key(session, merchant_id, original_key)
    if original is None or original.delta == 0:
        return None
    now = now or utcnow()
    member_id = repo.holder(session, merchant_id, original.member_id)  # merged: the kept member
    repo.lock_account(session, merchant_id, member_id)  # the member's points mutex, before reading lots
    kept = repo.holder(session, merchant_id, member_id)
    if kept != member_id:  # a merge (which locks both accounts) committed while this waited
        member_id = kept
        repo.lock_account(session, merchant_id, member_id)
    left = abs(original.delta) - _reversed_so_far(session, merchant_id, original)
    wanted = left if points is None else min(points, left)
    if wanted <= 0:
        return None
    with session.begin_nested():
        if original.delta > 0:
            entry = _reverse_earn(session, merchant_id, member_id, original, wanted, reason, ref, idempotency_key, now)
        else:
            entry = _reverse_spend(session, merchant_id, member_id, original, wanted, reason, ref, idempotency_key,
                                   now)
    return entry


def _reverse_earn(
    session: Session, merchant_id: int, member_id: int, original: PointsEntry, wanted: int, reason: str,
    ref: str | None, key: str, now: dt.datetime,
) -> PointsEntry:
    acct = repo.lock_account(session, merchant_id, member_id)
    take = min(wanted, acct.balance)
    balance = acct.balance
    if take:
        new = repo.debit(session, merchant_id, member_id, take, unearned=take)
        assert new is not None  # the row is locked and covers it
        balance = new
    entry = PointsEntry(
        merchant_id=merchant_id, member_id=member_id, delta=-take, kind=REVERSE, reason=reason[:64], ref=ref,
        idempotency_key=key, balance_after=balance, shortfall=wanted - take, reverses_entry_id=original.id,
        created_at=now,
    )
    session.add(entry)
    session.flush()
    if take:
        own = repo.lot_of_entry(session, merchant_id, original.id)  # after a merge: another member's, empty
        _take_from_lots(session, merchant_id, member_id, entry.id, take,
                        first_lot=own if own is not None and own.member_id == member_id else None)
    return entry


def _reverse_spend(
    session: Session, merchant_id: int, member_id: int, original: PointsEntry, wanted: int, reason: str,
    ref: str | None, key: str, now: dt.datetime,
) -> PointsEntry:
    balance = repo.credit(session, merchant_id, member_id, wanted, earned=0,
                          unspent=wanted if original.kind == SPEND else 0)
    entry = PointsEntry(
        merchant_id=merchant_id, member_id=member_id, delta=wanted, kind=REVERSE, reason=reason[:64], ref=ref,
        idempotency_key=key, balance_after=balance, shortfall=0, reverses_entry_id=original.id, created_at=now,
    )
    session.add(entry)
    session.flush()
    left = wanted
    orphan = 0
    moved: dict[dt.datetime | None, int] = {}  # lots of a member merged since: back as new lots, same expiry
    for use in repo.lot_uses(session, merchant_id, original.id):
        if left <= 0:
            break
        back = min(left, use.points - use.returned)
        if back <= 0:
            continue
        use.returned += back
        left -= back
        lt = repo.lot(session, merchant_id, use.lot_id)
        if lt is not None and lt.expired_at is None and (lt.expires_at is None or lt.expires_at > now):
            if lt.member_id == member_id:
                lt.remaining += back
            else:
                moved[lt.expires_at] = moved.get(lt.expires_at, 0) + back
        else:
            orphan += back
    orphan += left
    for expires_at, back in moved.items():
        session.add(PointsLot(merchant_id=merchant_id, member_id=member_id, entry_id=entry.id, points=back,
                              remaining=back, expires_at=expires_at, created_at=now))
    if orphan:
        session.add(PointsLot(
            merchant_id=merchant_id, member_id=member_id, entry_id=entry.id, points=orphan, remaining=orphan,
            expires_at=expiry_for(get_rules(session, merchant_id), merchant_tz(session, merchant_id), now),
            created_at=now,
        ))
    session.flush()
    return entry


# ``ref`` of an adjustment's entry: a correction, or (``counts_as_earned``) points earned by hand
ADJUST_REF = "manual"
ADJUST_EARNED_REF = "manual:earned"


def adjust(
    session: Session, merchant_id: int, member_id: int, points: int, *, reason: str, idempotency_key: str, actor: Actor,
    counts_as_earned: bool = False,
) -> PointsEntry:
    """Manual adjustment by an operator (positive adds a lot, negative takes; never below zero).

    An adjustment is a correction, not earning: it moves the balance and the ledger but not the
    account's ``earned_total`` (the ``min_points`` level rule), unless the operator marks a
    positive one ``counts_as_earned`` (its entry's ref is then ``manual:earned``, else
    ``manual``). A key already used returns its entry and records nothing more (no second audit
    event, also when a concurrent twin committed it first: its entry is the only one not stamped
    ``now``)."""
    if counts_as_earned and points < 0:
        raise DomainError("points_invalid")  # the API refuses it first (AdjustIn, a field error)
    check_member(session, merchant_id, member_id)
    key = f"adjust:{idempotency_key}"
    now = utcnow()
    if points > 0:
        entry = award(session, merchant_id, member_id, points, reason=reason,
                      ref=ADJUST_EARNED_REF if counts_as_earned else ADJUST_REF, idempotency_key=key, kind=ADJUST,
                      now=now, counts_as_earned=counts_as_earned)
    else:
        entry = spend(session, merchant_id, member_id, -points, reason=reason, ref=ADJUST_REF, idempotency_key=key,
                      kind=ADJUST, now=now)
    if entry.created_at != now:
        return entry
    audit.record(session, merchant_id, "member", member_id, "points_adjusted", actor=actor,
                 data={"points": points, "reason": reason, "entry_id": entry.id, "counts_as_earned": counts_as_earned})
    if counts_as_earned:
        _evaluate_level(session, merchant_id, member_id)
    return entry


def adjust_once(
    session: Session, merchant_id: int, member_id: int, points: int, *, reason: str, idempotency_key: str | None,
    actor: Actor, counts_as_earned: bool = False,
) -> tuple[PointsEntry, bool]:
    """The admin API's manual adjustment: ``adjust`` keyed by the client's ``Idempotency-Key``
    (required, at most 80 characters, as the checkout submit's), returning ``(entry, created)``.

    A retry (same key, same member, points and reason) returns the first entry and writes
    nothing else (no second audit event); the same key with another member, amount or reason is
    409 ``idempotency_key_reused`` (what checkout answers), never the first entry in disguise;
    so is the same key with the other ``counts_as_earned``."""
    from siyu.orders.checkout import check_idempotency_key

    key = check_idempotency_key(idempotency_key)
    found = repo.entry_by_key(session, merchant_id, f"adjust:{key}")
    if found is not None:
        return _same_adjustment(found, member_id, points, reason, counts_as_earned), False
    entry = adjust(session, merchant_id, member_id, points, reason=reason, idempotency_key=key, actor=actor,
                   counts_as_earned=counts_as_earned)
    return _same_adjustment(entry, member_id, points, reason, counts_as_earned), True


def _same_adjustment(
    entry: PointsEntry, member_id: int, points: int, reason: str, counts_as_earned: bool
) -> PointsEntry:
    ref = ADJUST_EARNED_REF if counts_as_earned else ADJUST_REF
    if (entry.member_id, entry.kind, entry.delta, entry.reason, entry.ref) != (
        member_id, ADJUST, points, reason[:64], ref
    ):
        raise DomainError("idempotency_key_reused")
    return entry


def check_member(session: Session, merchant_id: int, member_id: int) -> None:
    from siyu.members.service import get_member

    get_member(session, merchant_id, member_id)  # 404 for another merchant's member


def expire_due(session: Session, merchant_id: int, now: dt.datetime) -> int:
    """Write an ``expire`` entry for every lot past its expiry with points left. Returns lots expired."""
    done = 0
    for due in repo.due_lots(session, merchant_id, now, EXPIRY_BATCH):
        key = f"lot:{due.id}:expire"
        if repo.entry_by_key(session, merchant_id, key) is not None:
            continue
        acct = repo.lock_account(session, merchant_id, due.member_id)
        lt = repo.lot(session, merchant_id, due.id)
        assert lt is not None
        session.refresh(lt)
        if lt.remaining <= 0 or lt.expired_at is not None:
            continue
        take = min(lt.remaining, acct.balance)
        balance = acct.balance
        if take:
            new = repo.debit(session, merchant_id, lt.member_id, take)
            assert new is not None
            balance = new
        entry = PointsEntry(
            merchant_id=merchant_id, member_id=lt.member_id, delta=-take, kind=EXPIRE, reason="expired",
            ref=f"lot:{lt.id}", idempotency_key=key, balance_after=balance, shortfall=0, created_at=now,
        )
        session.add(entry)
        session.flush()
        if take:
            session.add(PointsLotUse(merchant_id=merchant_id, entry_id=entry.id, lot_id=lt.id, points=take, returned=0))
        lt.remaining = 0
        lt.expired_at = now
        session.flush()
        done += 1
    return done


def notify_expiring(session: Session, merchant_id: int, now: dt.datetime) -> int:
    """Emit ``points.expiring`` once per lot, ``notice_days`` before its expiry."""
    rules = get_rules(session, merchant_id)
    if rules.expiry.mode == "never":
        return 0
    sent = 0
    for lt in repo.lots_to_notify(session, merchant_id, now + dt.timedelta(days=rules.expiry.notice_days)):
        if repo.mark_notified(session, merchant_id, lt.id, now):
            emit(session, merchant_id, "points.expiring",
                 {"member_id": lt.member_id, "lot_id": lt.id, "points": lt.remaining,
                  "expires_at": lt.expires_at.isoformat() if lt.expires_at else None},
                 key=f"lot:{lt.id}")
            sent += 1
    return sent


def statement(
    session: Session, merchant_id: int, member_id: int, *, before: int | None = None, limit: int = 20
) -> tuple[list[PointsEntry], int | None]:
    rows = repo.statement(session, merchant_id, member_id, before=before, limit=limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (rows[-1].id if more and rows else None)


def points_summary(session: Session, merchant_id: int, member_id: int, now: dt.datetime | None = None) -> PointsOut:
    now = now or utcnow()
    acct = repo.account(session, merchant_id, member_id)
    notice = get_rules(session, merchant_id).expiry.notice_days
    soon, _ = repo.expiring_points(session, merchant_id, member_id, now + dt.timedelta(days=notice))
    return PointsOut(
        balance=acct.balance if acct else 0, earned_total=acct.earned_total if acct else 0,
        spent_total=acct.spent_total if acct else 0, expiring_soon=soon,
        next_expiry_at=repo.next_expiry(session, merchant_id, member_id),
    )

