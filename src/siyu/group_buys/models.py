"""Group-buy (拼团) tables.

- ``GroupBuy``: the activity on one SKU — team size N, validity hours, group price and an
  optional leader price, per-member limit (units), stacking rules, window, optional virtual
  success (a team with at least ``virtual_min_paid`` paid seats at its deadline succeeds).
- ``GroupTeam``: one team. It is written ``pending`` with its leader's seat: until the leader's
  order is paid the team is not open (开团 happens on payment): nobody can join it and the store
  lists it nowhere. The leader's payment moves it ``pending → open`` and starts its validity
  (``expires_at``); a leader's order cancelled or timed out first moves it
  ``pending → cancelled`` (it never opened: no failure, nothing to refund). ``filled`` counts the
  seats taken (pending or paid), moved only by conditional updates
  (``filled < size AND status = 'open'``); ``CHECK (filled <= size)`` backs them up, so the last
  seat cannot be taken twice. ``paid_count`` counts paid seats; a team whose every seat is paid
  moves ``open → success``; at its deadline an unfinished team moves ``open → failed`` (its paid
  members are refunded in full).
- ``GroupSeat``: a member's seat, tied to the order that took it. ``holder_member_id`` equals
  ``member_id`` while the seat is held and becomes NULL when it is released, so
  ``UNIQUE (team_id, holder_member_id)`` refuses a second seat of the same member in a team
  while letting a member come back after a cancelled order. ``pending → paid → refunded`` or
  ``pending → released``, each step a conditional update.
- ``GroupBuyMemberCounter``: units a member holds in an activity (the per-member limit), moved
  only by conditional updates (``units + q <= limit``). A refund gives units back: the seat's
  ``units_freed`` (never above its quantity) says how many already went back.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Boolean, CheckConstraint, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from siyu.db.base import Base, IdMixin, TenantMixin, TimestampMixin
from siyu.db.types import BigId, UTCDateTime

ACTIVE = "active"
DISABLED = "disabled"

TEAM_PENDING = "pending"  # the leader's order is not paid yet: not open, not joinable, not listed
OPEN = "open"
SUCCESS = "success"
FAILED = "failed"
CANCELLED = "cancelled"  # the leader's order was cancelled (or timed out) unpaid: the team never opened
TEAM_STATUSES = (TEAM_PENDING, OPEN, SUCCESS, FAILED, CANCELLED)

PENDING = "pending"
PAID = "paid"
RELEASED = "released"
REFUNDED = "refunded"


class GroupBuy(IdMixin, TenantMixin, TimestampMixin, Base):
    __tablename__ = "group_buys"
    __table_args__ = (
        CheckConstraint("ends_at > starts_at", name="window_valid"),
        CheckConstraint("team_size >= 2", name="team_size_min"),
        CheckConstraint("valid_hours >= 1", name="valid_hours_pos"),
        CheckConstraint("group_price >= 0", name="price_nonneg"),
        CheckConstraint("leader_price IS NULL OR leader_price >= 0", name="leader_price_nonneg"),
        CheckConstraint("per_member_limit >= 1", name="limit_pos"),
        CheckConstraint(
            "virtual_min_paid IS NULL OR (virtual_min_paid >= 1 AND virtual_min_paid < team_size)",
            name="virtual_min_valid",
        ),
        Index("ix_group_buys_status", "merchant_id", "status", "ends_at"),
    )

    name: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default=ACTIVE)
    product_id: Mapped[int] = mapped_column(BigId)
    sku_id: Mapped[int] = mapped_column(BigId, ForeignKey("skus.id"))
    team_size: Mapped[int] = mapped_column(Integer)
    valid_hours: Mapped[int] = mapped_column(Integer, default=24)
    group_price: Mapped[int] = mapped_column(Integer)  # fen per unit
    leader_price: Mapped[int | None] = mapped_column(Integer, nullable=True)  # fen per unit, for the leader
    per_member_limit: Mapped[int] = mapped_column(Integer, default=1)  # units per member in the activity
    allows_coupons: Mapped[bool] = mapped_column(Boolean, default=False)
    allows_points: Mapped[bool] = mapped_column(Boolean, default=False)
    # Its lines count toward (and take) spend-and-save / spend-and-gift / add-on thresholds.
    allows_order_promotions: Mapped[bool] = mapped_column(Boolean, default=False)
    free_shipping: Mapped[bool] = mapped_column(Boolean, default=False)
    virtual_min_paid: Mapped[int | None] = mapped_column(Integer, nullable=True)  # K of N for virtual success
    starts_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    ends_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)


class GroupTeam(IdMixin, TenantMixin, TimestampMixin, Base):
    __tablename__ = "group_teams"
    __table_args__ = (
        CheckConstraint("filled >= 0 AND filled <= size", name="filled_within_size"),
        CheckConstraint("paid_count >= 0 AND paid_count <= size", name="paid_within_size"),
        Index("ix_group_teams_activity", "merchant_id", "group_buy_id", "status"),
    )

    group_buy_id: Mapped[int] = mapped_column(BigId, ForeignKey("group_buys.id"))
    leader_member_id: Mapped[int] = mapped_column(BigId)
    size: Mapped[int] = mapped_column(Integer)
    filled: Mapped[int] = mapped_column(Integer, default=0)
    paid_count: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[str] = mapped_column(String(16), default=OPEN)
    # open: the deadline (the leader's payment + validity hours, capped at the activity's end);
    # pending: the leader's payment deadline (capped at the activity's end), when the team is cancelled unpaid
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    virtual: Mapped[bool] = mapped_column(Boolean, default=False)  # succeeded by virtual success
    succeeded_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    failed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)


class GroupSeat(IdMixin, TenantMixin, TimestampMixin, Base):
    __tablename__ = "group_seats"
    __table_args__ = (
        UniqueConstraint("merchant_id", "order_id"),
        UniqueConstraint("team_id", "holder_member_id"),
        CheckConstraint("quantity > 0", name="quantity_pos"),
        CheckConstraint("units_freed >= 0 AND units_freed <= quantity", name="units_freed_valid"),
        Index("ix_group_seats_team", "merchant_id", "team_id", "status"),
    )

    group_buy_id: Mapped[int] = mapped_column(BigId, ForeignKey("group_buys.id"))
    team_id: Mapped[int] = mapped_column(BigId, ForeignKey("group_teams.id"))
    member_id: Mapped[int] = mapped_column(BigId)
    holder_member_id: Mapped[int | None] = mapped_column(BigId, nullable=True)
    order_id: Mapped[int] = mapped_column(BigId)
    sku_id: Mapped[int] = mapped_column(BigId)
    seat_no: Mapped[int] = mapped_column(Integer)  # 1 = the leader; informational
    is_leader: Mapped[bool] = mapped_column(Boolean, default=False)
    quantity: Mapped[int] = mapped_column(Integer, default=1)
    units_freed: Mapped[int] = mapped_column(Integer, default=0)  # units refunded and back in the member's limit
    amount: Mapped[int] = mapped_column(Integer, default=0)  # the line's payable, fen
    status: Mapped[str] = mapped_column(String(16), default=PENDING)
    paid_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    released_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    refund_id: Mapped[int | None] = mapped_column(BigId, nullable=True)


class GroupBuyMemberCounter(IdMixin, TenantMixin, Base):
    __tablename__ = "group_buy_member_counters"
    __table_args__ = (
        UniqueConstraint("group_buy_id", "member_id"),
        CheckConstraint("units >= 0", name="units_nonneg"),
    )

    group_buy_id: Mapped[int] = mapped_column(BigId, ForeignKey("group_buys.id"))
    member_id: Mapped[int] = mapped_column(BigId)
    units: Mapped[int] = mapped_column(Integer, default=0)
