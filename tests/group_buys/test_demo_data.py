"""The demo seed adds one running group buy on a demo SKU (and can be opened at once)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from siyu.db.session import unit_of_work
from siyu.group_buys import demo_data, service
from siyu.group_buys.models import GroupBuy
from siyu.kit.timeutil import utcnow
from tests.conftest import Tenant
from tests.factories.orders import buyer, make_sku
from tests.group_buys import helpers as h


def test_demo_seed_adds_one_running_group_buy(session_factory: sessionmaker[Session], tenant: Tenant) -> None:
    sku = make_sku(session_factory, tenant.id, price=12900, stock=50)
    make_sku(session_factory, tenant.id, price=8800, stock=50)
    with unit_of_work(session_factory) as s:
        demo_data.seed(s, tenant.id)
    with session_factory() as s:
        (gb,) = s.scalars(select(GroupBuy).where(GroupBuy.merchant_id == tenant.id)).all()
        assert gb.sku_id == sku and gb.group_price < 12900 and service.effective_status(gb, utcnow()) == "active"
        # the stacking settings as the usual practice has them
        assert (gb.allows_coupons, gb.allows_points, gb.allows_order_promotions, gb.free_shipping) == (
            False, False, False, True)
    order_id = h.submit(session_factory, tenant.id, buyer(session_factory, tenant.id), sku, gb.id)
    assert h.team_of(session_factory, tenant.id, order_id).size == 3
