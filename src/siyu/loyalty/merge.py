"""A member merge, the loyalty side (called by ``siyu.members.service.merge_members``).

When one person's two members are merged (same unionid or phone), the kept member ends up with
the person's whole loyalty standing, as Youzan's 客户合并 does. Everything moves inside the
merge's transaction and is idempotent: a retried merge of the same dropped member moves nothing
more (the ledger keys below are unique per merchant, and the counters it empties stay empty).

- **Points**, through the append-only ledger: a ``merge_out`` entry on the dropped account
  (key ``merge:<drop_id>:out``, ``-balance``) takes every open lot to zero (recorded in
  ``points_lot_uses``), and a ``merge_in`` entry on the kept account (``merge:<drop_id>:in``)
  opens one lot per moved lot with the **same expiry** (and expiry-notice mark), soonest first,
  so the hourly expiry job still expires them on time (a lot already past its expiry but not yet
  processed moves too, and expires at the next run). The dropped account ends at 0.
  ``earned_total`` and ``spent_total`` move with the balance: the person's points earned count
  for the kept member's ``min_points`` level rule (the moved points were earned by the person,
  not given by an operator), and the dropped account's totals end at 0. Both accounts are locked
  (lower member id first) before anything is read.
- **Growth**: ``merge_out`` / ``merge_in`` growth entries (``merge:<drop_id>:growth_out`` /
  ``growth_in``), the totals follow. The moved growth is dated the merge day, so the yearly
  retention review counts it as growth of that day. Paid spend and paid orders (level rules too)
  are counters without a ledger: they are added to the kept member's and zeroed on the dropped.
- **Level**: the kept member takes the highest of its level, the dropped member's level and the
  level the combined figures reach (``service._highest_qualified``, the rule the upgrade uses);
  a change is one level-history line with reason ``merge``. Level coupons are issued only for a
  level neither member held (the dropped member already received its own level's). The dropped
  member's rules level ends (history line ``merge`` to no level) so level counts see one person.
- **Paid cards** still active (or starting later) move to the kept member: they were paid for.
  Their refund still revokes them (cards are found by order).
- **Pending coupon rewards** (``loyalty_pending_rewards``) move, so the daily job issues them to
  the kept member.
- **Orders placed before the merge** stay the merged member's (``members.service``), but their
  loyalty follows the person: paid, completed, cancelled or refunded after the merge, their
  points, growth, paid counters and the reversals of them land on the kept member
  (``repo.holder``: ``service._order_and_lines`` and ``points.reverse`` follow the merge).
- **Check-in**: the kept member's check-ins and streak stand; the dropped member's stay as its
  history (neither streak nor "Nth check-in ever" counts are combined: one check-in per local
  day per member and merging two calendars would invent days).
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from sqlalchemy.orm import Session

from siyu.kit.events import emit
from siyu.kit.timeutil import utcnow
from siyu.loyalty import repository as repo
from siyu.loyalty.models import (
    MERGE_IN,
    MERGE_OUT,
    GrowthEntry,
    LevelHistory,
    PointsEntry,
    PointsLot,
    PointsLotUse,
)
from siyu.loyalty.rules import expiry_for, get_rules, merchant_tz

log = logging.getLogger(__name__)


def merge_members(
    session: Session, merchant_id: int, drop_id: int, keep_id: int, now: dt.datetime | None = None
) -> dict[str, Any]:
    """Fold the loyalty standing of member ``drop_id`` into ``keep_id``; returns what moved."""
    now = now or utcnow()
    session.flush()
    for member_id in sorted((drop_id, keep_id)):  # the points mutexes, in a fixed order
        repo.lock_account(session, merchant_id, member_id)
    moved: dict[str, Any] = {}
    moved.update(_move_points(session, merchant_id, drop_id, keep_id, now))
    moved.update(_move_growth_and_counters(session, merchant_id, drop_id, keep_id, now))
    moved["cards"] = repo.move_active_cards(session, merchant_id, drop_id, keep_id, now)
    moved["pending_rewards"] = repo.move_pending_rewards(session, merchant_id, drop_id, keep_id)
    session.flush()
    moved.update(_merge_level(session, merchant_id, drop_id, keep_id, now))
    return moved


def _move_points(session: Session, merchant_id: int, drop_id: int, keep_id: int, now: dt.datetime) -> dict[str, Any]:
    out_key, in_key = f"merge:{drop_id}:out", f"merge:{drop_id}:in"
    if repo.entry_by_key(session, merchant_id, out_key) is not None:
        return {"points": 0}  # moved by an earlier run of this merge
    dacct = repo.lock_account(session, merchant_id, drop_id)
    balance, earned, spent = dacct.balance, dacct.earned_total, dacct.spent_total
    if not (balance or earned or spent):
        return {"points": 0}
    left = repo.debit(session, merchant_id, drop_id, balance, spent=-spent, unearned=earned)
    assert left == 0  # the row is locked and the debit is its whole balance
    out = PointsEntry(
        merchant_id=merchant_id, member_id=drop_id, delta=-balance, kind=MERGE_OUT, reason="merge_out",
        ref=f"member:{keep_id}", idempotency_key=out_key, balance_after=0, shortfall=0, created_at=now,
    )
    session.add(out)
    session.flush()
    pieces: list[tuple[int, dt.datetime | None, dt.datetime | None]] = []  # (points, expires_at, notified_at)
    need = balance
    for lt in repo.open_lots(session, merchant_id, drop_id):  # soonest expiry first
        take = min(need, lt.remaining)
        if take > 0:
            session.add(PointsLotUse(merchant_id=merchant_id, entry_id=out.id, lot_id=lt.id, points=take, returned=0))
            pieces.append((take, lt.expires_at, lt.notified_at))
            need -= take
        lt.remaining = 0  # the dropped account is empty: lots past its balance close too
    if need > 0:  # lots short of the balance (should not happen): the rest with the merchant's expiry
        log.warning("merge of member %s: lots short of the balance by %s", drop_id, need)
        expires = expiry_for(get_rules(session, merchant_id), merchant_tz(session, merchant_id), now)
        pieces.append((need, expires, None))
    session.flush()
    new_balance = repo.credit(session, merchant_id, keep_id, balance, earned=earned, unspent=-spent)
    into = PointsEntry(
        merchant_id=merchant_id, member_id=keep_id, delta=balance, kind=MERGE_IN, reason="merge_in",
        ref=f"member:{drop_id}", idempotency_key=in_key, balance_after=new_balance, shortfall=0, created_at=now,
    )
    session.add(into)
    session.flush()
    for points, expires_at, notified_at in pieces:
        session.add(PointsLot(
            merchant_id=merchant_id, member_id=keep_id, entry_id=into.id, points=points, remaining=points,
            expires_at=expires_at, notified_at=notified_at, created_at=now,
        ))
    session.flush()
    return {"points": balance, "points_earned_total": earned, "points_spent_total": spent,
            "points_lots": len(pieces), "points_entries": [out.id, into.id]}


def _move_growth_and_counters(
    session: Session, merchant_id: int, drop_id: int, keep_id: int, now: dt.datetime
) -> dict[str, Any]:
    states = {m: repo.member_state(session, merchant_id, m, lock=True) for m in sorted((drop_id, keep_id))}
    dstate, kstate = states[drop_id], states[keep_id]
    growth = dstate.growth
    out_key = f"merge:{drop_id}:growth_out"
    if growth > 0 and repo.growth_entry_by_key(session, merchant_id, out_key) is None:
        session.add(GrowthEntry(merchant_id=merchant_id, member_id=drop_id, delta=-growth, action="merge_out",
                                ref=f"member:{keep_id}", idempotency_key=out_key, created_at=now))
        session.add(GrowthEntry(merchant_id=merchant_id, member_id=keep_id, delta=growth, action="merge_in",
                                ref=f"member:{drop_id}", idempotency_key=f"merge:{drop_id}:growth_in", created_at=now))
        dstate.growth, kstate.growth = 0, kstate.growth + growth
    else:
        growth = 0
    spend, orders = dstate.paid_spend, dstate.paid_orders
    kstate.paid_spend += spend
    kstate.paid_orders += orders
    dstate.paid_spend = dstate.paid_orders = 0
    session.flush()
    return {"growth": growth, "paid_spend": spend, "paid_orders": orders}


def _merge_level(session: Session, merchant_id: int, drop_id: int, keep_id: int, now: dt.datetime) -> dict[str, Any]:
    from siyu.loyalty import service

    ladder = repo.levels(session, merchant_id)
    if not ladder:
        return {}
    by_id = {lv.id: lv for lv in ladder}
    dstate = repo.member_state(session, merchant_id, drop_id, lock=True)
    kstate = repo.member_state(session, merchant_id, keep_id, lock=True)
    dropped_level = by_id.get(dstate.level_id) if dstate.level_id else None
    current = by_id.get(kstate.level_id) if kstate.level_id else None
    reached = service._highest_qualified(ladder, service._figures(session, merchant_id, kstate))
    candidates = [lv for lv in (current, dropped_level, reached) if lv is not None]
    target = max(candidates, key=lambda lv: lv.rank) if candidates else None
    out: dict[str, Any] = {}
    if dropped_level is not None:  # the dropped member's own rules level ends here
        dstate.level_id, dstate.level_since, dstate.level_reviewed_at = None, now, now
        session.add(LevelHistory(merchant_id=merchant_id, member_id=drop_id, from_level_id=dropped_level.id,
                                 to_level_id=None, reason="merge", created_at=now))
    if target is None or (current is not None and target.rank <= current.rank):
        session.flush()
        return out
    out["level"] = {"from": current.id if current else None, "to": target.id}
    if dropped_level is not None and target.id == dropped_level.id:
        # taken over from the dropped member, which already had this level's coupons
        kstate.level_id, kstate.level_since, kstate.level_reviewed_at = target.id, now, now
        session.add(LevelHistory(merchant_id=merchant_id, member_id=keep_id,
                                 from_level_id=current.id if current else None, to_level_id=target.id,
                                 reason="merge", created_at=now))
        session.flush()
        emit(session, merchant_id, "level.changed",
             {"member_id": keep_id, "from_level_id": current.id if current else None, "to_level_id": target.id,
              "reason": "merge"},
             key=f"member:{keep_id}:level:{target.id}:{now.isoformat()}")
    else:  # a level neither held, reached by the combined figures: as an upgrade (its coupons too)
        service._move(session, merchant_id, keep_id, kstate, current, target, "merge", now)
    return out
