"""Builders for order tests: products/SKUs straight through the ORM, members, addresses,
freight templates, and orders through the checkout service."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from siyu.catalog.models import PRODUCT_ON_SALE, Product, Sku
from siyu.db.session import unit_of_work
from siyu.kit.timeutil import utcnow
from siyu.members.models import Member
from siyu.orders import checkout
from siyu.orders.models import Address, FreightTemplate, Order
from siyu.orders.schemas import CheckoutIn


def make_sku(
    factory: sessionmaker[Session],
    merchant_id: int,
    *,
    price: int = 10000,
    list_price: int | None = None,
    stock: int = 100,
    weight_g: int = 500,
    status: str = PRODUCT_ON_SALE,
    active: bool = True,
    free_shipping: bool = False,
    freight_template_id: int | None = None,
    bonus_points: int = 0,
    title: str = "镜框 Frame",
) -> int:
    """A product with one SKU; returns the SKU id."""
    with unit_of_work(factory) as s:
        product = Product(
            merchant_id=merchant_id, title=title, status=status, free_shipping=free_shipping,
            freight_template_id=freight_template_id, bonus_points=bonus_points, spec_names=["颜色"], images=[],
        )
        s.add(product)
        s.flush()
        sku = Sku(
            merchant_id=merchant_id, product_id=product.id, sku_code=f"S-{uuid.uuid4().hex[:12]}", specs={"颜色": "黑"},
            list_price=list_price if list_price is not None else price + 2000, sale_price=price, cost_price=price // 2,
            weight_g=weight_g, stock=stock, active=active,
        )
        s.add(sku)
        s.flush()
        return sku.id


def sku_stock(factory: sessionmaker[Session], sku_id: int) -> int:
    with factory() as s:
        sku = s.get(Sku, sku_id)
        assert sku is not None
        return sku.stock


def make_member(factory: sessionmaker[Session], merchant_id: int) -> int:
    with unit_of_work(factory) as s:
        member = Member(merchant_id=merchant_id, openid=f"test-{uuid.uuid4().hex}", registered_at=utcnow())
        s.add(member)
        s.flush()
        return member.id


def make_address(
    factory: sessionmaker[Session], merchant_id: int, member_id: int, *, province: str = "浙江省", default: bool = True
) -> int:
    with unit_of_work(factory) as s:
        address = Address(
            merchant_id=merchant_id, member_id=member_id, name="张三", phone="13800000000", province=province,
            city="杭州市", district="西湖区", detail="文三路 1 号", is_default=default,
        )
        s.add(address)
        s.flush()
        return address.id


def make_freight_template(
    factory: sessionmaker[Session],
    merchant_id: int,
    *,
    rules: list[dict[str, Any]] | None = None,
    mode: str = "count",
    free_threshold: int | None = None,
    unreachable: list[str] | None = None,
    default: bool = False,
) -> int:
    with unit_of_work(factory) as s:
        template = FreightTemplate(
            merchant_id=merchant_id, name="标准快递", mode=mode,
            rules=rules or [{"regions": ["*"], "first_units": 1, "first_fee": 800, "extra_units": 1, "extra_fee": 200}],
            free_threshold=free_threshold, unreachable_regions=unreachable or [], is_default=default,
        )
        s.add(template)
        s.flush()
        return template.id


def buyer(factory: sessionmaker[Session], merchant_id: int, *, province: str = "浙江省") -> int:
    """A member with a default address."""
    member_id = make_member(factory, merchant_id)
    make_address(factory, merchant_id, member_id, province=province)
    return member_id


def submit_order(
    factory: sessionmaker[Session],
    merchant_id: int,
    member_id: int,
    items: list[tuple[int, int]],
    *,
    key: str | None = None,
    timeout_minutes: int = 30,
    now: dt.datetime | None = None,
) -> Order:
    with unit_of_work(factory) as s:
        order, _ = checkout.submit(
            s, merchant_id, member_id,
            CheckoutIn.model_validate({"items": [{"sku_id": k, "quantity": q} for k, q in items]}),
            idempotency_key=key or uuid.uuid4().hex, payment_timeout=dt.timedelta(minutes=timeout_minutes), now=now,
        )
        return order
