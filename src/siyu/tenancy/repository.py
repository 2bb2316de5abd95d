"""Queries for merchants, staff and tokens."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from siyu.tenancy.models import AuthToken, Merchant, Staff


def merchant_by_id(session: Session, merchant_id: int) -> Merchant | None:
    return session.get(Merchant, merchant_id)


def merchant_by_code(session: Session, code: str) -> Merchant | None:
    return session.scalar(select(Merchant).where(Merchant.code == code))


def merchant_by_appid(session: Session, appid: str) -> Merchant | None:
    return session.scalar(select(Merchant).where(Merchant.wechat_appid == appid))


def staff_by_username(session: Session, merchant_id: int, username: str) -> Staff | None:
    return session.scalar(select(Staff).where(Staff.merchant_id == merchant_id, Staff.username == username))


def staff_by_id(session: Session, merchant_id: int, staff_id: int) -> Staff | None:
    return session.scalar(select(Staff).where(Staff.merchant_id == merchant_id, Staff.id == staff_id))


def list_staff(session: Session, merchant_id: int) -> list[Staff]:
    return list(session.scalars(select(Staff).where(Staff.merchant_id == merchant_id).order_by(Staff.id)))


def token_by_hash(session: Session, token_hash: str) -> AuthToken | None:
    return session.scalar(select(AuthToken).where(AuthToken.token_hash == token_hash))


_TOKEN_WITH_MERCHANT = (
    select(AuthToken, Merchant)
    .outerjoin(Merchant, Merchant.id == AuthToken.merchant_id)
    .where(AuthToken.token_hash == bindparam("token_hash"))
)  # built once: it runs on every authenticated request


def token_with_merchant(session: Session, token_hash: str) -> tuple[AuthToken, Merchant | None] | None:
    """The token and its merchant in one round trip (the merchant lands in the identity map)."""
    row = session.execute(_TOKEN_WITH_MERCHANT, {"token_hash": token_hash}).first()
    return None if row is None else (row[0], row[1])


def api_keys(session: Session, merchant_id: int) -> list[AuthToken]:
    stmt = select(AuthToken).where(
        AuthToken.merchant_id == merchant_id, AuthToken.kind == "api_key", AuthToken.revoked_at.is_(None)
    )
    return list(session.scalars(stmt.order_by(AuthToken.id)))


def token_by_id(session: Session, merchant_id: int, token_id: int) -> AuthToken | None:
    return session.scalar(select(AuthToken).where(AuthToken.merchant_id == merchant_id, AuthToken.id == token_id))


def revoke_subject_tokens(session: Session, merchant_id: int, kind: str, subject_id: int, at: dt.datetime) -> None:
    stmt = select(AuthToken).where(
        AuthToken.merchant_id == merchant_id,
        AuthToken.kind == kind,
        AuthToken.subject_id == subject_id,
        AuthToken.revoked_at.is_(None),
    )
    for token in session.scalars(stmt):
        token.revoked_at = at
