"""Queries for home slots. Every query is scoped by ``merchant_id``."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

from sqlalchemy import Select, or_, select
from sqlalchemy.orm import Session

from siyu.storefront.models import HomeSlot


def slot_by_id(session: Session, merchant_id: int, slot_id: int) -> HomeSlot | None:
    return session.scalar(select(HomeSlot).where(HomeSlot.merchant_id == merchant_id, HomeSlot.id == slot_id))


def slots_by_ids(session: Session, merchant_id: int, slot_ids: Iterable[int]) -> dict[int, HomeSlot]:
    ids = sorted(set(slot_ids))
    if not ids:
        return {}
    stmt = select(HomeSlot).where(HomeSlot.merchant_id == merchant_id, HomeSlot.id.in_(ids))
    return {slot.id: slot for slot in session.scalars(stmt)}


def search(merchant_id: int, *, kind: str | None = None, enabled: bool | None = None) -> Select[Any]:
    stmt = select(HomeSlot).where(HomeSlot.merchant_id == merchant_id)
    if kind:
        stmt = stmt.where(HomeSlot.kind == kind)
    if enabled is not None:
        stmt = stmt.where(HomeSlot.enabled.is_(enabled))
    return stmt


def live_slots(session: Session, merchant_id: int, now: dt.datetime) -> list[HomeSlot]:
    """Enabled slots whose schedule contains ``now`` (``starts_at <= now < ends_at``)."""
    stmt = (
        select(HomeSlot)
        .where(
            HomeSlot.merchant_id == merchant_id,
            HomeSlot.enabled.is_(True),
            or_(HomeSlot.starts_at.is_(None), HomeSlot.starts_at <= now),
            or_(HomeSlot.ends_at.is_(None), HomeSlot.ends_at > now),
        )
        .order_by(HomeSlot.kind, HomeSlot.sort, HomeSlot.id)
    )
    return list(session.scalars(stmt))
