"""Rules shared by single-SKU activities (group buys, bargains). Services never commit.

``ActivityKind`` carries a module's names (error-code prefix, audit entity, zh/en names) and
tables, and with them the shared steps: the error messages, get-or-404, ``disable`` and
``delete``. The functions below are the window and status rules, the pricing-stage line flags,
the single-SKU checkout submit and the masked nickname of the share pages."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from sqlalchemy.orm import Session

from siyu.activities.repository import ActivityTables, sku_with_product
from siyu.catalog.models import Product, Sku
from siyu.kit import audit
from siyu.kit.errors import DomainError, catalogue, invalid, not_found, register_messages
from siyu.kit.masking import mask_nickname as mask_nickname  # re-exported: group buys and bargains use it
from siyu.orders import checkout
from siyu.orders.models import Order
from siyu.orders.pricing import PricedLine, PricingContext
from siyu.orders.schemas import CheckoutIn

ACTIVE = "active"
DISABLED = "disabled"
SCHEDULED = "scheduled"
ENDED = "ended"
Actor = tuple[str, int | None]
Messages = dict[str, tuple[int, str, str]]
A = TypeVar("A")


class SkuActivity(Protocol):
    id: int
    status: str
    sku_id: int
    starts_at: dt.datetime
    ends_at: dt.datetime
    allows_coupons: bool
    allows_points: bool
    allows_order_promotions: bool
    free_shipping: bool


@dataclass(frozen=True)
class ActivityKind(Generic[A]):
    code: str  # error-code prefix: "group_buy" → group_buy_not_started, group_buy_state_invalid...
    entity: str  # audit entity of the activity row
    zh: str  # "拼团活动"
    en: str  # "group buy"
    in_use: str  # the state ``delete`` reports when children exist, e.g. "has_teams"
    tables: ActivityTables[A]

    def register(self, own: Messages) -> None:
        """Register the shared messages (not started, ended, state invalid) and the module's own."""
        shared: Messages = {
            f"{self.code}_not_started": (409, f"{self.zh}尚未开始", f"The {self.en} has not started yet"),
            f"{self.code}_ended": (409, f"{self.zh}已结束", f"The {self.en} has ended"),
            f"{self.code}_state_invalid": (
                409, f"{self.zh}当前状态（{{status}}）不允许此操作", f"The {self.en} cannot do this in its state ({{status}})",
            ),
        }
        merged = {**shared, **own}
        register_messages({k: v for k, v in merged.items() if k not in catalogue()})

    def not_found(self) -> DomainError:
        return not_found(self.zh, self.en[:1].upper() + self.en[1:])

    def state_invalid(self, status: str) -> DomainError:
        return DomainError(f"{self.code}_state_invalid", status=status)

    def get(self, session: Session, merchant_id: int, activity_id: int, *, lock: bool = False) -> A:
        found = self.tables.get(session, merchant_id, activity_id, lock=lock)
        if found is None:
            raise self.not_found()
        return found

    def visible(self, session: Session, merchant_id: int, activity_id: int) -> A:
        """The activity as the store sees it: a disabled one is not found."""
        found = self.tables.get(session, merchant_id, activity_id)
        if found is None or getattr(found, "status", None) == DISABLED:
            raise self.not_found()
        return found

    def check_running(self, act: SkuActivity, now: dt.datetime) -> None:
        state = effective_status(act, now)
        if state == SCHEDULED:
            raise DomainError(f"{self.code}_not_started")
        if state != ACTIVE:
            raise DomainError(f"{self.code}_ended")

    def disable(self, session: Session, merchant_id: int, activity_id: int, *, actor: Actor) -> A:
        act: Any = self.get(session, merchant_id, activity_id, lock=True)
        if act.status == DISABLED:
            raise self.state_invalid(DISABLED)
        act.status = DISABLED
        session.flush()
        audit.record(session, merchant_id, self.entity, act.id, "disabled", from_state=ACTIVE, to_state=DISABLED,
                     actor=actor)
        return act

    def delete(self, session: Session, merchant_id: int, activity_id: int, *, actor: Actor) -> None:
        """Remove an activity with no children (one with children is disabled instead: its history stays)."""
        act: Any = self.get(session, merchant_id, activity_id, lock=True)
        if self.tables.has_children(session, merchant_id, act.id):
            raise self.state_invalid(self.in_use)
        self.tables.delete_counters(session, merchant_id, act.id)
        session.delete(act)
        session.flush()
        audit.record(session, merchant_id, self.entity, activity_id, "deleted", actor=actor)


def aware(value: dt.datetime, path: str) -> dt.datetime:
    if value.tzinfo is None:
        raise invalid(path, "timezone_required", "give the time with its UTC offset", "时间需带时区偏移（如 +08:00）")
    return value.astimezone(dt.UTC)


def effective_status(act: SkuActivity, now: dt.datetime) -> str:
    if act.status == DISABLED:
        return DISABLED
    if now < act.starts_at:
        return SCHEDULED
    if now >= act.ends_at:
        return ENDED
    return ACTIVE


def sku_and_product(session: Session, merchant_id: int, sku_id: int) -> tuple[Sku, Product]:
    found = sku_with_product(session, merchant_id, sku_id)
    if found is None:
        raise DomainError("sku_not_found", sku_id=sku_id)
    return found


def image_url(sku: Sku, product: Product) -> str | None:
    return sku.image_url or (product.images[0] if product.images else None)


# -- pricing stage ---------------------------------------------------------------------------------------


def activity_line(ctx: PricingContext, sku_id: int, path: str, message: str, zh: str) -> int:
    """The index of the order line of the activity's SKU (``item_not_in_order`` at ``path`` without,
    ``message`` in English and ``zh`` in zh-CN)."""
    idx = next((i for i, ln in enumerate(ctx.lines) if ln.sku_id == sku_id), None)
    if idx is None:
        raise invalid(path, "item_not_in_order", message, zh)
    return idx


def check_no_other_activity(line: PricedLine, option: str) -> None:
    if line.flags.get("activity"):
        raise invalid(f"options.{option}", "activity_conflict", "the line already takes part in another activity",
                      "该商品已参加其他活动")


def flag_activity_line(line: PricedLine, act: SkuActivity, activity: str, extra: dict[str, Any]) -> None:
    """Mark the line as sold by the activity (``activity``, e.g. ``"group_buy:7"``) with its stacking
    rules: no coupon / no points / no order promotions (spend-and-save, spend-and-gift, add-on
    thresholds) unless allowed, shipped free if so set.

    ``no_coupon`` carries the activity's rule; ``line.coupons_allowed`` stays the product's own
    setting (as with flash sales), so the coupon stage tells the customer which of the two
    excluded the line (``activity_excludes_coupons`` vs ``product_excludes_coupons``)."""
    line.flags.update(
        {
            "activity": activity,
            **extra,
            "no_coupon": not act.allows_coupons,
            "no_points": not act.allows_points,
            "no_order_promotions": not act.allows_order_promotions,
        }
    )
    if act.free_shipping:
        line.flags["free_shipping"] = True


# -- store order ------------------------------------------------------------------------------------------


def submit_order(
    session: Session, merchant_id: int, member_id: int, *, sku_id: int, quantity: int, address_id: int | None,
    remark: str | None, option: str, value: dict[str, Any], idempotency_key: str | None,
    payment_timeout: dt.timedelta, now: dt.datetime | None = None, coupon_ids: list[int] | None = None,
) -> tuple[Order, bool]:
    """The checkout submit of one SKU with the activity's option (``options={option: value}``);
    ``(order, created)`` as ``checkout.submit`` returns it."""
    body = CheckoutIn.model_validate(
        {
            "items": [{"sku_id": sku_id, "quantity": quantity}],
            "address_id": address_id,
            "coupon_ids": coupon_ids,
            "remark": remark,
            "options": {option: value},
        }
    )
    return checkout.submit(
        session, merchant_id, member_id, body, idempotency_key=idempotency_key, payment_timeout=payment_timeout,
        now=now,
    )


# -- jobs ---------------------------------------------------------------------------------------------------


