"""Builders for flash-sale tests: activities through the admin API or the service, customers,
checkout preview/submit over HTTP with the flash-sale option, and database read-backs."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import redis
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from siyu.db.session import unit_of_work
from siyu.flash_sales import gate, service
from siyu.flash_sales.models import FlashSaleItem, FlashSaleMemberCounter, FlashSalePurchase
from siyu.flash_sales.schemas import FlashSaleIn
from siyu.kit.timeutil import utcnow
from siyu.orders.models import Order
from tests.conftest import Tenant

ADMIN = "/api/admin/v1"
STORE = "/api/store/v1"
SYSTEM = ("system", None)


def window(start: dt.timedelta = dt.timedelta(hours=-1), end: dt.timedelta = dt.timedelta(days=1)) -> dict[str, Any]:
    now = utcnow()
    return {"starts_at": (now + start).isoformat(), "ends_at": (now + end).isoformat()}


def sale_body(items: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"name": f"秒杀 {uuid.uuid4().hex[:6]}", **window(), "items": items}
    body.update(extra)
    return body


def create_sale(client: TestClient, tenant: Tenant, items: list[dict[str, Any]], *, start: bool = True,
                **extra: Any) -> dict[str, Any]:
    """Create through the admin API (and publish it with ``start``); returns the detail."""
    r = client.post(f"{ADMIN}/flash-sales", json=sale_body(items, **extra), headers=tenant.admin_headers)
    assert r.status_code == 201, r.text
    if start:
        r = client.post(f"{ADMIN}/flash-sales/{r.json()['id']}/start", headers=tenant.admin_headers)
        assert r.status_code == 200, r.text
    return dict(r.json())


def make_sale(factory: sessionmaker[Session], merchant_id: int, items: list[dict[str, Any]], *,
              start: bool = True, **extra: Any) -> tuple[int, list[int]]:
    """The same through the service (no HTTP); returns ``(sale_id, item_ids)``."""
    with unit_of_work(factory) as s:
        sale = service.create_flash_sale(s, merchant_id, FlashSaleIn.model_validate(sale_body(items, **extra)),
                                         actor=SYSTEM)
        if start:
            service.start(s, merchant_id, sale.id, actor=SYSTEM)
        from siyu.flash_sales import repository as repo

        return sale.id, [it.id for it in repo.items(s, merchant_id, [sale.id])]


def fs_option(item_id: int) -> dict[str, Any]:
    return {"flash_sale": {"item_id": item_id}}


def preview(client: TestClient, headers: dict[str, str], sku: int, item_id: int | None, qty: int = 1,
            **extra: Any) -> Any:
    body: dict[str, Any] = {"items": [{"sku_id": sku, "quantity": qty}], **extra}
    if item_id is not None:
        body["options"] = fs_option(item_id)
    return client.post(f"{STORE}/checkout/preview", json=body, headers=headers)


def submit(client: TestClient, headers: dict[str, str], sku: int, item_id: int | None, qty: int = 1,
           **extra: Any) -> Any:
    body: dict[str, Any] = {"items": [{"sku_id": sku, "quantity": qty}], **extra}
    if item_id is not None:
        body["options"] = fs_option(item_id)
    return client.post(f"{STORE}/checkout/submit", json=body, headers={**headers, "Idempotency-Key": uuid.uuid4().hex})


def item_row(factory: sessionmaker[Session], item_id: int) -> FlashSaleItem:
    with factory() as s:
        found = s.get(FlashSaleItem, item_id)
        assert found is not None
        s.expunge(found)
        return found


def counters(factory: sessionmaker[Session], item_id: int) -> dict[int, int]:
    with factory() as s:
        rows = s.execute(select(FlashSaleMemberCounter.member_id, FlashSaleMemberCounter.bought)
                         .where(FlashSaleMemberCounter.item_id == item_id)).all()
        return {int(m): int(b) for m, b in rows if b}


def ledger(factory: sessionmaker[Session], item_id: int) -> dict[str, int]:
    """Units per ledger status of one item."""
    with factory() as s:
        rows = s.execute(
            select(FlashSalePurchase.status, func.sum(FlashSalePurchase.quantity))
            .where(FlashSalePurchase.item_id == item_id).group_by(FlashSalePurchase.status)
        ).all()
        return {str(st): int(q) for st, q in rows}


def order_count(factory: sessionmaker[Session], merchant_id: int) -> int:
    with factory() as s:
        return int(s.scalar(select(func.count()).select_from(Order).where(Order.merchant_id == merchant_id)) or 0)


def state(factory: sessionmaker[Session], merchant_id: int, item_id: int) -> dict[str, Any]:
    """Everything a flash-sale purchase can change, to assert that a refused one changed nothing."""
    row = item_row(factory, item_id)
    return {"sold": row.sold, "activity_stock": row.activity_stock, "counters": counters(factory, item_id),
            "ledger": ledger(factory, item_id), "orders": order_count(factory, merchant_id)}


def redis_state(client: redis.Redis, prefix: str, merchant_id: int, item_id: int) -> gate.Snapshot | None:
    return gate.RedisGate(client, prefix=prefix).snapshot(merchant_id, item_id)


@contextmanager
def bound(engine: Engine, client: redis.Redis | None, prefix: str) -> Iterator[None]:
    """Every session on ``engine`` uses ``client`` under ``prefix`` (the app's startup binding)."""
    previous = gate._BY_ENGINE.get(engine)
    gate.bind_engine(engine, client, prefix=prefix)
    try:
        yield
    finally:
        if previous is None:
            gate.unbind_engine(engine)
        else:
            gate.bind_engine(engine, previous[0], prefix=previous[1])


def login(client: TestClient, tenant: Tenant) -> tuple[dict[str, str], int]:
    """A customer with a default address: ``(auth headers, member_id)``."""
    r = client.post(f"{STORE}/auth/wechat-login", json={"code": f"sandbox-{uuid.uuid4().hex[:12]}"},
                    headers=tenant.store_headers)
    assert r.status_code == 200, r.text
    headers = {"Authorization": f"Bearer {r.json()['token']}"}
    body = {"name": "张三", "phone": "13800000000", "province": "浙江省", "city": "杭州市", "detail": "西湖路 1 号",
            "is_default": True}
    a = client.post(f"{STORE}/addresses", json=body, headers=headers)
    assert a.status_code == 201, a.text
    return headers, int(r.json()["member_id"])


def many_buyers(factory: sessionmaker[Session], merchant_id: int, n: int) -> list[int]:
    """``n`` members with a default address, in one transaction (concurrency tests, benchmarks)."""
    from siyu.members.models import Member
    from siyu.orders.models import Address

    with unit_of_work(factory) as s:
        members = [Member(merchant_id=merchant_id, openid=f"fs-{uuid.uuid4().hex}", registered_at=utcnow())
                   for _ in range(n)]
        s.add_all(members)
        s.flush()
        s.add_all(
            Address(merchant_id=merchant_id, member_id=m.id, name="张三", phone="13800000000", province="浙江省",
                    city="杭州市", district="西湖区", detail="文三路 1 号", is_default=True)
            for m in members
        )
        s.flush()
        return [m.id for m in members]


def buy(client: TestClient, headers: dict[str, str], item: int, key: str | None = None) -> Any:
    """``POST .../flash-sales/{item}/buy`` for one unit (a new Idempotency-Key unless given)."""
    return client.post(f"{STORE}/flash-sales/{item}/buy", json={"quantity": 1},
                       headers={**headers, "Idempotency-Key": key or uuid.uuid4().hex})
