"""Per-member statistics and the merchant's audience settings.

``MemberStats`` is maintained incrementally as orders are paid or refunded and as events arrive,
so lifecycle stages, RFM and segments read one narrow row per member instead of scanning orders.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Float, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from siyu.db.base import Base, IdMixin, TenantMixin
from siyu.db.types import BigId, JSONDoc, UTCDateTime

STAGE_NEVER = "never_purchased"
STAGE_ACTIVE = "active"
STAGE_SILENT = "silent"
STAGE_SLEEPING = "sleeping"
STAGE_PRE_CHURN = "pre_churn"
STAGE_CHURNED = "churned"
STAGES = (STAGE_NEVER, STAGE_ACTIVE, STAGE_SILENT, STAGE_SLEEPING, STAGE_PRE_CHURN, STAGE_CHURNED)
STAGE_LABELS = {
    STAGE_NEVER: "未购买",
    STAGE_ACTIVE: "活跃",
    STAGE_SILENT: "沉默",
    STAGE_SLEEPING: "睡眠",
    STAGE_PRE_CHURN: "预流失",
    STAGE_CHURNED: "流失",
}


class MemberStats(IdMixin, TenantMixin, Base):
    __tablename__ = "member_stats"
    __table_args__ = (
        UniqueConstraint("merchant_id", "member_id"),
        Index("ix_member_stats_stage", "merchant_id", "lifecycle_stage"),
        Index("ix_member_stats_last_order", "merchant_id", "last_order_at"),
        # Room on each page for the rows' next versions: the activity counters (not indexed)
        # change with every batch of events, and an update that fits on its page is HOT (no
        # new entry in any of the five indexes). At 100% fill only ~8% of them were.
        {"postgresql_with": {"fillfactor": 70}},
    )

    member_id: Mapped[int] = mapped_column(BigId)
    registered_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    first_order_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    second_order_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_order_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    paid_orders: Mapped[int] = mapped_column(Integer, default=0)
    paid_total: Mapped[int] = mapped_column(Integer, default=0)  # fen, net of refunds
    refunded_total: Mapped[int] = mapped_column(Integer, default=0)
    last_visit_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    product_views: Mapped[int] = mapped_column(Integer, default=0)
    cart_adds: Mapped[int] = mapped_column(Integer, default=0)
    favorites: Mapped[int] = mapped_column(Integer, default=0)
    shares: Mapped[int] = mapped_column(Integer, default=0)
    lifecycle_stage: Mapped[str] = mapped_column(String(20), default=STAGE_NEVER)
    stage_changed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    rfm_r: Mapped[int | None] = mapped_column(Integer, nullable=True)
    rfm_f: Mapped[int | None] = mapped_column(Integer, nullable=True)
    rfm_m: Mapped[int | None] = mapped_column(Integer, nullable=True)
    rfm_tier: Mapped[str | None] = mapped_column(String(24), nullable=True)
    p_alive: Mapped[float | None] = mapped_column(Float, nullable=True)
    expected_purchases_90d: Mapped[float | None] = mapped_column(Float, nullable=True)
    predicted_clv: Mapped[int | None] = mapped_column(Integer, nullable=True)  # fen
    clv_percentile: Mapped[float | None] = mapped_column(Float, nullable=True)
    super_score: Mapped[float | None] = mapped_column(Float, nullable=True)
    updated_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)

    @property
    def aov(self) -> int:
        return self.paid_total // self.paid_orders if self.paid_orders else 0


class ActivityBatch(IdMixin, TenantMixin, Base):
    """A batch of behaviour events whose counters were added to ``MemberStats``.

    The counters of an ingested batch are added by a worker job; the job first inserts this
    row (unique by merchant and batch key), so a job that runs twice, e.g. after its lease
    expired while the first run was still going, adds them once.
    """

    __tablename__ = "member_activity_batches"
    __table_args__ = (UniqueConstraint("merchant_id", "batch_key"),)

    batch_key: Mapped[str] = mapped_column(String(80))
    events: Mapped[int] = mapped_column(Integer)
    applied_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)


class AudienceSettings(IdMixin, TenantMixin, Base):
    """Per-merchant thresholds (industries differ), validated by ``schemas.LifecycleConfig``."""

    __tablename__ = "audience_settings"
    __table_args__ = (UniqueConstraint("merchant_id"),)

    lifecycle: Mapped[dict[str, Any]] = mapped_column(JSONDoc, default=dict)
    updated_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)


class StageTransition(IdMixin, TenantMixin, Base):
    __tablename__ = "lifecycle_transitions"
    __table_args__ = (Index("ix_lifecycle_transitions_member", "merchant_id", "member_id", "at"),)

    member_id: Mapped[int] = mapped_column(BigId)
    from_stage: Mapped[str | None] = mapped_column(String(20), nullable=True)
    to_stage: Mapped[str] = mapped_column(String(20))
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime)


class StageDaily(IdMixin, TenantMixin, Base):
    """Daily count of members per stage (trend charts)."""

    __tablename__ = "lifecycle_daily"
    __table_args__ = (UniqueConstraint("merchant_id", "day", "stage"),)

    day: Mapped[dt.date] = mapped_column()
    stage: Mapped[str] = mapped_column(String(20))
    members: Mapped[int] = mapped_column(Integer)


class Segment(IdMixin, TenantMixin, Base):
    """A saved segment: its definition (validated ``SegmentDefinition``) and its membership."""

    __tablename__ = "segments"
    __table_args__ = (UniqueConstraint("merchant_id", "name"),)

    name: Mapped[str] = mapped_column(String(80))
    description: Mapped[str | None] = mapped_column(String(400), nullable=True)
    definition: Mapped[dict[str, Any]] = mapped_column(JSONDoc)
    member_count: Mapped[int] = mapped_column(Integer, default=0)
    computed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)


class SegmentMember(IdMixin, TenantMixin, Base):
    __tablename__ = "segment_members"
    __table_args__ = (
        UniqueConstraint("segment_id", "member_id"),
        Index("ix_segment_members_member", "merchant_id", "member_id"),
    )

    segment_id: Mapped[int] = mapped_column(BigId, index=True)
    member_id: Mapped[int] = mapped_column(BigId)
    entered_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)


class SegmentChange(IdMixin, TenantMixin, Base):
    """Append-only: a member entered or left a saved segment (journeys trigger on these)."""

    __tablename__ = "segment_changes"
    __table_args__ = (Index("ix_segment_changes_segment", "merchant_id", "segment_id", "at"),)

    segment_id: Mapped[int] = mapped_column(BigId)
    member_id: Mapped[int] = mapped_column(BigId)
    change: Mapped[str] = mapped_column(String(8))  # entered | left
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime)


class PredictionModel(IdMixin, TenantMixin, Base):
    """The fitted BG/NBD and Gamma-Gamma parameters of one refresh (kept for every refresh)."""

    __tablename__ = "prediction_models"
    __table_args__ = (Index("ix_prediction_models_fitted", "merchant_id", "fitted_at"),)

    fitted_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    period_days: Mapped[int] = mapped_column(Integer)
    customers: Mapped[int] = mapped_column(Integer)
    params: Mapped[dict[str, Any]] = mapped_column(JSONDoc)
    status: Mapped[str] = mapped_column(String(16))  # fitted | skipped
    reason: Mapped[str | None] = mapped_column(String(200), nullable=True)



# The order lines' purchase facts (``OrderLine.member_id`` / ``bought_at``) are kept by ORM
# events; importing every ``models`` module (app, worker, migrations, tests) registers them.
import siyu.audience.purchase_facts  # noqa: E402,F401
