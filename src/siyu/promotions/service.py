"""Item and order promotions: configuration, pricing stages, submit hook, usage ledger.

Lifecycle (stored status, the effective one adds the clock)::

    draft ──activate──► active (scheduled before starts_at, ended after ends_at) ──stop──► stopped

Rules and stacking settings can change only before the start (draft, or activated but not yet
started); after that they are what the customer was promised.

Pricing (the same code serves preview and submit):

- ITEM_PROMOTIONS (``apply_item_promotions``): each line not already sold by an activity
  (``flags["activity"]``, e.g. a flash sale) gets the best of the limited-time discounts and
  first-order specials covering its SKU. A limited-time discount's ``rules.over_limit`` says what
  units over the member's purchase limit (units of paid + pending orders,
  ``PromotionMemberCounter``, plus this checkout's lines priced before, so all lines share one
  allowance) do: ``refuse`` (the default, 每人限购 N 件) refuses the checkout
  (``promotion_limit_reached``); ``full_price`` (每人前 N 件享折扣) discounts only the first
  ``min(q, left)`` units of a line of ``q`` (their share of the line's amount, rounded down to the
  fen, priced as the rule says; details ``units`` / ``full_price_units`` and a
  ``promotion_limit_partial`` note say which) and counts only those against the limit; with no
  allowance left the promotion offers nothing on the line (note ``promotion_limit_used``), which
  stays at its normal price unless another item promotion on the SKU wins it. A first-order
  special takes one unit, only for a member with no paid order and no pending first-order claim.
  The line (all its units) is flagged with the stacking settings (``no_coupon``, ``no_points``,
  ``no_order_promotions``, ``free_shipping``).
- ORDER_PROMOTIONS (``apply_order_promotions``), on the amounts the item stage left, over the
  lines in each promotion's scope that are not ``no_order_promotions``: spend-and-save (the best
  exclusive one, or all stackable ones together, whichever saves the customer more),
  spend-and-gift (gift SKU added as a zero-price line, or a note when it is out of stock), and
  add-on deals requested with ``options={"add_on": [{"promotion_id", "sku_id", "quantity"}]}``
  (offered in the notes when the threshold is met). Near misses are noted ("再买 ¥20.00 可减 ¥30.00").

Submit (``take``, a submit hook in the order transaction): the first-order claim (unique per
member), the per-member counters and the add-on stock move by conditional updates, and one
``PromotionUsage`` row per promotion records discount and GMV. A refusal aborts the whole submit.
A ``full_price`` discount whose allowance a concurrent order of the member took after the pricing
is refused with ``promotion_allowance_changed`` (409; submitting again prices the units over the
limit at the normal price), so the member never gets more than ``limit`` discounted units.
``order.paid`` marks the rows paid; ``order.cancelled`` releases them and gives everything back,
exactly once; ``order.refunded`` adds each refund once to the rows (net GMV in the stats) and
frees the refunded units of the member's purchase limit (all on a full refund; on a partial one
the discounted units of the promotion's lines the member no longer keeps: discounted units are
refunded last, see ``_units_to_free``).

Gift and add-on lines take normal SKU stock through the checkout's own reservation, so a gift
whose last unit goes to a concurrent order between the pricing and the reservation makes that
submit fail with ``insufficient_stock`` (retrying prices it again and notes "赠品已赠完").

Services never commit.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

from pydantic import BaseModel, ValidationError
from sqlalchemy.orm import Session

from siyu.catalog import repository as catalog_repo
from siyu.catalog.models import KIND_VIRTUAL
from siyu.kit import audit
from siyu.kit.errors import DomainError, FieldError, catalogue, invalid, not_found, register_messages
from siyu.kit.money import yuan
from siyu.kit.timeutil import utcnow
from siyu.kit.validation_messages import field_message
from siyu.orders import service as orders_service
from siyu.orders.pricing import ITEM_PROMOTIONS, ORDER_PROMOTIONS, PricedLine, PricingContext, StageEntry
from siyu.promotions import repository as repo
from siyu.promotions.models import (
    ACTIVE,
    ADD_ON,
    DRAFT,
    ENDED,
    FIRST_ORDER,
    ITEM_KINDS,
    LIMITED_DISCOUNT,
    ORDER_KINDS,
    PAID,
    RELEASED,
    RESERVED,
    SCHEDULED,
    SPEND_GIFT,
    SPEND_SAVE,
    STOPPED,
    Promotion,
    PromotionUsage,
)
from siyu.promotions.schemas import (
    OVER_LIMIT_FULL_PRICE,
    OVER_LIMIT_REFUSE,
    RULES,
    AddOnRules,
    FirstOrderRules,
    LimitedDiscountRules,
    PromotionIn,
    PromotionOut,
    PromotionStatsOut,
    PromotionUpdate,
    Scope,
    SpendGiftRules,
    SpendSaveRules,
    StorePromotionOut,
)

_MESSAGES = {
    "promotion_not_started": (409, "活动尚未开始", "The promotion has not started yet"),
    "promotion_ended": (409, "活动已结束", "The promotion has ended"),
    "promotion_state_invalid": (
        409,
        "活动当前状态（{status}）不允许此操作",
        "The promotion cannot do this in its state ({status})",
    ),
    "promotion_limit_reached": (
        409,
        "该活动商品每人限购 {limit} 件，您还可购买 {remaining} 件",
        "This promotion is limited to {limit} per member; you can buy {remaining} more",
    ),
    "promotion_allowance_changed": (
        409,
        "您的限时折扣名额（每人前 {limit} 件）刚被另一笔订单占用，价格已变化，请重新提交",
        "Another of your orders has just used your discounted units (first {limit} per member); the price has "
        "changed, please submit again",
    ),
    "first_order_not_eligible": (
        409,
        "首单特价仅限首次下单的新客",
        "The first-order special is only for members without a previous order",
    ),
    "first_order_used": (
        409,
        "您已有一笔使用首单特价的订单",
        "You already have an order using the first-order special",
    ),
    "add_on_threshold_not_met": (
        409,
        "再买 {short} 才能参加加价购（满 {threshold}）",
        "Spend {short} more to unlock the add-on deal (threshold {threshold})",
    ),
    "add_on_limit_reached": (
        409,
        "加价购商品每单限购 {limit} 件",
        "The add-on item is limited to {limit} per order",
    ),
    "add_on_sold_out": (409, "加价购商品已换完", "The add-on item is sold out"),
    "promotion_virtual_product": (
        422,
        "虚拟商品（如会员卡、服务）不参加限时折扣、首单特价、加价购、满赠、拼团、砍价和秒杀（规格 {sku_id}）",
        "Virtual products (membership cards, services) cannot take a limited-time, first-order, add-on, gift, "
        "group-buy, bargain or flash-sale price (SKU {sku_id})",
    ),
}
register_messages({k: v for k, v in _MESSAGES.items() if k not in catalogue()})

RESERVATION = "promotions"
OPTION_ADD_ON = "add_on"
OPTION_FIRST_ORDER = "first_order"
ID_MAX = 2**63 - 1  # BIGINT: a larger id would fail in the query (a 500)
MAX_ADD_ON_REQUESTS = 20
Actor = tuple[str, int | None]


def _promotion_not_found() -> DomainError:
    return not_found("活动", "Promotion")


def _aware(value: dt.datetime, path: str) -> dt.datetime:
    if value.tzinfo is None:
        raise invalid(path, "timezone_required", "give the time with its UTC offset", "时间需带时区偏移（如 +08:00）")
    return value.astimezone(dt.UTC)


def effective_status(promo: Promotion, now: dt.datetime) -> str:
    if promo.status in (DRAFT, STOPPED):
        return promo.status
    if now >= promo.ends_at:
        return ENDED
    return ACTIVE if now >= promo.starts_at else SCHEDULED


def check_open(promo: Promotion, now: dt.datetime) -> None:
    """A promotion a customer asked for by id: open now, or a clear refusal (a draft is 404)."""
    state = effective_status(promo, now)
    if state == DRAFT:
        raise _promotion_not_found()
    if state == SCHEDULED:
        raise DomainError("promotion_not_started")
    if state in (ENDED, STOPPED):
        raise DomainError("promotion_ended")


def parse_rules(kind: str, rules: dict[str, Any], path: str = "rules") -> BaseModel:
    try:
        return RULES[kind].model_validate(rules)
    except ValidationError as exc:
        # Pydantic's error type as the code, the text from the shared table (as the API's 422s)
        fields = [
            FieldError(
                ".".join([path, *(str(p) for p in err["loc"])]),
                err["type"],
                field_message(err["type"], "en", err.get("ctx")),
                field_message(err["type"], "zh-CN", err.get("ctx")),
            )
            for err in exc.errors()
        ]
        raise DomainError("validation_error", fields=fields) from None


# -- labels ----------------------------------------------------------------------------------------------


def short_yuan(fen: int) -> str:
    """30000 → "300", 2550 → "25.5", 2505 → "25.05" (for labels like 满300减30)."""
    whole, cents = divmod(fen, 100)
    if cents == 0:
        return str(whole)
    return f"{whole}.{cents:02d}".rstrip("0")


def percent_label(percent_off: int) -> str:
    """20% off → "8折", 15% off → "8.5折"."""
    tenths = 100 - percent_off
    return f"{tenths // 10}折" if tenths % 10 == 0 else f"{tenths / 10:g}折"


def spend_save_label(rules: SpendSaveRules, tier_index: int) -> str:
    tier = rules.tiers[tier_index]
    prefix = "每满" if rules.repeat else "满"
    return f"{prefix}{short_yuan(tier.threshold)}减{short_yuan(tier.discount)}"


def promotion_label(promo: Promotion) -> str:
    rules = parse_rules(promo.kind, promo.rules)
    if isinstance(rules, SpendSaveRules):
        return "，".join(spend_save_label(rules, i) for i in range(len(rules.tiers)))
    if isinstance(rules, SpendGiftRules):
        return "，".join(f"满{short_yuan(t.threshold)}赠{t.quantity}件" for t in rules.tiers)
    if isinstance(rules, AddOnRules):
        return f"满{short_yuan(rules.threshold)}加价购"
    if isinstance(rules, FirstOrderRules):
        return "首单特价"
    return "限时折扣"


# -- admin -------------------------------------------------------------------------------------------------


def get_promotion(session: Session, merchant_id: int, promotion_id: int, *, lock: bool = False) -> Promotion:
    found = repo.promotion(session, merchant_id, promotion_id, lock=lock)
    if found is None:
        raise _promotion_not_found()
    return found


def over_limit(promo: Promotion) -> str | None:
    """A limited-time discount's ``over_limit`` (``refuse`` for rules written before the setting);
    None for the other kinds."""
    if promo.kind != LIMITED_DISCOUNT:
        return None
    return str(promo.rules.get("over_limit") or OVER_LIMIT_REFUSE)


def limit_label(promo: Promotion) -> str | None:
    """"每人限购 2 件" / "每人前 2 件享折扣" (limited-time discounts), "每人限用 1 次" (order kinds)."""
    if promo.per_member_limit is None:
        return None
    if promo.kind in ORDER_KINDS:
        return f"每人限用 {promo.per_member_limit} 次"
    if over_limit(promo) == OVER_LIMIT_FULL_PRICE:
        return f"每人前 {promo.per_member_limit} 件享折扣"
    return f"每人限购 {promo.per_member_limit} 件"


def out(promo: Promotion, now: dt.datetime | None = None) -> PromotionOut:
    result = PromotionOut.model_validate(promo)
    result.effective_status = effective_status(promo, now or utcnow())
    result.over_limit = over_limit(promo)
    return result


def _check_window(starts_at: dt.datetime, ends_at: dt.datetime) -> None:
    if ends_at <= starts_at:
        raise invalid("ends_at", "window_invalid", "ends_at must be after starts_at", "结束时间须晚于开始时间")


def _check_scope(session: Session, merchant_id: int, scope: Scope) -> None:
    if scope.type == "products":
        found = catalog_repo.existing_product_ids(session, merchant_id, scope.ids)
    elif scope.type == "categories":
        found = catalog_repo.existing_category_ids(session, merchant_id, scope.ids)
    else:
        return
    missing = [i for i in scope.ids if i not in found]
    if missing:
        raise not_found("商品" if scope.type == "products" else "分类", "Product" if scope.type == "products" else "Category")


def _virtual_product(sku_id: int, path: str) -> DomainError:
    return DomainError(
        "promotion_virtual_product",
        fields=[FieldError(path, "virtual_product", "a virtual product's SKU cannot be listed", "虚拟商品的 SKU 不能参加此活动")],
        sku_id=sku_id,
    )


def virtual_product_refused(sku_id: int, path: str) -> DomainError:
    """422 ``promotion_virtual_product`` at ``path``: a paid membership card (or any virtual
    product) is sold at its card plan's price, never at an item promotion's or an activity's
    (group buy, bargain, flash sale). The one code every such refusal uses, on write and at
    checkout; importing it registers the message."""
    return _virtual_product(sku_id, path)


def _check_price_items(
    session: Session, merchant_id: int, items: list[Any], path: str = "rules.items", *, physical_only: bool = False
) -> None:
    """SKUs of this merchant (else 404), listed once, each promotional price below the sale price.

    ``physical_only`` (limited-time discounts, first-order specials, add-on items): a SKU of a virtual product
    (``products.kind``: a membership card a card plan sells, a service) is refused
    (``promotion_virtual_product``): its price is the card plan's, not a promotion's."""
    skus = repo.skus_with_products(session, merchant_id, [it.sku_id for it in items])
    seen: set[int] = set()
    for i, it in enumerate(items):
        pair = skus.get(it.sku_id)
        if pair is None:
            raise not_found("商品规格", "SKU")
        if physical_only and pair[1].kind == KIND_VIRTUAL:
            raise _virtual_product(it.sku_id, f"{path}.{i}.sku_id")
        if it.sku_id in seen:
            raise invalid(f"{path}.{i}.sku_id", "duplicate_sku", "each SKU may be listed once", "每个 SKU 只能出现一次")
        seen.add(it.sku_id)
        price = getattr(it, "price", None)
        if price is not None and price >= pair[0].sale_price:
            raise invalid(f"{path}.{i}.price", "price_not_below_sale_price", "the price must be below the SKU's sale price",
                          "活动价须低于该 SKU 的售价")


def _check_thresholds(tiers: list[Any]) -> None:
    for i in range(1, len(tiers)):
        if tiers[i].threshold <= tiers[i - 1].threshold:
            raise invalid(f"rules.tiers.{i}.threshold", "tiers_not_increasing", "tier thresholds must increase",
                          "各档门槛须逐档递增")


def check_rules(session: Session, merchant_id: int, kind: str, raw: dict[str, Any]) -> dict[str, Any]:
    """Validate ``raw`` for ``kind`` (schema, then the rules a schema cannot express); returns the
    normalised document to store."""
    if kind != LIMITED_DISCOUNT and "over_limit" in raw:
        raise invalid("rules.over_limit", "over_limit_limited_discount_only",
                      "only a limited-time discount has over_limit (what happens over the purchase limit)",
                      "只有限时折扣可以设置 over_limit（超出限购的处理方式）")
    rules = parse_rules(kind, raw)
    if isinstance(rules, LimitedDiscountRules | FirstOrderRules):
        _check_price_items(session, merchant_id, rules.items, physical_only=True)
    elif isinstance(rules, SpendSaveRules):
        _check_scope(session, merchant_id, rules.scope)
        _check_thresholds(rules.tiers)
        for i, tier in enumerate(rules.tiers):
            if tier.discount >= tier.threshold:
                raise invalid(
                    f"rules.tiers.{i}.discount", "discount_not_below_threshold", "the discount must be below its threshold",
                    "优惠金额须低于本档门槛"
                )
            if i and tier.discount <= rules.tiers[i - 1].discount:
                raise invalid(f"rules.tiers.{i}.discount", "tiers_not_increasing", "tier discounts must increase",
                              "各档优惠须逐档递增")
        if rules.repeat and len(rules.tiers) != 1:
            raise invalid("rules.repeat", "repeat_needs_one_tier", "a repeating spend-and-save has exactly one tier",
                          "循环满减（每满减）只能设一档")
        if rules.max_discount is not None and not rules.repeat:
            raise invalid("rules.max_discount", "repeat_only", "max_discount caps a repeating spend-and-save",
                          "只有循环满减（每满减）可以设置封顶 max_discount")
    elif isinstance(rules, SpendGiftRules):
        _check_scope(session, merchant_id, rules.scope)
        _check_thresholds(rules.tiers)
        found = repo.skus_with_products(session, merchant_id, [t.gift_sku_id for t in rules.tiers])
        if any(t.gift_sku_id not in found for t in rules.tiers):
            raise not_found("赠品规格", "Gift SKU")
        # A gift is a line at price 0: a card given away would be a card at 100 % off (and be granted).
        for i, t in enumerate(rules.tiers):
            if found[t.gift_sku_id][1].kind == KIND_VIRTUAL:
                raise _virtual_product(t.gift_sku_id, f"rules.tiers.{i}.gift_sku_id")
    elif isinstance(rules, AddOnRules):
        _check_scope(session, merchant_id, rules.scope)
        _check_price_items(session, merchant_id, rules.items, physical_only=True)
    return rules.model_dump(mode="json")


def _check_limit(kind: str, per_member_limit: int | None) -> None:
    """A first-order special is one unit for a member's first order by definition: a larger
    limit was accepted and silently ignored."""
    if kind == FIRST_ORDER and per_member_limit not in (None, 1):
        raise invalid("per_member_limit", "first_order_one_unit",
                      "a first-order special sells one unit per member (leave the limit empty or 1)",
                      "首单特价每位会员限购 1 件（限购请留空或填 1）")


def create(session: Session, merchant_id: int, data: PromotionIn, *, actor: Actor) -> Promotion:
    starts_at, ends_at = _aware(data.starts_at, "starts_at"), _aware(data.ends_at, "ends_at")
    _check_window(starts_at, ends_at)
    _check_limit(data.kind, data.per_member_limit)
    rules = check_rules(session, merchant_id, data.kind, data.rules)
    promo = Promotion(
        merchant_id=merchant_id, name=data.name.strip(), kind=data.kind, status=DRAFT, starts_at=starts_at,
        ends_at=ends_at, rules=rules, allows_coupons=data.allows_coupons, allows_points=data.allows_points,
        allows_order_promotions=data.allows_order_promotions, free_shipping=data.free_shipping,
        per_member_limit=data.per_member_limit, exclusive=data.exclusive,
    )
    session.add(promo)
    session.flush()
    audit.record(session, merchant_id, "promotion", promo.id, "created", to_state=DRAFT, actor=actor)
    return promo


def _sync_add_on_stock(session: Session, promo: Promotion) -> None:
    if promo.kind != ADD_ON:
        return
    rules = AddOnRules.model_validate(promo.rules)
    for item in rules.items:
        repo.ensure_sku_counter(session, promo.merchant_id, promo.id, item.sku_id, item.stock)


def update(
    session: Session, merchant_id: int, promotion_id: int, data: PromotionUpdate, *, actor: Actor,
    now: dt.datetime | None = None,
) -> Promotion:
    now = now or utcnow()
    promo = get_promotion(session, merchant_id, promotion_id, lock=True)
    state = effective_status(promo, now)
    if state not in (DRAFT, SCHEDULED):
        raise DomainError("promotion_state_invalid", status=state)
    changes = data.model_dump(exclude_unset=True)
    for key, value in changes.items():
        if value is None and key != "per_member_limit":
            raise invalid(key, "required", f"{key} cannot be null", f"{key} 不能为 null")
    starts_at = _aware(data.starts_at, "starts_at") if data.starts_at is not None else promo.starts_at
    ends_at = _aware(data.ends_at, "ends_at") if data.ends_at is not None else promo.ends_at
    _check_window(starts_at, ends_at)
    if promo.status == ACTIVE and starts_at <= now:
        raise invalid("starts_at", "in_the_past", "an activated promotion cannot be moved to start in the past",
                      "已启用的活动不能把开始时间改到过去")
    if "per_member_limit" in changes:
        _check_limit(promo.kind, changes["per_member_limit"])
    if data.rules is not None:
        promo.rules = check_rules(session, merchant_id, promo.kind, data.rules)
    for key in ("allows_coupons", "allows_points", "allows_order_promotions", "free_shipping", "per_member_limit",
                "exclusive"):
        if key in changes:
            setattr(promo, key, changes[key])
    if data.name is not None:
        promo.name = data.name.strip()
    promo.starts_at, promo.ends_at = starts_at, ends_at
    session.flush()
    if promo.status == ACTIVE:
        _sync_add_on_stock(session, promo)
    audit.record(session, merchant_id, "promotion", promo.id, "updated", actor=actor, data={"fields": sorted(changes)})
    return promo


def activate(
    session: Session, merchant_id: int, promotion_id: int, *, actor: Actor, now: dt.datetime | None = None
) -> Promotion:
    """draft → active (effective: scheduled until ``starts_at``)."""
    now = now or utcnow()
    promo = get_promotion(session, merchant_id, promotion_id, lock=True)
    if promo.status != DRAFT:
        raise DomainError("promotion_state_invalid", status=effective_status(promo, now))
    if now >= promo.ends_at:
        raise invalid("ends_at", "in_the_past", "the promotion's window is already over", "活动时间已结束")
    promo.status = ACTIVE
    promo.activated_at = now
    session.flush()
    _sync_add_on_stock(session, promo)
    audit.record(session, merchant_id, "promotion", promo.id, "activated", from_state=DRAFT, to_state=ACTIVE, actor=actor)
    return promo


def stop(
    session: Session, merchant_id: int, promotion_id: int, *, actor: Actor, now: dt.datetime | None = None
) -> Promotion:
    """Stop an activated promotion now (pending orders keep what they were priced at)."""
    now = now or utcnow()
    promo = get_promotion(session, merchant_id, promotion_id, lock=True)
    if promo.status != ACTIVE:
        raise DomainError("promotion_state_invalid", status=effective_status(promo, now))
    promo.status = STOPPED
    promo.stopped_at = now
    session.flush()
    audit.record(session, merchant_id, "promotion", promo.id, "stopped", from_state=ACTIVE, to_state=STOPPED, actor=actor)
    return promo


def delete(session: Session, merchant_id: int, promotion_id: int, *, actor: Actor) -> None:
    """Only a draft that no order used can be deleted (history stays)."""
    promo = get_promotion(session, merchant_id, promotion_id, lock=True)
    if promo.status != DRAFT or repo.has_usage(session, merchant_id, promo.id):
        raise DomainError("promotion_state_invalid", status=effective_status(promo, utcnow()))
    session.delete(promo)
    session.flush()
    audit.record(session, merchant_id, "promotion", promotion_id, "deleted", from_state=DRAFT, actor=actor)


def stats(session: Session, merchant_id: int, promotion_id: int) -> PromotionStatsOut:
    promo = get_promotion(session, merchant_id, promotion_id)
    rows = repo.usage_stats(session, merchant_id, promo.id)
    paid = rows.get(PAID, {})
    discount, gmv, refunded = paid.get("discount", 0), paid.get("gmv", 0), paid.get("refunded", 0)
    return PromotionStatsOut(
        promotion_id=promo.id, kind=promo.kind, paid_orders=paid.get("orders", 0),
        pending_orders=rows.get(RESERVED, {}).get("orders", 0), released_orders=rows.get(RELEASED, {}).get("orders", 0),
        units=paid.get("units", 0), discount=discount, gmv=gmv, refunded=refunded, net_gmv=gmv - refunded,
        gmv_per_discount=round((gmv - refunded) / discount, 2) if discount else None,
    )


# -- pricing: shared ---------------------------------------------------------------------------------------


@dataclass
class Applied:
    """What a stage applied for one promotion, carried to the submit hook."""

    promotion_id: int
    kind: str
    units: int = 0
    discount: int = 0
    limit: int | None = None
    first_order: bool = False
    add_on: list[list[int]] = field(default_factory=list)
    # item kinds: [[line_index, sku_id, units, line_quantity]] (units: the discounted ones of the line)
    lines: list[list[int]] = field(default_factory=list)
    full_price: bool = False  # a limited-time discount whose units over the limit are sold at the normal price

    def as_dict(self) -> dict[str, Any]:
        return {
            "promotion_id": self.promotion_id, "kind": self.kind, "units": self.units, "discount": self.discount,
            "limit": self.limit, "first_order": self.first_order, "add_on": [list(p) for p in self.add_on],
            "lines": [list(p) for p in self.lines], "full_price": self.full_price,
        }


def _reserve(ctx: PricingContext, applied: Applied) -> None:
    ctx.reservations.setdefault(RESERVATION, []).append(applied.as_dict())


def _restrict(line: PricedLine, promo: Promotion, *, item: bool) -> None:
    """Carry the promotion's stacking settings to the later stages (never loosen an earlier flag).

    ``no_coupon`` carries the promotion's rule; ``line.coupons_allowed`` stays the product's own
    setting, so the coupon stage names the right reason (``activity_excludes_coupons``)."""
    if not promo.allows_coupons:
        line.flags["no_coupon"] = True
    if not promo.allows_points:
        line.flags["no_points"] = True
    if item and not promo.allows_order_promotions:
        line.flags["no_order_promotions"] = True
    if item and promo.free_shipping:
        line.flags["free_shipping"] = True


# -- pricing: item promotions ------------------------------------------------------------------------------


@dataclass
class ItemFacts:
    """What the item stage needs to know about the member (loaded by ``item_stage``)."""

    first_order_eligible: bool = False
    member_units: dict[int, int] = field(default_factory=dict)


def _first_order_request(options: dict[str, Any]) -> int | None:
    raw = options.get(OPTION_FIRST_ORDER)
    if raw is None:
        return None
    pid = raw.get("promotion_id") if isinstance(raw, dict) else None
    if not isinstance(pid, int) or isinstance(pid, bool) or not 0 < pid <= ID_MAX:
        raise invalid("options.first_order.promotion_id", "required", "give the first-order promotion id",
                      "请提供首单特价活动 ID（promotion_id）")
    return pid


def _held(ctx: PricingContext, facts: ItemFacts, promotion_id: int) -> int:
    """Units of the promotion the member holds: paid and pending orders, plus the lines of this
    checkout already priced (so lines share one allowance)."""
    return facts.member_units.get(promotion_id, 0) + sum(
        int(r["units"]) for r in ctx.reservations.get(RESERVATION, []) if r["promotion_id"] == promotion_id
    )


def limited_discount_amount(line: PricedLine, item: Any, units: int) -> tuple[int, int]:
    """(discount, discounted unit price) of a limited-time discount on ``units`` of the line's units.

    The units' share of what is left on the line is ``amount × units // quantity`` (fen, rounded
    down; the whole line's amount when every unit is discounted, as before the over-limit setting),
    priced as the rule says: a fixed ``price`` per unit, or ``percent_off`` of the share."""
    share = line.amount if units == line.quantity else line.amount * units // line.quantity
    amount = max(0, share - item.price * units) if item.price is not None else share * item.percent_off // 100
    return amount, (share - amount) // units


def apply_item_promotions(
    ctx: PricingContext, promos: list[Promotion], facts: ItemFacts, requested_first_order: int | None = None,
    virtual_products: frozenset[int] | set[int] = frozenset(),
) -> None:
    """The ITEM_PROMOTIONS logic over already-loaded promotions and member facts (no queries).

    Lines of ``virtual_products`` (a product turned virtual after the promotion listed its SKU)
    keep their price; a first-order special asked for on such a line only is refused
    (``promotion_virtual_product``)."""
    parsed: list[tuple[Promotion, dict[int, Any], bool]] = []  # promotion, items by SKU, first N units only
    for promo in promos:
        rules = parse_rules(promo.kind, promo.rules)
        assert isinstance(rules, LimitedDiscountRules | FirstOrderRules)
        first_n = (isinstance(rules, LimitedDiscountRules) and rules.over_limit == OVER_LIMIT_FULL_PRICE
                   and promo.per_member_limit is not None)
        parsed.append((promo, {it.sku_id: it for it in rules.items}, first_n))
    first_order_applied = False
    first_order_missed = False
    virtual_asked: int | None = None  # a virtual line the requested first-order special lists
    for idx, line in enumerate(ctx.lines):
        if line.flags.get("activity") or line.flags.get("promotion") or line.amount <= 0:
            continue
        if line.product_id in virtual_products:
            if requested_first_order is not None and any(
                p.id == requested_first_order and line.sku_id in by_sku for p, by_sku, _ in parsed
            ):
                virtual_asked = line.sku_id
            continue
        best: tuple[int, Promotion, int, str, int] | None = None  # discount, promo, units, label, unit price
        used_up: list[Promotion] = []  # full_price promotions with no allowance left for this line
        for promo, by_sku, first_n in parsed:
            item = by_sku.get(line.sku_id)
            if item is None:
                continue
            if promo.kind == LIMITED_DISCOUNT:
                units = line.quantity
                if first_n:  # only the member's first N units: what is left of the allowance
                    units = min(units, max(0, int(promo.per_member_limit or 0) - _held(ctx, facts, promo.id)))
                    if units <= 0:
                        used_up.append(promo)
                        continue
                amount, unit_price = limited_discount_amount(line, item, units)
                label = "限时折扣" if item.price is not None else f"限时{percent_label(item.percent_off)}"
            else:
                if first_order_applied or not facts.first_order_eligible:
                    first_order_missed = True
                    continue
                if requested_first_order is not None and promo.id != requested_first_order:
                    continue
                one_unit = line.amount // line.quantity
                amount = max(0, one_unit - item.price)
                label, units, unit_price = "首单特价", 1, item.price
            asked = promo.kind == FIRST_ORDER and promo.id == requested_first_order
            if asked and amount > 0:  # the customer asked for this special: it wins its line
                best = (amount, promo, units, label, unit_price)
                break
            if amount > 0 and (best is None or amount > best[0]):
                best = (amount, promo, units, label, unit_price)
        for promo in used_up:
            ctx.note(ITEM_PROMOTIONS, code="promotion_limit_used", promotion_id=promo.id, sku_id=line.sku_id,
                     limit=promo.per_member_limit, full_price_units=line.quantity,
                     message=f"每人前 {promo.per_member_limit} 件享折扣，已用完，按原价购买")
        if best is None:
            continue
        amount, promo, units, label, unit_price = best
        limit = promo.per_member_limit if promo.kind == LIMITED_DISCOUNT else None
        first_n = limit is not None and next(f for p, _, f in parsed if p is promo)
        if limit is not None and not first_n:
            held = _held(ctx, facts, promo.id)
            if held + units > limit:
                raise DomainError("promotion_limit_reached", limit=limit, remaining=max(0, limit - held))
        details: dict[str, Any] = {"promotion_id": promo.id, "kind": promo.kind, "unit_price": unit_price,
                                   "units": units}
        if promo.kind == LIMITED_DISCOUNT:
            details["full_price_units"] = line.quantity - units
        applied = ctx.discount(ITEM_PROMOTIONS, f"{promo.kind}:{promo.id}", label, amount, [idx], details=details)
        if units < line.quantity and promo.kind == LIMITED_DISCOUNT:
            ctx.note(ITEM_PROMOTIONS, code="promotion_limit_partial", promotion_id=promo.id, sku_id=line.sku_id,
                     limit=limit, units=units, full_price_units=line.quantity - units,
                     message=f"每人前 {limit} 件享折扣：{units} 件享折扣，{line.quantity - units} 件原价")
        line.flags["promotion"] = f"{promo.kind}:{promo.id}"
        _restrict(line, promo, item=True)
        is_first = promo.kind == FIRST_ORDER
        first_order_applied = first_order_applied or is_first
        _reserve(ctx, Applied(promo.id, promo.kind, units=units, discount=applied, limit=limit, first_order=is_first,
                              lines=[[idx, line.sku_id, units, line.quantity]], full_price=bool(first_n)))
    if requested_first_order is not None and not first_order_applied:
        if virtual_asked is not None:
            raise _virtual_product(virtual_asked, "options.first_order.promotion_id")
        if not facts.first_order_eligible:
            raise DomainError("first_order_not_eligible")
        raise invalid("options.first_order.promotion_id", "item_not_in_order", "no SKU of this promotion is in the order",
                      "订单中没有本活动的商品")
    if first_order_missed and not first_order_applied and not facts.first_order_eligible:
        ctx.note(ITEM_PROMOTIONS, code="first_order_not_eligible", message="首单特价仅限首次下单的新客")


_LIVE = "siyu.promotions.live"
_FACTS = "siyu.promotions.facts"


def live_promotions(ctx: PricingContext) -> list[Promotion]:
    """All live promotions of the merchant at ``ctx.now``: one query per pricing run, shared by
    both stages (kept in ``session.info`` for this context only)."""
    key = (id(ctx), ctx.merchant_id, ctx.now)
    cached = ctx.session.info.get(_LIVE)
    if cached is not None and cached[0] == key:
        return list(cached[1])
    promos = repo.live(ctx.session, ctx.merchant_id, ITEM_KINDS + ORDER_KINDS, ctx.now)
    ctx.session.info[_LIVE] = (key, promos)
    return list(promos)


def pricing_facts(ctx: PricingContext) -> repo.PricingFacts:
    """Member units, add-on stock sold and first-order eligibility: one query per pricing run,
    made by the first stage that needs any of it (for every live promotion, so the second stage
    finds it ready)."""
    key = (id(ctx), ctx.merchant_id, ctx.member_id, ctx.now)
    cached = ctx.session.info.get(_FACTS)
    if cached is not None and cached[0] == key:
        return cast(repo.PricingFacts, cached[1])
    promos = live_promotions(ctx)
    skus = {ln.sku_id for ln in ctx.lines}
    facts = repo.pricing_facts(
        ctx.session, ctx.merchant_id, ctx.member_id,
        limited_ids=[p.id for p in promos if p.per_member_limit is not None],
        add_on_ids=[p.id for p in promos if p.kind == ADD_ON],
        first_order=any(
            p.kind == FIRST_ORDER and any(it.get("sku_id") in skus for it in p.rules.get("items", [])) for p in promos
        ),
    )
    ctx.session.info[_FACTS] = (key, facts)
    return facts


def item_stage(ctx: PricingContext) -> None:
    requested = _first_order_request(ctx.options)
    if requested is not None:
        wanted = repo.promotion(ctx.session, ctx.merchant_id, requested)
        if wanted is None or wanted.kind != FIRST_ORDER:
            raise _promotion_not_found()
        check_open(wanted, ctx.now)
    promos = [p for p in live_promotions(ctx) if p.kind in ITEM_KINDS]
    skus = {ln.sku_id for ln in ctx.lines}
    relevant = [
        p for p in promos
        if any(it.get("sku_id") in skus for it in p.rules.get("items", []))
    ]
    if not relevant:
        return
    listed = {it.get("sku_id") for p in relevant for it in p.rules.get("items", [])}
    # Rules refuse a virtual product's SKU when written; a product made virtual later is left out
    # here (one read, only when a live limited-time or first-order promotion lists a line's SKU).
    virtual = repo.virtual_product_ids(ctx.session, ctx.merchant_id, {ln.product_id for ln in ctx.lines
                                                                      if ln.sku_id in listed})
    facts = ItemFacts()
    if ctx.member_id is not None and any(p.kind == FIRST_ORDER or p.per_member_limit is not None for p in relevant):
        found = pricing_facts(ctx)
        facts.first_order_eligible, facts.member_units = found.first_order_eligible, found.member_units
    apply_item_promotions(ctx, relevant, facts, requested, virtual)


# -- pricing: order promotions -----------------------------------------------------------------------------


@dataclass
class AddOnRequest:
    promotion_id: int
    sku_id: int
    quantity: int = 1


@dataclass
class OrderFacts:
    """What the order stage needs from the database (loaded by ``order_stage``; fakes in tests)."""

    member_units: dict[int, int] = field(default_factory=dict)
    add_on_sold: dict[tuple[int, int], int] = field(default_factory=dict)
    # (sku_id, quantity) -> a priced line for it; raises for an unknown or unsellable SKU.
    load_line: Callable[[int, int], PricedLine] | None = None
    stock_of: Callable[[int], int] = lambda sku_id: 0


def add_on_requests(options: dict[str, Any]) -> list[AddOnRequest]:
    raw = options.get(OPTION_ADD_ON)
    if raw is None:
        return []
    if not isinstance(raw, list) or len(raw) > MAX_ADD_ON_REQUESTS:
        raise invalid("options.add_on", "invalid", f"a list of at most {MAX_ADD_ON_REQUESTS} add-on requests",
                      f"应为列表，最多 {MAX_ADD_ON_REQUESTS} 个换购请求")
    merged: dict[tuple[int, int], int] = {}
    for i, req in enumerate(raw):
        if not isinstance(req, dict):
            raise invalid(f"options.add_on.{i}", "invalid", "an object with promotion_id and sku_id",
                          "应为包含 promotion_id 和 sku_id 的对象")
        values = []
        for key, default in (("promotion_id", None), ("sku_id", None), ("quantity", 1)):
            value = req.get(key, default)
            if not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= ID_MAX:
                raise invalid(f"options.add_on.{i}.{key}", "required", f"{key} must be a positive integer",
                              f"{key} 须为正整数")
            values.append(value)
        key2 = (values[0], values[1])
        merged[key2] = merged.get(key2, 0) + values[2]
    return [AddOnRequest(p, s, q) for (p, s), q in merged.items()]


def in_scope(line: PricedLine, scope: Scope) -> bool:
    if scope.type == "all":
        return True
    if scope.type == "products":
        return line.product_id in scope.ids
    return line.category_id is not None and line.category_id in scope.ids


def spend_save_discount(rules: SpendSaveRules, amount: int) -> tuple[int, int | None]:
    """(discount, tier index) for an eligible ``amount``; (0, None) below the first tier."""
    reached = [i for i, t in enumerate(rules.tiers) if amount >= t.threshold]
    if not reached:
        return 0, None
    i = reached[-1]
    tier = rules.tiers[i]
    if rules.repeat:
        total = amount // tier.threshold * tier.discount
        if rules.max_discount is not None:
            total = min(total, rules.max_discount)
        return total, i
    return tier.discount, i


def _spend_save_near(rules: SpendSaveRules, amount: int, current: int) -> tuple[int, int] | None:
    """(short, discount) of the next step up, if any."""
    if rules.repeat:
        tier = rules.tiers[0]
        if rules.max_discount is not None and current >= rules.max_discount:
            return None
        nxt = (amount // tier.threshold + 1) * tier.threshold
        gain = min(current + tier.discount, rules.max_discount or 10**12)
        return nxt - amount, gain
    for tier in rules.tiers:
        if tier.threshold > amount:
            return tier.threshold - amount, tier.discount
    return None


def _limit_reached(promo: Promotion, facts: OrderFacts) -> bool:
    return promo.per_member_limit is not None and facts.member_units.get(promo.id, 0) >= promo.per_member_limit


def apply_order_promotions(
    ctx: PricingContext, promos: list[Promotion], facts: OrderFacts, requests: list[AddOnRequest] | None = None
) -> None:
    """The ORDER_PROMOTIONS logic over already-loaded promotions (queries only via ``facts``)."""
    requests = requests or []
    base = [i for i, ln in enumerate(ctx.lines) if not ln.flags.get("no_order_promotions") and ln.amount > 0]
    # The amounts the item stage left, fixed before this stage changes anything.
    amounts = {i: ctx.lines[i].amount for i in base}

    def eligible(scope: Scope) -> tuple[list[int], int]:
        idx = [i for i in base if in_scope(ctx.lines[i], scope)]
        return idx, sum(amounts[i] for i in idx)

    # spend-and-save: best exclusive one alone vs all stackable ones together
    options: list[tuple[Promotion, SpendSaveRules, list[int], int, int]] = []
    for promo in promos:
        if promo.kind != SPEND_SAVE:
            continue
        rules = SpendSaveRules.model_validate(promo.rules)
        idx, amount = eligible(rules.scope)
        if _limit_reached(promo, facts):
            if amount >= rules.tiers[0].threshold:
                ctx.note(ORDER_PROMOTIONS, code="promotion_limit_reached", promotion_id=promo.id,
                         message=f"{promotion_label(promo)} 每人限用 {promo.per_member_limit} 次")
            continue
        discount, tier = spend_save_discount(rules, amount)
        near = _spend_save_near(rules, amount, discount)
        if near is not None and idx:
            short, gain = near
            ctx.note(ORDER_PROMOTIONS, code="spend_save_almost", promotion_id=promo.id, short=short, discount=gain,
                     message=f"再买 {yuan(short)} 可减 {yuan(gain)}")
        if tier is not None and discount > 0:
            options.append((promo, rules, idx, discount, tier))
    exclusive = [[o] for o in options if o[0].exclusive]
    stackable = [o for o in options if not o[0].exclusive]
    candidates = exclusive + ([stackable] if stackable else [])
    if candidates:
        chosen = max(candidates, key=lambda group: min(sum(o[3] for o in group), sum(amounts[i] for i in base)))
        for promo, rules, idx, discount, tier in chosen:
            applied = ctx.discount(
                ORDER_PROMOTIONS, f"{SPEND_SAVE}:{promo.id}", spend_save_label(rules, tier), discount, idx,
                details={"promotion_id": promo.id, "kind": SPEND_SAVE, "tier": tier},
            )
            if applied <= 0:
                continue
            for i in idx:
                _restrict(ctx.lines[i], promo, item=False)
            if promo.free_shipping:
                ctx.free_shipping = True
            _reserve(ctx, Applied(promo.id, SPEND_SAVE, units=1, discount=applied, limit=promo.per_member_limit))

    # spend-and-gift: every gift promotion reached adds its highest tier's gift
    for promo in promos:
        if promo.kind != SPEND_GIFT:
            continue
        gift_rules = SpendGiftRules.model_validate(promo.rules)
        idx, amount = eligible(gift_rules.scope)
        if not idx or _limit_reached(promo, facts):
            continue
        reached = [t for t in gift_rules.tiers if amount >= t.threshold]
        higher = [t for t in gift_rules.tiers if t.threshold > amount]
        if higher:
            nxt = higher[0]
            ctx.note(ORDER_PROMOTIONS, code="spend_gift_almost", promotion_id=promo.id, short=nxt.threshold - amount,
                     gift_sku_id=nxt.gift_sku_id, message=f"再买 {yuan(nxt.threshold - amount)} 可获赠品")
        if not reached or facts.load_line is None:
            continue
        gift = reached[-1]
        in_order = sum(ln.quantity for ln in ctx.lines if ln.sku_id == gift.gift_sku_id)
        try:
            line = facts.load_line(gift.gift_sku_id, gift.quantity)
        except DomainError:
            line = None  # not on sale any more, or made virtual after the rules were written
        if line is None or facts.stock_of(gift.gift_sku_id) < in_order + gift.quantity:
            ctx.note(ORDER_PROMOTIONS, code="gift_out_of_stock", promotion_id=promo.id, gift_sku_id=gift.gift_sku_id,
                     message="赠品已赠完")
            continue
        line.sale_price = 0
        line.bonus_points = 0
        line.coupons_allowed = False
        line.flags.update({"promotion": f"{SPEND_GIFT}:{promo.id}", "gift": True, "no_coupon": True, "no_points": True,
                           "no_order_promotions": True, "free_shipping": True})
        ctx.lines.append(line)
        label = f"满{short_yuan(gift.threshold)}赠 {line.title} ×{gift.quantity}"
        ctx.entries.append(StageEntry(ORDER_PROMOTIONS, f"{SPEND_GIFT}:{promo.id}", label, 0, {
            "promotion_id": promo.id, "kind": SPEND_GIFT, "gift_sku_id": gift.gift_sku_id, "quantity": gift.quantity,
            "gift_value": line.list_price * gift.quantity,
        }))
        if promo.free_shipping:
            ctx.free_shipping = True
        _reserve(ctx, Applied(promo.id, SPEND_GIFT, units=1, limit=promo.per_member_limit))

    # add-on deals: requested ones are added, the others reached are offered
    by_id = {p.id: p for p in promos if p.kind == ADD_ON}
    requested_ids = {r.promotion_id for r in requests}
    taken: dict[int, Applied] = {}
    for req in requests:
        wanted = by_id.get(req.promotion_id)
        if wanted is None:
            raise _promotion_not_found()
        promo = wanted
        add_rules = AddOnRules.model_validate(promo.rules)
        _, amount = eligible(add_rules.scope)
        if amount < add_rules.threshold:
            raise DomainError("add_on_threshold_not_met", short=yuan(add_rules.threshold - amount),
                              threshold=yuan(add_rules.threshold))
        if _limit_reached(promo, facts):
            raise DomainError("promotion_limit_reached", limit=promo.per_member_limit, remaining=0)
        item = next((it for it in add_rules.items if it.sku_id == req.sku_id), None)
        if item is None:
            raise invalid("options.add_on.sku_id", "not_an_add_on_item", "this SKU is not offered by the promotion",
                          "该 SKU 不是本活动的换购商品")
        if req.quantity > item.per_order_limit:
            raise DomainError("add_on_limit_reached", limit=item.per_order_limit)
        if facts.add_on_sold.get((promo.id, item.sku_id), 0) + req.quantity > item.stock:
            raise DomainError("add_on_sold_out")
        assert facts.load_line is not None
        line = facts.load_line(item.sku_id, req.quantity)
        line.flags.update({"promotion": f"{ADD_ON}:{promo.id}", "add_on": True, "no_order_promotions": True})
        _restrict(line, promo, item=False)
        ctx.lines.append(line)
        discount = max(0, line.amount - item.price * req.quantity)
        applied = ctx.discount(
            ORDER_PROMOTIONS, f"{ADD_ON}:{promo.id}", f"加价购 {yuan(item.price)}", discount, [len(ctx.lines) - 1],
            details={"promotion_id": promo.id, "kind": ADD_ON, "sku_id": item.sku_id, "price": item.price},
        )
        if promo.free_shipping:
            ctx.free_shipping = True
        entry = taken.setdefault(promo.id, Applied(promo.id, ADD_ON, units=1, limit=promo.per_member_limit))
        entry.discount += applied
        entry.add_on.append([item.sku_id, req.quantity])
    for entry in taken.values():
        _reserve(ctx, entry)
    for promo in by_id.values():
        if promo.id in requested_ids or _limit_reached(promo, facts):
            continue
        add_rules = AddOnRules.model_validate(promo.rules)
        idx, amount = eligible(add_rules.scope)
        if not idx:
            continue
        offers = [
            {"sku_id": it.sku_id, "price": it.price, "per_order_limit": it.per_order_limit}
            for it in add_rules.items
            if facts.add_on_sold.get((promo.id, it.sku_id), 0) < it.stock
        ]
        if not offers:
            continue
        if amount >= add_rules.threshold:
            ctx.note(ORDER_PROMOTIONS, code="add_on_offer", promotion_id=promo.id, items=offers,
                     message=f"已满 {yuan(add_rules.threshold)}，可加价换购")
        else:
            short = add_rules.threshold - amount
            ctx.note(ORDER_PROMOTIONS, code="add_on_almost", promotion_id=promo.id, short=short, items=offers,
                     message=f"再买 {yuan(short)} 可加价换购")


def order_stage(ctx: PricingContext) -> None:
    requests = add_on_requests(ctx.options)
    promos = [p for p in live_promotions(ctx) if p.kind in ORDER_KINDS]
    live_ids = {p.id for p in promos}
    for req in requests:  # a clear refusal for an add-on that is not open
        if req.promotion_id not in live_ids:
            wanted = repo.promotion(ctx.session, ctx.merchant_id, req.promotion_id)
            if wanted is None or wanted.kind != ADD_ON:
                raise _promotion_not_found()
            check_open(wanted, ctx.now)
    if not promos:
        return
    facts = OrderFacts()
    session, merchant_id = ctx.session, ctx.merchant_id
    if any(p.per_member_limit is not None or p.kind == ADD_ON for p in promos):
        known = pricing_facts(ctx)
        facts.member_units, facts.add_on_sold = known.member_units, known.add_on_sold
    # Every SKU this stage may add (gifts, requested add-ons), in one query on first need.
    sku_ids = {r.sku_id for r in requests}
    for p in promos:
        if p.kind == SPEND_GIFT:
            sku_ids |= {int(t["gift_sku_id"]) for t in p.rules.get("tiers", [])}
    loaded: dict[int, tuple[Any, Any]] = {}

    def found_pair(sku_id: int) -> tuple[Any, Any] | None:
        if not loaded and sku_ids:
            loaded.update(repo.skus_with_products(session, merchant_id, sku_ids))
        return loaded.get(sku_id)

    def load_line(sku_id: int, quantity: int) -> PricedLine:
        pair = found_pair(sku_id)
        if pair is None:
            raise DomainError("sku_not_found", sku_id=sku_id)
        sku, product = pair
        if not orders_service.sellable(sku, product):
            raise DomainError("product_not_on_sale", sku_id=sku_id)
        if product.kind == KIND_VIRTUAL:
            # The rules refuse it on write; a product made virtual later is neither given away
            # nor sold as an add-on (an add-on asked for is refused, a gift is left out).
            raise _virtual_product(sku_id, "options.add_on.sku_id")
        return PricedLine(
            sku_id=sku.id, product_id=product.id, category_id=product.category_id, title=product.title,
            spec_text=orders_service.spec_text(product, sku),
            image_url=sku.image_url or (product.images[0] if product.images else None),
            quantity=quantity, list_price=sku.list_price, sale_price=sku.sale_price, cost_price=sku.cost_price,
            weight_g=sku.weight_g, free_shipping=product.free_shipping, coupons_allowed=product.coupons_allowed,
            bonus_points=product.bonus_points, freight_template_id=product.freight_template_id,
        )

    def stock_of(sku_id: int) -> int:
        pair = found_pair(sku_id)
        return pair[0].stock if pair is not None else 0

    facts.load_line, facts.stock_of = load_line, stock_of
    apply_order_promotions(ctx, promos, facts, requests)


# -- submit hook, paid, cancelled --------------------------------------------------------------------------


def take(ctx: PricingContext, order_id: int) -> None:
    """The submit hook: claims, counters and add-on stock by conditional updates; usage rows."""
    entries = ctx.reservations.get(RESERVATION)
    if not entries:
        return
    session, merchant_id, member_id = ctx.session, ctx.merchant_id, ctx.member_id
    assert member_id is not None
    merged: dict[int, Applied] = {}
    for raw in entries:
        pid = int(raw["promotion_id"])
        entry = merged.setdefault(pid, Applied(pid, str(raw["kind"]), limit=raw.get("limit")))
        entry.units += int(raw["units"])
        entry.discount += int(raw["discount"])
        entry.first_order = entry.first_order or bool(raw.get("first_order"))
        entry.full_price = entry.full_price or bool(raw.get("full_price"))
        entry.add_on += [list(p) for p in raw.get("add_on", [])]
        # stored: [line_index, sku_id, units, freed, line_quantity, refunded] (see ``_units_to_free``)
        entry.lines += [[int(i), int(sku), int(units), 0, int(qty), 0] for i, sku, units, qty in raw.get("lines", [])]
    for pid in sorted(merged):
        entry = merged[pid]
        if entry.first_order:
            if repo.has_paid_order(session, merchant_id, member_id):
                raise DomainError("first_order_not_eligible")
            if not repo.claim_first_order(session, merchant_id, member_id, order_id, pid):
                raise DomainError("first_order_used")
        if entry.limit is not None and not repo.take_member_units(
            session, merchant_id, pid, member_id, entry.units, int(entry.limit)
        ):
            held = repo.member_units(session, merchant_id, member_id, [pid]).get(pid, 0)
            # full_price: a concurrent order of the member took part of the allowance after this one
            # was priced; its discounted units are no longer right, so the submit is refused (nothing
            # kept) and a new submit prices the units over the limit at the normal price.
            code = "promotion_allowance_changed" if entry.full_price else "promotion_limit_reached"
            raise DomainError(code, limit=entry.limit, remaining=max(0, int(entry.limit) - held))
        for sku_id, qty in sorted((int(s), int(q)) for s, q in entry.add_on):
            if not repo.take_sku_units(session, merchant_id, pid, sku_id, qty):
                raise DomainError("add_on_sold_out")
        repo.add_usage(
            session,
            PromotionUsage(
                merchant_id=merchant_id, promotion_id=pid, order_id=order_id, member_id=member_id, kind=entry.kind,
                units=entry.units, discount=entry.discount, gmv=ctx.payable, add_on=entry.add_on,
                first_order=entry.first_order, lines=entry.lines, units_freed=0, status=RESERVED,
            ),
        )


def mark_paid(session: Session, merchant_id: int, order_id: int, *, now: dt.datetime | None = None) -> int:
    return repo.mark_order_paid(session, merchant_id, order_id, now or utcnow())


def _line_mark(mark: list[int]) -> tuple[int, int, int, int, int, int]:
    """A stored ``lines`` entry as (line_index, sku_id, units, freed, line_quantity, refunded).

    Rows written before the over-limit setting have four numbers: every unit of their line was
    discounted (limited-time discount) or the line's refunds were not counted apart from the freed
    units, so the line's quantity is its units and its refunded quantity its freed units."""
    i, sku, units, freed = (int(v) for v in mark[:4])
    if len(mark) >= 6:
        return i, sku, units, freed, int(mark[4]), int(mark[5])
    return i, sku, units, freed, units, freed


def _units_to_free(usage: PromotionUsage, refunded_qty: dict[int, int], line_ids: list[int], *, full: bool) -> int:
    """Units of ``usage`` this refund frees (and the per-line ``freed`` / ``refunded`` marks moved
    with them).

    A full refund frees every unit still held. Otherwise an item kind frees, per order line it
    sits on, the discounted units the member no longer keeps: refunds free discounted units
    **last**. A line of 3 with 2 discounted (limited-time discount, ``over_limit: full_price``)
    refunded 1 unit frees nothing (the member still keeps 2 units, as many as were discounted);
    a second unit refunded frees 1, the third the other. So the member never keeps more
    discounted units than the limit, however a refund is cut. On a line whose every unit was
    discounted this is the refunded quantity. An order kind (one use per order) is freed only by
    the full refund."""
    left = usage.units - usage.units_freed
    if left <= 0:
        return 0
    if full:
        usage.lines = [[i, sku, units, units, qty, qty] for i, sku, units, _f, qty, _r in map(_line_mark, usage.lines)]
        return left
    free = 0
    marks = []
    for i, sku, units, freed, quantity, refunded in map(_line_mark, usage.lines):
        qty = refunded_qty.get(line_ids[i], 0) if i < len(line_ids) else 0
        refunded = min(quantity, refunded + qty)
        kept = quantity - refunded
        step = max(0, min(units - min(units, kept) - freed, left - free))
        free += step
        marks.append([i, sku, units, freed + step, quantity, refunded])
    usage.lines = marks
    return free


def record_refund(
    session: Session, merchant_id: int, order_id: int, refund_id: int, amount: int, *,
    lines: list[dict[str, Any]] | None = None, full: bool = False,
) -> int:
    """A succeeded refund of the order, once per refund (``refund_ids``): its amount is added to the
    order's paid usage rows (net GMV in the stats), and the refunded units go back to the member's
    purchase limit (``lines``: the refund's ``{"order_line_id", "quantity"}``; ``full``: the order
    is now refunded in full, which frees everything). Add-on stock and the first-order claim stay
    taken: the goods left the store, and a member with a paid order is no longer a first-time
    buyer. Returns the rows changed."""
    refunded_qty: dict[int, int] = {}
    for row in lines or []:
        line_id = int(row["order_line_id"])
        refunded_qty[line_id] = refunded_qty.get(line_id, 0) + int(row.get("quantity") or 0)
    line_ids: list[int] | None = None
    changed = 0
    for usage in repo.usages_of_order_locked(session, merchant_id, order_id):
        if usage.status != PAID or refund_id in (usage.refund_ids or []):
            continue
        usage.refunded = min(usage.gmv, usage.refunded + max(0, amount))
        usage.refund_ids = [*(usage.refund_ids or []), refund_id]
        if line_ids is None and refunded_qty and usage.lines and not full:
            line_ids = repo.order_line_ids(session, merchant_id, order_id)
        free = _units_to_free(usage, refunded_qty, line_ids or [], full=full)
        if free > 0:
            usage.units_freed += free
            repo.give_member_units(session, merchant_id, usage.promotion_id, usage.member_id, free)
        changed += 1
    session.flush()
    return changed


def release_order(session: Session, merchant_id: int, order_id: int, *, now: dt.datetime | None = None) -> int:
    """A cancelled order gives back its counters, add-on stock and first-order claim, once."""
    now = now or utcnow()
    released = 0
    for usage in repo.usages_of_order(session, merchant_id, order_id):
        if not repo.release_usage(session, merchant_id, usage.id, now):
            continue
        released += 1
        repo.give_member_units(session, merchant_id, usage.promotion_id, usage.member_id, usage.units)
        for sku_id, qty in usage.add_on:
            repo.give_sku_units(session, merchant_id, usage.promotion_id, int(sku_id), int(qty))
        if usage.first_order:
            repo.drop_first_order_claim(session, merchant_id, order_id)
    session.flush()
    return released


# -- store -------------------------------------------------------------------------------------------------


def store_promotions(
    session: Session, merchant_id: int, *, product_id: int | None = None, sku_id: int | None = None,
    now: dt.datetime | None = None,
) -> list[StorePromotionOut]:
    """Live promotions a product page shows for a product (or one of its SKUs)."""
    now = now or utcnow()
    if sku_id is not None:
        pair = repo.skus_with_products(session, merchant_id, [sku_id]).get(sku_id)
        if pair is None:
            raise not_found("商品规格", "SKU")
        product = pair[1]
        sku_ids = [sku_id]
    elif product_id is not None:
        found = repo.product(session, merchant_id, product_id)
        if found is None:
            raise not_found("商品", "Product")
        product = found
        sku_ids = repo.product_sku_ids(session, merchant_id, product_id)
    else:
        raise invalid("product_id", "required", "give product_id or sku_id", "请提供 product_id 或 sku_id")
    skus = repo.skus_with_products(session, merchant_id, sku_ids)
    probe = PricedLine(
        sku_id=0, product_id=product.id, category_id=product.category_id, title="", spec_text="", image_url=None,
        quantity=1, list_price=0, sale_price=0, cost_price=0, weight_g=0, free_shipping=False, coupons_allowed=True,
        bonus_points=0,
    )
    result = []
    for promo in repo.live(session, merchant_id, ITEM_KINDS + ORDER_KINDS, now):
        rules = parse_rules(promo.kind, promo.rules)
        prices: dict[int, int] = {}
        tiers: list[dict[str, Any]] = []
        if isinstance(rules, LimitedDiscountRules | FirstOrderRules):
            for it in rules.items:
                if it.sku_id not in skus:
                    continue
                sale = skus[it.sku_id][0].sale_price
                percent = getattr(it, "percent_off", None)
                prices[it.sku_id] = min(sale, it.price) if it.price is not None else sale - sale * (percent or 0) // 100
            if not prices:
                continue
        else:
            assert isinstance(rules, SpendSaveRules | SpendGiftRules | AddOnRules)
            if not in_scope(probe, rules.scope):
                continue
            if isinstance(rules, AddOnRules):
                tiers = [{"threshold": rules.threshold, "items": [it.model_dump() for it in rules.items]}]
            else:
                tiers = [t.model_dump() for t in rules.tiers]
        result.append(
            StorePromotionOut(
                promotion_id=promo.id, kind=promo.kind, name=promo.name, label=promotion_label(promo),
                starts_at=promo.starts_at, ends_at=promo.ends_at, sku_prices=prices, tiers=tiers,
                allows_coupons=promo.allows_coupons, allows_points=promo.allows_points,
                allows_order_promotions=promo.allows_order_promotions, free_shipping=promo.free_shipping,
                per_member_limit=promo.per_member_limit, over_limit=over_limit(promo), limit_label=limit_label(promo),
            )
        )
    return result
