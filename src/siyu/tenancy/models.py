"""Merchant, staff and credential tables."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Boolean, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from siyu.db.base import Base, IdMixin, TenantMixin, TimestampMixin
from siyu.db.types import BigId, UTCDateTime


class Merchant(IdMixin, TimestampMixin, Base):
    """A store brand: the tenant. Its own ``id`` is the ``merchant_id`` of every other row."""

    __tablename__ = "merchants"

    code: Mapped[str] = mapped_column(String(40), unique=True)
    name: Mapped[str] = mapped_column(String(120))
    timezone: Mapped[str] = mapped_column(String(64), default="Asia/Shanghai")
    status: Mapped[str] = mapped_column(String(16), default="active")
    wechat_appid: Mapped[str | None] = mapped_column(String(64), unique=True, nullable=True)
    # Encrypted at rest with SecretBox (``v1:...``); never returned by the API.
    wechat_app_secret_enc: Mapped[str | None] = mapped_column(Text, nullable=True)
    pay_provider: Mapped[str] = mapped_column(String(20), default="sandbox")  # sandbox | wechatpay
    pay_mchid: Mapped[str | None] = mapped_column(String(32), nullable=True)
    pay_serial_no: Mapped[str | None] = mapped_column(String(64), nullable=True)
    pay_private_key_enc: Mapped[str | None] = mapped_column(Text, nullable=True)
    pay_apiv3_key_enc: Mapped[str | None] = mapped_column(Text, nullable=True)
    # JSON object serial -> PEM, encrypted as one blob (platform certificates / public keys).
    pay_platform_keys_enc: Mapped[str | None] = mapped_column(Text, nullable=True)
    pay_fee_bp: Mapped[int] = mapped_column(default=60)  # provider fee in basis points (0.6%)


class Staff(IdMixin, TenantMixin, TimestampMixin, Base):
    __tablename__ = "staff"
    __table_args__ = (UniqueConstraint("merchant_id", "username"),)

    username: Mapped[str] = mapped_column(String(64))
    display_name: Mapped[str] = mapped_column(String(64))
    role: Mapped[str] = mapped_column(String(16))
    password_hash: Mapped[str] = mapped_column(String(200))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    phone: Mapped[str | None] = mapped_column(String(20), nullable=True)
    left_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)


class AuthToken(IdMixin, TenantMixin, Base):
    """Bearer credentials. Only the SHA-256 of the token is stored.

    ``kind``: ``staff`` (admin API session), ``customer`` (store API session) or ``api_key``
    (server-to-server, acts with ``role``).
    """

    __tablename__ = "auth_tokens"
    __table_args__ = (Index("ix_auth_tokens_subject", "merchant_id", "kind", "subject_id"),)

    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    kind: Mapped[str] = mapped_column(String(16))
    subject_id: Mapped[int | None] = mapped_column(BigId, nullable=True)
    role: Mapped[str | None] = mapped_column(String(16), nullable=True)
    name: Mapped[str | None] = mapped_column(String(80), nullable=True)
    expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    created_by: Mapped[int | None] = mapped_column(BigId, ForeignKey("staff.id"), nullable=True)
