"""The demo's customers get stages, RFM tiers and saved segments from their seeded orders."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from siyu.audience import demo_data
from siyu.audience.models import MemberStats, PredictionModel, Segment
from siyu.db.session import unit_of_work
from siyu.kit.timeutil import utcnow
from siyu.orders import service as orders_service
from tests.conftest import Tenant
from tests.factories.orders import buyer, make_sku, submit_order


def test_demo_seed_computes_stages_and_saves_segments(session_factory: sessionmaker[Session], tenant: Tenant) -> None:
    sku = make_sku(session_factory, tenant.id, price=120000, stock=10)
    member = buyer(session_factory, tenant.id)
    order = submit_order(session_factory, tenant.id, member, [(sku, 1)])
    with unit_of_work(session_factory) as s:
        orders_service.mark_paid(s, tenant.id, order.id, amount=order.payable_amount, paid_at=utcnow(),
                                 actor=("payment", None))
    with unit_of_work(session_factory) as s:
        demo_data.seed(s, tenant.id)
    with unit_of_work(session_factory) as s:
        demo_data.seed(s, tenant.id)  # a second run adds nothing
    with session_factory() as s:
        stats = s.scalars(select(MemberStats).where(MemberStats.merchant_id == tenant.id, MemberStats.member_id == member)).one()
        assert stats.paid_orders == 1 and stats.paid_total == 120000 and stats.lifecycle_stage == "active"
        assert stats.rfm_tier is not None
        model = s.scalars(select(PredictionModel).where(PredictionModel.merchant_id == tenant.id)).first()
        assert model is not None and (model.status == "fitted" or model.reason)  # thin history: skipped, with why
        saved = s.scalars(select(Segment).where(Segment.merchant_id == tenant.id)).all()
        assert sorted(seg.name for seg in saved) == sorted(name for name, _, _ in demo_data.SEGMENTS)
        high_value = next(seg for seg in saved if seg.name == "高价值活跃会员")
        assert high_value.member_count == 1
        assert s.scalar(select(func.count()).select_from(Segment).where(Segment.merchant_id == tenant.id)) == 3
