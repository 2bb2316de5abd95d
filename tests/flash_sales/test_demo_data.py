"""The demo seed adds a flash sale running now (buyable at once) and a daily two-slot one."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from siyu.db.session import unit_of_work
from siyu.flash_sales import demo_data, service
from siyu.flash_sales import repository as repo
from siyu.flash_sales.models import FlashSale
from siyu.orders import checkout
from siyu.orders.schemas import CheckoutIn
from tests.conftest import Tenant
from tests.factories.orders import buyer, make_sku, sku_stock


def test_demo_seed_adds_a_running_and_a_daily_flash_sale(session_factory: sessionmaker[Session], tenant: Tenant) -> None:
    skus = [make_sku(session_factory, tenant.id, price=10000 + i, stock=40) for i in range(3)]
    with unit_of_work(session_factory) as s:
        demo_data.seed(s, tenant.id)
    with session_factory() as s:
        sales = list(s.scalars(select(FlashSale).where(FlashSale.merchant_id == tenant.id).order_by(FlashSale.id)))
        assert [(f.status, len(f.slots), f.free_shipping) for f in sales] == [("active", 0, True), ("active", 2, False)]
        running = repo.items(s, tenant.id, [sales[0].id])
        assert sorted(it.sku_id for it in running) == sorted(skus[1:])
        assert all(it.activity_stock == 10 for it in running)
        sessions = service.store_sessions(s, tenant.id)
        assert any(x.flash_sale_id == sales[0].id and x.status == "current" for x in sessions)
    assert [sku_stock(session_factory, k) for k in skus] == [30, 30, 30]
    member = buyer(session_factory, tenant.id)
    with unit_of_work(session_factory) as s:
        body = CheckoutIn.model_validate({"items": [{"sku_id": running[0].sku_id, "quantity": 1}],
                                          "options": {"flash_sale": {"item_id": running[0].id}}})
        order, _ = checkout.submit(s, tenant.id, member, body, idempotency_key="demo",
                                   payment_timeout=dt.timedelta(minutes=30))
        assert order.freight_amount == 0 and order.payable_amount == running[0].flash_price
