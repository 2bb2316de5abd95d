"""Points mall products (积分商城 product exchange): a SKU sold for points plus an optional cash part.

The merchant lists ``kind: "product"`` items in the loyalty rules (``mall``): a SKU of the store,
on sale, ``points`` and ``cash`` fen per unit, an optional ``per_member_limit``. A member
exchanges one through the normal checkout (address, freight, stock, payment, shipping, cancel,
timeout and refunds as for any order) with ``options={"points_mall": {"sku_id": S}}``:

- BASE stage (``flag_line``): the option is checked — the item is listed and enabled, the SKU is
  in the order, the order holds that line alone and no other checkout option
  (``points_mall_alone``: an exchange is an order of its own, as in Youzan, so its refunds are
  exactly the exchange's), the units fit the member's remaining limit
  (``points_mall_limit_reached``), the balance covers the points (``points_insufficient``) — and
  the line is flagged ``points_mall`` / ``no_coupon`` / ``no_points`` / ``no_order_promotions``
  and ``promotion`` (item promotions leave it alone); the member price stage skips it too. An
  exchange is its own price: nothing else stacks on it.
- POINTS stage (``price_line``, from ``stages.points_stage``): the line's price down to the cash
  part is a points discount (``points_mall:<sku>``, details points / cash), and the exchange's
  points join ``ctx.points_to_use``, so the order's ``points_used`` shows them and the one
  points spend of the order (``order:<id>:spend``) takes them at submit. Its reason is
  ``mall_product:<sku>`` (ref ``order:<id>``): that is how the limit finds the member's exchanges.
- Submit hook (``stages.points_submit``): the member's points account is row-locked first, the
  limit counted again under the lock (two parallel exchanges of one member queue there: the
  second sees the first's order), then the points spent in the submit's transaction; a short
  balance is 409 ``points_insufficient`` and the whole submit rolls back.

Cancel / timeout return the points (``service.on_order_cancelled``: the order's spend); a refund
returns them in proportion to the goods refunded, all of them when every unit is refunded
(``service._sync_refunds``). A cash part of 0 with no freight makes a zero-payable order, which
the checkout marks paid at once, with no payment: a refund of its lines is a refund of 0 that
succeeds at once (``payments.service.request_refund``) and returns the points by the refunded
goods' share (``service._refunded_goods``), all of them when every unit is refunded.

The order earns points and growth on what it paid in cash, like any order (none when it paid
nothing).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from siyu.catalog.models import KIND_VIRTUAL
from siyu.kit.errors import DomainError, invalid, register_messages
from siyu.loyalty import repository as repo
from siyu.loyalty.rules import get_rules
from siyu.loyalty.schemas import LoyaltyRules, MallItem, MallProductOut
from siyu.orders.freight import VIRTUAL
from siyu.orders.pricing import POINTS, PricedLine, PricingContext

OPTION = "points_mall"
FLAG = "points_mall"
RESERVATION = "loyalty_points_mall"
REASON_PREFIX = "mall_product:"

register_messages(
    {
        "points_mall_limit_reached": (
            409, "该兑换商品每人限兑 {limit} 件，还可兑换 {remaining} 件",
            "This exchange is limited to {limit} per member; {remaining} left",
        ),
        "points_mall_unavailable": (
            409, "该商品暂不可兑换：{reason}", "This product cannot be exchanged now: {reason}",
        ),
    }
)


def product_item(rules: LoyaltyRules, sku_id: int) -> MallItem | None:
    return next((x for x in rules.mall if x.kind == "product" and x.sku_id == sku_id and x.enabled), None)


# -- rules ---------------------------------------------------------------------------------------------


def check_rules(session: Session, merchant_id: int, rules: LoyaltyRules) -> None:
    """On write: a product item's SKU is this store's, active, its product on sale and physical, and
    its cash part below the SKU's price (else the points would buy nothing); 422 at the item's path."""
    from siyu.orders.service import sellable

    items = [(i, item) for i, item in enumerate(rules.mall) if item.kind == "product"]
    found = repo.mall_skus(session, merchant_id, [int(item.sku_id or 0) for _, item in items])
    for i, item in items:
        pair = found.get(int(item.sku_id or 0))
        if pair is None:
            raise invalid(f"mall.{i}.sku_id", "sku_not_found", f"no SKU {item.sku_id} in this store",
                          f"本店没有 SKU {item.sku_id}")
        sku, product = pair
        if not sellable(sku, product):
            raise invalid(f"mall.{i}.sku_id", "sku_not_on_sale", f"SKU {item.sku_id} is not on sale",
                          f"SKU {item.sku_id} 未在售")
        if product.kind == KIND_VIRTUAL:
            raise invalid(f"mall.{i}.sku_id", "virtual_product_refused", "a virtual product cannot be exchanged",
                          "虚拟商品不能兑换")
        if item.cash >= sku.sale_price:
            raise invalid(f"mall.{i}.cash", "mall_cash_not_below_price",
                          f"the cash part must be below the SKU's price ({sku.sale_price} fen)",
                          f"现金部分须低于商品售价（{sku.sale_price} 分）")


# -- store list ------------------------------------------------------------------------------------------


def product_items(
    session: Session, merchant_id: int, rules: LoyaltyRules, member_id: int | None
) -> list[MallProductOut]:
    """The enabled product items whose SKU still exists, in the merchant's order."""
    from siyu.orders.service import sellable, spec_text

    items = [x for x in rules.mall if x.kind == "product" and x.enabled]
    if not items:
        return []
    skus = [int(x.sku_id or 0) for x in items]
    found = repo.mall_skus(session, merchant_id, skus)
    limited = [s for s, x in zip(skus, items, strict=True) if x.per_member_limit is not None]
    used = (repo.mall_exchanged_units(session, merchant_id, [member_id], limited, REASON_PREFIX)
            if member_id is not None and limited else {})
    out = []
    for sku_id, item in zip(skus, items, strict=True):
        pair = found.get(sku_id)
        if pair is None:
            continue
        sku, product = pair
        remaining = None
        if item.per_member_limit is not None and member_id is not None:
            remaining = max(0, item.per_member_limit - used.get(sku_id, 0))
        reason = None
        if not sellable(sku, product):
            reason = "points_mall_unavailable"
        elif remaining == 0:
            reason = "points_mall_limit_reached"
        elif sku.stock <= 0:
            reason = "points_mall_sold_out"
        out.append(MallProductOut(
            sku_id=sku_id, product_id=product.id, title=product.title, spec_text=spec_text(product, sku),
            image_url=sku.image_url or (product.images[0] if product.images else None), points=item.points,
            cash=item.cash, sale_price=sku.sale_price, per_member_limit=item.per_member_limit, remaining=remaining,
            can_redeem=reason is None, reason=reason,
        ))
    return out


# -- pricing ------------------------------------------------------------------------------------------------


def _option_sku(options: dict[str, Any]) -> int:
    value = options.get(OPTION)
    sku_id = value.get("sku_id") if isinstance(value, dict) else None
    if not isinstance(sku_id, int) or isinstance(sku_id, bool) or sku_id < 1:
        raise invalid(f"options.{OPTION}.sku_id", "int_type", "a SKU id is required", "须填写 SKU id")
    return sku_id


def _remaining(session: Session, merchant_id: int, member_id: int, item: MallItem) -> int | None:
    if item.per_member_limit is None:
        return None
    sku_id = int(item.sku_id or 0)
    used = repo.mall_exchanged_units(session, merchant_id, [member_id], [sku_id], REASON_PREFIX).get(sku_id, 0)
    return max(0, item.per_member_limit - used)


def _check_limit(item: MallItem, remaining: int | None, quantity: int) -> None:
    if remaining is not None and quantity > remaining:
        raise DomainError("points_mall_limit_reached", limit=item.per_member_limit, remaining=remaining)


def flag_line(ctx: PricingContext) -> None:
    """The BASE stage: check ``options.points_mall`` and flag the exchanged line (see the module)."""
    if OPTION not in ctx.options:
        return
    sku_id = _option_sku(ctx.options)
    path = f"options.{OPTION}.sku_id"
    if ctx.member_id is None:
        raise DomainError("unauthenticated")
    item = product_item(get_rules(ctx.session, ctx.merchant_id), sku_id)
    if item is None:
        raise invalid(path, "mall_item_not_found", f"SKU {sku_id} is not in the points mall",
                      f"积分商城没有 SKU {sku_id}")
    if len(ctx.lines) != 1 or ctx.lines[0].sku_id != sku_id or set(ctx.options) != {OPTION}:
        raise invalid(f"options.{OPTION}", "points_mall_alone",
                      "an exchange is an order of its own: the exchanged SKU alone, with no other option",
                      "积分兑换须单独下单：订单只含兑换商品，且不与其他活动同用")
    line = ctx.lines[0]
    if line.flags.get(VIRTUAL):
        raise invalid(path, "virtual_product_refused", "a virtual product cannot be exchanged", "虚拟商品不能兑换")
    if item.cash * line.quantity >= line.amount:
        raise DomainError("points_mall_unavailable", reason="price_below_cash")
    _check_limit(item, _remaining(ctx.session, ctx.merchant_id, ctx.member_id, item), line.quantity)
    points = item.points * line.quantity
    acct = repo.account(ctx.session, ctx.merchant_id, ctx.member_id)
    balance = acct.balance if acct else 0
    if balance < points:
        raise DomainError("points_insufficient", balance=balance, needed=points)
    line.flags.update({
        FLAG: sku_id, "promotion": f"{FLAG}:{sku_id}", "no_coupon": True, "no_points": True,
        "no_order_promotions": True,
    })
    ctx.reservations[RESERVATION] = {"sku_id": sku_id, "points": points, "cash": item.cash * line.quantity,
                                     "quantity": line.quantity}


def is_exchange(line: PricedLine) -> bool:
    return bool(line.flags.get(FLAG))


def price_line(ctx: PricingContext) -> int:
    """The POINTS stage part: the exchanged line down to its cash part; the points it costs."""
    res = ctx.reservations.get(RESERVATION)
    if not res:
        return 0
    idx = next(i for i, ln in enumerate(ctx.lines) if is_exchange(ln))
    line = ctx.lines[idx]
    points, cash = int(res["points"]), int(res["cash"])
    ctx.discount(POINTS, f"{FLAG}:{res['sku_id']}", f"积分兑换（{points} 积分）", line.amount - cash, [idx],
                 details={"sku_id": res["sku_id"], "points": points, "cash": cash, "quantity": res["quantity"]})
    return points


def submit(ctx: PricingContext, order_id: int) -> str | None:
    """Before the order's points are spent: lock the member's account, count the limit again
    (the member's earlier exchanges are committed by now). The spend reason for an exchange."""
    res = ctx.reservations.get(RESERVATION)
    if not res or ctx.member_id is None:
        return None
    repo.lock_account(ctx.session, ctx.merchant_id, ctx.member_id)
    sku_id = int(res["sku_id"])
    item = product_item(get_rules(ctx.session, ctx.merchant_id), sku_id)
    if item is None:
        raise DomainError("points_mall_unavailable", reason="item_removed")
    _check_limit(item, _remaining(ctx.session, ctx.merchant_id, ctx.member_id, item), int(res["quantity"]))
    return f"{REASON_PREFIX}{sku_id}"
