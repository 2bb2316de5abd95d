"""Referral (老带新) and distribution (分销) tables.

- ``referral_settings``: one row per merchant (binding rule, rewards as data, tiers, payout).
- ``referral_profiles``: a member's invite code and the inviter they are bound to. The binding
  is locked (``locked_at``) at the member's first paid order.
- ``referral_binding_log``: append-only history of bindings (who, when, from which source).
- ``referral_rewards``: old-brings-new rewards, one row per (invitee, role, kind) — the
  idempotency key of a reward — with status ``granted`` | ``pending`` | ``revoked``.
- ``distributor_levels`` / ``distributors``: levels with commission rates (basis points) and
  the distributor with their account buckets, each ``CHECK (x >= 0)`` and moved only by
  conditional updates (``repository.move``). The applicant's real name and phone are stored
  encrypted (``real_name_enc`` / ``phone_enc``, see ``referral.pii``) with masked copies.
- ``commission_rules``: per-product (and optionally per-level / per-distributor) rate overrides.
- ``commissions`` / ``commission_lines``: one commission per (order, tier), split per order line
  so a refund of a line reverses exactly that line's share.
- ``commission_refunds``: which refunds were already applied to a commission (idempotency).
- ``commission_ledger``: append-only; each row carries the deltas it made to each bucket, so
  the buckets always equal the sums of the ledger.
- ``withdrawals``: requests of the available balance, reviewed by finance, paid by a provider
  (``failed`` when an automatic payout failed or was cancelled: the amount returned). The payee's
  real name, when the provider needs it, is stored encrypted (``payee_name_enc``) and masked.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Boolean, CheckConstraint, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from siyu.db.base import Base, IdMixin, TenantMixin, TimestampMixin
from siyu.db.types import BigId, JSONDoc, UTCDateTime
from siyu.kit.timeutil import utcnow

# binding rules
RULE_FIRST = "first"  # the first inviter, forever
RULE_WINDOW = "window"  # only within N days of the first visit (registration); first wins
RULE_LATEST = "latest"  # the latest inviter wins until the first paid order
BINDING_RULES = (RULE_FIRST, RULE_WINDOW, RULE_LATEST)

# reward statuses
REWARD_GRANTED = "granted"
REWARD_PENDING = "pending"  # the points/coupon module was not available: granted later by a retry
REWARD_REVOKED = "revoked"

# distributor statuses
DIST_APPLIED = "applied"
DIST_APPROVED = "approved"
DIST_REJECTED = "rejected"
DIST_DISABLED = "disabled"

# commission statuses
COMM_PENDING = "pending"
COMM_FROZEN = "frozen"
COMM_SETTLED = "settled"
COMM_REVERSED = "reversed"  # fully reversed before settlement (or clawed back entirely after)

# withdrawal statuses
WD_REQUESTED = "requested"
WD_APPROVED = "approved"
WD_REJECTED = "rejected"
WD_PAID = "paid"
WD_FAILED = "failed"  # the payout provider failed it (or it was cancelled): the amount returned
# (``paid`` after ``failed``: a late bill the payee took anyway — ``failed_at`` stays set, the
# amount is taken back, ledger entry ``withdrawal_paid_late``, audit ``paid_after_failure``)

BUCKETS = ("pending", "frozen", "available", "withdrawing", "withdrawn", "debt")


class ReferralSettings(IdMixin, TenantMixin, TimestampMixin, Base):
    __tablename__ = "referral_settings"
    __table_args__ = (
        UniqueConstraint("merchant_id"),
        CheckConstraint("window_days >= 0", name="window_nonneg"),
        CheckConstraint("tiers IN (1, 2)", name="tiers_valid"),
        CheckConstraint("min_withdrawal >= 0", name="min_withdrawal_nonneg"),
    )

    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    binding_rule: Mapped[str] = mapped_column(String(16), default=RULE_FIRST)
    window_days: Mapped[int] = mapped_column(Integer, default=7)
    share_path: Mapped[str] = mapped_column(String(200), default="pages/index")
    # [{"kind": "points", "points": 100} | {"kind": "coupon", "template_id": 3}, ...]
    inviter_rewards: Mapped[list[dict[str, Any]]] = mapped_column(JSONDoc, default=list)
    invitee_rewards: Mapped[list[dict[str, Any]]] = mapped_column(JSONDoc, default=list)
    tiers: Mapped[int] = mapped_column(Integer, default=2)
    auto_approve_distributors: Mapped[bool] = mapped_column(Boolean, default=False)
    min_withdrawal: Mapped[int] = mapped_column(Integer, default=100)  # fen
    payout_provider: Mapped[str] = mapped_column(String(32), default="manual")


class ReferralProfile(IdMixin, TenantMixin, TimestampMixin, Base):
    __tablename__ = "referral_profiles"
    __table_args__ = (
        UniqueConstraint("merchant_id", "member_id"),
        UniqueConstraint("merchant_id", "code"),
        CheckConstraint("inviter_member_id IS NULL OR inviter_member_id <> member_id", name="no_self_invite"),
        Index("ix_referral_profiles_inviter", "merchant_id", "inviter_member_id"),
    )

    member_id: Mapped[int] = mapped_column(BigId)
    code: Mapped[str] = mapped_column(String(16))
    inviter_member_id: Mapped[int | None] = mapped_column(BigId, nullable=True)
    bound_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    bind_source: Mapped[str | None] = mapped_column(String(16), nullable=True)  # bind | register
    first_paid_order_id: Mapped[int | None] = mapped_column(BigId, nullable=True)
    locked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)


class ReferralBindingLog(IdMixin, TenantMixin, Base):
    __tablename__ = "referral_binding_log"
    __table_args__ = (Index("ix_referral_binding_log_member", "merchant_id", "member_id"),)

    member_id: Mapped[int] = mapped_column(BigId)
    inviter_member_id: Mapped[int] = mapped_column(BigId)
    previous_inviter_id: Mapped[int | None] = mapped_column(BigId, nullable=True)
    source: Mapped[str] = mapped_column(String(16))
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class ReferralReward(IdMixin, TenantMixin, TimestampMixin, Base):
    __tablename__ = "referral_rewards"
    __table_args__ = (
        # Idempotent per invitee: one reward of each kind and role, ever.
        UniqueConstraint("merchant_id", "invitee_member_id", "role", "reward_index"),
        CheckConstraint("points >= 0", name="points_nonneg"),
        Index("ix_referral_rewards_beneficiary", "merchant_id", "beneficiary_member_id"),
    )

    invitee_member_id: Mapped[int] = mapped_column(BigId)
    beneficiary_member_id: Mapped[int] = mapped_column(BigId)
    role: Mapped[str] = mapped_column(String(8))  # inviter | invitee
    reward_index: Mapped[int] = mapped_column(Integer, default=0)  # position in the settings' list
    kind: Mapped[str] = mapped_column(String(8))  # points | coupon
    points: Mapped[int] = mapped_column(Integer, default=0)
    coupon_template_id: Mapped[int | None] = mapped_column(BigId, nullable=True)
    order_id: Mapped[int] = mapped_column(BigId)
    status: Mapped[str] = mapped_column(String(10), default=REWARD_PENDING)
    detail: Mapped[str | None] = mapped_column(String(200), nullable=True)
    granted_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)


class DistributorLevel(IdMixin, TenantMixin, TimestampMixin, Base):
    __tablename__ = "distributor_levels"
    __table_args__ = (
        UniqueConstraint("merchant_id", "name"),
        CheckConstraint("tier1_rate_bp >= 0 AND tier1_rate_bp <= 10000", name="tier1_rate_valid"),
        CheckConstraint("tier2_rate_bp >= 0 AND tier2_rate_bp <= 10000", name="tier2_rate_valid"),
    )

    name: Mapped[str] = mapped_column(String(32))
    rank: Mapped[int] = mapped_column(Integer, default=0)
    tier1_rate_bp: Mapped[int] = mapped_column(Integer)
    tier2_rate_bp: Mapped[int] = mapped_column(Integer, default=0)
    is_default: Mapped[bool] = mapped_column(Boolean, default=False)


class Distributor(IdMixin, TenantMixin, TimestampMixin, Base):
    __tablename__ = "distributors"
    __table_args__ = (
        UniqueConstraint("merchant_id", "member_id"),
        CheckConstraint("pending >= 0", name="pending_nonneg"),
        CheckConstraint("frozen >= 0", name="frozen_nonneg"),
        CheckConstraint("available >= 0", name="available_nonneg"),
        CheckConstraint("withdrawing >= 0", name="withdrawing_nonneg"),
        CheckConstraint("withdrawn >= 0", name="withdrawn_nonneg"),
        CheckConstraint("debt >= 0", name="debt_nonneg"),
        Index("ix_distributors_status", "merchant_id", "status"),
    )

    member_id: Mapped[int] = mapped_column(BigId)
    level_id: Mapped[int | None] = mapped_column(BigId, nullable=True)
    status: Mapped[str] = mapped_column(String(10), default=DIST_APPLIED)
    # the applicant's real name and phone, encrypted at rest (``referral.pii``: AES-GCM bound to
    # this row's merchant and id) next to masked copies (``张**丰``, ``138****5678``) for lists
    real_name_enc: Mapped[str | None] = mapped_column(String(255), nullable=True)
    real_name_masked: Mapped[str | None] = mapped_column(String(40), nullable=True)
    phone_enc: Mapped[str | None] = mapped_column(String(255), nullable=True)
    phone_masked: Mapped[str | None] = mapped_column(String(20), nullable=True)
    note: Mapped[str | None] = mapped_column(String(200), nullable=True)
    review_note: Mapped[str | None] = mapped_column(String(200), nullable=True)
    applied_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    reviewed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # account buckets, fen
    pending: Mapped[int] = mapped_column(Integer, default=0)
    frozen: Mapped[int] = mapped_column(Integer, default=0)
    available: Mapped[int] = mapped_column(Integer, default=0)
    withdrawing: Mapped[int] = mapped_column(Integer, default=0)
    withdrawn: Mapped[int] = mapped_column(Integer, default=0)
    debt: Mapped[int] = mapped_column(Integer, default=0)  # clawed back after settlement, not yet recovered


class CommissionRule(IdMixin, TenantMixin, TimestampMixin, Base):
    """A rate override. The most specific enabled rule for (product, distributor) wins:
    distributor+product > level+product > product > distributor > level; then the level's rates."""

    __tablename__ = "commission_rules"
    __table_args__ = (
        CheckConstraint("tier1_rate_bp >= 0 AND tier1_rate_bp <= 10000", name="tier1_rate_valid"),
        CheckConstraint("tier2_rate_bp IS NULL OR (tier2_rate_bp >= 0 AND tier2_rate_bp <= 10000)", name="tier2_rate_valid"),
        Index("ix_commission_rules_product", "merchant_id", "product_id"),
    )

    name: Mapped[str] = mapped_column(String(64))
    product_id: Mapped[int | None] = mapped_column(BigId, nullable=True)
    level_id: Mapped[int | None] = mapped_column(BigId, nullable=True)
    distributor_id: Mapped[int | None] = mapped_column(BigId, nullable=True)
    tier1_rate_bp: Mapped[int] = mapped_column(Integer)
    tier2_rate_bp: Mapped[int | None] = mapped_column(Integer, nullable=True)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)


class Commission(IdMixin, TenantMixin, TimestampMixin, Base):
    __tablename__ = "commissions"
    __table_args__ = (
        UniqueConstraint("merchant_id", "order_id", "tier"),
        CheckConstraint("amount >= 0", name="amount_nonneg"),
        CheckConstraint("reversed_amount >= 0 AND reversed_amount <= amount", name="reversed_within"),
        CheckConstraint("tier IN (1, 2)", name="tier_valid"),
        Index("ix_commissions_distributor", "merchant_id", "distributor_id", "id"),
        Index("ix_commissions_order", "merchant_id", "order_id"),
    )

    order_id: Mapped[int] = mapped_column(BigId)
    buyer_member_id: Mapped[int] = mapped_column(BigId)
    distributor_id: Mapped[int] = mapped_column(BigId)
    tier: Mapped[int] = mapped_column(Integer)
    base_amount: Mapped[int] = mapped_column(Integer)  # sum of the lines' payable_amount, fen
    amount: Mapped[int] = mapped_column(Integer)  # commission at payment, fen
    reversed_amount: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[str] = mapped_column(String(10), default=COMM_PENDING)
    settle_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    frozen_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    settled_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)


class CommissionLine(IdMixin, TenantMixin, Base):
    __tablename__ = "commission_lines"
    __table_args__ = (
        UniqueConstraint("merchant_id", "commission_id", "order_line_id"),
        CheckConstraint("refunded_base >= 0 AND refunded_base <= base_amount", name="refunded_within"),
        CheckConstraint("reversed_amount >= 0 AND reversed_amount <= amount", name="reversed_within"),
    )

    commission_id: Mapped[int] = mapped_column(BigId, index=True)
    order_line_id: Mapped[int] = mapped_column(BigId)
    product_id: Mapped[int] = mapped_column(BigId)
    base_amount: Mapped[int] = mapped_column(Integer)
    rate_bp: Mapped[int] = mapped_column(Integer)
    amount: Mapped[int] = mapped_column(Integer)
    refunded_base: Mapped[int] = mapped_column(Integer, default=0)
    reversed_amount: Mapped[int] = mapped_column(Integer, default=0)


class CommissionRefund(IdMixin, TenantMixin, Base):
    __tablename__ = "commission_refunds"
    __table_args__ = (UniqueConstraint("merchant_id", "commission_id", "refund_id"),)

    commission_id: Mapped[int] = mapped_column(BigId)
    refund_id: Mapped[int] = mapped_column(BigId)
    amount: Mapped[int] = mapped_column(Integer, default=0)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class CommissionLedger(IdMixin, TenantMixin, Base):
    """Append-only. ``key`` makes every movement idempotent."""

    __tablename__ = "commission_ledger"
    __table_args__ = (
        UniqueConstraint("merchant_id", "key"),
        Index("ix_commission_ledger_distributor", "merchant_id", "distributor_id", "id"),
    )

    distributor_id: Mapped[int] = mapped_column(BigId)
    key: Mapped[str] = mapped_column(String(120))
    entry: Mapped[str] = mapped_column(String(24))  # accrued | frozen | settled | reversed | clawback | ...
    commission_id: Mapped[int | None] = mapped_column(BigId, nullable=True)
    withdrawal_id: Mapped[int | None] = mapped_column(BigId, nullable=True)
    order_id: Mapped[int | None] = mapped_column(BigId, nullable=True)
    amount: Mapped[int] = mapped_column(Integer)
    d_pending: Mapped[int] = mapped_column(Integer, default=0)
    d_frozen: Mapped[int] = mapped_column(Integer, default=0)
    d_available: Mapped[int] = mapped_column(Integer, default=0)
    d_withdrawing: Mapped[int] = mapped_column(Integer, default=0)
    d_withdrawn: Mapped[int] = mapped_column(Integer, default=0)
    d_debt: Mapped[int] = mapped_column(Integer, default=0)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class Withdrawal(IdMixin, TenantMixin, TimestampMixin, Base):
    __tablename__ = "withdrawals"
    __table_args__ = (
        UniqueConstraint("merchant_id", "distributor_id", "request_key"),
        CheckConstraint("amount > 0", name="amount_pos"),
        Index("ix_withdrawals_status", "merchant_id", "status", "id"),
    )

    distributor_id: Mapped[int] = mapped_column(BigId)
    member_id: Mapped[int] = mapped_column(BigId)
    amount: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(10), default=WD_REQUESTED)
    request_key: Mapped[str] = mapped_column(String(80))
    provider: Mapped[str] = mapped_column(String(32), default="manual")
    provider_reference: Mapped[str | None] = mapped_column(String(80), nullable=True)
    review_note: Mapped[str | None] = mapped_column(String(200), nullable=True)
    reviewed_by: Mapped[int | None] = mapped_column(BigId, nullable=True)
    reviewed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    paid_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # an automatic payout in flight: the provider's state (e.g. WAIT_USER_CONFIRM) and what the
    # client needs from it (e.g. WeChat's ``package_info`` for wx.requestMerchantTransfer)
    provider_state: Mapped[str | None] = mapped_column(String(24), nullable=True)
    provider_data: Mapped[dict[str, Any] | None] = mapped_column(JSONDoc, nullable=True)
    failed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # the payee's real name for providers that need it (WeChat transfers from 2,000 yuan):
    # ``payout.payee_box`` ciphertext, and a masked copy (``张**丰``) that answers may show
    payee_name_enc: Mapped[str | None] = mapped_column(String(255), nullable=True)
    payee_name_masked: Mapped[str | None] = mapped_column(String(40), nullable=True)
