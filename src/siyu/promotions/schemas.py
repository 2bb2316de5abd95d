"""Promotion request and response bodies. Money in fen; times aware (UTC in responses).

``PromotionIn.rules`` is validated on write against ``RULES[kind]``; the service adds the rules
a schema cannot express (SKUs of this merchant, prices below the SKU price, increasing tiers).
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from siyu.kit.validation_messages import register_field_messages

register_field_messages({
    "scope_ids_needed": ("范围不是全部商品时需要 ids", "ids are required unless the scope is all"),
    "price_or_percent_off": ("price 和 percent_off 须且只能给一个", "Give exactly one of price and percent_off"),
    "over_limit_invalid": (
        "over_limit 应为 refuse（超出限购拒绝下单）或 full_price（超出部分按原价）",
        "over_limit must be refuse (refuse the checkout over the limit) or full_price (units over it at the normal price)",
    ),
    "over_limit_limited_discount_only": (
        "只有限时折扣可以设置 over_limit（超出限购的处理方式）",
        "Only a limited-time discount has over_limit (what happens over the purchase limit)",
    ),
})

OVER_LIMIT_REFUSE = "refuse"
OVER_LIMIT_FULL_PRICE = "full_price"
OVER_LIMIT_MODES = (OVER_LIMIT_REFUSE, OVER_LIMIT_FULL_PRICE)

Kind = Literal["limited_discount", "first_order", "spend_save", "spend_gift", "add_on"]

# Bounds of the columns the numbers land in: a larger value would fail in the database (a 500).
INT_MAX = 2_147_483_647  # INTEGER: money in fen, counts, limits
ID_MAX = 2**63 - 1  # BIGINT: ids
Id = Annotated[int, Field(ge=1, le=ID_MAX)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Scope(Strict):
    """Which lines an order promotion counts: all, or lines of these categories / products."""

    type: Literal["all", "categories", "products"] = "all"
    ids: list[Id] = Field(default_factory=list, max_length=500)

    @model_validator(mode="after")
    def _ids(self) -> Scope:
        if self.type != "all" and not self.ids:
            raise PydanticCustomError("scope_ids_needed", "ids are required unless the scope is all")
        return self


class LimitedItem(Strict):
    sku_id: Id
    price: int | None = Field(default=None, ge=0, le=INT_MAX, description="fen per unit, below the SKU's sale price")
    percent_off: int | None = Field(default=None, ge=1, le=99, description="20 = 20% off (8折)")

    @model_validator(mode="after")
    def _one(self) -> LimitedItem:
        if (self.price is None) == (self.percent_off is None):
            raise PydanticCustomError("price_or_percent_off", "Give exactly one of price and percent_off")
        return self


class LimitedDiscountRules(Strict):
    """限时折扣. ``over_limit``: what a member's units over ``per_member_limit`` do. ``refuse``
    (每人每种商品限购 N 件, the default): the checkout is refused (``promotion_limit_reached``).
    ``full_price`` (每人前 N 件享受折扣): the first N units get the discount, the others are sold
    at the normal price. Without a ``per_member_limit`` nothing is over it."""

    items: list[LimitedItem] = Field(min_length=1, max_length=200)
    over_limit: str = Field(default=OVER_LIMIT_REFUSE, description="refuse | full_price")

    @field_validator("over_limit")
    @classmethod
    def _over_limit(cls, value: str) -> str:
        if value not in OVER_LIMIT_MODES:
            raise PydanticCustomError("over_limit_invalid", "over_limit must be refuse or full_price")
        return value


class PriceItem(Strict):
    sku_id: Id
    price: int = Field(ge=0, le=INT_MAX, description="fen per unit, below the SKU's sale price")


class FirstOrderRules(Strict):
    """首单特价: one unit per member without a paid (or pending first-order) order."""

    items: list[PriceItem] = Field(min_length=1, max_length=200)


class Tier(Strict):
    threshold: int = Field(ge=1, le=INT_MAX, description="fen: spend at least this on eligible lines")
    discount: int = Field(ge=1, le=INT_MAX, description="fen off, below the threshold")


class SpendSaveRules(Strict):
    """满减: the highest tier reached applies. ``repeat`` (one tier only): every ``threshold``
    saves ``discount`` again, up to ``max_discount``."""

    scope: Scope = Field(default_factory=Scope)
    tiers: list[Tier] = Field(min_length=1, max_length=10)
    repeat: bool = False
    max_discount: int | None = Field(default=None, ge=1, le=INT_MAX)


class GiftTier(Strict):
    threshold: int = Field(ge=1, le=INT_MAX)
    gift_sku_id: Id
    quantity: int = Field(default=1, ge=1, le=99)


class SpendGiftRules(Strict):
    """满赠: the highest tier reached adds its gift SKU as a zero-price line."""

    scope: Scope = Field(default_factory=Scope)
    tiers: list[GiftTier] = Field(min_length=1, max_length=10)


class AddOnItem(Strict):
    sku_id: Id
    price: int = Field(ge=0, le=INT_MAX, description="fen per unit, below the SKU's sale price")
    per_order_limit: int = Field(default=1, ge=1, le=99)
    stock: int = Field(ge=1, le=INT_MAX, description="units available at this price over the whole activity")


class AddOnRules(Strict):
    """加价购: with eligible lines worth at least ``threshold``, add an item at its special price."""

    scope: Scope = Field(default_factory=Scope)
    threshold: int = Field(ge=1, le=INT_MAX)
    items: list[AddOnItem] = Field(min_length=1, max_length=50)


RULES: dict[str, type[Strict]] = {
    "limited_discount": LimitedDiscountRules,
    "first_order": FirstOrderRules,
    "spend_save": SpendSaveRules,
    "spend_gift": SpendGiftRules,
    "add_on": AddOnRules,
}


PROMOTION_RULES = (
    "starts_at and ends_at carry their UTC offset (else 422 timezone_required) and ends_at is after starts_at "
    "(else 422 window_invalid). rules has the shape of its kind, checked with its paths under rules "
    "(limited_discount/first_order: items of this merchant's SKUs (else 404), not of a virtual product (422 "
    "promotion_virtual_product), each SKU once (duplicate_sku) and each price below the SKU's sale price "
    "(price_not_below_sale_price); spend_save: tier thresholds and discounts increase (tiers_not_increasing), "
    "each discount below its threshold (discount_not_below_threshold), repeat has one tier (repeat_needs_one_tier) "
    "and max_discount needs repeat (repeat_only); only limited_discount takes over_limit "
    "(over_limit_limited_discount_only)). A first_order promotion's per_member_limit is empty or 1 (else 422 "
    "first_order_one_unit)."
)


class PromotionIn(Strict):
    """A promotion: ``PROMOTION_RULES`` (the model's description in the OpenAPI document)."""

    model_config = ConfigDict(json_schema_extra={"description": PROMOTION_RULES})

    name: str = Field(min_length=1, max_length=64)
    kind: Kind
    starts_at: dt.datetime = Field(description="ISO 8601 with offset")
    ends_at: dt.datetime = Field(description="after starts_at (else 422 window_invalid)")
    rules: dict[str, Any] = Field(
        description="shape depends on kind: limited_discount, first_order, spend_save, spend_gift or add_on rules"
    )
    allows_coupons: bool = Field(default=True, description="may its lines (or order) still take coupons")
    allows_points: bool = Field(default=True, description="may its lines still take points deduction")
    allows_order_promotions: bool = Field(default=True, description="item kinds: may its lines count for 满减/满赠/加价购")
    free_shipping: bool = Field(default=False, description="item kinds: its lines ship free; order kinds: the order")
    per_member_limit: int | None = Field(
        default=None, ge=1, le=999,
        description="item kinds: units per member (first_order: 1 by definition, empty or 1 only); order kinds: orders per member"
    )
    exclusive: bool = Field(default=True, description="spend_save: exclusive (best one wins) or stackable")


class PromotionUpdate(Strict):
    """Only the fields given change, in a draft or scheduled promotion (else 409
    ``promotion_state_invalid``)."""

    model_config = ConfigDict(json_schema_extra={"description": (
        "Only the fields given change, in a draft or scheduled promotion (else 409 promotion_state_invalid); only "
        "per_member_limit may be null (no limit), another null is 422 required. The promotion after the change "
        "follows the rules of a new one: " + PROMOTION_RULES + " An activated promotion cannot be moved to start in "
        "the past (422 in_the_past at starts_at)."
    )})

    name: str | None = Field(default=None, min_length=1, max_length=64)
    starts_at: dt.datetime | None = Field(default=None, description="an activated promotion: not in the past (else 422 in_the_past)")
    ends_at: dt.datetime | None = Field(default=None, description="after starts_at (else 422 window_invalid)")
    rules: dict[str, Any] | None = None
    allows_coupons: bool | None = None
    allows_points: bool | None = None
    allows_order_promotions: bool | None = None
    free_shipping: bool | None = None
    per_member_limit: int | None = Field(default=None, ge=1, le=999)
    exclusive: bool | None = None


class PromotionOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    name: str
    kind: str
    status: str
    effective_status: str = ""
    starts_at: dt.datetime
    ends_at: dt.datetime
    rules: dict[str, Any]
    allows_coupons: bool
    allows_points: bool
    allows_order_promotions: bool
    free_shipping: bool
    per_member_limit: int | None
    over_limit: str | None = Field(
        default=None, description="limited_discount: refuse (限购 N 件) or full_price (前 N 件享折扣); other kinds: null"
    )
    exclusive: bool
    activated_at: dt.datetime | None
    stopped_at: dt.datetime | None
    created_at: dt.datetime


class PromotionStatsOut(BaseModel):
    promotion_id: int
    kind: str
    paid_orders: int = Field(description="orders that used it and were paid")
    pending_orders: int = Field(description="submitted, not paid yet")
    released_orders: int = Field(description="cancelled before payment")
    units: int = Field(description="units (item kinds) or uses (order kinds) of the paid orders")
    discount: int = Field(description="fen given on the paid orders")
    gmv: int = Field(description="fen paid for the orders that used it")
    refunded: int = Field(description="fen refunded on those orders since")
    net_gmv: int = Field(description="gmv - refunded")
    gmv_per_discount: float | None = Field(description="net GMV per fen of discount (None without discount)")


class StorePromotionOut(BaseModel):
    """What a product page shows: the activity, its label and its price for each SKU it covers."""

    promotion_id: int
    kind: str
    name: str
    label: str
    starts_at: dt.datetime
    ends_at: dt.datetime
    sku_prices: dict[int, int] = Field(default_factory=dict, description="item kinds: sku_id -> promo price, fen")
    tiers: list[dict[str, Any]] = Field(default_factory=list)
    allows_coupons: bool
    allows_points: bool
    allows_order_promotions: bool
    free_shipping: bool
    per_member_limit: int | None
    over_limit: str | None = Field(
        default=None, description="limited_discount: refuse or full_price (units over the limit at the normal price)"
    )
    limit_label: str | None = Field(
        default=None, description='with a per-member limit: "每人限购 N 件", or "每人前 N 件享折扣" (full_price)'
    )
