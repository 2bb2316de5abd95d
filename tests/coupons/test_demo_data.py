"""Demo data: every kind of template, wallets filled, and seeding twice adds nothing."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from siyu.catalog.models import Category
from siyu.coupons import demo_data
from siyu.coupons.models import CouponCode, CouponTemplate, MemberCoupon
from siyu.db.session import unit_of_work
from tests.conftest import Tenant
from tests.factories.orders import make_member


def test_seed_makes_every_kind_and_fills_wallets_once(session_factory: sessionmaker[Session], tenant: Tenant) -> None:
    members = [make_member(session_factory, tenant.id) for _ in range(6)]
    with unit_of_work(session_factory) as s:
        s.add(Category(merchant_id=tenant.id, name="镜片"))
    for _ in range(2):
        with unit_of_work(session_factory) as s:
            demo_data.seed(s, tenant.id)
    with session_factory() as s:
        kinds = set(s.scalars(select(CouponTemplate.kind).where(CouponTemplate.merchant_id == tenant.id)))
        templates = s.scalar(select(func.count()).select_from(CouponTemplate)
                             .where(CouponTemplate.merchant_id == tenant.id))
        per_member = dict(s.execute(
            select(MemberCoupon.member_id, func.count()).where(MemberCoupon.merchant_id == tenant.id)
            .group_by(MemberCoupon.member_id)
        ).all())
        codes = s.scalar(select(func.count()).select_from(CouponCode).where(CouponCode.merchant_id == tenant.id))
    assert kinds == {"fixed", "threshold", "percent", "free_shipping"} and templates == 6
    assert [per_member[m] for m in members] == [1, 2, 3, 4, 1, 2] and codes == 20
