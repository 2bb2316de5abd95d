"""Two customers' devices racing to open an after-sale on the same line: exactly one wins."""

from __future__ import annotations

import threading
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from siyu.aftersales import service
from siyu.aftersales.models import AfterSale
from siyu.aftersales.schemas import AfterSaleCreate
from siyu.config import Settings
from siyu.db.session import unit_of_work
from siyu.kit.errors import DomainError
from tests.conftest import Tenant, customer_login
from tests.factories.aftersales import line_id, make_product, paid_order


def test_one_open_aftersale_per_line_under_concurrency(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    (sku,) = make_product(session_factory, tenant.id, [2000])
    headers = customer_login(client, tenant)
    order = paid_order(client, tenant, session_factory, headers, [(sku, 3)], completed=True)
    data = AfterSaleCreate.model_validate(
        {
            "kind": "return_refund",
            "reason_code": "damaged",
            "lines": [{"order_line_id": line_id(order, sku), "quantity": 1}],
        }
    )
    barrier = threading.Barrier(6)
    outcomes: list[Any] = []

    def attempt() -> None:
        barrier.wait()
        try:
            with unit_of_work(session_factory) as s:
                aftersale, _ = service.create(s, tenant.id, order["member_id"], order["id"], data, settings)
                outcomes.append(aftersale.id)
        except DomainError as exc:
            outcomes.append(exc.code)

    threads = [threading.Thread(target=attempt) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes, key=str).count("aftersale_quantity_invalid") == 5, outcomes
    with session_factory() as s:
        assert s.scalar(select(func.count()).where(AfterSale.merchant_id == tenant.id)) == 1
