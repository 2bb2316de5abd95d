"""Loyalty rules (merchant configuration as validated data) and the API bodies.

Every number in the rules is ``>= 0`` (a negative rule is a 422 and nothing is saved). A rule a
schema refuses for a reason of its own (not a Pydantic type or bound) gets a field code of its
own with zh-CN and English text (``register_field_messages``), as Pydantic's codes have.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from siyu.kit.validation_messages import register_field_messages

register_field_messages({
    "adjust_earned_needs_positive": (
        "只有增加积分的调整才能计入累计获得积分", "Only an adjustment that adds points can count as earned",
    ),
    "reward_day_repeated": ("{name}：每一天只能有一个奖励", "{name}: one reward per day"),
    "points_zero": ("积分不能为 0", "Points must not be 0"),
    "mall_item_repeated": ("积分商城中同一优惠券模板只能出现一次", "A coupon template appears once in the points mall"),
    "mall_product_repeated": ("积分商城中同一 SKU 只能出现一次", "A SKU appears once in the points mall"),
    "mall_item_kind_fields": (
        "优惠券兑换须填写 coupon_template_id，商品兑换须填写 sku_id（二者不能同时填写）",
        "A coupon item names coupon_template_id, a product item names sku_id (not both)",
    ),
})

NonNeg = Field(default=0, ge=0)

# Bounds of what the numbers become: points of one award, entry and balance are INTEGER columns,
# so a rule (or an adjustment) beyond these would fail in the database (a 500) when it applies.
POINTS_MAX = 100_000_000  # points of one award / adjustment / cost
PER_YUAN_MAX = 10_000  # points or growth per ¥1 (a ¥100,000 order then earns at most 10^9: INTEGER)
DAYS_MAX = 36_500
INT_MAX = 2_147_483_647
ID_MAX = 2**63 - 1


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TaskRule(Strict):
    points: int = Field(default=0, ge=0, le=POINTS_MAX)
    growth: int = Field(default=0, ge=0, le=POINTS_MAX)
    daily_cap: int = Field(default=1, ge=0, le=10_000, description="rewarded completions per member and local day (0: off)")


def _default_tasks() -> dict[str, TaskRule]:
    return {
        "complete_profile": TaskRule(points=100, growth=20, daily_cap=1),
        "first_review": TaskRule(points=50, growth=10, daily_cap=1),
        "share": TaskRule(points=5, growth=2, daily_cap=3),
        # every review (not only the first): growth within the daily cap, see ``service.on_review_created``
        "review": TaskRule(points=0, growth=5, daily_cap=3),
    }


class EarnRules(Strict):
    points_per_yuan: int = Field(default=1, ge=0, le=PER_YUAN_MAX, description="points per ¥1 paid after discounts (freight excluded)")
    growth_per_yuan: int = Field(default=1, ge=0, le=PER_YUAN_MAX, description="growth value per ¥1 paid")
    award_on: Literal["paid", "completed"] = "paid"
    product_bonus: bool = Field(default=True, description="add OrderLine.bonus_points")
    tasks: dict[str, TaskRule] = Field(
        default_factory=_default_tasks,
        description=(
            "rewarded tasks by name. `review`: every review the member writes earns its points and growth "
            "once (by review id) within `daily_cap` reviews per local day; a review hidden or deleted later "
            "keeps what it earned. `first_review`: a one-time bonus for the first review, on top. A task left "
            "out, or with daily_cap 0, rewards nothing"
        ),
    )


class ExpiryRules(Strict):
    mode: Literal["never", "days", "end_of_next_year"] = "end_of_next_year"
    days: int = Field(default=365, ge=1, le=DAYS_MAX)
    notice_days: int = Field(default=30, ge=0, le=DAYS_MAX, description="emit points.expiring this many days before")


class DeductionRules(Strict):
    enabled: bool = True
    points_per_yuan: int = Field(default=100, ge=1, le=POINTS_MAX, description="points worth ¥1 at checkout")
    max_percent: int = Field(default=50, ge=0, le=100, description="at most this % of the eligible lines")
    min_points: int = Field(default=0, ge=0, le=POINTS_MAX, description="fewer points than this cannot be used")


class StreakReward(Strict):
    day: int = Field(ge=1, le=DAYS_MAX, description="streak length that earns the reward")
    points: int = Field(default=0, ge=0, le=POINTS_MAX)
    growth: int = Field(default=0, ge=0, le=POINTS_MAX)
    coupon_template_id: int | None = Field(default=None, ge=1, le=ID_MAX)


class MakeupRules(Strict):
    enabled: bool = False
    cost_points: int = Field(default=0, ge=0, le=POINTS_MAX)
    within_days: int = Field(default=3, ge=1, le=31)


class CheckInRules(Strict):
    enabled: bool = True
    points: int = Field(default=5, ge=0, le=POINTS_MAX)
    growth: int = Field(default=1, ge=0, le=POINTS_MAX)
    streak_rewards: list[StreakReward] = Field(
        default_factory=lambda: [StreakReward(day=7, points=50), StreakReward(day=30, points=300)]
    )
    total_rewards: list[StreakReward] = Field(
        default_factory=list, description="rewards for the Nth check-in in total (once per member), e.g. day 100"
    )
    makeup: MakeupRules = Field(default_factory=MakeupRules)

    @model_validator(mode="after")
    def _unique_days(self) -> CheckInRules:
        for name, rewards in (("streak_rewards", self.streak_rewards), ("total_rewards", self.total_rewards)):
            days = [r.day for r in rewards]
            if len(days) != len(set(days)):
                raise PydanticCustomError("reward_day_repeated", "{name}: one reward per day", {"name": name})
        return self


class LevelRules(Strict):
    refund_lowers_level: bool = Field(
        default=True,
        description=(
            "A refund that takes the member's net figures (paid spend, points earned, growth, paid "
            "orders) below their level's thresholds moves them down to the highest level they still "
            "qualify for (level history reason `refund`, event `level.changed`). false: levels reached "
            "stay until the yearly retention review. A level held by an active paid card is never "
            "lowered by a refund."
        ),
    )


class MallItem(Strict):
    """An item sold for points in the points mall.

    ``kind`` ``coupon`` (the default): a coupon template; the template's own limits (total
    quantity, per member, issue window, status) apply to every redemption
    (``POST /loyalty/mall/{template_id}/redeem``).

    ``kind`` ``product`` (积分商城 product exchange, "100 积分 + ¥9.90"): a SKU of this store, on
    sale, exchanged through the normal checkout with ``options={"points_mall": {"sku_id": S}}``:
    each unit costs ``points`` plus ``cash`` fen (0: points alone; freight is charged as for any
    order), ``per_member_limit`` units per member over their pending and paid exchange orders
    (refunded units count no more; null: no limit). Checked on save against the store's data
    (422 at the item's path): the SKU is this store's (``sku_not_found``), active and its product
    on sale (``sku_not_on_sale``), physical (``virtual_product_refused``), and ``cash`` is below
    its price (``mall_cash_not_below_price``)."""

    kind: Literal["coupon", "product"] = "coupon"
    coupon_template_id: int | None = Field(default=None, ge=1, le=ID_MAX)
    sku_id: int | None = Field(default=None, ge=1, le=ID_MAX, description="product item: the SKU exchanged")
    points: int = Field(ge=1, le=POINTS_MAX, description="points one coupon / one unit costs")
    cash: int = Field(default=0, ge=0, le=INT_MAX,
                      description="product item: fen paid per unit on top of the points (0: points alone)")
    per_member_limit: int | None = Field(default=None, ge=1, le=10_000,
                                         description="product item: units per member (null: no limit)")
    enabled: bool = True

    @model_validator(mode="after")
    def _kind_fields(self) -> MallItem:
        if self.kind == "coupon":
            ok = self.coupon_template_id is not None and self.sku_id is None
            ok = ok and self.cash == 0 and self.per_member_limit is None
        else:
            ok = self.sku_id is not None and self.coupon_template_id is None
        if not ok:
            raise PydanticCustomError(
                "mall_item_kind_fields",
                "A coupon item names coupon_template_id, a product item names sku_id (not both)",
            )
        return self


class LoyaltyRules(Strict):
    earn: EarnRules = Field(default_factory=EarnRules)
    expiry: ExpiryRules = Field(default_factory=ExpiryRules)
    deduction: DeductionRules = Field(default_factory=DeductionRules)
    check_in: CheckInRules = Field(default_factory=CheckInRules)
    levels: LevelRules = Field(default_factory=LevelRules)
    mall: list[MallItem] = Field(default_factory=list, max_length=200,
                                 description="points mall: coupons and products members redeem for points")

    @model_validator(mode="after")
    def _mall_unique(self) -> LoyaltyRules:
        ids = [item.coupon_template_id for item in self.mall if item.kind == "coupon"]
        if len(ids) != len(set(ids)):
            raise PydanticCustomError("mall_item_repeated", "A coupon template appears once in the points mall")
        skus = [item.sku_id for item in self.mall if item.kind == "product"]
        if len(skus) != len(set(skus)):
            raise PydanticCustomError("mall_product_repeated", "A SKU appears once in the points mall")
        return self


class MallLevelOut(BaseModel):
    id: int
    name: str


class MallItemOut(BaseModel):
    """A points-mall coupon as the member sees it. A level-exclusive coupon (its template's
    ``level_ids``) is listed to everyone with ``level_required``; ``can_redeem`` is false with
    ``reason`` ``coupon_level_required`` for a member (or an anonymous visitor) whose effective
    level is not one of them, so the page can grey it out. Only the level is judged here: the
    balance and the template's own limits are checked when redeeming."""

    kind: Literal["coupon"] = "coupon"
    coupon_template_id: int
    points: int
    name: str
    can_redeem: bool = True
    reason: str | None = Field(default=None, description="why can_redeem is false: coupon_level_required")
    level_required: list[MallLevelOut] | None = Field(
        default=None, description="level-exclusive coupon: the levels that may redeem it (null: everyone)"
    )


class MallProductOut(BaseModel):
    """A points-mall product as the member sees it: ``points`` + ``cash`` fen per unit, bought
    through the checkout with ``options={"points_mall": {"sku_id": sku_id}}``. ``remaining`` is
    what the member may still exchange under ``per_member_limit`` (null: no limit, or an
    anonymous visitor); ``can_redeem`` is false with ``reason`` ``points_mall_limit_reached``
    when nothing is left, ``points_mall_unavailable`` when the SKU went off sale, or
    ``points_mall_sold_out`` when it has no stock. The balance is checked at checkout."""

    kind: Literal["product"] = "product"
    sku_id: int
    product_id: int
    title: str
    spec_text: str = ""
    image_url: str | None = None
    points: int
    cash: int = Field(description="fen per unit on top of the points")
    sale_price: int = Field(description="the SKU's own price, fen (shown struck through)")
    per_member_limit: int | None = None
    remaining: int | None = None
    can_redeem: bool = True
    reason: str | None = None


class MallRedemptionOut(BaseModel):
    coupon_id: int
    coupon_template_id: int
    points: int = Field(description="points the coupon cost")
    points_entry_id: int
    balance_after: int


# -- levels ------------------------------------------------------------------------------------------
class LevelIn(Strict):
    rank: int = Field(ge=0, le=100)
    name: str = Field(min_length=1, max_length=32)
    min_spend: int | None = Field(default=None, ge=0, le=INT_MAX, description="cumulative paid spend, fen")
    min_points: int | None = Field(default=None, ge=0, le=INT_MAX, description="points earned in total")
    min_growth: int | None = Field(default=None, ge=0, le=INT_MAX)
    min_orders: int | None = Field(default=None, ge=0, le=INT_MAX, description="paid orders")
    retain_growth: int | None = Field(default=None, ge=0, le=INT_MAX, description="growth in the last 365 days to keep it")
    member_price_percent: int = Field(default=100, ge=1, le=100, description="95 = members pay 95%")
    free_shipping: bool = False
    points_multiplier_percent: int = Field(default=100, ge=0, le=1000)
    birthday_coupon_template_id: int | None = Field(default=None, ge=1, le=ID_MAX)
    coupon_template_ids: list[Annotated[int, Field(ge=1, le=ID_MAX)]] = Field(default_factory=list)


class LevelOut(LevelIn):
    model_config = ConfigDict(from_attributes=True)
    id: int


class LevelHistoryOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    from_level_id: int | None
    to_level_id: int | None
    reason: str
    created_at: dt.datetime


# -- points ------------------------------------------------------------------------------------------
class PointsEntryOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    delta: int
    kind: str
    reason: str
    ref: str | None
    balance_after: int
    shortfall: int
    created_at: dt.datetime


class StatementOut(BaseModel):
    items: list[PointsEntryOut]
    next_before: int | None = Field(description="pass as ?before= for the next (older) page")


class AdjustIn(Strict):
    points: int = Field(ge=-POINTS_MAX, le=POINTS_MAX, description="positive adds, negative takes (never below zero)")
    reason: str = Field(min_length=1, max_length=64)
    counts_as_earned: bool = Field(
        default=False,
        description=(
            "A manual adjustment is a correction: it moves the balance and the statement but not the "
            "points earned that the `min_points` level rule reads. true (positive points only): the "
            "points also count as earned (e.g. points the member should have earned on an order)."
        ),
    )

    @model_validator(mode="after")
    def _nonzero(self) -> AdjustIn:
        if self.points == 0:
            raise PydanticCustomError("points_zero", "Points must not be 0")
        return self

    @field_validator("counts_as_earned")
    @classmethod
    def _earned_adds(cls, value: bool, info: ValidationInfo) -> bool:
        points = info.data.get("points")  # absent when ``points`` itself was refused
        if value and isinstance(points, int) and points < 0:
            raise PydanticCustomError(
                "adjust_earned_needs_positive", "Only an adjustment that adds points can count as earned"
            )
        return value


class PointsOut(BaseModel):
    balance: int
    earned_total: int
    spent_total: int
    expiring_soon: int = Field(description="points expiring within the notice window")
    next_expiry_at: dt.datetime | None


# -- member summary ----------------------------------------------------------------------------------
class LevelProgressOut(BaseModel):
    level: LevelOut | None
    source: str | None = Field(description="rules | card")
    next_level: LevelOut | None
    progress: dict[str, dict[str, int]] = Field(description="per threshold of the next level: have / need")
    card_until: dt.datetime | None


class MemberLoyaltyOut(BaseModel):
    member_id: int
    level_id: int | None
    level_name: str | None
    level_source: str | None
    points_balance: int
    points_earned_total: int
    growth: int
    paid_spend: int
    paid_orders: int
    check_in_streak: int
    checked_in_today: bool
    card_until: dt.datetime | None
    pending_rewards: int


# -- check-in ----------------------------------------------------------------------------------------
class CheckInOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    day: dt.date
    streak: int
    makeup: bool
    points: int
    growth: int
    rewards: list[dict[str, object]]


class MakeupIn(Strict):
    """Make-up must be enabled in the merchant's check-in rules (else 422 ``checkin_disabled`` /
    ``makeup_not_allowed``); ``day`` is before today (the merchant's time zone), at most
    ``makeup.within_days`` days back, and a day without a check-in (else 422 ``makeup_not_allowed``)."""

    day: dt.date = Field(description="a missed day before today, within the merchant's makeup.within_days")


class CalendarOut(BaseModel):
    month: str
    today: dt.date
    streak: int
    days: list[CheckInOut]


class TaskIn(Strict):
    """The task must be enabled in the merchant's loyalty rules (else 404 ``task_unknown``); a
    repeated ``ref`` or a report beyond the daily cap earns nothing."""

    ref: str = Field(min_length=1, max_length=64, description="what was done, e.g. the shared page id (idempotent)")


class TaskOut(BaseModel):
    task: str
    rewarded: bool
    points: int
    growth: int
    reason: str | None = None


# -- cards -------------------------------------------------------------------------------------------
class CardPlanIn(Strict):
    name: str = Field(min_length=1, max_length=64)
    product_id: int = Field(ge=1, le=ID_MAX, description="the catalog product sold as this card")
    level_id: int | None = Field(default=None, ge=1, le=ID_MAX, description="level held for the term")
    member_discount_bp: int = Field(
        default=0, ge=0, le=9900,
        description="member price of the card: basis points off physical goods (500 = 5 % off, 9.5折); 0: none",
    )
    free_shipping: bool = Field(default=False, description="orders of the holder ship free")
    points_multiplier_percent: int = Field(default=100, ge=100, le=1000, description="150 = 1.5x points; 100: none")
    term_days: int = Field(default=365, ge=1, le=3660)
    refund_days: int = Field(default=7, ge=0, le=365)
    active: bool = True


class CardPlanOut(CardPlanIn):
    model_config = ConfigDict(from_attributes=True)
    id: int


class MemberCardOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    plan_id: int
    order_id: int
    level_id: int | None
    starts_at: dt.datetime
    ends_at: dt.datetime
    status: str


class BuyCardIn(Strict):
    address_id: int | None = Field(default=None, ge=1, le=ID_MAX)
