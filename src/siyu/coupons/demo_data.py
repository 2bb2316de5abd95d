"""Demo data: coupon templates of every kind and channel, and coupons in demo members' wallets.

- 新人专享 ¥10 无门槛 (fixed, on registration and in the claim centre, 30 days after receipt)
- 满 200 减 30 (threshold, claim centre, 1,000 in all, 2 per member)
- 全场 9 折 最高减 ¥50 (percent with a cap, redeem codes and operator issue)
- 包邮券 (free shipping, stackable, claim centre and after payment)
- 下单返券 满 300 减 50 (threshold, stackable, after a payment of ¥100 or more)
- 品类券: the first category, 满 500 减 80 (category scope)
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from siyu.catalog.models import Category
from siyu.coupons import service
from siyu.coupons.models import CouponTemplate
from siyu.coupons.schemas import TemplateIn
from siyu.kit.errors import DomainError
from siyu.kit.timeutil import utcnow
from siyu.members.models import Member

ACTOR = ("system", None)


def _template(session: Session, merchant_id: int, **fields: Any) -> CouponTemplate:
    body = TemplateIn.model_validate({"validity_mode": "relative", "valid_days": 30, "status": "active", **fields})
    return service.create_template(session, merchant_id, body, actor=ACTOR)


def seed(session: Session, merchant_id: int) -> None:
    if session.scalar(select(CouponTemplate.id).where(CouponTemplate.merchant_id == merchant_id).limit(1)):
        return  # already seeded
    now = utcnow()
    category_id = session.scalar(
        select(Category.id).where(Category.merchant_id == merchant_id).order_by(Category.id).limit(1)
    )
    newcomer = _template(session, merchant_id, name="新人专享 ¥10 无门槛", kind="fixed", amount=1000,
                         channels=["registration", "claim"])
    spend = _template(session, merchant_id, name="满 200 减 30", kind="threshold", amount=3000, threshold=20000,
                      total_quantity=1000, per_member_limit=2, channels=["claim", "operator"])
    percent = _template(session, merchant_id, name="全场 9 折 最高减 ¥50", kind="percent", percent_off=10,
                        max_discount=5000, channels=["code", "operator"], validity_mode="fixed", valid_days=None,
                        valid_from=now - dt.timedelta(days=1), valid_until=now + dt.timedelta(days=60))
    shipping = _template(session, merchant_id, name="包邮券", kind="free_shipping", stackable=True,
                         per_member_limit=3, channels=["claim", "after_payment"], valid_days=14)
    _template(session, merchant_id, name="下单返券 满 300 减 50", kind="threshold", amount=5000, threshold=30000,
              stackable=True, per_member_limit=5, channels=["after_payment"], after_payment_min_amount=10000)
    if category_id is not None:
        _template(session, merchant_id, name="品类券 满 500 减 80", kind="threshold", amount=8000, threshold=50000,
                  scope="categories", scope_ids=[category_id], channels=["claim", "operator"])
    service.generate_codes(session, merchant_id, percent.id, 20, actor=ACTOR)
    members = list(session.scalars(
        select(Member.id).where(Member.merchant_id == merchant_id).order_by(Member.id).limit(40)
    ))
    for i, member_id in enumerate(members):
        for tpl in (newcomer, spend, percent, shipping)[: 1 + i % 4]:
            try:
                service.issue_to_member(session, merchant_id, tpl.id, member_id, source="operator",
                                        idempotency_key=f"demo:{tpl.id}:{member_id}", now=now)
            except DomainError:
                continue
