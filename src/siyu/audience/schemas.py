"""Audience configuration and read models."""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from siyu.kit.validation_messages import register_field_messages

register_field_messages({
    "stage_thresholds_not_increasing": (
        "阈值须递增：活跃 < 沉默 < 睡眠 < 预流失", "Thresholds must increase: active < silent < sleeping < pre_churn",
    ),
})


class LifecycleConfig(BaseModel):
    """Days since the last paid order that bound each stage (defaults from the source documents:
    active ≤ 90, silent 91–180, sleeping 181–270, pre-churn 271–365, churned beyond)."""

    active_days: int = Field(default=90, ge=1, le=3650)
    silent_days: int = Field(default=180, ge=1, le=3650)
    sleeping_days: int = Field(default=270, ge=1, le=3650)
    pre_churn_days: int = Field(default=365, ge=1, le=3650)
    new_member_days: int = Field(default=30, ge=1, le=365, description="'new member' if joined within this")
    repurchase_overdue_days: int = Field(default=180, ge=1, le=3650)
    super_user_top_percent: float = Field(
        default=5.0, gt=0, le=50, description="members in this top share by super-user score are super users"
    )

    @model_validator(mode="after")
    def _ordered(self) -> LifecycleConfig:
        if not self.active_days < self.silent_days < self.sleeping_days < self.pre_churn_days:
            raise PydanticCustomError("stage_thresholds_not_increasing",
                                      "Thresholds must increase: active < silent < sleeping < pre_churn")
        return self


class MemberStatsOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    member_id: int
    first_order_at: dt.datetime | None
    second_order_at: dt.datetime | None
    last_order_at: dt.datetime | None
    paid_orders: int
    paid_total: int
    aov: int
    refunded_total: int
    last_visit_at: dt.datetime | None
    product_views: int
    cart_adds: int
    favorites: int
    shares: int
    lifecycle_stage: str
    stage_changed_at: dt.datetime | None
    rfm_r: int | None
    rfm_f: int | None
    rfm_m: int | None
    rfm_tier: str | None
    p_alive: float | None
    expected_purchases_90d: float | None
    predicted_clv: int | None
    clv_percentile: float | None
    super_score: float | None


class StageCount(BaseModel):
    stage: str
    label: str
    members: int


class RfmTierCount(BaseModel):
    tier: str | None = Field(description="one of the eight classic tiers; null: buyers not scored yet")
    label: str
    label_en: str
    members: int
    paid_total: int = Field(description="their net paid total, fen")


class PredictionModelOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    fitted_at: dt.datetime
    status: str = Field(description="fitted | skipped")
    reason: str | None
    customers: int
    period_days: int
    params: dict[str, Any] = Field(description="bgnbd {r, alpha, a, b, log_likelihood}, gamma_gamma {p, q, gamma, ...}, period_days, repeat_buyers")


class PredictionsOut(BaseModel):
    model: PredictionModelOut | None = Field(description="the latest refresh (null before the first)")
    members_predicted: int
    expected_purchases_90d: float = Field(description="sum over the members with a prediction")
    predicted_clv_total: int = Field(description="sum of the members' predicted value, fen")


class SuperUserOut(BaseModel):
    member_id: int
    nickname: str | None
    super_score: float
    paid_orders: int
    net_paid_total: int = Field(description="fen")
    last_order_at: dt.datetime | None


class SuperUsersOut(BaseModel):
    top_percent: float = Field(description="the merchant's setting super_user_top_percent")
    min_score: float = Field(description="super users score at least this (100 - top_percent)")
    total: int = Field(description="how many members are super users now")
    items: list[SuperUserOut]
