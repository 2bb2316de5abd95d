"""The demo data seeds one active promotion of each kind, and they price a real checkout."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from siyu.db.session import unit_of_work
from siyu.promotions import demo_data
from siyu.promotions.models import KINDS, Promotion
from tests.conftest import Tenant
from tests.factories.orders import make_sku
from tests.factories.promotions import preview, shopper


def test_one_active_promotion_of_each_kind(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session]
) -> None:
    skus = [make_sku(session_factory, tenant.id, price=5000 + 1000 * i, free_shipping=True) for i in range(16)]
    with unit_of_work(session_factory) as s:
        demo_data.seed(s, tenant.id)
    with session_factory() as s:
        promos = list(s.scalars(select(Promotion).where(Promotion.merchant_id == tenant.id)))
    assert sorted(p.kind for p in promos) == sorted(KINDS)
    assert all(p.status == "active" for p in promos)
    headers = shopper(client, tenant)
    out = preview(client, headers, [(skus[12], 1), (skus[15], 2)]).json()  # ¥170 + 2 x ¥200
    codes = {row["code"].split(":")[0] for row in out["breakdown"]}
    assert {"first_order", "spend_save", "spend_gift"} <= codes
    assert any(n["code"] == "add_on_offer" for n in out["notes"]["order_promotions"])
