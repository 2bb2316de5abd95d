"""Loyalty tables: points (accounts, ledger, lots), growth value, levels, check-in, paid cards.

- ``loyalty_settings``: one row per merchant, the validated rules document (``schemas.LoyaltyRules``).
- ``points_accounts``: the balance, ``CHECK (balance >= 0)``, changed only by conditional
  updates in the same transaction as the ledger row. The account row is also the member's
  points mutex: every path that touches lots updates the account row first.
- ``points_entries``: the append-only ledger (``idempotency_key`` unique per merchant); the
  statement reads it by keyset on ``(merchant_id, member_id, id)``.
- ``points_lots``: points held with an expiry; spends consume the soonest-expiring lots first
  and ``points_lot_uses`` records which lots each spend/expiry/reversal took, so a reversal of
  a spend returns points to the right lots.
- ``loyalty_order_points``: per order, what was earned/spent and what refunds reversed so far.
- ``member_loyalty``: level, growth value and the counters upgrade rules read.
- ``growth_entries``: the growth ledger (idempotent by key).
- ``loyalty_levels`` / ``level_history``: the merchant's ladder and each member's moves on it.
- ``task_counters``: daily cap counters for task rewards (one row per member, task, local day).
- ``task_completions``: one row per rewarded task report (its idempotency key, unique): the
  report's claim, written before its counter moves, so a duplicate never takes a slot.
- ``check_ins``: one row per member and local day (unique).
- ``card_plans`` / ``member_cards``: paid membership cards and the cards members hold.
- ``pending_rewards``: coupon rewards recorded while the coupons module is not available.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Boolean, CheckConstraint, Date, Index, Integer, String, UniqueConstraint, text
from sqlalchemy import false as sa_false
from sqlalchemy.orm import Mapped, mapped_column

from siyu.db.base import Base, IdMixin, TenantMixin, TimestampMixin
from siyu.db.types import BigId, JSONDoc, UTCDateTime
from siyu.kit.timeutil import utcnow

# points entry kinds
EARN = "earn"
SPEND = "spend"
EXPIRE = "expire"
REVERSE = "reverse"
ADJUST = "adjust"
MERGE_OUT = "merge_out"  # a member merge: the dropped member's points leave (``merge.merge_members``)
MERGE_IN = "merge_in"  # ... and arrive on the kept member, lot by lot with their expiry
ENTRY_KINDS = (EARN, SPEND, EXPIRE, REVERSE, ADJUST, MERGE_OUT, MERGE_IN)

CARD_ACTIVE = "active"
CARD_REVOKED = "revoked"
CARD_EXPIRED = "expired"  # its term ended (set by the hourly job, ``service.expire_cards``)


class LoyaltySettings(IdMixin, TenantMixin, TimestampMixin, Base):
    __tablename__ = "loyalty_settings"
    __table_args__ = (UniqueConstraint("merchant_id"),)

    rules: Mapped[dict[str, Any]] = mapped_column(JSONDoc, default=dict)


class PointsAccount(IdMixin, TenantMixin, Base):
    __tablename__ = "points_accounts"
    __table_args__ = (
        UniqueConstraint("merchant_id", "member_id"),
        CheckConstraint("balance >= 0", name="balance_nonneg"),
        CheckConstraint("earned_total >= 0 AND spent_total >= 0", name="totals_nonneg"),
        # Every award and spend updates the member's row (balance and totals, none indexed). At
        # 100% fill a page has no room for the next version, so most updates were not HOT: each
        # added an entry to both indexes and the unique index filled with dead versions (the
        # award's upsert read 145 buffers to find its row after a bench run, 6 with the room).
        # Half-empty pages keep the updates HOT and let page pruning clean up between vacuums.
        {"postgresql_with": {"fillfactor": 50}},
    )

    # The (merchant_id, ...) indexes above serve every query: no single-column merchant_id index
    # (TenantMixin's) to maintain on each write of this hot table.
    merchant_id: Mapped[int] = mapped_column(BigId, nullable=False)

    member_id: Mapped[int] = mapped_column(BigId)
    balance: Mapped[int] = mapped_column(Integer, default=0)
    earned_total: Mapped[int] = mapped_column(Integer, default=0)  # earn (+ adjust counts_as_earned) - reversed earn
    spent_total: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class PointsEntry(IdMixin, TenantMixin, Base):
    __tablename__ = "points_entries"
    __table_args__ = (
        UniqueConstraint("merchant_id", "idempotency_key"),
        Index("ix_points_entries_statement", "merchant_id", "member_id", "id"),
    )

    # The (merchant_id, ...) indexes above serve every query: no single-column merchant_id index
    # (TenantMixin's) to maintain on each write of this hot table.
    merchant_id: Mapped[int] = mapped_column(BigId, nullable=False)

    member_id: Mapped[int] = mapped_column(BigId)
    delta: Mapped[int] = mapped_column(Integer)  # signed
    kind: Mapped[str] = mapped_column(String(10))
    reason: Mapped[str] = mapped_column(String(64))
    ref: Mapped[str | None] = mapped_column(String(64), nullable=True)
    idempotency_key: Mapped[str] = mapped_column(String(120))
    balance_after: Mapped[int] = mapped_column(Integer)
    # A reversal that found fewer points than it should take: what it could not take.
    shortfall: Mapped[int] = mapped_column(Integer, default=0)
    reverses_entry_id: Mapped[int | None] = mapped_column(BigId, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class PointsLot(IdMixin, TenantMixin, Base):
    __tablename__ = "points_lots"
    __table_args__ = (
        CheckConstraint("remaining >= 0 AND remaining <= points", name="remaining_valid"),
        # A member's open lots in the order spends take them (soonest expiry, never-expiring
        # last, then oldest); emptied and expired lots drop out of the index.
        Index(
            "ix_points_lots_open", "merchant_id", "member_id", "expires_at", "id",
            postgresql_where=text("remaining > 0 AND expired_at IS NULL"),
            sqlite_where=text("remaining > 0 AND expired_at IS NULL"),
        ),
        Index("ix_points_lots_entry", "merchant_id", "entry_id"),
        Index(
            "ix_points_lots_due", "merchant_id", "expires_at",
            postgresql_where=text("remaining > 0 AND expired_at IS NULL"),
            sqlite_where=text("remaining > 0 AND expired_at IS NULL"),
        ),
    )

    # The (merchant_id, ...) indexes above serve every query: no single-column merchant_id index
    # (TenantMixin's) to maintain on each write of this hot table.
    merchant_id: Mapped[int] = mapped_column(BigId, nullable=False)

    member_id: Mapped[int] = mapped_column(BigId)
    entry_id: Mapped[int] = mapped_column(BigId)  # the entry that created the lot
    points: Mapped[int] = mapped_column(Integer)
    remaining: Mapped[int] = mapped_column(Integer)
    expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    notified_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    expired_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class PointsLotUse(IdMixin, TenantMixin, Base):
    """Points an entry took from a lot (``points``) and how many of them were given back since."""

    __tablename__ = "points_lot_uses"
    __table_args__ = (
        Index("ix_points_lot_uses_entry", "merchant_id", "entry_id"),
        CheckConstraint("points > 0 AND returned >= 0 AND returned <= points", name="returned_valid"),
    )

    # The (merchant_id, ...) indexes above serve every query: no single-column merchant_id index
    # (TenantMixin's) to maintain on each write of this hot table.
    merchant_id: Mapped[int] = mapped_column(BigId, nullable=False)

    entry_id: Mapped[int] = mapped_column(BigId)
    lot_id: Mapped[int] = mapped_column(BigId)
    points: Mapped[int] = mapped_column(Integer)
    returned: Mapped[int] = mapped_column(Integer, default=0)


class OrderPoints(IdMixin, TenantMixin, Base):
    """Per order: points spent at checkout, points earned, and what refunds reversed so far."""

    __tablename__ = "loyalty_order_points"
    __table_args__ = (
        UniqueConstraint("merchant_id", "order_id"),
        CheckConstraint("earn_reversed <= earned AND spent_returned <= spent", name="reversals_valid"),
    )

    order_id: Mapped[int] = mapped_column(BigId)
    member_id: Mapped[int] = mapped_column(BigId)
    spent: Mapped[int] = mapped_column(Integer, default=0)
    spent_returned: Mapped[int] = mapped_column(Integer, default=0)
    earned: Mapped[int] = mapped_column(Integer, default=0)
    earn_reversed: Mapped[int] = mapped_column(Integer, default=0)
    growth: Mapped[int] = mapped_column(Integer, default=0)
    growth_reversed: Mapped[int] = mapped_column(Integer, default=0)
    paid_counted: Mapped[bool] = mapped_column(Boolean, default=False)  # counters and growth taken
    paid_amount: Mapped[int] = mapped_column(Integer, default=0)
    refunded_amount: Mapped[int] = mapped_column(Integer, default=0)  # refunds seen by loyalty
    earned_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)


class LoyaltyRefund(IdMixin, TenantMixin, Base):
    """One row per refund handled: the unique key that makes the refund handler idempotent."""

    __tablename__ = "loyalty_refunds"
    __table_args__ = (UniqueConstraint("merchant_id", "refund_id"),)

    refund_id: Mapped[int] = mapped_column(BigId)
    order_id: Mapped[int] = mapped_column(BigId)
    amount: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class MemberLoyalty(IdMixin, TenantMixin, Base):
    __tablename__ = "member_loyalty"
    __table_args__ = (
        UniqueConstraint("merchant_id", "member_id"),
        CheckConstraint("growth >= 0 AND paid_spend >= 0 AND paid_orders >= 0", name="counters_nonneg"),
        Index("ix_member_loyalty_level", "merchant_id", "level_id"),
    )

    member_id: Mapped[int] = mapped_column(BigId)
    level_id: Mapped[int | None] = mapped_column(BigId, nullable=True)  # earned by the rules
    level_since: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    level_reviewed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    growth: Mapped[int] = mapped_column(Integer, default=0)
    paid_spend: Mapped[int] = mapped_column(Integer, default=0)  # fen, paid minus refunded
    paid_orders: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class GrowthEntry(IdMixin, TenantMixin, Base):
    __tablename__ = "growth_entries"
    __table_args__ = (
        UniqueConstraint("merchant_id", "idempotency_key"),
        Index("ix_growth_entries_member", "merchant_id", "member_id", "created_at"),
    )

    member_id: Mapped[int] = mapped_column(BigId)
    delta: Mapped[int] = mapped_column(Integer)
    action: Mapped[str] = mapped_column(String(32))
    ref: Mapped[str | None] = mapped_column(String(64), nullable=True)
    idempotency_key: Mapped[str] = mapped_column(String(120))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class Level(IdMixin, TenantMixin, TimestampMixin, Base):
    """One step of the ladder. A member reaches it when ANY of the set thresholds is met."""

    __tablename__ = "loyalty_levels"
    __table_args__ = (
        UniqueConstraint("merchant_id", "rank"),
        CheckConstraint(
            "rank >= 0 AND member_price_percent BETWEEN 1 AND 100 AND points_multiplier_percent >= 0",
            name="values_valid",
        ),
    )

    rank: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(32))
    min_spend: Mapped[int | None] = mapped_column(Integer, nullable=True)  # fen, cumulative paid
    min_points: Mapped[int | None] = mapped_column(Integer, nullable=True)  # points earned
    min_growth: Mapped[int | None] = mapped_column(Integer, nullable=True)
    min_orders: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # yearly retention: growth earned in the last 365 days to keep the level (None: kept forever)
    retain_growth: Mapped[int | None] = mapped_column(Integer, nullable=True)
    member_price_percent: Mapped[int] = mapped_column(Integer, default=100)  # 95 = pay 95%
    free_shipping: Mapped[bool] = mapped_column(Boolean, default=False)
    points_multiplier_percent: Mapped[int] = mapped_column(Integer, default=100)  # 150 = 1.5x
    birthday_coupon_template_id: Mapped[int | None] = mapped_column(BigId, nullable=True)
    coupon_template_ids: Mapped[list[int]] = mapped_column(JSONDoc, default=list)  # issued on reaching it


class LevelHistory(IdMixin, TenantMixin, Base):
    __tablename__ = "level_history"
    __table_args__ = (Index("ix_level_history_member", "merchant_id", "member_id", "id"),)

    member_id: Mapped[int] = mapped_column(BigId)
    from_level_id: Mapped[int | None] = mapped_column(BigId, nullable=True)
    to_level_id: Mapped[int | None] = mapped_column(BigId, nullable=True)
    reason: Mapped[str] = mapped_column(String(32))  # upgrade | refund | retention | card | card_revoked | card_expired
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class TaskCounter(IdMixin, TenantMixin, Base):
    __tablename__ = "task_counters"
    __table_args__ = (
        UniqueConstraint("merchant_id", "member_id", "task", "day"),
        CheckConstraint("count >= 0", name="count_nonneg"),
    )

    member_id: Mapped[int] = mapped_column(BigId)
    task: Mapped[str] = mapped_column(String(32))
    day: Mapped[dt.date] = mapped_column(Date)
    count: Mapped[int] = mapped_column(Integer, default=0)


class TaskCompletion(IdMixin, TenantMixin, Base):
    """A rewarded task report, one per key ``task:<task>:<member>:<ref>`` (the key of its points
    and growth entries). ``complete_task`` inserts it before it moves the day's counter, in the
    same transaction: a parallel report with the same ref waits on the unique index and then
    finds the key taken, so it never takes a slot of the daily cap."""

    __tablename__ = "task_completions"
    __table_args__ = (UniqueConstraint("merchant_id", "idempotency_key"),)

    # the unique (merchant_id, idempotency_key) index serves every query: no single-column one
    merchant_id: Mapped[int] = mapped_column(BigId, nullable=False)

    member_id: Mapped[int] = mapped_column(BigId)
    idempotency_key: Mapped[str] = mapped_column(String(120))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class CheckIn(IdMixin, TenantMixin, Base):
    __tablename__ = "check_ins"
    __table_args__ = (
        UniqueConstraint("merchant_id", "member_id", "day"),
        Index("ix_check_ins_member", "merchant_id", "member_id", "day"),
    )

    member_id: Mapped[int] = mapped_column(BigId)
    day: Mapped[dt.date] = mapped_column(Date)  # local day in the merchant's zone
    streak: Mapped[int] = mapped_column(Integer)
    makeup: Mapped[bool] = mapped_column(Boolean, default=False)
    points: Mapped[int] = mapped_column(Integer, default=0)
    growth: Mapped[int] = mapped_column(Integer, default=0)
    rewards: Mapped[list[dict[str, Any]]] = mapped_column(JSONDoc, default=list)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class CardPlan(IdMixin, TenantMixin, TimestampMixin, Base):
    """A paid membership card sold as a catalog product: paying an order with ``product_id`` grants it."""

    __tablename__ = "card_plans"
    __table_args__ = (
        UniqueConstraint("merchant_id", "product_id"),
        CheckConstraint("term_days > 0 AND refund_days >= 0", name="terms_valid"),
    )

    name: Mapped[str] = mapped_column(String(64))
    product_id: Mapped[int] = mapped_column(BigId)
    level_id: Mapped[int | None] = mapped_column(BigId, nullable=True)  # level held for the term
    # Benefits of their own for the term, with or without a level (``service.member_benefits``
    # takes the better of these and the member's level): basis points off physical goods (500 =
    # 5 % off, the level's ``member_price_percent`` 95), free shipping, points multiplier (150 = 1.5x;
    # 100 = none). A plan grants a level or at least one of them (``card_plan_grants_nothing``).
    member_discount_bp: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    free_shipping: Mapped[bool] = mapped_column(Boolean, default=False, server_default=sa_false())
    points_multiplier_percent: Mapped[int] = mapped_column(Integer, default=100, server_default="100")
    term_days: Mapped[int] = mapped_column(Integer, default=365)
    refund_days: Mapped[int] = mapped_column(Integer, default=7)  # full refund within N days revokes
    active: Mapped[bool] = mapped_column(Boolean, default=True)


class MemberCard(IdMixin, TenantMixin, Base):
    __tablename__ = "member_cards"
    __table_args__ = (
        UniqueConstraint("merchant_id", "order_id", "plan_id"),
        Index("ix_member_cards_member", "merchant_id", "member_id", "ends_at"),
    )

    member_id: Mapped[int] = mapped_column(BigId)
    plan_id: Mapped[int] = mapped_column(BigId)
    order_id: Mapped[int] = mapped_column(BigId)
    level_id: Mapped[int | None] = mapped_column(BigId, nullable=True)
    starts_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    ends_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    status: Mapped[str] = mapped_column(String(10), default=CARD_ACTIVE)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)


class PendingReward(IdMixin, TenantMixin, Base):
    """A coupon reward that could not be issued yet (coupons module missing); issued later."""

    __tablename__ = "loyalty_pending_rewards"
    __table_args__ = (UniqueConstraint("merchant_id", "idempotency_key"),)

    member_id: Mapped[int] = mapped_column(BigId)
    template_id: Mapped[int] = mapped_column(BigId)
    source: Mapped[str] = mapped_column(String(40))
    idempotency_key: Mapped[str] = mapped_column(String(120))
    status: Mapped[str] = mapped_column(String(10), default="pending")  # pending | issued
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
