"""Bargains (砍价): activities, a member's bargain with pre-generated cuts, friends' helps,
buying at the current (or floor) price.

Start (``start``): the member's per-activity limit is taken by a conditional update; the H cuts
are generated at once from a stored random seed (``generate_cuts``) so they sum exactly to
``start_price - floor_price`` with every cut ≥ 1 fen, and stored; the deadline job is enqueued
(``run_at = expires_at``, never after the activity's end). ``bargain.started``.

Help (``help``): a friend (not the initiator — ``bargain_help_own``; once: a repeat of the same
friend, e.g. a network retry, changes nothing and answers with the first help's result; a member
without a paid order when the activity is new-users-only — ``bargain_new_users_only``)
takes the next cut: ``UPDATE bargains SET helped_count = helped_count + 1 WHERE helped_count <
helpers_needed AND status = 'active' AND expires_at > now RETURNING helped_count`` gives the
help's sequence number i, the help row takes ``cuts[i-1]`` and ``UNIQUE (bargain_id,
helper_member_id)`` refuses a second help of the same friend even under concurrency (the loser's
slot is undone with its savepoint and it answers with the winner's result). The last
help reaches the floor (``floor_reached``; ``bargain.floor_reached``). ``bargain.helped`` each time.
A finished bargain is ``bargain_finished``, an expired one ``bargain_expired``.

Buy: the checkout with ``options={"bargain": {"bargain_id": N}}``; the ITEM_PROMOTIONS stage
prices one unit at the current price; the submit hook moves the bargain to ``ordered`` once
(``bargain_already_ordered``). A cancelled order reopens the bargain and gives the unit back.

Services never commit.
"""

from __future__ import annotations

import datetime as dt
import random
import secrets
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from siyu.activities import service as activities
from siyu.activities.repository import members
from siyu.bargains import repository as repo
from siyu.bargains.models import (
    ACTIVE,
    DISABLED,
    EXPIRED,
    FLOOR_REACHED,
    ORDERED,
    Bargain,
    BargainActivity,
    BargainHelp,
)
from siyu.bargains.schemas import (
    BargainActivityAdminOut,
    BargainActivityIn,
    BargainActivityOut,
    BargainActivityStatsOut,
    BargainActivityUpdate,
    BargainBuyIn,
    HelpResultOut,
    StoreActivityOut,
    StoreBargainOut,
    StoreHelpOut,
)
from siyu.catalog import stock
from siyu.catalog.models import KIND_VIRTUAL
from siyu.kit import audit
from siyu.kit.errors import DomainError, invalid, not_found
from siyu.kit.events import emit
from siyu.kit.outbox import enqueue
from siyu.kit.timeutil import utcnow
from siyu.orders import checkout
from siyu.orders import service as orders_service
from siyu.orders.freight import VIRTUAL
from siyu.orders.models import Order
from siyu.orders.pricing import ITEM_PROMOTIONS, PricingContext
from siyu.promotions.service import virtual_product_refused

_MESSAGES = {
    "bargain_limit_reached": (
        409,
        "该砍价活动每人最多发起 {limit} 次",
        "You can start at most {limit} bargains in this activity",
    ),
    "bargain_help_own": (409, "不能帮自己砍价", "You cannot help your own bargain"),
    "bargain_already_helped": (409, "您已帮TA砍过价了", "You already helped this bargain"),
    "bargain_finished": (409, "该砍价已完成，无需再砍", "This bargain is already finished"),
    "bargain_expired": (409, "该砍价已过期", "This bargain has expired"),
    "bargain_new_users_only": (409, "仅限新用户帮砍", "Only new customers can help this bargain"),
    "bargain_already_ordered": (409, "该砍价已下单", "This bargain was already ordered"),
}
KIND = activities.ActivityKind(
    code="bargain", entity="bargain_activity", zh="砍价活动", en="bargain activity", in_use="has_bargains",
    tables=repo.TABLES,
)
KIND.register(_MESSAGES)

OPTION = "bargain"
ID_MAX = 2**63 - 1  # BIGINT: a larger id would fail in the query (a 500)
RESERVATION = "bargain"
SEED_BITS = 62


def _bargain_not_found() -> DomainError:
    return not_found("砍价", "Bargain")


def generate_cuts(total: int, helpers: int, seed: int) -> list[int]:
    """``helpers`` cuts of at least 1 fen summing exactly to ``total``, from ``seed``.

    A uniformly random composition: ``helpers - 1`` distinct cut points in ``1..total-1`` split
    ``[0, total]``; sorted largest first, so the first friends cut the most. Deterministic for a
    seed (the seed is stored with the bargain)."""
    if helpers < 1 or total < helpers:
        raise ValueError("need total >= helpers >= 1")
    rng = random.Random(seed)
    points = sorted(rng.sample(range(1, total), helpers - 1))
    parts = [b - a for a, b in zip([0, *points], [*points, total], strict=True)]
    parts.sort(reverse=True)
    return parts


check_running = KIND.check_running


# -- admin -------------------------------------------------------------------------------------------


get_activity = KIND.get


def create_activity(session: Session, merchant_id: int, data: BargainActivityIn, *, actor: activities.Actor) -> BargainActivity:
    starts_at, ends_at = activities.aware(data.starts_at, "starts_at"), activities.aware(data.ends_at, "ends_at")
    if ends_at <= starts_at:
        raise invalid("ends_at", "window_invalid", "ends_at must be after starts_at", "结束时间须晚于开始时间")
    sku, product = activities.sku_and_product(session, merchant_id, data.sku_id)
    if product.kind == KIND_VIRTUAL:  # a membership card is sold at its plan's price only
        raise virtual_product_refused(sku.id, "sku_id")
    start_price = data.start_price if data.start_price is not None else sku.sale_price
    if data.floor_price >= start_price:
        raise invalid("floor_price", "floor_not_below_start", f"must be below the start price {start_price}",
                      f"须低于起始价 {start_price}")
    if start_price - data.floor_price < data.helpers_needed:
        raise invalid(
            "helpers_needed", "cut_below_one_fen",
            f"{data.helpers_needed} helpers cannot each cut at least 1 fen of {start_price - data.floor_price}",
            f"可砍金额 {start_price - data.floor_price} 分，不够 {data.helpers_needed} 位好友每人至少砍 1 分",
        )
    act = BargainActivity(
        merchant_id=merchant_id, name=data.name.strip(), status=ACTIVE, product_id=product.id, sku_id=sku.id,
        start_price=start_price, floor_price=data.floor_price, helpers_needed=data.helpers_needed,
        valid_hours=data.valid_hours, new_users_only=data.new_users_only, per_member_limit=data.per_member_limit,
        allows_coupons=data.allows_coupons, allows_points=data.allows_points,
        allows_order_promotions=data.allows_order_promotions, free_shipping=data.free_shipping,
        starts_at=starts_at, ends_at=ends_at,
    )
    session.add(act)
    session.flush()
    audit.record(session, merchant_id, "bargain_activity", act.id, "created", to_state=ACTIVE, actor=actor)
    return act


STACKING_FIELDS = ("allows_coupons", "allows_points", "allows_order_promotions", "free_shipping")
# Fixed once the activity starts (the name and the end stay changeable).
LOCKED_AT_START = ("valid_hours", "new_users_only", "per_member_limit", *STACKING_FIELDS)


def update_activity(
    session: Session, merchant_id: int, activity_id: int, data: BargainActivityUpdate, *, actor: activities.Actor,
    now: dt.datetime | None = None,
) -> BargainActivity:
    """Prices and H are fixed once created (bargains already started carry their own copy); the
    validity, ``new_users_only``, the per-member limit and the stacking settings change only
    before the start (what a customer was told holds; 409 ``bargain_state_invalid`` with the
    status otherwise), as with group buys and flash sales. The name and the end change any time."""
    act = get_activity(session, merchant_id, activity_id, lock=True)
    if act.status == DISABLED:
        raise DomainError("bargain_state_invalid", status=DISABLED)
    changes = data.model_dump(exclude_unset=True)
    for key, value in changes.items():
        if value is None:
            raise invalid(key, "required", f"{key} cannot be null", f"{key} 不能为 null")
    state = activities.effective_status(act, now or utcnow())
    if state != activities.SCHEDULED and any(k in changes for k in LOCKED_AT_START):
        raise DomainError("bargain_state_invalid", status=state)
    if data.ends_at is not None:
        ends_at = activities.aware(data.ends_at, "ends_at")
        if ends_at <= act.starts_at:
            raise invalid("ends_at", "window_invalid", "ends_at must be after starts_at", "结束时间须晚于开始时间")
        act.ends_at = ends_at
    for key in ("valid_hours", "new_users_only", "per_member_limit", *STACKING_FIELDS):
        if key in changes:
            setattr(act, key, changes[key])
    if data.name is not None:
        act.name = data.name.strip()
    session.flush()
    audit.record(session, merchant_id, "bargain_activity", act.id, "updated", actor=actor,
                 data={"fields": sorted(changes)})
    return act


# No new bargains; started ones can still be helped and bought until they expire.
disable = KIND.disable
# Remove an activity nobody started a bargain in (else disable it: its history stays).
delete_activity = KIND.delete


def admin_out(session: Session, merchant_id: int, act: BargainActivity) -> BargainActivityAdminOut:
    return BargainActivityAdminOut(
        **BargainActivityOut.model_validate(act).model_dump(), effective_status=activities.effective_status(act, utcnow()),
        bargains=repo.bargain_counts(session, merchant_id, act.id),
    )


def get_bargain(session: Session, merchant_id: int, bargain_id: int) -> Bargain:
    found = repo.bargain(session, merchant_id, bargain_id)
    if found is None:
        raise _bargain_not_found()
    return found


# -- start and help ----------------------------------------------------------------------------------


def _replay_start(found: Bargain, activity_id: int) -> Bargain:
    if found.activity_id != activity_id:
        raise DomainError("idempotency_key_reused")
    return found


def start_with_key(
    session: Session, merchant_id: int, member_id: int, activity_id: int, idempotency_key: str | None, *,
    now: dt.datetime | None = None,
) -> tuple[Bargain, bool]:
    """``start``, idempotent per ``(merchant, member, Idempotency-Key)`` when a key is given:
    a retry returns the first bargain (``UNIQUE (merchant_id, member_id, start_key)`` decides a
    concurrent retry; the loser's writes are undone by its savepoint). Returns ``(bargain, created)``."""
    if idempotency_key is None:
        return start(session, merchant_id, member_id, activity_id, now=now), True
    key = checkout.check_idempotency_key(idempotency_key)
    existing = repo.bargain_by_start_key(session, merchant_id, member_id, key)
    if existing is not None:
        return _replay_start(existing, activity_id), False
    try:
        with session.begin_nested():
            bargain = start(session, merchant_id, member_id, activity_id, now=now, start_key=key)
    except IntegrityError:
        winner = repo.bargain_by_start_key(session, merchant_id, member_id, key)
        if winner is None:
            raise
        return _replay_start(winner, activity_id), False
    return bargain, True


def start(
    session: Session, merchant_id: int, member_id: int, activity_id: int, *, now: dt.datetime | None = None,
    seed: int | None = None, start_key: str | None = None,
) -> Bargain:
    now = now or utcnow()
    act = KIND.visible(session, merchant_id, activity_id)
    check_running(act, now)
    _, product = activities.sku_and_product(session, merchant_id, act.sku_id)
    if product.kind == KIND_VIRTUAL:  # made a card since: friends' help could never be bought
        raise virtual_product_refused(act.sku_id, "path.activity_id")
    seed = seed if seed is not None else secrets.randbits(SEED_BITS)
    cuts = generate_cuts(act.start_price - act.floor_price, act.helpers_needed, seed)
    expires_at = min(now + dt.timedelta(hours=act.valid_hours), act.ends_at)
    bargain = Bargain(
        merchant_id=merchant_id, activity_id=act.id, member_id=member_id, sku_id=act.sku_id,
        start_price=act.start_price, floor_price=act.floor_price, helpers_needed=act.helpers_needed, helped_count=0,
        cut_total=0, seed=seed, cuts=cuts, status=ACTIVE, expires_at=expires_at, start_key=start_key,
    )
    session.add(bargain)
    session.flush()  # claims the start key first, so a concurrent retry replays instead of hitting the limit
    if not repo.take_start(session, merchant_id, act.id, member_id, act.per_member_limit):
        raise DomainError("bargain_limit_reached", limit=act.per_member_limit)
    enqueue(
        session, merchant_id, "bargains.expire", {"bargain_id": bargain.id}, run_at=expires_at,
        dedupe_key=f"bargain:{bargain.id}:expire",
    )
    audit.record(session, merchant_id, "bargain", bargain.id, "started", to_state=ACTIVE, actor=("customer", member_id))
    emit(
        session, merchant_id, "bargain.started",
        {"bargain_id": bargain.id, "activity_id": act.id, "member_id": member_id, "start_price": act.start_price,
         "floor_price": act.floor_price},
        key=f"bargain:{bargain.id}",
    )
    return bargain


def _finished_or_expired(bargain: Bargain | None, now: dt.datetime) -> DomainError:
    if bargain is None:
        return _bargain_not_found()
    if bargain.status == EXPIRED or (bargain.status == ACTIVE and bargain.expires_at <= now):
        return DomainError("bargain_expired")
    return DomainError("bargain_finished")


def _help_result(bargain: Bargain, help_row: BargainHelp) -> HelpResultOut:
    """The result a help gave when it was made: its cut and the price right after it (the cuts are
    taken in order, so the price after the i-th help is the start price less the first i cuts)."""
    seq = help_row.seq
    return HelpResultOut(
        bargain_id=bargain.id, seq=seq, cut=help_row.amount,
        current_price=bargain.start_price - sum(int(c) for c in bargain.cuts[:seq]), helped_count=seq,
        helpers_needed=bargain.helpers_needed, floor_reached=seq == bargain.helpers_needed,
    )


def help_bargain(
    session: Session, merchant_id: int, bargain_id: int, helper_id: int, *, now: dt.datetime | None = None
) -> HelpResultOut:
    return help_bargain_once(session, merchant_id, bargain_id, helper_id, now=now)[0]


def help_bargain_once(
    session: Session, merchant_id: int, bargain_id: int, helper_id: int, *, now: dt.datetime | None = None
) -> tuple[HelpResultOut, bool]:
    """One help per helper: ``(result, created)``. A repeat of the same helper (a network retry,
    or two taps racing) changes nothing and returns the first help's result (``created`` False),
    whatever the bargain's state now. Helping one's own bargain stays ``bargain_help_own``."""
    now = now or utcnow()
    bargain = repo.bargain(session, merchant_id, bargain_id)
    if bargain is None:
        raise _bargain_not_found()
    if bargain.member_id == helper_id:
        raise DomainError("bargain_help_own")
    earlier = repo.help_of(session, merchant_id, bargain.id, helper_id)
    if earlier is not None:
        return _help_result(bargain, earlier), False
    if bargain.status != ACTIVE or bargain.expires_at <= now:
        raise _finished_or_expired(bargain, now)
    act = repo.activity(session, merchant_id, bargain.activity_id)
    assert act is not None
    if act.new_users_only and repo.has_paid_order(session, merchant_id, helper_id):
        raise DomainError("bargain_new_users_only")
    try:
        # The slot and the help row together: a concurrent help of the same helper that loses on
        # ``UNIQUE (bargain_id, helper_member_id)`` gives its slot back with the savepoint.
        with session.begin_nested():
            seq = repo.take_help_slot(session, merchant_id, bargain.id, now)
            if seq is None:  # no slot left: the same helper's concurrent first help may have taken the last
                winner = repo.help_of(session, merchant_id, bargain.id, helper_id)
                if winner is not None:
                    return _help_result(bargain, winner), False
                raise _finished_or_expired(repo.bargain(session, merchant_id, bargain.id), now)
            amount = int(bargain.cuts[seq - 1])
            session.add(BargainHelp(
                merchant_id=merchant_id, bargain_id=bargain.id, helper_member_id=helper_id, seq=seq, amount=amount,
                created_at=now,
            ))
            session.flush()
    except IntegrityError:
        winner = repo.help_of(session, merchant_id, bargain.id, helper_id)
        if winner is None:
            raise
        return _help_result(bargain, winner), False
    floor = seq == bargain.helpers_needed
    repo.add_cut(session, merchant_id, bargain.id, amount, floor=floor, now=now)
    bargain = repo.bargain(session, merchant_id, bargain.id)
    assert bargain is not None
    payload = {
        "bargain_id": bargain.id, "member_id": bargain.member_id, "helper_member_id": helper_id, "cut": amount,
        "current_price": bargain.current_price, "helped_count": seq,
    }
    emit(session, merchant_id, "bargain.helped", payload, key=f"bargain:{bargain.id}:help:{seq}")
    if floor:
        audit.record(session, merchant_id, "bargain", bargain.id, "floor_reached", from_state=ACTIVE,
                     to_state=FLOOR_REACHED)
        emit(
            session, merchant_id, "bargain.floor_reached",
            {"bargain_id": bargain.id, "member_id": bargain.member_id, "floor_price": bargain.floor_price},
            key=f"bargain:{bargain.id}",
        )
    return HelpResultOut(
        bargain_id=bargain.id, seq=seq, cut=amount, current_price=bargain.current_price, helped_count=seq,
        helpers_needed=bargain.helpers_needed, floor_reached=floor,
    ), True


def expire(session: Session, merchant_id: int, bargain_id: int, now: dt.datetime) -> bool:
    return repo.expire(session, merchant_id, bargain_id, now)


def expire_due(session: Session, merchant_id: int, now: dt.datetime) -> int:
    return sum(1 for b in repo.due_bargains(session, merchant_id, now) if repo.expire(session, merchant_id, b, now))


def on_order_cancelled(session: Session, merchant_id: int, order_id: int, *, now: dt.datetime | None = None) -> None:
    """The bargain's order was cancelled: the bargain can be bought again (until it expires) and
    its unit goes back to stock, once."""
    now = now or utcnow()
    bargain = repo.bargain_of_order(session, merchant_id, order_id)
    if bargain is None or not repo.reopen(session, merchant_id, order_id, now):
        return
    stock.release(session, merchant_id, {bargain.sku_id: 1})
    repo.expire(session, merchant_id, bargain.id, now)  # only if already past its deadline


# -- pricing stage and submit hook -------------------------------------------------------------------


def _option_bargain_id(options: dict[str, Any]) -> int:
    raw = options.get(OPTION)
    value = raw.get("bargain_id") if isinstance(raw, dict) else None
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= ID_MAX:
        raise invalid("options.bargain.bargain_id", "required", "give the bargain id", "请提供砍价 ID（bargain_id）")
    return value


def apply_to_pricing(ctx: PricingContext) -> None:
    """The ITEM_PROMOTIONS stage: one unit at the bargain's current price."""
    if OPTION not in ctx.options:
        return
    bargain = repo.bargain(ctx.session, ctx.merchant_id, _option_bargain_id(ctx.options))
    if bargain is None or bargain.member_id != ctx.member_id:
        raise _bargain_not_found()
    if bargain.status == ORDERED:
        raise DomainError("bargain_already_ordered")
    if bargain.status == EXPIRED or bargain.expires_at <= ctx.now:
        raise DomainError("bargain_expired")
    act = repo.activity(ctx.session, ctx.merchant_id, bargain.activity_id)
    assert act is not None
    idx = activities.activity_line(
        ctx, bargain.sku_id, "options.bargain.bargain_id", "the bargain's SKU is not in this order", "砍价商品不在此订单中"
    )
    line = ctx.lines[idx]
    if line.quantity != 1:
        raise invalid(f"items.{idx}.quantity", "bargain_quantity_one", "a bargain buys exactly one unit",
                      "砍价商品每单只能买 1 件")
    activities.check_no_other_activity(line, OPTION)
    if line.flags.get(VIRTUAL):  # made virtual (a card plan sells it) after the activity was set up
        raise virtual_product_refused(line.sku_id, "options.bargain.bargain_id")
    price = bargain.current_price
    ctx.discount(
        ITEM_PROMOTIONS, f"bargain:{bargain.id}", "砍价", max(0, line.amount - price), [idx],
        details={"bargain_id": bargain.id, "price": price, "helped_count": bargain.helped_count},
    )
    activities.flag_activity_line(line, act, f"bargain:{bargain.id}", {"bargain_id": bargain.id})
    ctx.reservations[RESERVATION] = {"bargain_id": bargain.id}


def mark_ordered(ctx: PricingContext, order_id: int) -> None:
    """The submit hook: the bargain becomes ordered, once (a refusal aborts the submit)."""
    res = ctx.reservations.get(RESERVATION)
    if not res:
        return
    bargain_id = int(res["bargain_id"])
    if not repo.mark_ordered(ctx.session, ctx.merchant_id, bargain_id, order_id, ctx.now):
        found = repo.bargain(ctx.session, ctx.merchant_id, bargain_id)
        if found is not None and found.status == ORDERED:
            raise DomainError("bargain_already_ordered")
        raise DomainError("bargain_expired")
    audit.record(ctx.session, ctx.merchant_id, "bargain", bargain_id, "ordered", to_state=ORDERED,
                 actor=("customer", ctx.member_id), data={"order_id": order_id})


# -- store -------------------------------------------------------------------------------------------------


def store_activity(session: Session, merchant_id: int, activity_id: int) -> StoreActivityOut:
    act = KIND.visible(session, merchant_id, activity_id)
    sku, product = activities.sku_and_product(session, merchant_id, act.sku_id)
    return StoreActivityOut(
        id=act.id, name=act.name, status=activities.effective_status(act, utcnow()), product_id=product.id, sku_id=sku.id,
        title=product.title, spec_text=orders_service.spec_text(product, sku),
        image_url=activities.image_url(sku, product), start_price=act.start_price,
        floor_price=act.floor_price, helpers_needed=act.helpers_needed, valid_hours=act.valid_hours,
        new_users_only=act.new_users_only, per_member_limit=act.per_member_limit, free_shipping=act.free_shipping,
        allows_coupons=act.allows_coupons, allows_points=act.allows_points,
        allows_order_promotions=act.allows_order_promotions, starts_at=act.starts_at, ends_at=act.ends_at,
    )


def store_bargain(session: Session, merchant_id: int, bargain_id: int, viewer_id: int) -> StoreBargainOut:
    bargain = get_bargain(session, merchant_id, bargain_id)
    sku, product = activities.sku_and_product(session, merchant_id, bargain.sku_id)
    helps = repo.helps(session, merchant_id, bargain.id)
    people = members(session, merchant_id, [bargain.member_id, *(h.helper_member_id for h in helps)])

    def nick(member_id: int) -> str:
        return activities.mask_nickname(people[member_id].nickname if member_id in people else None)

    return StoreBargainOut(
        bargain_id=bargain.id, activity_id=bargain.activity_id, title=product.title,
        image_url=activities.image_url(sku, product),
        initiator_nickname=nick(bargain.member_id), start_price=bargain.start_price, floor_price=bargain.floor_price,
        current_price=bargain.current_price, helpers_needed=bargain.helpers_needed, helped_count=bargain.helped_count,
        status=bargain.status, expires_at=bargain.expires_at, mine=bargain.member_id == viewer_id,
        helps=[
            StoreHelpOut(
                seq=h.seq, nickname=nick(h.helper_member_id), amount=h.amount,
                avatar_url=people[h.helper_member_id].avatar_url if h.helper_member_id in people else None,
            )
            for h in helps
        ],
    )


def buy(
    session: Session, merchant_id: int, member_id: int, bargain_id: int, body: BargainBuyIn, *,
    idempotency_key: str | None, payment_timeout: dt.timedelta, now: dt.datetime | None = None,
) -> tuple[Order, bool]:
    """Buy at the current price: the checkout submit with the bargain option."""
    bargain = repo.bargain(session, merchant_id, bargain_id)
    if bargain is None or bargain.member_id != member_id:
        raise _bargain_not_found()
    return activities.submit_order(
        session, merchant_id, member_id, sku_id=bargain.sku_id, quantity=1, address_id=body.address_id,
        remark=body.remark, option=OPTION, value={"bargain_id": bargain.id}, idempotency_key=idempotency_key,
        payment_timeout=payment_timeout, now=now, coupon_ids=body.coupon_ids,
    )


# Kept importable from here (tests, callers).
effective_status = activities.effective_status


# -- usage (ROI) ---------------------------------------------------------------------------------------


def stats(session: Session, merchant_id: int, activity_id: int) -> BargainActivityStatsOut:
    """Bargains by outcome, the helps they drew, and the money of their paid orders (404 for
    another merchant's activity)."""
    act = get_activity(session, merchant_id, activity_id)
    outcomes = repo.bargain_counts(session, merchant_id, act.id)
    helps, helpers = repo.help_figures(session, merchant_id, act.id)
    orders, units, gmv, discount = repo.paid_order_figures(session, merchant_id, act.id)
    return BargainActivityStatsOut(
        activity_id=act.id, bargains_started=sum(outcomes.values()), bargains_active=outcomes.get(ACTIVE, 0),
        bargains_floor_reached=outcomes.get(FLOOR_REACHED, 0), bargains_ordered=outcomes.get(ORDERED, 0),
        bargains_expired=outcomes.get(EXPIRED, 0), helps=helps, helpers=helpers, paid_orders=orders,
        paid_units=units, gmv=gmv, discount_given=discount,
    )
