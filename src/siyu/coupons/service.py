"""Coupons: templates (configured as data), issuing, the wallet, pricing, lifecycle, stats.

Issuing (``issue_to_member``, used by every channel and by other modules)::

    template active, inside its issue window, validity not over
      → issued = issued + 1 WHERE issued < total_quantity          (else coupon_sold_out)
      → received = received + 1 WHERE received < per_member_limit  (else coupon_limit_reached)
      → INSERT member_coupons (unique idempotency_key)             (a retry returns the first)

All three happen in a savepoint, so a refusal leaves no counter moved even when the caller
catches the error and goes on (bulk issue). Rows are always locked in the same order
(template, then the member counter), so concurrent claims never deadlock.

Level-exclusive coupons (等级专属券, ``CouponTemplate.level_ids``; empty = everyone): the member's
*effective* level (``siyu.loyalty.service.effective_level``: the rules level, or an active paid
card's level when that ranks higher — the level whose benefits apply now, as the member price
and points multiplier use) must be one of them when the coupon is received. ``issue_once`` checks
it for every channel, after the key lookup (a retry replays its first coupon) and before any
counter moves, so a refusal changes nothing:

- self-claim (领券) and redeem codes: 403 ``coupon_level_required`` naming the levels; the code
  stays unredeemed;
- operator bulk issue: members outside the levels are skipped and counted in
  ``refused["coupon_level_required"]`` (an operator who wants to reach them issues a template
  without levels: the restriction is part of what the merchant promised about this coupon);
- registration / after-payment: not issued to them (logged, as a sold-out template is);
- other modules through ``issue_to_member`` (level rewards, birthday coupons, points mall,
  journeys, lottery): refused with ``coupon_level_required`` for a member outside the levels, so a
  points-mall purchase spends nothing; a level reward is issued after the move, so the member
  reaching the level receives that level's exclusive coupon.

The restriction is at receipt only: a coupon held stays usable at checkout (and is returned to
the wallet by a cancel or refund) even when the member's level later drops (what the member was
given is theirs); pricing never looks at levels. ``level_ids`` may change after coupons were issued (it is
not one of the frozen discount rules); only the ids an update adds are checked to be the
merchant's levels, so a template keeps working after one of its levels was deleted (that id
then matches nobody).

Wallet lifecycle::

    unused ──submit (lock, conditional)──► locked ──order.paid──► used
      ▲                                      │                     │
      └── order.cancelled / full refund ◄────┴─────────────────────┘   (expired if past validity)
    unused ──expiry job──► expired        unused ──operator──► voided

Pricing (the COUPONS stage, ``apply_to_pricing``): one query loads the member's wallet with
the templates. A coupon applies to the lines in its scope (all / categories / products, minus
excluded products) whose product allows coupons and that no earlier activity flagged
``no_coupon``, on what the earlier stages left (``line.amount``); its threshold is checked
against those lines. Stacking: one coupon per order, except that a *stackable* discount coupon
(fixed / percent / threshold) and a *stackable* free-shipping coupon may be used together. With
no explicit choice the combination that takes the most off (freight included) is picked — ties
go to the coupon that expires first — and every other wallet coupon gets a note with its
reason; an explicit choice that does not apply is an error with a specific code.

Services never commit.
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from siyu.catalog import repository as catalog_repo
from siyu.coupons import repository as repo
from siyu.coupons.models import (
    ACTIVE,
    CH_AFTER_PAYMENT,
    CH_CLAIM,
    CH_CODE,
    CH_REGISTRATION,
    DRAFT,
    EXPIRED,
    FIXED,
    FREE_SHIPPING,
    LOCKED,
    PERCENT,
    SCOPE_ALL,
    SCOPE_CATEGORIES,
    SCOPE_PRODUCTS,
    STOPPED,
    THRESHOLD,
    UNUSED,
    USED,
    VALID_FIXED,
    VALID_RELATIVE,
    VOIDED,
    CouponTemplate,
    MemberCoupon,
)
from siyu.coupons.schemas import (
    ClaimableOut,
    CouponOut,
    IssueIn,
    IssueOut,
    LevelRef,
    TemplateFields,
    TemplateIn,
    TemplateOut,
    TemplateStatsOut,
    TemplateUpdate,
    WalletCouponOut,
)
from siyu.kit import audit
from siyu.kit.errors import DomainError, FieldError, catalogue, not_found, register_messages
from siyu.kit.events import emit
from siyu.kit.money import percent_of, yuan
from siyu.kit.outbox import enqueue
from siyu.kit.timeutil import utcnow
from siyu.loyalty import repository as loyalty_repo
from siyu.orders.pricing import COUPONS, PricedLine, PricingContext

log = logging.getLogger("siyu.coupons")

_MESSAGES = {
    "coupon_sold_out": (409, "优惠券已抢光", "The coupon is sold out"),
    "coupon_limit_reached": (409, "每人限领 {limit} 张", "The coupon is limited to {limit} per member"),
    "coupon_not_started": (409, "优惠券尚未开始发放", "The coupon cannot be received yet"),
    "coupon_ended": (409, "优惠券已停止发放", "The coupon can no longer be received"),
    "coupon_template_inactive": (409, "优惠券未启用", "The coupon is not active"),
    "coupon_channel_closed": (409, "该优惠券不支持此领取方式", "The coupon cannot be received this way"),
    "coupon_template_in_use": (
        409, "优惠券已发放，不能修改其优惠规则，也不能删除（可停用）",
        "The coupon was already issued: its rules can no longer change and it cannot be deleted (stop it instead)",
    ),
    "coupon_template_state_invalid": (
        409, "优惠券当前状态（{status}）不能变为 {target}", "The coupon cannot go from {status} to {target}"
    ),
    "coupon_code_invalid": (404, "兑换码不存在", "No such redeem code"),
    "coupon_code_used": (409, "兑换码已被使用", "The redeem code was already used"),
    "coupon_expired": (409, "优惠券已过期", "The coupon has expired"),
    "coupon_used": (409, "优惠券已使用", "The coupon was already used"),
    "coupon_locked": (409, "优惠券已被其他待支付订单占用", "The coupon is held by another unpaid order"),
    "coupon_voided": (409, "优惠券已作废", "The coupon was voided"),
    "coupon_not_yet_valid": (409, "优惠券尚未到可用时间", "The coupon is not valid yet"),
    "coupon_out_of_scope": (409, "订单中没有可使用该优惠券的商品", "No item in the order can use this coupon"),
    "coupon_excluded_by_product": (409, "所选商品不可使用优惠券", "The items do not accept coupons"),
    "coupon_excluded_by_activity": (409, "活动商品不可使用优惠券", "Items in this activity do not accept coupons"),
    "coupon_below_threshold": (
        409, "适用商品未满 {threshold}，不能使用该优惠券", "Spend at least {threshold} on eligible items to use this coupon"
    ),
    "coupon_no_discount": (409, "该优惠券对本单没有优惠", "The coupon takes nothing off this order"),
    "coupon_not_stackable": (409, "这些优惠券不能同时使用", "These coupons cannot be used together"),
    "coupon_not_voidable": (409, "只有未使用的优惠券可以作废", "Only an unused coupon can be voided"),
    "coupon_level_required": (
        403, "该优惠券仅限 {levels} 会员领取", "Only members of level {levels} can receive this coupon"
    ),
}
register_messages({k: v for k, v in _MESSAGES.items() if k not in catalogue()})

Actor = tuple[str, int | None]
RESERVATION = "coupons"
CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I
BULK_SYNC_LIMIT = 1000  # a larger audience is issued by background jobs
BULK_CHUNK = 500
MAX_DAYS = 3650

# Reason codes a wallet coupon does not apply (notes) and the error an explicit choice raises.
REASON_ERRORS = {
    "expired": "coupon_expired",
    "used": "coupon_used",
    "locked": "coupon_locked",
    "voided": "coupon_voided",
    "not_started": "coupon_not_yet_valid",
    "out_of_scope": "coupon_out_of_scope",
    "product_excludes_coupons": "coupon_excluded_by_product",
    "activity_excludes_coupons": "coupon_excluded_by_activity",
    "below_threshold": "coupon_below_threshold",
    "no_discount": "coupon_no_discount",
    "already_free_shipping": "coupon_no_discount",
}
REASON_MESSAGES = {
    "expired": "优惠券已过期",
    "used": "优惠券已使用",
    "locked": "优惠券已被待支付订单占用",
    "voided": "优惠券已作废",
    "not_started": "优惠券尚未到可用时间",
    "out_of_scope": "订单中没有适用商品",
    "product_excludes_coupons": "所选商品不可用券",
    "activity_excludes_coupons": "活动商品不可用券",
    "below_threshold": "未达到使用门槛",
    "no_discount": "对本单没有优惠",
    "already_free_shipping": "本单已包邮",
    "not_best": "已为您选择更优惠的券",
    "not_stackable": "不能与已选优惠券叠加",
}


def _template_not_found() -> DomainError:
    return not_found("优惠券模板", "Coupon template")


def _coupon_not_found() -> DomainError:
    return not_found("优惠券", "Coupon")


def _new_code(length: int = 12) -> str:
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(length))


# -- templates -----------------------------------------------------------------------------------------

_RULE_FIELDS = (
    "kind", "amount", "threshold", "percent_off_bp", "max_discount", "scope", "scope_ids", "excluded_product_ids",
    "validity_mode", "valid_from", "valid_until", "valid_days",
)


def _field(path: str, code: str, message: str, zh: str) -> FieldError:
    """One field's refusal: ``message`` in English, ``zh`` in zh-CN."""
    return FieldError(path, code, message, zh)


def _aware(value: dt.datetime | None) -> dt.datetime | None:
    return value.astimezone(dt.UTC) if value is not None and value.tzinfo is not None else value


def validate_template(t: CouponTemplate) -> None:
    """Every rule of a template, each with its own field code; raises one 422 listing all."""
    errors: list[FieldError] = []
    if t.kind in (FIXED, THRESHOLD) and (t.amount is None or t.amount <= 0):
        errors.append(_field("amount", "amount_invalid", "amount must be a positive number of fen", "金额须为正整数（单位：分）"))
    if t.kind == THRESHOLD and (t.threshold or 0) <= 0:
        errors.append(_field("threshold", "threshold_required", "a threshold coupon needs a positive threshold",
                             "满减券须设置大于 0 的使用门槛"))
    if (t.threshold or 0) < 0:
        errors.append(_field("threshold", "threshold_negative", "threshold cannot be negative", "使用门槛不能为负数"))
    if t.kind in (FIXED, THRESHOLD) and t.threshold and t.amount and t.amount > t.threshold:
        errors.append(_field("amount", "amount_above_threshold", "amount off cannot exceed the threshold",
                             "减免金额不能超过使用门槛"))
    if t.kind in (PERCENT, FREE_SHIPPING) and t.amount:
        errors.append(_field("amount", "amount_not_allowed", "only fixed and threshold coupons take an amount",
                             "只有立减券和满减券可以设置金额"))
    if t.kind == PERCENT:
        if not 0 < (t.percent_off_bp or 0) <= 10000:
            errors.append(_field("percent_off", "percent_out_of_range", "percent off must be above 0 and at most 100",
                                 "优惠百分比须大于 0 且不超过 100"))
    elif t.percent_off_bp:
        errors.append(_field("percent_off", "percent_not_allowed", "only a percent coupon takes a percent",
                             "只有折扣券可以设置优惠百分比"))
    if t.max_discount is not None and t.max_discount < 0:
        errors.append(_field("max_discount", "cap_negative", "the cap cannot be negative", "优惠上限不能为负数"))
    if t.max_discount is not None and t.kind != PERCENT:
        errors.append(_field("max_discount", "cap_not_allowed", "only a percent coupon takes a cap", "只有折扣券可以设置优惠上限"))
    if t.scope == SCOPE_ALL and t.scope_ids:
        errors.append(_field("scope_ids", "scope_ids_not_allowed", "scope 'all' takes no ids", "适用全部商品时不能指定分类或商品"))
    if t.scope in (SCOPE_CATEGORIES, SCOPE_PRODUCTS) and not t.scope_ids:
        errors.append(_field("scope_ids", "scope_ids_required", "list the categories or products of the scope",
                             "请列出适用的分类或商品"))
    if any(i <= 0 for i in [*(t.scope_ids or []), *(t.excluded_product_ids or [])]):
        errors.append(_field("scope_ids", "id_invalid", "ids are positive integers", "ID 须为正整数"))
    if t.validity_mode == VALID_FIXED:
        if t.valid_until is None:
            errors.append(_field("valid_until", "valid_until_required", "fixed validity needs valid_until",
                                 "固定有效期须填写 valid_until（结束时间）"))
        elif t.valid_from is not None and t.valid_until <= t.valid_from:
            errors.append(_field("valid_until", "validity_inverted", "valid_until must be after valid_from",
                                 "有效期结束时间须晚于开始时间"))
        if t.valid_days is not None:
            errors.append(_field("valid_days", "valid_days_not_allowed", "fixed validity takes no valid_days",
                                 "固定有效期不能设置 valid_days（有效天数）"))
    else:
        if t.valid_days is None or not 1 <= t.valid_days <= MAX_DAYS:
            errors.append(_field("valid_days", "valid_days_invalid", f"relative validity needs 1-{MAX_DAYS} days",
                                 f"领取后有效天数须为 1-{MAX_DAYS} 天"))
        if t.valid_from is not None or t.valid_until is not None:
            errors.append(_field("valid_until", "dates_not_allowed", "relative validity takes no dates",
                                 "领取后计算有效期时不能设置日期"))
    for name in ("valid_from", "valid_until", "issue_starts_at", "issue_ends_at"):
        value = getattr(t, name)
        if value is not None and value.tzinfo is None:
            errors.append(_field(name, "timezone_required", "give the time with its UTC offset", "时间需带时区偏移（如 +08:00）"))
    if t.issue_starts_at and t.issue_ends_at and t.issue_ends_at <= t.issue_starts_at:
        errors.append(_field("issue_ends_at", "issue_window_inverted", "issue_ends_at must be after issue_starts_at",
                             "发放结束时间须晚于发放开始时间"))
    if t.total_quantity is not None and t.total_quantity < 1:
        errors.append(_field("total_quantity", "quantity_invalid", "total quantity must be at least 1 (null: unlimited)",
                             "发放总量至少为 1（null 表示不限量）"))
    if t.total_quantity is not None and t.total_quantity < (t.issued or 0):
        errors.append(_field("total_quantity", "quantity_below_issued", "cannot go below what was already issued",
                             "不能少于已发放的数量"))
    if (t.per_member_limit or 0) < 1:
        errors.append(_field("per_member_limit", "limit_invalid", "per-member limit must be at least 1", "每人限领至少为 1"))
    if (t.after_payment_min_amount or 0) < 0:
        errors.append(_field("after_payment_min_amount", "amount_negative", "cannot be negative", "不能为负数"))
    if not 0 <= (t.expiry_reminder_days or 0) <= 60:
        errors.append(_field("expiry_reminder_days", "reminder_invalid", "0-60 days", "应为 0-60 天"))
    if not t.channels:
        errors.append(_field("channels", "channels_required", "name at least one issue channel", "请至少选择一个发放渠道"))
    if errors:
        raise DomainError("validation_error", fields=errors)


def _apply_fields(t: CouponTemplate, body: TemplateFields) -> None:
    data = body.model_dump(exclude_unset=True)
    if "percent_off" in data or "percent_off_bp" in data:
        pct, bp = data.pop("percent_off", None), data.pop("percent_off_bp", None)
        if pct is not None and bp is not None:
            raise DomainError("validation_error", fields=[
                _field("percent_off", "percent_ambiguous", "give percent_off or percent_off_bp, not both",
                       "percent_off 与 percent_off_bp 只能填一个")
            ])
        data["percent_off_bp"] = bp if bp is not None else (pct * 100 if pct is not None else 0)
    if "channels" in data and data["channels"] is not None:
        data["channels"] = sorted(set(data["channels"]))
    for name in ("scope_ids", "excluded_product_ids", "level_ids"):
        if name in data and data[name] is not None:
            data[name] = sorted(set(data[name]))
    for name, value in data.items():
        if value is None and name in ("name", "kind", "scope", "validity_mode", "channels", "status", "stackable",
                                      "amount", "threshold", "per_member_limit", "after_payment_min_amount",
                                      "expiry_reminder_days", "scope_ids", "excluded_product_ids", "level_ids"):
            continue
        setattr(t, name, _aware(value) if isinstance(value, dt.datetime) and value.tzinfo else value)


def _check_scope_ids(
    session: Session, merchant_id: int, t: CouponTemplate, before: CouponTemplate | None = None
) -> None:
    """The scope's products or categories and the excluded products are the merchant's own (as a
    promotion's scope is checked): 404 ``not_found`` naming the kind. On an update only the ids
    the update adds are looked up, so a template keeps working once a product it names is gone."""
    def added(name: str) -> list[int]:
        old = set(getattr(before, name) or []) if before is not None else set()
        return [i for i in (getattr(t, name) or []) if i not in old]

    scope_ids = added("scope_ids") if before is None or before.scope == t.scope else list(t.scope_ids or [])
    if (t.scope == SCOPE_CATEGORIES and scope_ids
            and set(scope_ids) - catalog_repo.existing_category_ids(session, merchant_id, scope_ids)):
        raise not_found("分类", "Category")
    products = [*(scope_ids if t.scope == SCOPE_PRODUCTS else []), *added("excluded_product_ids")]
    if products and set(products) - catalog_repo.existing_product_ids(session, merchant_id, products):
        raise not_found("商品", "Product")


def _check_level_ids(
    session: Session, merchant_id: int, t: CouponTemplate, before: CouponTemplate | None = None
) -> None:
    """The levels of a level-exclusive coupon are the merchant's loyalty levels: else 422, one
    ``coupon_level_unknown`` at ``level_ids`` per unknown id, naming it (the list is stored sorted,
    so an index would not point into what the client sent). On an update only the ids it adds
    are looked up (a template keeps its deleted level's id, which then matches nobody)."""
    old = set(before.level_ids or []) if before is not None else set()
    added = [lid for lid in t.level_ids or [] if lid not in old]
    if not added:
        return
    known = {lv.id for lv in loyalty_repo.levels(session, merchant_id)}
    errors = [
        _field("level_ids", "coupon_level_unknown", f"level {lid} is not a member level of this store",
               f"会员等级 {lid} 不存在")
        for lid in added if lid not in known
    ]
    if errors:
        raise DomainError("validation_error", fields=errors)


def create_template(
    session: Session, merchant_id: int, body: TemplateIn, *, actor: Actor
) -> CouponTemplate:
    t = CouponTemplate(
        merchant_id=merchant_id, name=body.name, kind=body.kind, amount=0, threshold=0, percent_off_bp=0,
        scope=SCOPE_ALL, scope_ids=[], excluded_product_ids=[], stackable=False, validity_mode=VALID_FIXED,
        issued=0, per_member_limit=1, channels=[CH_CLAIM], after_payment_min_amount=0, expiry_reminder_days=3,
        level_ids=[], status=DRAFT,
    )
    _apply_fields(t, body)
    if t.status == STOPPED:
        raise DomainError("coupon_template_state_invalid", status="new", target=STOPPED)
    validate_template(t)
    _check_scope_ids(session, merchant_id, t)
    _check_level_ids(session, merchant_id, t)
    session.add(t)
    session.flush()
    audit.record(session, merchant_id, "coupon_template", t.id, "created", to_state=t.status, actor=actor,
                 data={"kind": t.kind, "name": t.name})
    if t.status == ACTIVE:
        ensure_schedule(session, merchant_id)
    return t


def get_template(session: Session, merchant_id: int, template_id: int) -> CouponTemplate:
    t = repo.template(session, merchant_id, template_id)
    if t is None:
        raise _template_not_found()
    return t


_TRANSITIONS = {(DRAFT, ACTIVE), (ACTIVE, STOPPED), (STOPPED, ACTIVE), (DRAFT, STOPPED)}


def update_template(
    session: Session, merchant_id: int, template_id: int, body: TemplateUpdate, *, actor: Actor,
) -> CouponTemplate:
    t = get_template(session, merchant_id, template_id)
    before = {name: getattr(t, name) for name in _RULE_FIELDS}
    old_status = t.status
    # Apply to a detached copy first, so a refusal leaves the row untouched.
    draft = CouponTemplate(**{c.key: getattr(t, c.key) for c in CouponTemplate.__table__.columns})
    _apply_fields(draft, body)
    if draft.status != old_status and (old_status, draft.status) not in _TRANSITIONS:
        raise DomainError("coupon_template_state_invalid", status=old_status, target=draft.status)
    if t.issued > 0 and any(getattr(draft, n) != before[n] for n in _RULE_FIELDS):
        raise DomainError("coupon_template_in_use")
    validate_template(draft)
    _check_scope_ids(session, merchant_id, draft, before=t)
    _check_level_ids(session, merchant_id, draft, before=t)
    for c in CouponTemplate.__table__.columns:
        if c.key not in ("id", "merchant_id", "issued", "created_at"):
            setattr(t, c.key, getattr(draft, c.key))
    t.updated_at = utcnow()
    session.flush()
    audit.record(session, merchant_id, "coupon_template", t.id, "updated", from_state=old_status, to_state=t.status,
                 actor=actor, data=body.model_dump(mode="json", exclude_unset=True))
    if t.status == ACTIVE:
        ensure_schedule(session, merchant_id)
    return t


def delete_template(session: Session, merchant_id: int, template_id: int, *, actor: Actor) -> None:
    """Only a template nothing was issued from can be deleted (else stop it)."""
    t = get_template(session, merchant_id, template_id)
    if t.issued > 0 or repo.code_counts(session, merchant_id, t.id)[0] > 0:
        raise DomainError("coupon_template_in_use")
    audit.record(session, merchant_id, "coupon_template", t.id, "deleted", from_state=t.status, to_state=None,
                 actor=actor)
    session.delete(t)
    session.flush()


def template_out(t: CouponTemplate) -> TemplateOut:
    return TemplateOut.model_validate(t)


# -- issuing -------------------------------------------------------------------------------------------


def _validity(t: CouponTemplate, now: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    if t.validity_mode == VALID_RELATIVE:
        assert t.valid_days is not None
        return now, now + dt.timedelta(days=t.valid_days)
    assert t.valid_until is not None
    return (t.valid_from or min(now, t.valid_until - dt.timedelta(seconds=1))), t.valid_until


def check_issuable(t: CouponTemplate, now: dt.datetime) -> None:
    if t.status != ACTIVE:
        raise DomainError("coupon_template_inactive")
    if t.issue_starts_at is not None and now < t.issue_starts_at:
        raise DomainError("coupon_not_started")
    if t.issue_ends_at is not None and now >= t.issue_ends_at:
        raise DomainError("coupon_ended")
    if t.validity_mode == VALID_FIXED and t.valid_until is not None and t.valid_until <= now:
        raise DomainError("coupon_ended")


def _level_names(session: Session, merchant_id: int) -> dict[int, str]:
    return {lv.id: lv.name for lv in loyalty_repo.levels(session, merchant_id)}


def level_required(session: Session, merchant_id: int, t: CouponTemplate) -> list[LevelRef] | None:
    """The levels a level-exclusive template names (ladder order; a deleted level's id is left
    out), or None when everyone may receive it."""
    if not t.level_ids:
        return None
    return _level_refs(_level_names(session, merchant_id), t)


def _level_refs(names: dict[int, str], t: CouponTemplate) -> list[LevelRef]:
    wanted = set(t.level_ids)
    return [LevelRef(id=lid, name=name) for lid, name in names.items() if lid in wanted]


def member_level_id(session: Session, merchant_id: int, member_id: int, now: dt.datetime | None = None) -> int | None:
    """The id of the member's effective level (rules level or an active card's, the higher)."""
    from siyu.loyalty import service as loyalty

    lv, _, _ = loyalty.effective_level(session, merchant_id, member_id, now)
    return lv.id if lv is not None else None


def check_level(
    session: Session, merchant_id: int, t: CouponTemplate, member_id: int, now: dt.datetime | None = None
) -> None:
    """403 ``coupon_level_required`` (naming the levels) unless the member may receive this
    level-exclusive template now; a template without levels is for everyone."""
    if not t.level_ids or member_level_id(session, merchant_id, member_id, now) in t.level_ids:
        return
    refs = level_required(session, merchant_id, t) or []
    names = "、".join(r.name for r in refs) or "-"
    raise DomainError("coupon_level_required", levels=names, levels_en=", ".join(r.name for r in refs) or "-",
                      level_ids=",".join(str(i) for i in t.level_ids))


def issue_to_member(
    session: Session,
    merchant_id: int,
    template_id: int,
    member_id: int,
    *,
    source: str,
    idempotency_key: str,
    now: dt.datetime | None = None,
) -> MemberCoupon:
    """Put one coupon of the template in the member's wallet; the stable entry point for other
    modules (lottery, journeys, referral...). Idempotent by ``idempotency_key`` (unique per
    merchant): a retry returns the first coupon, whatever changed since. Respects the template's
    status, issue window, levels (a level-exclusive template goes only to members whose effective
    level is one of its ``level_ids``), total quantity and per-member limit; raises
    ``coupon_sold_out``, ``coupon_limit_reached``, ``coupon_template_inactive``,
    ``coupon_not_started``, ``coupon_ended``, ``coupon_level_required``, or 404 for a template or
    member of another merchant. Never commits;
    a refusal leaves nothing changed (savepoint).
    """
    return issue_once(session, merchant_id, template_id, member_id, source=source,
                      idempotency_key=idempotency_key, now=now)[0]


def issue_once(
    session: Session,
    merchant_id: int,
    template_id: int,
    member_id: int,
    *,
    source: str,
    idempotency_key: str,
    now: dt.datetime | None = None,
) -> tuple[MemberCoupon, bool]:
    """``issue_to_member`` that also says whether this call issued the coupon (``True``) or
    replayed the key's first one (``False``): what the store API needs to answer a retry with
    200 and ``Idempotent-Replayed: true``."""
    key = idempotency_key.strip()[:120]
    if not key:
        raise DomainError("idempotency_key_required")
    existing = repo.coupon_by_key(session, merchant_id, key)
    if existing is not None:
        return _replay(existing, template_id, member_id), False
    now = now or utcnow()
    t = repo.template(session, merchant_id, template_id)
    if t is None:
        raise _template_not_found()
    if not repo.member_exists(session, merchant_id, member_id):
        raise not_found("会员", "Member")
    check_issuable(t, now)
    check_level(session, merchant_id, t, member_id, now)
    valid_from, valid_until = _validity(t, now)
    remind_at = valid_until - dt.timedelta(days=t.expiry_reminder_days) if t.expiry_reminder_days else None
    try:
        with session.begin_nested():
            if not repo.take_template_unit(session, merchant_id, t.id):
                raise DomainError("coupon_sold_out")
            if not repo.take_member_slot(session, merchant_id, t.id, member_id, t.per_member_limit):
                raise DomainError("coupon_limit_reached", limit=t.per_member_limit)
            coupon = MemberCoupon(
                merchant_id=merchant_id, template_id=t.id, member_id=member_id, code=_new_code(), status=UNUSED,
                source=source[:40], idempotency_key=key, valid_from=valid_from, valid_until=valid_until,
                remind_at=remind_at, discount_amount=0, order_amount=0, details={}, created_at=now, updated_at=now,
            )
            repo.add_coupon(session, coupon)
    except IntegrityError:
        # A concurrent call with the same key won (the unique index made us wait for it).
        winner = repo.coupon_by_key(session, merchant_id, key)
        if winner is None:
            raise
        return _replay(winner, template_id, member_id), False
    except DomainError:
        # A concurrent call with the same key may have taken the last unit or slot and committed
        # while we waited on the row lock: that is a retry of ours, so answer with its coupon.
        winner = repo.coupon_by_key(session, merchant_id, key)
        if winner is None:
            raise
        return _replay(winner, template_id, member_id), False
    session.expire(t, ["issued"])
    emit(session, merchant_id, "coupon.issued",
         {"coupon_id": coupon.id, "template_id": t.id, "member_id": member_id, "source": coupon.source},
         key=f"coupon:{coupon.id}")
    return coupon, True


def _replay(existing: MemberCoupon, template_id: int, member_id: int) -> MemberCoupon:
    """A retry returns the first coupon; the same key for another member or template is a mistake."""
    if existing.member_id != member_id or existing.template_id != template_id:
        raise DomainError("idempotency_key_reused")
    return existing


def claim(
    session: Session, merchant_id: int, member_id: int, template_id: int, *, idempotency_key: str | None = None,
    now: dt.datetime | None = None,
) -> tuple[MemberCoupon, bool]:
    """Self-claim in the store (领券); returns ``(coupon, created)``.

    With an ``Idempotency-Key`` the claim is idempotent per ``(merchant, member, key)``, as the
    checkout submit is: a retry returns the first coupon (``created`` False: the API answers 200
    with ``Idempotent-Replayed: true``), and the same key sent for *another* template is 409
    ``idempotency_key_reused``. (Keys stored before this rule were scoped by template,
    ``claim:<template>:<member>:k:<key>``; they are still looked up, so such a retry replays.)
    Without a client key, the n-th claim of a member has the key ``claim:<template>:<member>:<n>``,
    so a double tap never yields two coupons.

    The key is looked up before the template's current state, as the checkout submit does: a
    retry replays its coupon even if the template has since been stopped or closed to claims."""
    key: str | None = None
    if idempotency_key is not None:
        client_key = _client_key(idempotency_key)
        key = f"claim:m{member_id}:k:{client_key}"
        for known in (f"claim:{template_id}:{member_id}:k:{client_key[:60]}", key):
            existing = repo.coupon_by_key(session, merchant_id, known)
            if existing is not None:
                return _replay(existing, template_id, member_id), False
    t = repo.template(session, merchant_id, template_id)
    if t is None or (t.status == DRAFT):
        raise _template_not_found()
    if CH_CLAIM not in t.channels:
        raise DomainError("coupon_channel_closed")
    if key is None:
        received = repo.received_counts(session, merchant_id, member_id, [template_id]).get(template_id, 0)
        key = f"claim:{template_id}:{member_id}:{received + 1}"
    return issue_once(session, merchant_id, template_id, member_id, source="claim", idempotency_key=key, now=now)


def _client_key(key: str) -> str:
    """A client's Idempotency-Key, checked as the checkout submit checks it (required when the
    header is sent, at most 80 characters): never silently cut, which would make two keys one."""
    from siyu.orders.checkout import check_idempotency_key

    return check_idempotency_key(key)


def generate_codes(session: Session, merchant_id: int, template_id: int, count: int, *, actor: Actor) -> list[str]:
    t = get_template(session, merchant_id, template_id)
    if CH_CODE not in t.channels:
        raise DomainError("coupon_channel_closed")
    codes = sorted({_new_code(12) for _ in range(count)})
    repo.add_codes(session, merchant_id, t.id, codes)
    audit.record(session, merchant_id, "coupon_template", t.id, "codes_generated", actor=actor, data={"count": len(codes)})
    return codes


def redeem(
    session: Session, merchant_id: int, member_id: int, code: str, *, now: dt.datetime | None = None
) -> tuple[MemberCoupon, bool]:
    """One-time code → coupon; returns ``(coupon, created)``. The code is the request's natural
    idempotency key: redeeming one's own code again returns the same coupon (``created`` False,
    answered 200 with ``Idempotent-Replayed: true``); another member's is ``coupon_code_used``.
    A member outside a level-exclusive template's levels is refused (``coupon_level_required``)
    and the code stays unredeemed, for a member who qualifies."""
    now = now or utcnow()
    row = repo.code_row(session, merchant_id, code.strip().upper())
    if row is None:
        raise DomainError("coupon_code_invalid")
    key = f"code:{row.id}"
    if row.redeemed_by is not None:
        if row.redeemed_by == member_id:
            mine = repo.coupon_by_key(session, merchant_id, key)
            if mine is not None:
                return mine, False
        raise DomainError("coupon_code_used")
    t = repo.template(session, merchant_id, row.template_id)
    if t is None or CH_CODE not in t.channels:
        raise DomainError("coupon_channel_closed")
    check_issuable(t, now)
    check_level(session, merchant_id, t, member_id, now)  # before the code is taken: it stays unredeemed
    if not repo.redeem_code(session, merchant_id, row.id, member_id, now):
        # A concurrent redeem took it first: ours if it was this member's retry.
        session.expire(row)
        if row.redeemed_by == member_id:
            mine = repo.coupon_by_key(session, merchant_id, key)
            if mine is not None:
                return mine, False
        raise DomainError("coupon_code_used")
    coupon, created = issue_once(session, merchant_id, t.id, member_id, source="code", idempotency_key=key, now=now)
    repo.set_code_coupon(session, merchant_id, row.id, coupon.id)
    return coupon, created


def bulk_issue(
    session: Session, merchant_id: int, template_id: int, body: IssueIn, *, actor: Actor, now: dt.datetime | None = None
) -> IssueOut:
    """Operator issue to members matching every given condition; idempotent per ``batch_key``.
    For a level-exclusive template the members outside its levels are skipped and counted in
    ``refused["coupon_level_required"]`` (the others are issued)."""
    t = get_template(session, merchant_id, template_id)
    conditions = (body.member_ids, body.province, body.city, body.gender, body.tag_id)
    if all(c is None for c in conditions):
        raise DomainError("validation_error", fields=[
            _field("member_ids", "audience_required", "give member ids or at least one condition", "请提供会员 ID 或至少一个筛选条件")
        ])
    check_issuable(t, now or utcnow())
    members = repo.matching_members(
        session, merchant_id, member_ids=body.member_ids, province=body.province, city=body.city, gender=body.gender,
        tag_id=body.tag_id, limit=BULK_SYNC_LIMIT + 1,
    )
    if len(members) > BULK_SYNC_LIMIT:
        # A large audience: issued in chunks by ``coupons.bulk_issue`` jobs, one transaction each.
        enqueue(session, merchant_id, "coupons.bulk_issue",
                {"template_id": template_id, "body": body.model_dump(mode="json"), "after_id": 0},
                dedupe_key=f"coupons.bulk:{template_id}:{body.batch_key}:0")
        audit.record(session, merchant_id, "coupon_template", t.id, "bulk_issue_queued", actor=actor,
                     data={"batch_key": body.batch_key})
        matched = repo.count_matching(
            session, merchant_id, member_ids=body.member_ids, province=body.province, city=body.city,
            gender=body.gender, tag_id=body.tag_id,
        )
        return IssueOut(matched=matched, issued=0, already=0, refused={}, queued=True)
    out = _issue_members(session, merchant_id, template_id, body, members, now=now)
    audit.record(session, merchant_id, "coupon_template", t.id, "bulk_issued", actor=actor,
                 data={"batch_key": body.batch_key, "matched": out.matched, "issued": out.issued,
                       "refused": out.refused})
    return out


def bulk_issue_chunk(session: Session, merchant_id: int, payload: dict[str, Any], now: dt.datetime | None = None) -> IssueOut:
    """One chunk of a queued bulk issue (members after ``after_id``); enqueues the next chunk."""
    template_id, after_id = int(payload["template_id"]), int(payload.get("after_id") or 0)
    body = IssueIn.model_validate(payload["body"])
    members = repo.matching_members(
        session, merchant_id, member_ids=body.member_ids, province=body.province, city=body.city, gender=body.gender,
        tag_id=body.tag_id, limit=BULK_CHUNK, after_id=after_id,
    )
    out = _issue_members(session, merchant_id, template_id, body, members, now=now)
    if len(members) == BULK_CHUNK and not out.refused.get("coupon_sold_out"):
        last = members[-1]
        enqueue(session, merchant_id, "coupons.bulk_issue", {**payload, "after_id": last},
                dedupe_key=f"coupons.bulk:{template_id}:{body.batch_key}:{last}")
    return out


def _issue_members(
    session: Session, merchant_id: int, template_id: int, body: IssueIn, members: list[int], *,
    now: dt.datetime | None = None,
) -> IssueOut:
    issued = already = 0
    refused: dict[str, int] = {}
    for member_id in members:
        key = f"operator:{template_id}:{body.batch_key}:{member_id}"
        if repo.coupon_by_key(session, merchant_id, key) is not None:
            already += 1
            continue
        try:
            issue_to_member(session, merchant_id, template_id, member_id, source="operator", idempotency_key=key, now=now)
            issued += 1
        except DomainError as exc:
            refused[exc.code] = refused.get(exc.code, 0) + 1
    return IssueOut(matched=len(members), issued=issued, already=already, refused=refused)


def issue_on_registration(session: Session, merchant_id: int, member_id: int, now: dt.datetime | None = None) -> int:
    """Every active template with the registration channel, once per member (key)."""
    return _issue_channel(session, merchant_id, member_id, CH_REGISTRATION, f"registration:{member_id}", now=now)


def issue_after_payment(
    session: Session, merchant_id: int, member_id: int, order_id: int, paid_amount: int, now: dt.datetime | None = None
) -> int:
    """Next-order coupons for a paid order (``after_payment_min_amount`` reached), once per order."""
    return _issue_channel(session, merchant_id, member_id, CH_AFTER_PAYMENT, f"order:{order_id}", now=now,
                          paid_amount=paid_amount)


def _issue_channel(
    session: Session, merchant_id: int, member_id: int, channel: str, key_base: str, *,
    now: dt.datetime | None = None, paid_amount: int | None = None,
) -> int:
    count = 0
    for t in repo.active_templates(session, merchant_id):
        if channel not in t.channels:
            continue
        if paid_amount is not None and paid_amount < t.after_payment_min_amount:
            continue
        try:
            issue_to_member(session, merchant_id, t.id, member_id, source=channel,
                            idempotency_key=f"{channel}:{t.id}:{key_base}", now=now)
            count += 1
        except DomainError as exc:  # sold out, limit, window: this member does not get that one
            log.info("coupon template %s not issued to member %s on %s: %s", t.id, member_id, channel, exc.code)
    return count


def void(session: Session, merchant_id: int, coupon_id: int, *, actor: Actor) -> MemberCoupon:
    c = repo.coupon(session, merchant_id, coupon_id)
    if c is None:
        raise _coupon_not_found()
    if not repo.void_coupon(session, merchant_id, coupon_id, utcnow()):
        raise DomainError("coupon_not_voidable")
    audit.record(session, merchant_id, "member_coupon", coupon_id, "voided", from_state=UNUSED, to_state=VOIDED,
                 actor=actor)
    found = repo.coupon(session, merchant_id, coupon_id, refresh=True)
    assert found is not None
    return found


# -- store views ---------------------------------------------------------------------------------------


def wallet_out(session: Session, merchant_id: int, coupons: list[MemberCoupon], now: dt.datetime | None = None) -> list[WalletCouponOut]:
    templates = repo.templates_by_id(session, merchant_id, [c.template_id for c in coupons])
    now = now or utcnow()
    out = []
    for c in coupons:
        t = templates[c.template_id]
        status = EXPIRED if c.status == UNUSED and c.valid_until <= now else c.status  # the job may be late
        base = CouponOut.model_validate(c).model_dump()
        base["status"] = status
        out.append(WalletCouponOut(
            **base, name=t.name, kind=t.kind, amount=t.amount, threshold=t.threshold,
            percent_off_bp=t.percent_off_bp, max_discount=t.max_discount, scope=t.scope, stackable=t.stackable,
        ))
    return out


def claimable(session: Session, merchant_id: int, member_id: int | None, now: dt.datetime | None = None) -> list[ClaimableOut]:
    """The coupon centre (领券中心): active templates with the claim channel. Level-exclusive ones
    are listed to every member with ``level_required``; ``can_claim`` is false (reason
    ``coupon_level_required``) for a member whose effective level is not one of them, so the
    page can show them greyed out as 会员专享 (what a higher level unlocks) rather than hide them.
    One effective level read per call, only when some template is level-exclusive."""
    now = now or utcnow()
    templates = [t for t in repo.active_templates(session, merchant_id) if CH_CLAIM in t.channels]
    received = repo.received_counts(session, merchant_id, member_id, [t.id for t in templates]) if member_id else {}
    exclusive = any(t.level_ids for t in templates)
    names = _level_names(session, merchant_id) if exclusive else {}
    mine_level = member_level_id(session, merchant_id, member_id, now) if exclusive and member_id else None
    out = []
    for t in templates:
        reason = None
        try:
            check_issuable(t, now)
        except DomainError as exc:
            reason = exc.code
        if reason == "coupon_ended":
            continue
        remaining = None if t.total_quantity is None else max(0, t.total_quantity - t.issued)
        mine = received.get(t.id, 0)
        if reason is None and remaining == 0:
            reason = "coupon_sold_out"
        if reason is None and mine >= t.per_member_limit:
            reason = "coupon_limit_reached"
        if reason is None and t.level_ids and mine_level not in t.level_ids:
            reason = "coupon_level_required"
        out.append(ClaimableOut(template=template_out(t), remaining=remaining, received=mine,
                                can_claim=reason is None, reason=reason,
                                level_required=_level_refs(names, t) if t.level_ids else None))
    return out


def stats(session: Session, merchant_id: int, template_id: int) -> TemplateStatsOut:
    t = get_template(session, merchant_id, template_id)
    raw = repo.template_stats(session, merchant_id, t.id)
    by_status = {s: v["count"] for s, v in raw["status"].items()}
    by_source = {s: v["count"] for s, v in raw["source"].items()}
    used = raw["status"].get(USED, {"count": 0, "discount": 0, "gmv": 0})
    codes_total, codes_redeemed = repo.code_counts(session, merchant_id, t.id)
    issued = sum(by_status.values())
    return TemplateStatsOut(
        template_id=t.id, total_quantity=t.total_quantity, issued=issued,
        claimed=by_source.get("claim", 0) + by_source.get("code", 0), by_source=by_source, by_status=by_status,
        used=used["count"], discount_given=used["discount"], gmv=used["gmv"],
        use_rate_bp=(used["count"] * 10000 // issued) if issued else 0,
        codes_total=codes_total, codes_redeemed=codes_redeemed,
    )


# -- pricing (the COUPONS stage) -----------------------------------------------------------------------


@dataclass
class Candidate:
    coupon: MemberCoupon
    template: CouponTemplate
    reason: str | None = None
    lines: list[int] = field(default_factory=list)
    value: int = 0  # discount it would take off now (free shipping: filled in lazily)
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def is_shipping(self) -> bool:
        return self.template.kind == FREE_SHIPPING


def _in_scope(t: CouponTemplate, line: PricedLine) -> bool:
    if line.product_id in t.excluded_product_ids:
        return False
    if t.scope == SCOPE_CATEGORIES:
        return line.category_id is not None and line.category_id in t.scope_ids
    if t.scope == SCOPE_PRODUCTS:
        return line.product_id in t.scope_ids
    return True


def discount_value(t: CouponTemplate, base: int) -> int:
    """What the coupon takes off ``base`` fen of eligible amount (never more than ``base``)."""
    if t.kind in (FIXED, THRESHOLD):
        value = t.amount
    elif t.kind == PERCENT:
        value = percent_of(base, t.percent_off_bp)
        if t.max_discount is not None:
            value = min(value, t.max_discount)
    else:
        value = 0
    return max(0, min(value, base))


def evaluate(ctx: PricingContext, c: MemberCoupon, t: CouponTemplate) -> Candidate:
    """Whether the coupon applies to what the earlier stages left, on which lines, for how much."""
    cand = Candidate(c, t)
    now = ctx.now
    if c.member_id != ctx.member_id:
        cand.reason = "foreign"
        return cand
    if c.status in (USED, LOCKED, VOIDED):
        cand.reason = c.status
        return cand
    if c.status == EXPIRED or c.valid_until <= now:
        cand.reason = "expired"
        return cand
    if c.valid_from > now:
        cand.reason = "not_started"
        return cand
    in_scope = [i for i, line in enumerate(ctx.lines) if _in_scope(t, line)]
    if not in_scope:
        cand.reason = "out_of_scope"
        return cand
    allowed = [i for i in in_scope if ctx.lines[i].coupons_allowed]
    if not allowed:
        cand.reason = "product_excludes_coupons"
        return cand
    usable = [i for i in allowed if not ctx.lines[i].flags.get("no_coupon")]
    if not usable:
        cand.reason = "activity_excludes_coupons"
        return cand
    base = sum(ctx.lines[i].amount for i in usable)
    cand.lines = usable
    if t.threshold and base < t.threshold:
        cand.reason = "below_threshold"
        cand.details = {"threshold": t.threshold, "eligible_amount": base, "short_by": t.threshold - base}
        return cand
    if t.kind == FREE_SHIPPING:
        if ctx.free_shipping or all(ctx.lines[i].free_shipping or ctx.lines[i].flags.get("free_shipping") for i in usable):
            cand.reason = "already_free_shipping"
        return cand
    cand.value = discount_value(t, base)
    if cand.value <= 0:
        cand.reason = "no_discount"
    return cand


def _freight(ctx: PricingContext, free_lines: tuple[int, ...] = ()) -> int:
    """Freight of the order as it stands, or as it would be with ``free_lines`` shipping free."""
    from siyu.orders import freight

    saved = {i: ctx.lines[i].flags.get("free_shipping") for i in free_lines}
    try:
        for i in free_lines:
            ctx.lines[i].flags["free_shipping"] = True
        return freight.compute(ctx.session, ctx.merchant_id, ctx.lines, ctx.province,
                               free_shipping=ctx.free_shipping).amount
    finally:
        for i, old in saved.items():
            if old is None:
                ctx.lines[i].flags.pop("free_shipping", None)
            else:
                ctx.lines[i].flags["free_shipping"] = old


def _shipping_values(ctx: PricingContext, shipping: list[Candidate]) -> None:
    """Freight each free-shipping coupon would save; one freight computation per distinct set
    of eligible lines (a wallet's free-shipping coupons usually share one: the whole order). A
    coupon that saves nothing gets the reason ``no_discount``."""
    before: int | None = None
    by_lines: dict[tuple[int, ...], int] = {}
    for cand in shipping:
        key = tuple(cand.lines)
        if key not in by_lines:
            if before is None:
                before = _freight(ctx)
            by_lines[key] = before if len(key) == len(ctx.lines) else max(0, before - _freight(ctx, key))
        cand.value = by_lines[key]
        if cand.value <= 0:
            cand.reason = "no_discount"  # nothing left to ship for a fee


def _order_key(cand: Candidate) -> tuple[int, dt.datetime, int]:
    # More off first; on a tie the one expiring sooner, then the older coupon.
    return (-cand.value, cand.coupon.valid_until, cand.coupon.id)


def choose(ctx: PricingContext, candidates: list[Candidate]) -> list[Candidate]:
    """The best combination for the customer: one coupon, or a stackable discount coupon with a
    stackable free-shipping coupon."""
    usable = [c for c in candidates if c.reason is None]
    discounts = sorted([c for c in usable if not c.is_shipping], key=_order_key)
    shipping = [c for c in usable if c.is_shipping]
    if not shipping:
        return discounts[:1]
    _shipping_values(ctx, shipping)
    shipping = sorted([s for s in shipping if s.reason is None], key=_order_key)
    if not shipping:
        return discounts[:1]
    best_d = discounts[0] if discounts else None
    stack_d = next((d for d in discounts if d.template.stackable), None)
    stack_s = next((s for s in shipping if s.template.stackable), None)
    ship = shipping[0]
    options: list[list[Candidate]] = []
    if best_d is not None:
        options.append([best_d])
    options.append([ship])
    if stack_d is not None and stack_s is not None:
        options.append([stack_d, stack_s])
    return max(options, key=lambda combo: (sum(c.value for c in combo), -len(combo)))


def _check_explicit(chosen: list[Candidate]) -> None:
    discounts = [c for c in chosen if not c.is_shipping]
    shipping = [c for c in chosen if c.is_shipping]
    if len(chosen) <= 1:
        return
    if len(discounts) > 1 or len(shipping) > 1 or not all(c.template.stackable for c in chosen):
        raise DomainError("coupon_not_stackable")


def _raise_for(cand: Candidate) -> None:
    if cand.reason == "foreign":
        raise _coupon_not_found()
    code = REASON_ERRORS.get(cand.reason or "", "coupon_no_discount")
    if code == "coupon_below_threshold":
        raise DomainError(code, threshold=yuan(cand.template.threshold), coupon_id=cand.coupon.id)
    raise DomainError(code, coupon_id=cand.coupon.id)


def _label(t: CouponTemplate) -> str:
    if t.kind == FREE_SHIPPING:
        return f"{t.name}（包邮）"
    if t.kind == PERCENT:
        return f"{t.name}（{t.percent_off_bp / 100:g}% off）"
    if t.threshold:
        return f"{t.name}（满{yuan(t.threshold)}减{yuan(t.amount)}）"
    return f"{t.name}（减{yuan(t.amount)}）"


def apply_to_pricing(ctx: PricingContext) -> None:
    """The COUPONS stage. Works on ``line.amount`` (what earlier stages left). One query."""
    if ctx.member_id is None or (ctx.coupon_ids is not None and not ctx.coupon_ids):
        return
    apply_rows(ctx, repo.pricing_coupons(ctx.session, ctx.merchant_id, ctx.member_id, ctx.coupon_ids))


def apply_rows(ctx: PricingContext, rows: list[tuple[MemberCoupon, CouponTemplate]]) -> None:
    """The stage's decision on loaded ``(coupon, template)`` rows (no query unless a
    free-shipping coupon's value must be weighed against a discount)."""
    candidates = [evaluate(ctx, c, t) for c, t in rows]
    if ctx.coupon_ids is not None:
        by_id = {cand.coupon.id: cand for cand in candidates}
        chosen = []
        for cid in dict.fromkeys(ctx.coupon_ids):
            cand = by_id.get(cid)
            if cand is None:
                raise _coupon_not_found()
            if cand.reason is None and cand.is_shipping:
                _shipping_values(ctx, [cand])
            if cand.reason is not None:
                _raise_for(cand)
            chosen.append(cand)
        _check_explicit(chosen)
    else:
        chosen = choose(ctx, candidates)
    picked = {c.coupon.id for c in chosen}
    reserved: list[dict[str, Any]] = []
    # Discount coupons first (they change line amounts), then free shipping.
    for cand in sorted(chosen, key=lambda c: c.is_shipping):
        t, c = cand.template, cand.coupon
        if cand.is_shipping:
            # The freight it saves (weighed already when the pipeline chose it), kept on the
            # coupon at submit so the stats count it as discount given.
            saved = cand.value
            for i in cand.lines:
                ctx.lines[i].flags["free_shipping"] = True
            if len(cand.lines) == len(ctx.lines):
                ctx.free_shipping = True
            ctx.entries.append(_shipping_entry(c, t, saved))
            reserved.append({"coupon_id": c.id, "discount": saved})
            continue
        base = sum(ctx.lines[i].amount for i in cand.lines)
        value = discount_value(t, base)
        applied = ctx.discount(COUPONS, f"coupon:{c.id}", _label(t), value, cand.lines,
                               details={"coupon_id": c.id, "template_id": t.id, "code": c.code, "kind": t.kind})
        reserved.append({"coupon_id": c.id, "discount": applied})
    if reserved:
        ctx.reservations[RESERVATION] = reserved
    for cand in candidates:
        if cand.coupon.id in picked:
            continue
        reason = cand.reason
        if reason is None:
            same_kind = any(ch.is_shipping == cand.is_shipping for ch in chosen)
            reason = "not_best" if same_kind or not chosen else "not_stackable"
        ctx.note(COUPONS, coupon_id=cand.coupon.id, code=reason, coupon_code=cand.coupon.code,
                 template_id=cand.template.id, name=cand.template.name, usable=cand.reason is None,
                 message=REASON_MESSAGES.get(reason, reason), **cand.details)


def _shipping_entry(c: MemberCoupon, t: CouponTemplate, saved: int) -> Any:
    from siyu.orders.pricing import StageEntry

    # Zero-amount entry: the saving shows in the freight line; the entry says which coupon did it.
    return StageEntry(COUPONS, f"coupon:{c.id}", _label(t), 0,
                      {"coupon_id": c.id, "template_id": t.id, "code": c.code, "kind": t.kind,
                       "freight_saved": saved})


def lock_for_order(ctx: PricingContext, order_id: int) -> None:
    """Submit hook: lock the chosen coupons to the order (conditional on ``unused``)."""
    reserved = ctx.reservations.get(RESERVATION) or []
    if not reserved or ctx.member_id is None:
        return
    for item in reserved:
        cid = int(item["coupon_id"])
        if repo.lock_coupon(ctx.session, ctx.merchant_id, ctx.member_id, cid, order_id, int(item["discount"]), ctx.now):
            continue
        current = repo.coupon(ctx.session, ctx.merchant_id, cid, refresh=True)
        if current is None or current.member_id != ctx.member_id:
            raise _coupon_not_found()
        if current.status == USED:
            raise DomainError("coupon_used", coupon_id=cid)
        if current.status in (EXPIRED,) or current.valid_until <= ctx.now:
            raise DomainError("coupon_expired", coupon_id=cid)
        if current.status == VOIDED:
            raise DomainError("coupon_voided", coupon_id=cid)
        raise DomainError("coupon_locked", coupon_id=cid)
    for item in reserved:
        audit.record(ctx.session, ctx.merchant_id, "member_coupon", int(item["coupon_id"]), "locked",
                     from_state=UNUSED, to_state=LOCKED, actor=("customer", ctx.member_id),
                     data={"order_id": order_id, "discount": int(item["discount"])})


# -- order lifecycle -----------------------------------------------------------------------------------


def on_order_paid(session: Session, merchant_id: int, order_id: int, paid_amount: int, now: dt.datetime) -> list[int]:
    ids = repo.mark_used(session, merchant_id, order_id, paid_amount, now)
    for cid in ids:
        audit.record(session, merchant_id, "member_coupon", cid, "used", from_state=LOCKED, to_state=USED,
                     actor=("system", None), data={"order_id": order_id})
    return ids


def on_order_cancelled(session: Session, merchant_id: int, order_id: int, now: dt.datetime) -> list[tuple[int, str]]:
    moved = repo.return_coupons(session, merchant_id, order_id, (LOCKED,), now)
    _audit_returned(session, merchant_id, order_id, moved, "order_cancelled", _to_holders(session, merchant_id, moved, now))
    return moved


def on_order_refunded(session: Session, merchant_id: int, order_id: int, now: dt.datetime) -> list[tuple[int, str]]:
    """A full refund returns the coupons (``used`` — or still ``locked`` if the paid job has not
    run yet) to the wallet."""
    moved = repo.return_coupons(session, merchant_id, order_id, (USED, LOCKED), now)
    _audit_returned(session, merchant_id, order_id, moved, "order_refunded", _to_holders(session, merchant_id, moved, now))
    return moved


def _to_holders(session: Session, merchant_id: int, moved: list[tuple[int, str]], now: dt.datetime) -> dict[int, int]:
    """Returned coupons whose holder was merged into another member (``members.service``
    identity merge: status ``merged``, ``merged_into``, followed along a chain) go to the kept
    member's wallet — the merged member is emptied and nobody logs in as them. This covers a
    coupon used on an order paid before the merge (the merge leaves used coupons as history) and
    refunded after it. Returns ``{coupon id: the member it moved from}``; the claim counters were
    already added to the kept member by the merge, so none move here."""
    holders = repo.coupon_holders(session, merchant_id, [cid for cid, _ in moved])
    by_target: dict[int, list[int]] = {}
    came_from: dict[int, int] = {}
    for cid, member_id in holders.items():
        keep = loyalty_repo.holder(session, merchant_id, member_id)
        if keep != member_id:
            by_target.setdefault(keep, []).append(cid)
            came_from[cid] = member_id
    for keep, ids in by_target.items():
        repo.move_coupons(session, merchant_id, ids, keep, now)
    return came_from


def _audit_returned(
    session: Session, merchant_id: int, order_id: int, moved: list[tuple[int, str]], why: str,
    came_from: dict[int, int] | None = None,
) -> None:
    for cid, status in moved:
        data: dict[str, Any] = {"order_id": order_id, "reason": why}
        if came_from and cid in came_from:
            data["moved_from_merged_member"] = came_from[cid]
        audit.record(session, merchant_id, "member_coupon", cid, "returned", to_state=status,
                     actor=("system", None), data=data)


# -- expiry and reminders ------------------------------------------------------------------------------

SCHEDULE_NAME = "coupons.expire"
SCHEDULE_KIND = "coupons.expire"
SCHEDULE_CRON = "*/30 * * * *"


def ensure_schedule(session: Session, merchant_id: int) -> None:
    """The recurring expiry job of the merchant (created with its first active template)."""
    from siyu.kit.outbox import Schedule
    from siyu.tenancy import service as tenancy_service
    from siyu.worker.runner import add_schedule

    if session.query(Schedule.id).filter_by(merchant_id=merchant_id, name=SCHEDULE_NAME).first() is not None:
        return
    tz = tenancy_service.get_merchant(session, merchant_id).timezone
    add_schedule(session, merchant_id, SCHEDULE_NAME, SCHEDULE_KIND, SCHEDULE_CRON, tz)


def expire_and_remind(session: Session, merchant_id: int, now: dt.datetime | None = None) -> tuple[int, int]:
    """Expire due unused coupons and emit ``coupon.expiring`` once per coupon whose reminder
    time (``valid_until - expiry_reminder_days``) has come. Returns (expired, reminded)."""
    now = now or utcnow()
    expired = repo.expire_due(session, merchant_id, now)
    reminders = repo.claim_reminders(session, merchant_id, now)
    for c in reminders:
        emit(session, merchant_id, "coupon.expiring",
             {"coupon_id": c.id, "member_id": c.member_id, "template_id": c.template_id,
              "valid_until": c.valid_until.isoformat()},
             key=f"coupon:{c.id}")
    return len(expired), len(reminders)


# -- member views (360 profile, data export) -----------------------------------------------------------


def member_coupon_count(session: Session, merchant_id: int, member_id: int) -> int:
    """Usable coupons in the member's wallet (for the member 360 view)."""
    return repo.unused_count(session, merchant_id, member_id, utcnow())


def export_member(session: Session, merchant_id: int, member_id: int) -> list[dict[str, Any]]:
    """The member's coupons for a personal-data export."""
    return [CouponOut.model_validate(c).model_dump(mode="json")
            for c in repo.member_wallet(session, merchant_id, member_id)]
