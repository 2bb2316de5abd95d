"""Builders for bargain tests: activities and bargains through the services, read helpers."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from siyu.bargains import service
from siyu.bargains.models import Bargain, BargainHelp
from siyu.bargains.schemas import BargainActivityIn
from siyu.db.session import unit_of_work
from siyu.kit.timeutil import utcnow


def make_activity(
    factory: sessionmaker[Session], merchant_id: int, sku_id: int, *, starts_in: dt.timedelta = dt.timedelta(hours=-1),
    lasts: dt.timedelta = dt.timedelta(days=7), **rules: Any,
) -> int:
    now = utcnow()
    body = {
        "name": "好友砍价", "sku_id": sku_id, "floor_price": 1000, "helpers_needed": 3, "valid_hours": 24,
        "starts_at": now + starts_in, "ends_at": now + starts_in + lasts, **rules,
    }
    with unit_of_work(factory) as s:
        return service.create_activity(s, merchant_id, BargainActivityIn.model_validate(body), actor=("staff", None)).id


def start(factory: sessionmaker[Session], merchant_id: int, member_id: int, activity_id: int, **kw: Any) -> int:
    with unit_of_work(factory) as s:
        return service.start(s, merchant_id, member_id, activity_id, **kw).id


def help_(factory: sessionmaker[Session], merchant_id: int, bargain_id: int, helper: int, **kw: Any) -> int:
    with unit_of_work(factory) as s:
        return service.help_bargain(s, merchant_id, bargain_id, helper, **kw).cut


def bargain(factory: sessionmaker[Session], bargain_id: int) -> Bargain:
    with factory() as s:
        found = s.get(Bargain, bargain_id)
        assert found is not None
        return found


def helps(factory: sessionmaker[Session], bargain_id: int) -> list[BargainHelp]:
    with factory() as s:
        return list(s.scalars(select(BargainHelp).where(BargainHelp.bargain_id == bargain_id).order_by(BargainHelp.seq)))
