"""Builders for group-buy tests: activities through the service, orders through the checkout
with the group-buy option, sandbox payments through the store API, and read helpers."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from siyu.config import Settings
from siyu.db.session import unit_of_work
from siyu.group_buys import service
from siyu.group_buys.models import GroupSeat, GroupTeam
from siyu.group_buys.schemas import GroupBuyIn
from siyu.kit.timeutil import utcnow
from siyu.orders import checkout
from siyu.orders import service as orders_service
from siyu.orders.models import Order
from siyu.orders.schemas import CheckoutIn
from siyu.worker.runner import Worker

PAY = "/api/store/v1/orders/{}/pay"


def make_group_buy(
    factory: sessionmaker[Session], merchant_id: int, sku_id: int, *, starts_in: dt.timedelta = dt.timedelta(hours=-1),
    lasts: dt.timedelta = dt.timedelta(days=7), **rules: Any,
) -> int:
    now = utcnow()
    body = {
        "name": "双人拼团", "sku_id": sku_id, "team_size": 2, "valid_hours": 24, "group_price": 6000,
        "per_member_limit": 1, "starts_at": now + starts_in, "ends_at": now + starts_in + lasts, **rules,
    }
    with unit_of_work(factory) as s:
        return service.create_group_buy(s, merchant_id, GroupBuyIn.model_validate(body), actor=("staff", None)).id


def submit(
    factory: sessionmaker[Session], merchant_id: int, member_id: int, sku_id: int, activity_id: int,
    team_id: int | None = None, *, quantity: int = 1, now: dt.datetime | None = None, key: str | None = None,
) -> int:
    option: dict[str, Any] = {"activity_id": activity_id}
    if team_id is not None:
        option["team_id"] = team_id
    body = CheckoutIn.model_validate(
        {"items": [{"sku_id": sku_id, "quantity": quantity}], "options": {"group_buy": option}}
    )
    with unit_of_work(factory) as s:
        order, _ = checkout.submit(
            s, merchant_id, member_id, body, idempotency_key=key or uuid.uuid4().hex,
            payment_timeout=dt.timedelta(minutes=30), now=now,
        )
        return order.id


def pay(client: TestClient, order_id: int, headers: dict[str, str]) -> None:
    r = client.post(PAY.format(order_id), headers=headers)
    assert r.status_code == 200, r.text
    r = client.post(r.json()["params"]["complete_url"], headers=headers)
    assert r.status_code == 200, r.text


def drain(factory: sessionmaker[Session], settings: Settings, merchant_id: int, now: dt.datetime | None = None) -> None:
    Worker(factory, settings, merchant_id=merchant_id).drain(now=now)


def team_of(factory: sessionmaker[Session], merchant_id: int, order_id: int) -> GroupTeam:
    with factory() as s:
        seat = s.scalar(select(GroupSeat).where(GroupSeat.merchant_id == merchant_id, GroupSeat.order_id == order_id))
        assert seat is not None
        team = s.get(GroupTeam, seat.team_id)
        assert team is not None
        return team


def team(factory: sessionmaker[Session], team_id: int) -> GroupTeam:
    with factory() as s:
        found = s.get(GroupTeam, team_id)
        assert found is not None
        return found


def seats(factory: sessionmaker[Session], merchant_id: int, team_id: int) -> list[GroupSeat]:
    with factory() as s:
        stmt = select(GroupSeat).where(GroupSeat.merchant_id == merchant_id, GroupSeat.team_id == team_id)
        return list(s.scalars(stmt.order_by(GroupSeat.id)))


def lead(
    client: TestClient, factory: sessionmaker[Session], settings: Settings, merchant_id: int,
    person: tuple[int, dict[str, str]], sku_id: int, activity_id: int, **kw: Any,
) -> tuple[int, int]:
    """A leader opens a team and pays through the sandbox provider; the ``order.paid`` job opens
    the team (开团). ``(order_id, team_id)``."""
    order_id = submit(factory, merchant_id, person[0], sku_id, activity_id, **kw)
    pay(client, order_id, person[1])
    drain(factory, settings, merchant_id)
    found = team_of(factory, merchant_id, order_id)
    assert found.status == "open", found.status
    return order_id, found.id


def mark_paid(factory: sessionmaker[Session], merchant_id: int, order_id: int, *, now: dt.datetime | None = None) -> None:
    """The order paid without a provider (no refund possible), then its ``order.paid`` handling run."""
    with unit_of_work(factory) as s:
        order = s.get(Order, order_id)
        assert order is not None
        orders_service.mark_paid(s, merchant_id, order_id, amount=order.payable_amount, paid_at=now or utcnow(),
                                 actor=("system", None))
    with unit_of_work(factory) as s:
        service.on_order_paid(s, merchant_id, order_id, now=now)


def lead_marked_paid(
    factory: sessionmaker[Session], merchant_id: int, member_id: int, sku_id: int, activity_id: int, **kw: Any
) -> tuple[int, int]:
    """A leader opens a team, paid without a provider (for races and checks that refund nothing)."""
    order_id = submit(factory, merchant_id, member_id, sku_id, activity_id, **kw)
    mark_paid(factory, merchant_id, order_id, now=kw.get("now"))
    found = team_of(factory, merchant_id, order_id)
    assert found.status == "open", found.status
    return order_id, found.id
