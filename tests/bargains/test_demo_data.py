"""The demo seed adds one running bargain activity on a demo SKU (and a bargain can start)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from siyu.bargains import demo_data, service
from siyu.bargains.models import BargainActivity
from siyu.db.session import unit_of_work
from siyu.kit.timeutil import utcnow
from tests.bargains import helpers as h
from tests.conftest import Tenant
from tests.factories.orders import buyer, make_sku


def test_demo_seed_adds_one_running_bargain(session_factory: sessionmaker[Session], tenant: Tenant) -> None:
    make_sku(session_factory, tenant.id, price=12900, stock=50)
    sku = make_sku(session_factory, tenant.id, price=8800, stock=50)
    with unit_of_work(session_factory) as s:
        demo_data.seed(s, tenant.id)
    with session_factory() as s:
        (act,) = s.scalars(select(BargainActivity).where(BargainActivity.merchant_id == tenant.id)).all()
        assert act.sku_id == sku and act.floor_price == 8800 * 3 // 10
        assert service.effective_status(act, utcnow()) == "active"
        # the stacking settings as the usual practice has them
        assert (act.allows_coupons, act.allows_points, act.allows_order_promotions) == (False, False, False)
    bargain_id = h.start(session_factory, tenant.id, buyer(session_factory, tenant.id), act.id)
    assert sum(h.bargain(session_factory, bargain_id).cuts) == 8800 - 8800 * 3 // 10
