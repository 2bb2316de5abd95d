"""Builders for coupon tests: templates and coupons through the service, products with a
category or coupon flag through the ORM, and read helpers for assertions."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from siyu.catalog.models import PRODUCT_ON_SALE, Category, Product, Sku
from siyu.coupons import service
from siyu.coupons.models import CouponTemplate, MemberCoupon
from siyu.coupons.schemas import TemplateIn
from siyu.db.session import unit_of_work
from siyu.kit.timeutil import utcnow

ADMIN = "/api/admin/v1"
STORE = "/api/store/v1"
SYSTEM = ("system", None)


def template_body(kind: str = "fixed", **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"name": f"券 {kind}", "kind": kind, "validity_mode": "relative", "valid_days": 30,
                            "status": "active", "channels": ["claim", "api", "operator", "code"]}
    if kind in ("fixed", "threshold"):
        body["amount"] = 1000
    if kind == "threshold":
        body["threshold"] = 10000
    if kind == "percent" and "percent_off_bp" not in fields:
        body["percent_off"] = 20
    body.update(fields)
    return body


def make_template(factory: sessionmaker[Session], merchant_id: int, kind: str = "fixed", **fields: Any) -> int:
    with unit_of_work(factory) as s:
        t = service.create_template(s, merchant_id, TemplateIn.model_validate(template_body(kind, **fields)), actor=SYSTEM)
        return t.id


def give(factory: sessionmaker[Session], merchant_id: int, template_id: int, member_id: int,
         now: dt.datetime | None = None) -> int:
    """One coupon of the template in the member's wallet; returns its id."""
    with unit_of_work(factory) as s:
        c = service.issue_to_member(s, merchant_id, template_id, member_id, source="api",
                                    idempotency_key=f"test:{uuid.uuid4().hex}", now=now)
        return c.id


def make_product_sku(
    factory: sessionmaker[Session], merchant_id: int, *, price: int = 10000, stock: int = 100,
    category: bool = False, category_id: int | None = None, coupons_allowed: bool = True,
    free_shipping: bool = False, title: str = "镜框",
) -> tuple[int, int, int | None]:
    """A product with one SKU (optionally in a new category); ``(sku_id, product_id, category_id)``."""
    with unit_of_work(factory) as s:
        if category and category_id is None:
            cat = Category(merchant_id=merchant_id, name=f"cat-{uuid.uuid4().hex[:6]}")
            s.add(cat)
            s.flush()
            category_id = cat.id
        product = Product(merchant_id=merchant_id, title=title, status=PRODUCT_ON_SALE, category_id=category_id,
                          coupons_allowed=coupons_allowed, free_shipping=free_shipping, spec_names=["颜色"], images=[])
        s.add(product)
        s.flush()
        sku = Sku(merchant_id=merchant_id, product_id=product.id, sku_code=f"C-{uuid.uuid4().hex[:12]}",
                  specs={"颜色": "黑"}, list_price=price + 1000, sale_price=price, cost_price=price // 2,
                  weight_g=200, stock=stock, active=True)
        s.add(sku)
        s.flush()
        return sku.id, product.id, category_id


def coupon(factory: sessionmaker[Session], merchant_id: int, coupon_id: int) -> MemberCoupon:
    with factory() as s:
        found = s.scalar(select(MemberCoupon).where(MemberCoupon.merchant_id == merchant_id,
                                                    MemberCoupon.id == coupon_id))
        assert found is not None
        return found


def template(factory: sessionmaker[Session], merchant_id: int, template_id: int) -> CouponTemplate:
    with factory() as s:
        found = s.scalar(select(CouponTemplate).where(CouponTemplate.merchant_id == merchant_id,
                                                      CouponTemplate.id == template_id))
        assert found is not None
        return found


def wallet(factory: sessionmaker[Session], merchant_id: int, member_id: int) -> list[MemberCoupon]:
    with factory() as s:
        stmt = select(MemberCoupon).where(MemberCoupon.merchant_id == merchant_id, MemberCoupon.member_id == member_id)
        return list(s.scalars(stmt.order_by(MemberCoupon.id)))


def fixed_dates(days_from: int = -1, days_until: int = 30) -> dict[str, str | None]:
    now = utcnow()
    return {"validity_mode": "fixed", "valid_days": None,
            "valid_from": (now + dt.timedelta(days=days_from)).isoformat(),
            "valid_until": (now + dt.timedelta(days=days_until)).isoformat()}
