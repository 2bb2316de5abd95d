"""Loyalty: points ledger with expiring lots, growth value, levels, check-in, paid cards.

Points (the ledger of entries, expiring lots and balances: ``award``, ``spend``, ``reverse``,
``adjust``, expiry, statement) live in ``siyu.loyalty.points``; they are re-exported here so
``service.award`` and the rest keep working for callers outside loyalty.

Orders: points spent at checkout (POINTS stage + submit hook, ``order:{id}:spend``) come back
on ``order.cancelled``; order points are earned on ``order.paid`` (or ``order.completed``, a
merchant setting) once per order; every refund reverses earned points, returns spent points
and takes back growth in proportion to the amount refunded over the amount paid, computed on
the running total (``floor(x * refunded / paid)``), so partial refunds never drift and a full
refund reverses exactly everything.

Levels: a member reaches a level when ANY of its set thresholds is met (cumulative paid spend
net of refunds, points earned, growth value, paid orders), at exactly the threshold. The ladder
is kept in order on every save: per criterion, the thresholds of the levels that set it rise
strictly with rank (``_check_ladder``, 409 ``level_thresholds_not_ascending``). Upgrades
are evaluated whenever one of those changes. Levels go down in two ways: the yearly retention
review (``retain_growth`` growth in the last 365 days, one step down) in the daily job, and a
refund (``_refund_review``, unless the merchant's ``levels.refund_lowers_level`` is false) that
takes the net figures below what the member's level needs: they move down to the highest level
they still qualify for (history reason ``refund``). A paid card holds its level for its term; the
benefits applied are those of the higher of the two, so a refund that lowers the rules level
leaves a card's level alone. Level coupons are keyed by level and member: reaching a level again
after a refund took it away issues nothing twice.

Check-in: one per member and local day in the merchant's zone (unique key). Streak rewards pay
on the day the streak reaches N, total rewards on the Nth check-in ever (once). A make-up
check-in (cost in points, within N days) mends the streak but earns nothing itself.
"""

from __future__ import annotations

import datetime as dt
import importlib
import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from siyu.db.dialect import insert_ignore
from siyu.kit import audit
from siyu.kit.errors import DomainError, FieldError, invalid, not_found, register_messages
from siyu.kit.events import emit
from siyu.kit.money import yuan
from siyu.kit.timeutil import local_date, utcnow
from siyu.loyalty import repository as repo
from siyu.loyalty.models import (
    CARD_ACTIVE,
    CARD_REVOKED,
    CardPlan,
    CheckIn,
    GrowthEntry,
    Level,
    LevelHistory,
    LoyaltyRefund,
    LoyaltySettings,
    MemberCard,
    PendingReward,
    PointsEntry,
)
from siyu.loyalty.points import (  # re-exported: ``service.award`` etc. keep working
    EXPIRY_BATCH,
    LOT_BATCH,
    adjust,
    award,
    check_member,
    expire_due,
    notify_expiring,
    points_summary,
    reverse,
    spend,
    statement,
)
from siyu.loyalty.rules import expiry_for, get_rules
from siyu.loyalty.rules import merchant_tz as _tz
from siyu.loyalty.schemas import (
    CalendarOut,
    CardPlanIn,
    CheckInOut,
    LevelIn,
    LevelOut,
    LevelProgressOut,
    LoyaltyRules,
    MallItemOut,
    MallLevelOut,
    MallProductOut,
    MallRedemptionOut,
    MemberLoyaltyOut,
    TaskOut,
)

log = logging.getLogger(__name__)

register_messages(
    {
        "checkin_disabled": (422, "签到未开启", "Check-in is not enabled"),
        "checkin_already": (409, "今天已经签到过了", "Already checked in today"),
        "makeup_not_allowed": (422, "该日期不能补签：{reason}", "Cannot make up that day: {reason}"),
        "task_unknown": (404, "没有这个任务：{task}", "No such task: {task}"),
        "level_rank_taken": (409, "等级序号 {rank} 已存在", "Level rank {rank} already exists"),
        "level_thresholds_not_ascending": (
            409,
            "等级门槛必须随等级升高而升高：「{higher}」(序号 {higher_rank}) 的{criterion}门槛 {higher_value} "
            "不高于「{lower}」(序号 {lower_rank}) 的 {lower_value}",
            "Level thresholds must rise up the ladder: {criterion_en} of \"{higher}\" (rank {higher_rank}) is "
            "{higher_value}, not above \"{lower}\" (rank {lower_rank}) at {lower_value}",
        ),
        "level_in_use": (
            409,
            "等级「{name}」仍在使用：{members} 位会员按规则处于该等级，{carded} 位会员通过会员卡持有该等级，"
            "{plans} 个会员卡方案授予该等级，{coupon_templates} 个未停用的优惠券模板限定该等级（{coupon_template_ids}）",
            "Level \"{name}\" is in use: {members} member(s) hold it by the rules, {carded} through a card, "
            "{plans} card plan(s) grant it, and {coupon_templates} draft or active coupon template(s) are exclusive "
            "to it ({coupon_template_ids})",
        ),
        "card_not_on_sale": (409, "该会员卡未在售", "This membership card is not on sale"),
        "mall_item_not_found": (404, "积分商城没有这张优惠券：{template_id}", "No such coupon in the points mall: {template_id}"),
        "card_product_taken": (409, "该商品已是另一张会员卡", "This product already sells another card"),
        "card_plan_grants_nothing": (
            422,
            "会员卡须授予一个等级或至少一项权益（会员折扣、包邮、积分倍率）",
            "A card plan must grant a level or at least one benefit (member discount, free shipping, points multiplier)",
        ),
    }
)

Actor = tuple[str, int | None]

__all__ = [  # the points ledger, from ``siyu.loyalty.points`` and ``siyu.loyalty.rules``
    "EXPIRY_BATCH", "LOT_BATCH", "adjust", "award", "check_member", "expire_due", "expiry_for", "get_rules",
    "notify_expiring", "points_summary", "reverse", "spend", "statement",
]


# -- rules --------------------------------------------------------------------------------------------


def _check_coupon_templates(session: Session, merchant_id: int, refs: list[tuple[str, int]]) -> None:
    """Validated on write: a rule or level that names a coupon template this store does not have
    is a 422 at its path (it used to be saved, and every reward it gave then failed quietly)."""
    if not refs:
        return
    found = repo.existing_coupon_template_ids(session, merchant_id, {tid for _, tid in refs})
    if found is None:
        return
    for path, tid in refs:
        if tid not in found:
            raise invalid(path, "coupon_template_not_found", f"no coupon template {tid} in this store",
                          f"本店没有优惠券模板 {tid}")


def put_rules(session: Session, merchant_id: int, rules: LoyaltyRules, *, actor: Actor) -> LoyaltyRules:
    _check_coupon_templates(session, merchant_id, [
        (f"check_in.{name}.{i}.coupon_template_id", r.coupon_template_id)
        for name, rewards in (("streak_rewards", rules.check_in.streak_rewards),
                              ("total_rewards", rules.check_in.total_rewards))
        for i, r in enumerate(rewards) if r.coupon_template_id is not None
    ] + [(f"mall.{i}.coupon_template_id", item.coupon_template_id) for i, item in enumerate(rules.mall)
         if item.coupon_template_id is not None])
    from siyu.loyalty import mall

    mall.check_rules(session, merchant_id, rules)
    row = repo.settings_row(session, merchant_id)
    doc = rules.model_dump(mode="json")
    if row is None:
        row = LoyaltySettings(merchant_id=merchant_id, rules=doc)
        session.add(row)
    else:
        row.rules = doc
        row.updated_at = utcnow()  # the version ``award`` checks its cached rules against
    session.flush()
    session.info.setdefault("loyalty_rules", {})[merchant_id] = rules
    audit.record(session, merchant_id, "loyalty_settings", row.id, "updated", actor=actor, data={"rules": doc})
    ensure_schedules(session, merchant_id)
    return rules


def ensure_schedules(session: Session, merchant_id: int) -> None:
    """Hourly expiry and notices, daily retention / birthday coupons / pending rewards (merchant zone)."""
    from siyu.worker.runner import add_schedule

    tz = _tz(session, merchant_id)
    add_schedule(session, merchant_id, "loyalty.hourly", "loyalty.hourly", "5 * * * *", tz)
    add_schedule(session, merchant_id, "loyalty.daily", "loyalty.daily", "10 0 * * *", tz)


# -- growth -------------------------------------------------------------------------------------------


def add_growth(
    session: Session, merchant_id: int, member_id: int, delta: int, *, action: str, ref: str | None, key: str,
    now: dt.datetime | None = None,
) -> GrowthEntry | None:
    """Growth ledger entry + the member's total (never below zero). Idempotent by ``key``."""
    if delta == 0:
        return None
    existing = repo.growth_entry_by_key(session, merchant_id, key)
    if existing is not None:
        return existing
    state = repo.member_state(session, merchant_id, member_id, lock=True)
    if delta < 0:
        delta = -min(-delta, state.growth)
        if delta == 0:
            return None
    try:
        with session.begin_nested():
            entry = GrowthEntry(merchant_id=merchant_id, member_id=member_id, delta=delta, action=action[:32], ref=ref,
                                idempotency_key=key, created_at=now or utcnow())
            session.add(entry)
            session.flush()
            state.growth += delta
            session.flush()
    except IntegrityError:
        session.refresh(state)
        return repo.growth_entry_by_key(session, merchant_id, key)
    if delta > 0 and _ladder_uses(session, merchant_id, "min_growth"):
        evaluate_level(session, merchant_id, member_id, now)
    return entry


# -- levels -------------------------------------------------------------------------------------------


def list_levels(session: Session, merchant_id: int) -> list[Level]:
    return repo.levels(session, merchant_id)


def _ladder_uses(session: Session, merchant_id: int, threshold: str) -> bool:
    """Does any level of the merchant have ``threshold`` set? (read once per session)"""
    cache = session.info.setdefault("loyalty_ladder", {})
    if merchant_id not in cache:
        cache[merchant_id] = {
            name for lv in repo.levels(session, merchant_id)
            for name in ("min_spend", "min_points", "min_growth", "min_orders") if getattr(lv, name) is not None
        }
    return threshold in cache[merchant_id]


def _level_or_404(session: Session, merchant_id: int, level_id: int) -> Level:
    found = repo.level(session, merchant_id, level_id)
    if found is None:
        raise not_found("会员等级", "Level")
    return found


# (column, zh, en) of the upgrade criteria, in the order the ladder check reports them
_CRITERIA = (
    ("min_spend", "累计消费", "cumulative paid spend"),
    ("min_points", "累计获得积分", "points earned"),
    ("min_growth", "成长值", "growth value"),
    ("min_orders", "支付订单数", "paid order count"),
)


def _shown(column: str, value: int) -> str:
    return yuan(value) if column == "min_spend" else str(value)


def _check_ladder(others: list[Level], data: LevelIn) -> None:
    """The ladder rule: for each criterion, the thresholds of the levels that set it rise
    strictly with rank (a level that leaves a criterion unset is skipped for it). Equal is
    refused too: a member meeting a threshold goes to the highest level it opens (ANY of a
    level's set thresholds is enough), so of two levels with the same threshold the lower one is
    never reached through it. ``data`` is the level being saved (created, changed or moved to a
    new rank); ``others`` the merchant's other levels. Only pairs with the saved level are
    checked, so a ladder stored before this rule existed never blocks an unrelated edit, while
    every write through here keeps a valid ladder valid. Deleting a level cannot break it (a
    subsequence of a rising sequence rises). Not checked: that every level is reachable across
    criteria (rank 2 at ¥2,000 of spend is skipped by anyone reaching rank 3 through 1 paid
    order): the criteria are alternatives a merchant mixes on purpose."""
    for other in sorted(others, key=lambda lv: (abs(lv.rank - data.rank), lv.rank)):  # nearest first
        lower, higher = (other, data) if other.rank < data.rank else (data, other)
        for column, zh, en in _CRITERIA:
            low, high = getattr(lower, column), getattr(higher, column)
            if low is not None and high is not None and high <= low:
                raise DomainError(
                    "level_thresholds_not_ascending",
                    fields=[FieldError(column, "level_thresholds_not_ascending",
                                       f"must be above {_shown(column, low)}" if data is higher
                                       else f"must be below {_shown(column, high)}",
                                       f"须高于 {_shown(column, low)}" if data is higher
                                       else f"须低于 {_shown(column, high)}")],
                    criterion=zh, criterion_en=en, lower=lower.name, lower_rank=lower.rank,
                    lower_value=_shown(column, low), higher=higher.name, higher_rank=higher.rank,
                    higher_value=_shown(column, high),
                )


def save_level(session: Session, merchant_id: int, data: LevelIn, *, level_id: int | None, actor: Actor) -> Level:
    """Create or change a level (a new ``rank`` moves it on the ladder). Refused, with nothing
    changed: an unknown coupon template, a rank another level has (``level_rank_taken``), and
    thresholds out of order with another level (``level_thresholds_not_ascending``, see
    ``_check_ladder``)."""
    found = _level_or_404(session, merchant_id, level_id) if level_id is not None else None
    refs = [(f"coupon_template_ids.{i}", tid) for i, tid in enumerate(data.coupon_template_ids)]
    if data.birthday_coupon_template_id is not None:
        refs.append(("birthday_coupon_template_id", data.birthday_coupon_template_id))
    _check_coupon_templates(session, merchant_id, refs)
    others = [lv for lv in repo.levels(session, merchant_id) if found is None or lv.id != found.id]
    for other in others:
        if other.rank == data.rank:
            raise DomainError("level_rank_taken", rank=data.rank)
    _check_ladder(others, data)
    if found is None:
        found = Level(merchant_id=merchant_id, **data.model_dump())
        session.add(found)
    else:
        for k, v in data.model_dump().items():
            setattr(found, k, v)
    session.flush()
    session.info.get("loyalty_ladder", {}).pop(merchant_id, None)
    audit.record(session, merchant_id, "loyalty_level", found.id, "saved", actor=actor, data=data.model_dump())
    ensure_schedules(session, merchant_id)
    return found


def delete_level(session: Session, merchant_id: int, level_id: int, *, actor: Actor, now: dt.datetime | None = None) -> None:
    """Delete a level nobody stands on: refused (``level_in_use``, nothing changed) while members
    hold it as their rules level, a card plan grants it, an unexpired card holds it, or a draft or
    active coupon template is exclusive to it (its ``level_ids``; the ids are in the detail's
    ``coupon_template_ids``). The rest
    of the ladder stays valid (its thresholds still rise). Level history keeps the old id. A member
    moved onto the level by a transaction racing this one is left with a level id that no longer
    exists: they count as having no rules level and the next evaluation moves them up again."""
    found = _level_or_404(session, merchant_id, level_id)
    members, carded, plans = repo.level_users(session, merchant_id, found.id, now or utcnow())
    templates = _coupon_templates_naming(session, merchant_id, found.id)
    if members or carded or plans or templates:
        raise DomainError("level_in_use", name=found.name, members=members, carded=carded, plans=plans,
                          coupon_templates=len(templates),
                          coupon_template_ids=",".join(str(t) for t in templates) or "-")
    session.delete(found)
    session.flush()
    session.info.get("loyalty_ladder", {}).pop(merchant_id, None)
    audit.record(session, merchant_id, "loyalty_level", level_id, "deleted", actor=actor,
                 data={"rank": found.rank, "name": found.name})


def _coupon_templates_naming(session: Session, merchant_id: int, level_id: int) -> list[int]:
    """Draft or active coupon templates exclusive to the level (``coupons.repository``; none
    without the coupons module). A stopped template no longer issues, so it does not hold the level."""
    try:
        from siyu.coupons import repository as coupons_repo
    except ImportError:
        return []
    return coupons_repo.templates_naming_level(session, merchant_id, level_id)


def _qualifies(lv: Level, paid_spend: int, points_earned: int, growth: int, orders: int, *, entry: bool) -> bool:
    """``entry``: ``lv`` is the lowest rank. A level without any threshold is met only when it is
    the entry level; above it, it is reached with a paid card (or not at all), never by everyone."""
    checks = [
        (lv.min_spend, paid_spend), (lv.min_points, points_earned), (lv.min_growth, growth), (lv.min_orders, orders),
    ]
    set_checks = [(need, have) for need, have in checks if need is not None]
    if not set_checks:
        return entry
    return any(have >= need for need, have in set_checks)


def effective_level(
    session: Session, merchant_id: int, member_id: int, now: dt.datetime | None = None
) -> tuple[Level | None, str | None, dt.datetime | None]:
    """The level whose benefits apply: the higher of the rules level and an active card's level."""
    now = now or utcnow()
    state = repo.member_state_or_none(session, merchant_id, member_id)
    best: Level | None = repo.level(session, merchant_id, state.level_id) if state and state.level_id else None
    source = "rules" if best else None
    card_until = None
    for card in repo.active_cards(session, merchant_id, member_id, now):
        card_until = max(card_until, card.ends_at) if card_until else card.ends_at
        if card.level_id is None:
            continue
        lv = repo.level(session, merchant_id, card.level_id)
        if lv is not None and (best is None or lv.rank > best.rank):
            best, source = lv, "card"
    return best, source, card_until


@dataclass(frozen=True)
class Benefits:
    """What a member gets now: for each benefit the better of their level's (the effective level:
    rules level or an active card's, the higher) and their active cards' own. "Better" is the
    highest discount, free shipping if any grants it, the highest multiplier. ``*_from`` name the
    source: ``level:<id>`` or ``card_plan:<id>`` (the level wins a tie)."""

    level: Level | None
    level_source: str | None
    card_until: dt.datetime | None
    discount_bp: int  # off physical goods, 500 = 5 %
    discount_from: str | None
    discount_name: str | None  # the level's or the plan's name, for the breakdown label
    free_shipping_from: str | None
    multiplier_percent: int
    multiplier_from: str | None

    @property
    def free_shipping(self) -> bool:
        return self.free_shipping_from is not None


def member_benefits(session: Session, merchant_id: int, member_id: int, now: dt.datetime | None = None) -> Benefits:
    """The member's benefits (``Benefits``). A card plan's benefits are read from the plan as it
    is now (like a level's): a merchant who changes a plan changes them for its holders too. They
    stop with the card: a card counts while active and ``starts_at <= now < ends_at``, so they end
    at ``ends_at`` (the hourly job then marks the card expired) or when a refund revokes it."""
    now = now or utcnow()
    lv, source, card_until = effective_level(session, merchant_id, member_id, now)
    discount, discount_from, discount_name = 0, None, None
    free_from, mult, mult_from = None, 100, None
    if lv is not None:
        if lv.member_price_percent < 100:
            discount, discount_from, discount_name = (100 - lv.member_price_percent) * 100, f"level:{lv.id}", lv.name
        if lv.free_shipping:
            free_from = f"level:{lv.id}"
        mult, mult_from = lv.points_multiplier_percent, f"level:{lv.id}"
    if card_until is not None:
        plan_ids = sorted({card.plan_id for card in repo.active_cards(session, merchant_id, member_id, now)})
        for plan in repo.card_plans_by_ids(session, merchant_id, plan_ids):
            if plan.member_discount_bp > discount:
                discount, discount_from, discount_name = plan.member_discount_bp, f"card_plan:{plan.id}", plan.name
            if plan.free_shipping and free_from is None:
                free_from = f"card_plan:{plan.id}"
            if plan.points_multiplier_percent > 100 and plan.points_multiplier_percent > mult:
                mult, mult_from = plan.points_multiplier_percent, f"card_plan:{plan.id}"
    return Benefits(level=lv, level_source=source, card_until=card_until, discount_bp=discount,
                    discount_from=discount_from, discount_name=discount_name, free_shipping_from=free_from,
                    multiplier_percent=mult, multiplier_from=mult_from)


def multiplier_percent(session: Session, merchant_id: int, member_id: int) -> int:
    """The points multiplier of the member's benefits (level or card, the highest)."""
    return member_benefits(session, merchant_id, member_id).multiplier_percent


def _figures(session: Session, merchant_id: int, state: Any) -> tuple[int, int, int, int]:
    """What the level rules read: (paid spend net of refunds, points earned, growth, paid orders)."""
    acct = repo.account(session, merchant_id, state.member_id)
    return state.paid_spend, acct.earned_total if acct else 0, state.growth, state.paid_orders


def _highest_qualified(ladder: list[Level], figures: tuple[int, int, int, int]) -> Level | None:
    target = None
    for i, lv in enumerate(ladder):  # ascending rank
        if _qualifies(lv, *figures, entry=i == 0):
            target = lv
    return target


def evaluate_level(session: Session, merchant_id: int, member_id: int, now: dt.datetime | None = None) -> Level | None:
    """Upgrade to the highest level the member qualifies for (never down: see ``review_levels``
    and ``_refund_review``)."""
    ladder = repo.levels(session, merchant_id)
    if not ladder:
        return None
    now = now or utcnow()
    state = repo.member_state(session, merchant_id, member_id, lock=True)
    target = _highest_qualified(ladder, _figures(session, merchant_id, state))
    current = next((lv for lv in ladder if lv.id == state.level_id), None)
    if target is None or (current is not None and target.rank <= current.rank):
        return current
    _move(session, merchant_id, member_id, state, current, target, "upgrade", now)
    return target


def _move(
    session: Session, merchant_id: int, member_id: int, state: Any, current: Level | None, target: Level | None,
    reason: str, now: dt.datetime,
) -> None:
    state.level_id = target.id if target else None
    state.level_since = now
    state.level_reviewed_at = now
    session.add(LevelHistory(merchant_id=merchant_id, member_id=member_id,
                             from_level_id=current.id if current else None, to_level_id=target.id if target else None,
                             reason=reason, created_at=now))
    session.flush()
    emit(session, merchant_id, "level.changed",
         {"member_id": member_id, "from_level_id": current.id if current else None,
          "to_level_id": target.id if target else None, "reason": reason},
         key=f"member:{member_id}:level:{target.id if target else 0}:{now.isoformat()}")
    if target is not None and (current is None or target.rank > current.rank):
        for template_id in target.coupon_template_ids:
            issue_coupon(session, merchant_id, member_id, template_id, source="level",
                         key=f"level:{target.id}:member:{member_id}:coupon:{template_id}")


def review_levels(session: Session, merchant_id: int, now: dt.datetime) -> int:
    """Yearly retention: a member whose level needs ``retain_growth`` and who earned less growth
    in the last 365 days moves down one step. Returns members moved down."""
    ladder = repo.levels(session, merchant_id)
    by_id = {lv.id: lv for lv in ladder}
    moved = 0
    year_ago = now - dt.timedelta(days=365)
    for due in repo.members_due_review(session, merchant_id, year_ago):
        state = repo.member_state(session, merchant_id, due.member_id, lock=True)
        current = by_id.get(state.level_id) if state.level_id else None
        if current is None:
            continue
        if current.retain_growth is None or repo.growth_since(session, merchant_id, state.member_id, year_ago) >= current.retain_growth:
            state.level_reviewed_at = now
            continue
        lower = [lv for lv in ladder if lv.rank < current.rank]
        _move(session, merchant_id, state.member_id, state, current, lower[-1] if lower else None, "retention", now)
        moved += 1
    session.flush()
    return moved


def level_progress(session: Session, merchant_id: int, member_id: int) -> LevelProgressOut:
    lv, source, card_until = effective_level(session, merchant_id, member_id)
    state = repo.member_state_or_none(session, merchant_id, member_id)
    acct = repo.account(session, merchant_id, member_id)
    have = {
        "spend": state.paid_spend if state else 0, "points": acct.earned_total if acct else 0,
        "growth": state.growth if state else 0, "orders": state.paid_orders if state else 0,
    }
    nxt = next((x for x in repo.levels(session, merchant_id) if lv is None or x.rank > lv.rank), None)
    progress: dict[str, dict[str, int]] = {}
    if nxt is not None:
        for name, need in (("spend", nxt.min_spend), ("points", nxt.min_points), ("growth", nxt.min_growth),
                           ("orders", nxt.min_orders)):
            if need is not None:
                progress[name] = {"have": have[name], "need": need}
    return LevelProgressOut(
        level=LevelOut.model_validate(lv) if lv else None, source=source,
        next_level=LevelOut.model_validate(nxt) if nxt else None, progress=progress, card_until=card_until,
    )


# -- coupons (through the coupons module when it is there) ----------------------------------------------


def issue_coupon(session: Session, merchant_id: int, member_id: int, template_id: int, *, source: str, key: str) -> bool:
    """Issue a coupon through ``siyu.coupons.service.issue_to_member``; without that module the
    reward is recorded as pending (``loyalty_pending_rewards``) and retried by the daily job.
    Returns True when issued now."""
    issue = _coupon_issuer()
    status = "pending"
    if issue is not None:
        try:
            with session.begin_nested():
                issue(session, merchant_id, template_id, member_id, source=source, idempotency_key=key)
            return True
        except DomainError as exc:  # e.g. the template ran out: keep the reason, do not fail the check-in
            log.warning("coupon %s not issued to member %s: %s", template_id, member_id, exc)
            status = "failed"
    insert_ignore(
        session, PendingReward.__table__,  # type: ignore[arg-type]
        {"merchant_id": merchant_id, "member_id": member_id, "template_id": template_id, "source": source,
         "idempotency_key": key, "status": status, "created_at": utcnow()},
        ["merchant_id", "idempotency_key"],
    )
    return False


def _coupon_issuer() -> Any:
    try:
        module = importlib.import_module("siyu.coupons.service")
    except ImportError:
        return None
    fn = getattr(module, "issue_to_member", None)
    return fn if callable(fn) else None


def issue_pending_rewards(session: Session, merchant_id: int) -> int:
    from sqlalchemy import select

    issue = _coupon_issuer()
    if issue is None:
        return 0
    done = 0
    rows = session.scalars(
        select(PendingReward).where(PendingReward.merchant_id == merchant_id, PendingReward.status == "pending").limit(500)
    )
    for row in list(rows):
        try:
            with session.begin_nested():
                issue(session, merchant_id, row.template_id, row.member_id, source=row.source,
                      idempotency_key=row.idempotency_key)
        except DomainError as exc:  # e.g. the template ended meanwhile: one bad reward must not fail the
            # daily job (and with it the level review and the birthday coupons) day after day
            log.warning("pending coupon %s not issued to member %s: %s", row.template_id, row.member_id, exc)
            row.status = "failed"
            continue
        row.status = "issued"
        done += 1
    session.flush()
    return done


def birthday_coupons(session: Session, merchant_id: int, now: dt.datetime) -> int:
    """The level's birthday coupon, once a year (key ``birthday:<member>:<year>``), on the local
    birthday; members born on 29 February get it on the 28th in years without a 29th. Returns the
    coupons issued (or found issued by an earlier run) now; refused ones are kept as failed rewards."""
    today = local_date(now, _tz(session, merchant_id))
    issued = 0
    for member_id, _ in repo.members_with_birthday(session, merchant_id, today):
        lv, _, _ = effective_level(session, merchant_id, member_id, now)
        if lv is not None and lv.birthday_coupon_template_id and issue_coupon(
            session, merchant_id, member_id, lv.birthday_coupon_template_id, source="birthday",
            key=f"birthday:{member_id}:{today.year}",
        ):
            issued += 1
    return issued


# -- earning: tasks and orders ------------------------------------------------------------------------


def _earn(
    session: Session, merchant_id: int, member_id: int, base: int, *, reason: str, ref: str | None, key: str,
    now: dt.datetime | None = None,
) -> int:
    """Award ``base`` points times the member's level multiplier; returns points awarded."""
    points = base * multiplier_percent(session, merchant_id, member_id) // 100
    if points <= 0:
        return 0
    entry = award(session, merchant_id, member_id, points, reason=reason, ref=ref, idempotency_key=key, now=now)
    return entry.delta


class _DailyCapReached(Exception):
    """Rolls a task report's savepoint back: its claim goes with it (the ref may come another day)."""


def complete_task(
    session: Session, merchant_id: int, member_id: int, task: str, *, ref: str, now: dt.datetime | None = None
) -> TaskOut:
    """Reward a task (complete_profile, first_review, share...) once per ``ref``, within its daily cap.

    One savepoint holds the whole report: the claim of its key (``task_completions``, unique)
    first, then the day's counter (conditional update, ``count < daily_cap``), the points, the
    growth and the level. A duplicate — also one running in parallel, which waits on the claim's
    unique index — is answered before the counter moves, so it never takes a slot; a report
    refused by the cap, or one that raises half-way, leaves nothing behind (not even its claim),
    also for a caller that catches the error and commits."""
    rules = get_rules(session, merchant_id)
    rule = rules.earn.tasks.get(task)
    if rule is None:
        raise DomainError("task_unknown", task=task)
    now = now or utcnow()
    key = f"task:{task}:{member_id}:{ref}"
    day = local_date(now, _tz(session, merchant_id))
    try:
        with session.begin_nested():
            if not repo.claim_task(session, merchant_id, member_id, key, now):
                return TaskOut(task=task, rewarded=False, points=0, growth=0, reason="duplicate")
            if not repo.bump_task_counter(session, merchant_id, member_id, task, day, rule.daily_cap):
                raise _DailyCapReached
            points = _earn(session, merchant_id, member_id, rule.points, reason=f"task:{task}", ref=ref, key=key,
                           now=now)
            add_growth(session, merchant_id, member_id, rule.growth, action=task, ref=ref, key=key, now=now)
            evaluate_level(session, merchant_id, member_id, now)
    except _DailyCapReached:
        return TaskOut(task=task, rewarded=False, points=0, growth=0, reason="daily_cap")
    return TaskOut(task=task, rewarded=True, points=points, growth=rule.growth)


def on_review_created(
    session: Session, merchant_id: int, member_id: int, review_id: int, now: dt.datetime | None = None
) -> TaskOut | None:
    """Every review earns the task ``review`` of the merchant's rules (growth, and points if the
    merchant sets them) within its ``daily_cap`` per local day, once per review id (ref
    ``review:<id>``, the task's claim key): a retried or duplicated ``review.created`` job earns
    nothing twice, and a review refused by the cap does not earn later. Hiding or deleting the
    review afterwards takes nothing back (moderation is not a refund: what a review earned when
    written stays, like the ``first_review`` bonus). Rules without the task (saved before it
    existed, or the merchant removed it) reward nothing. A member merged meanwhile earns on the
    kept member."""
    try:
        with session.begin_nested():
            return complete_task(session, merchant_id, repo.holder(session, merchant_id, member_id), "review",
                                 ref=f"review:{review_id}", now=now)
    except DomainError as exc:
        if exc.code != "task_unknown":
            raise
        return None


class _MergedOrder:
    """An order of a member merged since it was placed, as loyalty sees it: every attribute the
    order's, but ``member_id`` the kept member (its points, growth, counters and cards go there)."""

    def __init__(self, order: Any, member_id: int) -> None:
        self._order = order
        self.member_id = member_id

    def __getattr__(self, name: str) -> Any:
        return getattr(self._order, name)


def _order_and_lines(session: Session, merchant_id: int, order_id: int) -> tuple[Any, list[Any]]:
    """The order and its lines. The order of a member merged into another (``members.service``)
    counts for the kept member: paid, completed and refunded after the merge, its loyalty lands
    where the person's standing now is, not on the emptied merged member."""
    from siyu.orders import repository as orders_repo

    order = orders_repo.order(session, merchant_id, order_id)
    if order is None:
        raise not_found("订单", "Order")
    lines = orders_repo.order_lines(session, merchant_id, order_id)
    holder = repo.holder(session, merchant_id, order.member_id)
    return (order if holder == order.member_id else _MergedOrder(order, holder)), lines


def record_checkout_spend(
    session: Session, merchant_id: int, member_id: int, order_id: int, points: int, *, reason: str = "order",
) -> PointsEntry:
    """The POINTS submit hook: spend the points the stage reserved (idempotent by order). A
    points-mall exchange spends with reason ``mall_product:<sku>`` (``siyu.loyalty.mall``)."""
    entry = spend(session, merchant_id, member_id, points, reason=reason, ref=f"order:{order_id}",
                  idempotency_key=f"order:{order_id}:spend")
    op = repo.ensure_order_points(session, merchant_id, order_id, member_id)
    op.spent = points
    session.flush()
    return entry


def on_order_paid(session: Session, merchant_id: int, order_id: int, now: dt.datetime | None = None) -> None:
    """Counters, growth, card grants and (default) the order's points; idempotent per order."""
    now = now or utcnow()
    order, lines = _order_and_lines(session, merchant_id, order_id)
    op = repo.ensure_order_points(session, merchant_id, order_id, order.member_id)
    rules = get_rules(session, merchant_id)
    newly_paid = not op.paid_counted
    if newly_paid:
        op.paid_counted = True
        op.paid_amount = order.paid_amount
        state = repo.member_state(session, merchant_id, order.member_id, lock=True)
        state.paid_spend += max(0, order.paid_amount - op.refunded_amount)  # a refund seen first is netted here
        if op.refunded_amount < order.paid_amount:  # an order refunded in full before it was counted never counts
            state.paid_orders += 1
        growth = _goods_paid(order) * rules.earn.growth_per_yuan // 100
        if growth:
            add_growth(session, merchant_id, order.member_id, growth, action="order", ref=f"order:{order_id}",
                       key=f"order:{order_id}:growth", now=now)
            op.growth = growth
        session.flush()
    if rules.earn.award_on == "paid":
        # before the order's own cards: buying a card earns at the member's level before it
        _earn_order(session, merchant_id, order, lines, op, rules, now)
    if newly_paid:
        grant_cards(session, merchant_id, order, lines, now)
    _sync_refunds(session, merchant_id, op, _goods_paid(order), full=False, now=now)
    evaluate_level(session, merchant_id, order.member_id, now)


def on_order_completed(session: Session, merchant_id: int, order_id: int, now: dt.datetime | None = None) -> None:
    rules = get_rules(session, merchant_id)
    if rules.earn.award_on != "completed":
        return
    now = now or utcnow()
    order, lines = _order_and_lines(session, merchant_id, order_id)
    op = repo.ensure_order_points(session, merchant_id, order_id, order.member_id)
    if not op.paid_counted:  # completed before the paid job ran: do the paid part first
        on_order_paid(session, merchant_id, order_id, now)
    _earn_order(session, merchant_id, order, lines, op, rules, now)
    _sync_refunds(session, merchant_id, op, _goods_paid(order), full=False, now=now)
    evaluate_level(session, merchant_id, order.member_id, now)


def _earn_order(
    session: Session, merchant_id: int, order: Any, lines: list[Any], op: Any, rules: LoyaltyRules, now: dt.datetime
) -> None:
    if op.earned_at is not None:
        return
    base = _goods_paid(order) * rules.earn.points_per_yuan // 100
    if rules.earn.product_bonus:
        base += sum(line.bonus_points for line in lines)
    op.earned = _earn(session, merchant_id, order.member_id, base, reason="order", ref=f"order:{order.id}",
                      key=f"order:{order.id}:earn", now=now)
    op.earned_at = now
    session.flush()


def on_order_cancelled(session: Session, merchant_id: int, order_id: int, now: dt.datetime | None = None) -> None:
    """Points spent on a cancelled (unpaid) order come back, all of them, once."""
    op = repo.order_points(session, merchant_id, order_id, lock=True)
    if op is None or op.spent <= op.spent_returned:
        return
    reverse(session, merchant_id, f"order:{order_id}:spend", op.spent - op.spent_returned, reason="order_cancelled",
            ref=f"order:{order_id}", idempotency_key=f"order:{order_id}:cancel_return", now=now)
    op.spent_returned = op.spent
    session.flush()


def on_order_refunded(
    session: Session, merchant_id: int, order_id: int, refund_id: int, amount: int, *, full: bool,
    now: dt.datetime | None = None,
) -> None:
    """Reverse earned points, return spent points and take back growth in proportion (running total)."""
    now = now or utcnow()
    if not insert_ignore(session, LoyaltyRefund.__table__,  # type: ignore[arg-type]
                         {"merchant_id": merchant_id, "refund_id": refund_id, "order_id": order_id, "amount": amount,
                          "created_at": now}, ["merchant_id", "refund_id"]):
        return  # this refund was handled already
    order, lines = _order_and_lines(session, merchant_id, order_id)
    op = repo.ensure_order_points(session, merchant_id, order_id, order.member_id)
    if not op.paid_amount:
        op.paid_amount = order.paid_amount
    ladder = repo.levels(session, merchant_id)
    state = repo.member_state(session, merchant_id, order.member_id, lock=True)
    figures_before = _figures(session, merchant_id, state) if ladder else (0, 0, 0, 0)
    before = op.refunded_amount
    op.refunded_amount = min(op.paid_amount, op.refunded_amount + amount)
    now_full = full or (op.paid_amount > 0 and op.refunded_amount >= op.paid_amount)
    if op.paid_counted:  # otherwise the paid handler nets this refund when it counts the order
        # exactly what this refund took off the order's paid amount (a refund past it takes no more)
        state.paid_spend = max(0, state.paid_spend - (op.refunded_amount - before))
        if now_full and before < op.paid_amount:  # the refund that empties the order: it no longer counts
            state.paid_orders = max(0, state.paid_orders - 1)
    session.flush()
    _sync_refunds(session, merchant_id, op, _goods_paid(order), full=full, now=now, refund_id=refund_id,
                  by_units=_refunded_goods(lines) if order.paid_amount == 0 else None)
    if full:
        revoke_cards(session, merchant_id, order, now)
    _refund_review(session, merchant_id, state, ladder, figures_before, now)


def _refund_review(
    session: Session, merchant_id: int, state: Any, ladder: list[Level], figures_before: tuple[int, int, int, int],
    now: dt.datetime,
) -> Level | None:
    """After a refund: a member whose net figures no longer reach their rules level moves down to
    the highest level they still qualify for (reason ``refund``); returns that level, or None
    when nothing moved.

    Only what the refund itself cost counts: the member goes down when the highest level their
    figures reach fell below both their level and what the figures reached before the refund.
    So a member kept above their figures by an earlier ladder change, or set one step down by
    the retention review, is not moved by a refund that changes nothing about what they
    qualify for. Off when the merchant's ``levels.refund_lowers_level`` is false. A card's level
    is not the rules level: ``effective_level`` still applies the higher of the two.
    """
    if not ladder or state.level_id is None or not get_rules(session, merchant_id).levels.refund_lowers_level:
        return None
    current = next((lv for lv in ladder if lv.id == state.level_id), None)
    if current is None:
        return None
    reached_before = _highest_qualified(ladder, figures_before)
    reached = _highest_qualified(ladder, _figures(session, merchant_id, state))
    rank = reached.rank if reached is not None else -1
    if rank >= current.rank or rank >= (reached_before.rank if reached_before is not None else -1):
        return None
    _move(session, merchant_id, state.member_id, state, current, reached, "refund", now)
    return reached


def _goods_paid(order: Any) -> int:
    """What the order paid for its goods (freight excluded): the base of its points and growth,
    and so of their reversal on refunds."""
    return max(0, order.paid_amount - order.freight_amount)


def _refunded_goods(lines: list[Any]) -> tuple[int, int]:
    """A zero-paid order's refunds are all 0, so they are followed by goods, not money: the
    refunded units weighted by their unit sale price (the goods' value before coupons and
    points), over all units so weighted; ``(refunded, total)``. Lines all priced 0 weigh by
    quantity. Its zero-amount refunds succeed when booked, so the lines' refunded units are the
    refunded ones. Every unit refunded gives ``refunded == total``: all points back."""
    priced = any(ln.sale_price > 0 for ln in lines)
    weight = [ln.sale_price if priced else 1 for ln in lines]
    return (sum(w * ln.refunded_quantity for w, ln in zip(weight, lines, strict=True)),
            sum(w * ln.quantity for w, ln in zip(weight, lines, strict=True)))


def _share(total: int, refunded: int, paid: int, full: bool) -> int:
    if full or (paid and refunded >= paid):
        return total
    if paid <= 0:
        return 0
    return total * refunded // paid


def _sync_refunds(
    session: Session, merchant_id: int, op: Any, goods_paid: int, *, full: bool, now: dt.datetime,
    refund_id: int | None = None, by_units: tuple[int, int] | None = None,
) -> None:
    """Earned points, spent points and growth follow the order's refunds in proportion to its
    goods: a refund counts against the goods first (``goods_paid``; freight is refunded last),
    so refunding every item takes back every point and all growth although the freight was
    kept. Each step runs once per refund (keys); the targets are cumulative, so it ends exact.
    ``by_units`` (``_refunded_goods``) replaces the money basis for a zero-paid order."""
    refunded, basis = by_units if by_units is not None else (op.refunded_amount, goods_paid or op.paid_amount)
    # (an order of freight alone: the paid amount is the basis)
    if refunded <= 0 and not full:
        return
    if by_units is None:
        full = full or (op.paid_amount > 0 and op.refunded_amount >= op.paid_amount)
    else:
        full = full or (basis > 0 and refunded >= basis)
    tag = f"refund:{refund_id}" if refund_id is not None else f"sync:{op.refunded_amount}"
    order_ref = f"order:{op.order_id}"
    target = _share(op.earned, refunded, basis, full)
    if target > op.earn_reversed:
        reverse(session, merchant_id, f"{order_ref}:earn", target - op.earn_reversed, reason="order_refunded",
                ref=order_ref, idempotency_key=f"{order_ref}:{tag}:earn", now=now)
        op.earn_reversed = target
    target = _share(op.spent, refunded, basis, full)
    if target > op.spent_returned:
        reverse(session, merchant_id, f"{order_ref}:spend", target - op.spent_returned, reason="order_refunded",
                ref=order_ref, idempotency_key=f"{order_ref}:{tag}:spend", now=now)
        op.spent_returned = target
    target = _share(op.growth, refunded, basis, full)
    if target > op.growth_reversed:
        add_growth(session, merchant_id, repo.holder(session, merchant_id, op.member_id),
                   -(target - op.growth_reversed), action="order_refunded",
                   ref=order_ref, key=f"{order_ref}:{tag}:growth", now=now)
        op.growth_reversed = target
    session.flush()


# -- check-in -----------------------------------------------------------------------------------------


def check_in(session: Session, merchant_id: int, member_id: int, now: dt.datetime | None = None) -> CheckIn:
    """Check in for the member's current local day (one per day; the unique key refuses a second)."""
    now = now or utcnow()
    rules = get_rules(session, merchant_id).check_in
    if not rules.enabled:
        raise DomainError("checkin_disabled")
    day = local_date(now, _tz(session, merchant_id))
    prev = repo.check_in(session, merchant_id, member_id, day - dt.timedelta(days=1))
    streak = prev.streak + 1 if prev else 1
    row = CheckIn(merchant_id=merchant_id, member_id=member_id, day=day, streak=streak, makeup=False, points=0,
                  growth=0, rewards=[], created_at=now)
    try:
        with session.begin_nested():
            session.add(row)
            session.flush()
    except IntegrityError:
        raise DomainError("checkin_already") from None
    base = f"checkin:{member_id}:{day.isoformat()}"
    points = _earn(session, merchant_id, member_id, rules.points, reason="check_in", ref=base, key=base, now=now)
    growth = rules.growth
    rewards: list[dict[str, Any]] = []
    milestones = [("streak", r, f"{base}:streak:{r.day}") for r in rules.streak_rewards if r.day == streak]
    if rules.total_rewards:
        total = repo.check_in_count(session, merchant_id, member_id)
        # once per member and milestone, whatever the day it is reached on
        milestones += [("total", r, f"checkin:{member_id}:total:{r.day}") for r in rules.total_rewards if r.day == total]
    for kind, reward, key in milestones:
        got: dict[str, Any] = {"kind": kind, "day": reward.day}
        if reward.points:
            got["points"] = _earn(session, merchant_id, member_id, reward.points, reason=f"check_in_{kind}", ref=base,
                                  key=key, now=now)
            points += got["points"]
        if reward.growth:
            growth += reward.growth
            got["growth"] = reward.growth
        if reward.coupon_template_id:
            got["coupon_template_id"] = reward.coupon_template_id
            got["coupon_issued"] = issue_coupon(session, merchant_id, member_id, reward.coupon_template_id,
                                                source="check_in", key=key)
        rewards.append(got)
    add_growth(session, merchant_id, member_id, growth, action="check_in", ref=base, key=base, now=now)
    row.points, row.growth, row.rewards = points, growth, rewards
    session.flush()
    emit(session, merchant_id, "member.checked_in",
         {"member_id": member_id, "day": day.isoformat(), "streak": streak, "points": points},
         key=f"{member_id}:{day.isoformat()}")
    evaluate_level(session, merchant_id, member_id, now)
    return row


def check_in_once(
    session: Session, merchant_id: int, member_id: int, *, idempotency_key: str | None, now: dt.datetime | None = None
) -> tuple[CheckIn, bool]:
    """The store's check-in, ``(row, created)``. Sent with an ``Idempotency-Key`` (a client that
    retries), a repeat on the same local day answers with that day's check-in (``created`` False:
    200 and ``Idempotent-Replayed: true``, nothing awarded again); without one it stays 409
    ``checkin_already``. The day itself is the key (one check-in per member and day, unique), so
    the header is checked but not stored: any key sent on a day that has its check-in replays it."""
    if idempotency_key is None:
        return check_in(session, merchant_id, member_id, now), True
    _check_client_key(idempotency_key)
    now = now or utcnow()
    try:
        return check_in(session, merchant_id, member_id, now), True
    except DomainError as exc:
        if exc.code != "checkin_already":
            raise
        row = repo.check_in(session, merchant_id, member_id, local_date(now, _tz(session, merchant_id)))
        if row is None or row.makeup:
            raise
        return row, False


def makeup_once(
    session: Session, merchant_id: int, member_id: int, day: dt.date, *, idempotency_key: str | None,
    now: dt.datetime | None = None,
) -> tuple[CheckIn, bool]:
    """``makeup_check_in``, ``(row, created)``; with an ``Idempotency-Key`` a repeat for a day
    already made up answers with that make-up (200, ``Idempotent-Replayed: true``, no second
    charge) instead of ``makeup_not_allowed``. The day is the key, as for ``check_in_once``."""
    if idempotency_key is None:
        return makeup_check_in(session, merchant_id, member_id, day, now), True
    _check_client_key(idempotency_key)
    try:
        return makeup_check_in(session, merchant_id, member_id, day, now), True
    except DomainError as exc:
        if exc.code != "makeup_not_allowed":
            raise
        row = repo.check_in(session, merchant_id, member_id, day)
        if row is None or not row.makeup:
            raise
        return row, False


def _check_client_key(key: str | None) -> str:
    from siyu.orders.checkout import check_idempotency_key

    return check_idempotency_key(key)


def makeup_check_in(
    session: Session, merchant_id: int, member_id: int, day: dt.date, now: dt.datetime | None = None
) -> CheckIn:
    """Fill a missed day within ``within_days`` for ``cost_points``; repairs the streaks after it.
    A make-up earns no check-in points or streak rewards itself (it only mends the streak)."""
    now = now or utcnow()
    rules = get_rules(session, merchant_id).check_in
    if not rules.enabled:
        raise DomainError("checkin_disabled")
    if not rules.makeup.enabled:
        raise DomainError("makeup_not_allowed", reason="补签未开启", reason_en="make-up is not enabled")
    today = local_date(now, _tz(session, merchant_id))
    if day >= today:
        raise DomainError("makeup_not_allowed", reason="只能补签今天之前的日期", reason_en="only days before today")
    if (today - day).days > rules.makeup.within_days:
        raise DomainError("makeup_not_allowed", reason=f"只能补签 {rules.makeup.within_days} 天内",
                          reason_en=f"only the last {rules.makeup.within_days} days")
    if repo.check_in(session, merchant_id, member_id, day) is not None:
        raise DomainError("makeup_not_allowed", reason="当天已签到", reason_en="already checked in that day")
    prev = repo.check_in(session, merchant_id, member_id, day - dt.timedelta(days=1))
    row = CheckIn(merchant_id=merchant_id, member_id=member_id, day=day, streak=prev.streak + 1 if prev else 1,
                  makeup=True, points=0, growth=0, rewards=[], created_at=now)
    try:
        with session.begin_nested():
            session.add(row)
            session.flush()
            if rules.makeup.cost_points:
                spend(session, merchant_id, member_id, rules.makeup.cost_points, reason="check_in_makeup",
                      ref=f"checkin:{day.isoformat()}", idempotency_key=f"makeup:{member_id}:{day.isoformat()}", now=now)
    except IntegrityError:
        raise DomainError("makeup_not_allowed", reason="当天已签到", reason_en="already checked in that day") from None
    streak = row.streak
    for later in repo.check_ins_between(session, merchant_id, member_id, day + dt.timedelta(days=1), today):
        expected = day + dt.timedelta(days=streak - row.streak + 1)
        if later.day != expected:
            break
        streak += 1
        later.streak = streak
    session.flush()
    return row


def current_streak(session: Session, merchant_id: int, member_id: int, today: dt.date) -> tuple[int, bool]:
    """(streak, checked in today): today's streak, or yesterday's when today is still open."""
    row = repo.check_in(session, merchant_id, member_id, today)
    if row is not None:
        return row.streak, True
    prev = repo.check_in(session, merchant_id, member_id, today - dt.timedelta(days=1))
    return (prev.streak if prev else 0), False


def calendar(session: Session, merchant_id: int, member_id: int, month: str | None, now: dt.datetime | None = None) -> CalendarOut:
    now = now or utcnow()
    today = local_date(now, _tz(session, merchant_id))
    if month is None:
        first = today.replace(day=1)
    else:
        try:
            first = dt.date.fromisoformat(f"{month}-01")
        except ValueError:
            raise invalid("month", "invalid_month", "month must be YYYY-MM", "月份格式应为 YYYY-MM") from None
    last = (first.replace(day=28) + dt.timedelta(days=4)).replace(day=1) - dt.timedelta(days=1)
    rows = repo.check_ins_between(session, merchant_id, member_id, first, last)
    streak, _ = current_streak(session, merchant_id, member_id, today)
    return CalendarOut(month=first.strftime("%Y-%m"), today=today, streak=streak,
                       days=[CheckInOut.model_validate(r) for r in rows])


# -- paid membership cards ----------------------------------------------------------------------------


def save_card_plan(session: Session, merchant_id: int, data: CardPlanIn, *, plan_id: int | None, actor: Actor) -> CardPlan:
    """Create or change a card plan. It grants a level (``level_id``) or at least one benefit of its
    own (``member_discount_bp`` > 0, ``free_shipping``, ``points_multiplier_percent`` > 100), else
    422 ``card_plan_grants_nothing``; every check runs before anything (the product's kind) changes."""
    from siyu.catalog.models import KIND_VIRTUAL, Product

    product = session.get(Product, data.product_id)
    if product is None or product.merchant_id != merchant_id:
        raise invalid("product_id", "product_not_found", "no such product", "商品不存在")
    if data.level_id is not None and repo.level(session, merchant_id, data.level_id) is None:
        raise invalid("level_id", "level_not_found", "no such level", "会员等级不存在")
    if data.level_id is None and not (data.member_discount_bp > 0 or data.free_shipping
                                      or data.points_multiplier_percent > 100):
        raise DomainError("card_plan_grants_nothing")
    plan = card_plan(session, merchant_id, plan_id) if plan_id is not None else None
    for other in repo.card_plans_for_products(session, merchant_id, [data.product_id]):
        if plan is None or other.id != plan.id:
            raise DomainError("card_product_taken")
    if product.kind != KIND_VIRTUAL:
        # A card is delivered by granting it (no address, no freight, complete on payment) and
        # sold at its own price: coupons stay off unless the merchant turns them back on.
        product.kind = KIND_VIRTUAL
        product.coupons_allowed = False
    if plan is None:
        plan = CardPlan(merchant_id=merchant_id, **data.model_dump())
        session.add(plan)
    else:
        for k, v in data.model_dump().items():
            setattr(plan, k, v)
    session.flush()
    audit.record(session, merchant_id, "card_plan", plan.id, "saved", actor=actor, data=data.model_dump())
    return plan


def card_plan(session: Session, merchant_id: int, plan_id: int) -> CardPlan:
    found = repo.card_plan(session, merchant_id, plan_id)
    if found is None:
        raise not_found("会员卡", "Membership card")
    return found


def grant_cards(session: Session, merchant_id: int, order: Any, lines: list[Any], now: dt.datetime) -> list[MemberCard]:
    """An order paid with card products grants the cards (one row per order and plan; terms stack)."""
    qty: dict[int, int] = {}
    for line in lines:
        qty[line.product_id] = qty.get(line.product_id, 0) + line.quantity
    granted: list[MemberCard] = []
    for plan in repo.card_plans_for_products(session, merchant_id, list(qty)):
        before, _, _ = effective_level(session, merchant_id, order.member_id, now)
        starts = max(now, repo.last_card_end(session, merchant_id, order.member_id, plan.id, now) or now)
        ends = starts + dt.timedelta(days=plan.term_days * qty[plan.product_id])
        if not insert_ignore(
            session, MemberCard.__table__,  # type: ignore[arg-type]
            {"merchant_id": merchant_id, "member_id": order.member_id, "plan_id": plan.id, "order_id": order.id,
             "level_id": plan.level_id, "starts_at": starts, "ends_at": ends, "status": CARD_ACTIVE},
            ["merchant_id", "order_id", "plan_id"],
        ):
            continue
        after, _, _ = effective_level(session, merchant_id, order.member_id, now)
        if after is not None and (before is None or after.rank > before.rank):
            session.add(LevelHistory(merchant_id=merchant_id, member_id=order.member_id,
                                     from_level_id=before.id if before else None, to_level_id=after.id, reason="card",
                                     created_at=now))
            emit(session, merchant_id, "level.changed",
                 {"member_id": order.member_id, "from_level_id": before.id if before else None,
                  "to_level_id": after.id, "reason": "card"}, key=f"card:{order.id}:{plan.id}")
        granted.extend(c for c in repo.cards_of_order(session, merchant_id, order.id) if c.plan_id == plan.id)
    session.flush()
    return granted


def revoke_cards(session: Session, merchant_id: int, order: Any, now: dt.datetime) -> int:
    """A full refund within the plan's ``refund_days`` of payment revokes the order's cards; later
    the card stays (the refund then is the merchant's goodwill)."""
    revoked = 0
    for card in repo.cards_of_order(session, merchant_id, order.id):
        plan = repo.card_plan(session, merchant_id, card.plan_id)
        paid_at = order.paid_at or card.starts_at
        if card.status != CARD_ACTIVE or plan is None or now - paid_at > dt.timedelta(days=plan.refund_days):
            continue
        before, _, _ = effective_level(session, merchant_id, card.member_id, now)
        card.status = CARD_REVOKED
        card.revoked_at = now
        session.flush()
        after, _, _ = effective_level(session, merchant_id, card.member_id, now)
        session.add(LevelHistory(merchant_id=merchant_id, member_id=card.member_id,
                                 from_level_id=before.id if before else None, to_level_id=after.id if after else None,
                                 reason="card_revoked", created_at=now))
        if (before.id if before else None) != (after.id if after else None):
            emit(session, merchant_id, "level.changed",
                 {"member_id": card.member_id, "from_level_id": before.id if before else None,
                  "to_level_id": after.id if after else None, "reason": "card_revoked"}, key=f"card:{card.id}:revoked")
        revoked += 1
    session.flush()
    return revoked


def expire_cards(session: Session, merchant_id: int, now: dt.datetime) -> int:
    """Cards whose term ended become ``expired``. When that lowers the level whose benefits the
    member gets (the card's level was above their rules level and any other card's), the move is
    written to the level history (reason ``card_expired``) and ``level.changed`` is emitted, as
    for every other move; the benefits themselves stopped at ``ends_at`` already (they are read
    from the active cards). Run hourly; idempotent. Returns the cards expired."""
    expired = 0
    moved: set[tuple[int, int | None]] = set()  # (member, level now) written in this run
    for card in repo.cards_ended(session, merchant_id, now):
        if not repo.claim_card_expiry(session, merchant_id, card.id):
            continue
        expired += 1
        session.expire(card, ["status"])
        after, _, _ = effective_level(session, merchant_id, card.member_id, now)
        held = repo.level(session, merchant_id, card.level_id) if card.level_id is not None else None
        if held is None or (after is not None and after.rank >= held.rank):
            continue
        if (card.member_id, after.id if after else None) in moved:  # two cards of one level ending together
            continue
        moved.add((card.member_id, after.id if after else None))
        session.add(LevelHistory(merchant_id=merchant_id, member_id=card.member_id, from_level_id=held.id,
                                 to_level_id=after.id if after else None, reason="card_expired", created_at=now))
        emit(session, merchant_id, "level.changed",
             {"member_id": card.member_id, "from_level_id": held.id, "to_level_id": after.id if after else None,
              "reason": "card_expired"}, key=f"card:{card.id}:expired")
    session.flush()
    return expired


def buy_card(
    session: Session, merchant_id: int, member_id: int, plan_id: int, *, address_id: int | None,
    idempotency_key: str | None, payment_timeout: dt.timedelta,
) -> tuple[Any, bool]:
    """Create the order for a card (the card is granted when it is paid)."""
    from sqlalchemy import select

    from siyu.catalog.models import Sku
    from siyu.orders import checkout
    from siyu.orders.schemas import CheckoutIn

    plan = card_plan(session, merchant_id, plan_id)
    if not plan.active:
        raise DomainError("card_not_on_sale")
    sku_id = session.scalar(
        select(Sku.id).where(Sku.merchant_id == merchant_id, Sku.product_id == plan.product_id, Sku.active.is_(True))
        .order_by(Sku.id).limit(1)
    )
    if sku_id is None:
        raise DomainError("card_not_on_sale")
    body = CheckoutIn.model_validate({"items": [{"sku_id": sku_id, "quantity": 1}], "address_id": address_id})
    return checkout.submit(session, merchant_id, member_id, body, idempotency_key=idempotency_key,
                           payment_timeout=payment_timeout)


# -- points mall ----------------------------------------------------------------------------------------


def mall_items(
    session: Session, merchant_id: int, member_id: int | None = None, now: dt.datetime | None = None
) -> list[MallItemOut | MallProductOut]:
    """The enabled points-mall coupons (``rules.mall``) whose template still exists, in the
    merchant's order, then the enabled products (``siyu.loyalty.mall.product_items``).
    Level-exclusive coupons carry ``level_required`` (ladder order; a deleted level left out)
    and, for ``member_id`` (None: an anonymous visitor) outside those levels, ``can_redeem``
    false with ``reason`` ``coupon_level_required`` — the check redeeming makes
    (``coupons.service.check_level``: the effective level). One level read per call, only when
    some item is level-exclusive."""
    from siyu.loyalty import mall

    rules = get_rules(session, merchant_id)
    items = [item for item in rules.mall if item.enabled and item.kind == "coupon"]
    ids = {int(item.coupon_template_id or 0) for item in items}
    templates = repo.coupon_template_names_and_levels(session, merchant_id, ids)
    names = {tid: name for tid, (name, _) in templates.items()}
    levels = {tid: wanted for tid, (_, wanted) in templates.items()}
    exclusive = any(levels.get(tid) for tid in ids)
    ladder = [(lv.id, lv.name) for lv in repo.levels(session, merchant_id)] if exclusive else []
    mine = None
    if exclusive and member_id is not None:
        lv, _, _ = effective_level(session, merchant_id, member_id, now)
        mine = lv.id if lv is not None else None
    out: list[MallItemOut | MallProductOut] = []
    for item in items:
        tid = int(item.coupon_template_id or 0)
        if tid not in names:
            continue
        wanted = levels.get(tid) or []
        allowed = not wanted or mine in wanted
        out.append(MallItemOut(
            coupon_template_id=tid, points=item.points, name=names[tid], can_redeem=allowed,
            reason=None if allowed else "coupon_level_required",
            level_required=[MallLevelOut(id=i, name=n) for i, n in ladder if i in wanted] if wanted else None,
        ))
    return out + list(mall.product_items(session, merchant_id, rules, member_id))


def redeem_coupon(
    session: Session, merchant_id: int, member_id: int, template_id: int, *, idempotency_key: str | None,
    now: dt.datetime | None = None,
) -> tuple[MallRedemptionOut, bool]:
    """Buy a points-mall coupon: the points are spent (reason ``mall``, ref
    ``coupon_template:<id>``) and the coupon issued (source ``points_mall``) under one key
    derived from the member and the client's ``Idempotency-Key`` (required), in one savepoint:
    a refusal (``points_insufficient``, or the template's ``coupon_sold_out``,
    ``coupon_limit_reached``, ``coupon_ended``...) spends nothing and issues nothing. A retry
    with the key returns the first redemption (``created`` False), also after the item was
    taken out of the mall; the key sent again for another coupon is ``idempotency_key_reused``."""
    import hashlib

    from siyu.coupons import service as coupons

    client_key = _check_client_key(idempotency_key)
    key = f"mall:{member_id}:{hashlib.sha256(client_key.encode()).hexdigest()[:40]}"
    ref = f"coupon_template:{template_id}"
    first = repo.entry_by_key(session, merchant_id, key)
    if first is not None:
        if first.member_id != member_id or first.ref != ref:
            raise DomainError("idempotency_key_reused")
        coupon, _ = coupons.issue_once(session, merchant_id, template_id, member_id, source="points_mall",
                                       idempotency_key=key)
        return _redemption(coupon.id, template_id, first), False
    item = next((x for x in get_rules(session, merchant_id).mall
                 if x.kind == "coupon" and x.coupon_template_id == template_id and x.enabled), None)
    if item is None:
        raise DomainError("mall_item_not_found", template_id=template_id)
    now = now or utcnow()
    with session.begin_nested():
        entry = spend(session, merchant_id, member_id, item.points, reason="mall", ref=ref, idempotency_key=key,
                      now=now)
        coupon, _ = coupons.issue_once(session, merchant_id, template_id, member_id, source="points_mall",
                                       idempotency_key=key, now=now)
    return _redemption(coupon.id, template_id, entry), True


def _redemption(coupon_id: int, template_id: int, entry: PointsEntry) -> MallRedemptionOut:
    return MallRedemptionOut(coupon_id=coupon_id, coupon_template_id=template_id, points=-entry.delta,
                             points_entry_id=entry.id, balance_after=entry.balance_after)


# -- summaries ----------------------------------------------------------------------------------------


def member_summary(session: Session, merchant_id: int, member_id: int) -> dict[str, Any]:
    """The member 360 section (``members.profile`` finds it by name)."""
    return summary(session, merchant_id, member_id).model_dump(mode="json")


def summary(session: Session, merchant_id: int, member_id: int, now: dt.datetime | None = None) -> MemberLoyaltyOut:
    now = now or utcnow()
    lv, source, card_until = effective_level(session, merchant_id, member_id, now)
    state = repo.member_state_or_none(session, merchant_id, member_id)
    acct = repo.account(session, merchant_id, member_id)
    streak, today_done = current_streak(session, merchant_id, member_id, local_date(now, _tz(session, merchant_id)))
    return MemberLoyaltyOut(
        member_id=member_id, level_id=lv.id if lv else None, level_name=lv.name if lv else None, level_source=source,
        points_balance=acct.balance if acct else 0, points_earned_total=acct.earned_total if acct else 0,
        growth=state.growth if state else 0, paid_spend=state.paid_spend if state else 0,
        paid_orders=state.paid_orders if state else 0, check_in_streak=streak, checked_in_today=today_done,
        card_until=card_until, pending_rewards=repo.pending_reward_count(session, merchant_id, member_id),
    )
