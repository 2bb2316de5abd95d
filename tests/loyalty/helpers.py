"""Builders and readers for loyalty tests (own data per test: a fresh tenant each time)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from siyu.db.session import unit_of_work
from siyu.loyalty import points as ledger
from siyu.loyalty import service
from siyu.loyalty.models import PointsAccount, PointsEntry, PointsLot
from siyu.loyalty.schemas import LevelIn, LoyaltyRules
from siyu.tenancy.models import Merchant

SYSTEM = ("system", None)


def set_rules(factory: sessionmaker[Session], merchant_id: int, **sections: dict[str, Any]) -> LoyaltyRules:
    """Merchant rules from the defaults with ``sections`` overridden, e.g. ``earn={"points_per_yuan": 2}``."""
    doc = LoyaltyRules().model_dump(mode="json")
    for name, values in sections.items():
        doc[name].update(values)
    rules = LoyaltyRules.model_validate(doc)
    with unit_of_work(factory) as s:
        service.put_rules(s, merchant_id, rules, actor=SYSTEM)
    return rules


def set_timezone(factory: sessionmaker[Session], merchant_id: int, tz: str) -> None:
    with unit_of_work(factory) as s:
        merchant = s.get(Merchant, merchant_id)
        assert merchant is not None
        merchant.timezone = tz


def add_level(factory: sessionmaker[Session], merchant_id: int, rank: int, name: str, **fields: Any) -> int:
    with unit_of_work(factory) as s:
        return service.save_level(s, merchant_id, LevelIn(rank=rank, name=name, **fields), level_id=None, actor=SYSTEM).id


def award(factory: sessionmaker[Session], merchant_id: int, member_id: int, points: int, key: str, **kw: Any) -> int:
    with unit_of_work(factory) as s:
        return ledger.award(s, merchant_id, member_id, points, reason="test", idempotency_key=key, **kw).id


def spend(factory: sessionmaker[Session], merchant_id: int, member_id: int, points: int, key: str, **kw: Any) -> int:
    with unit_of_work(factory) as s:
        return ledger.spend(s, merchant_id, member_id, points, reason="test", idempotency_key=key, **kw).id


def balance(factory: sessionmaker[Session], merchant_id: int, member_id: int) -> int:
    with factory() as s:
        acct = s.scalar(select(PointsAccount).where(PointsAccount.merchant_id == merchant_id,
                                                    PointsAccount.member_id == member_id))
        return acct.balance if acct else 0


def entries(factory: sessionmaker[Session], merchant_id: int, member_id: int) -> list[PointsEntry]:
    with factory() as s:
        return list(s.scalars(select(PointsEntry).where(PointsEntry.merchant_id == merchant_id,
                                                        PointsEntry.member_id == member_id).order_by(PointsEntry.id)))


def entries_sum(factory: sessionmaker[Session], merchant_id: int, member_id: int) -> int:
    return sum(e.delta for e in entries(factory, merchant_id, member_id))


def lots(factory: sessionmaker[Session], merchant_id: int, member_id: int) -> list[PointsLot]:
    with factory() as s:
        return list(s.scalars(select(PointsLot).where(PointsLot.merchant_id == merchant_id,
                                                      PointsLot.member_id == member_id).order_by(PointsLot.id)))


def open_lots_sum(factory: sessionmaker[Session], merchant_id: int, member_id: int) -> int:
    return sum(lt.remaining for lt in lots(factory, merchant_id, member_id) if lt.expired_at is None)


def level_of(factory: sessionmaker[Session], merchant_id: int, member_id: int) -> str | None:
    with factory() as s:
        lv, _, _ = service.effective_level(s, merchant_id, member_id)
        return lv.name if lv else None


def count(factory: sessionmaker[Session], model: Any, merchant_id: int) -> int:
    with factory() as s:
        return int(s.scalar(select(func.count()).select_from(model).where(model.merchant_id == merchant_id)) or 0)


def utc(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=dt.UTC)  # type: ignore[arg-type, misc]


