"""One case per admin create that takes an ``Idempotency-Key``: where to post, a valid body, and
a builder of other valid bodies (each call a new one) for "the same key, another request".

``model`` counts what the create writes (rows of the merchant); ``duplicate`` is the code with
which the domain itself refuses the exact same body sent again without a key (None: it creates
twice, as it always did)."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from siyu.audience.models import Segment
from siyu.bargains.models import BargainActivity
from siyu.catalog.models import Category, Product, Sku
from siyu.coupons.models import CouponCode, CouponTemplate
from siyu.flash_sales.models import FlashSale, FlashSaleItem
from siyu.group_buys.models import GroupBuy
from siyu.idempotency.models import IdempotentRequest
from siyu.kit.timeutil import utcnow
from siyu.loyalty.models import CardPlan, Level
from siyu.orders.models import FreightTemplate
from siyu.promotions.models import Promotion
from siyu.referral.models import CommissionRule, DistributorLevel
from siyu.storefront.models import HomeSlot
from siyu.tenancy.models import AuthToken, Staff
from tests.conftest import Tenant
from tests.coupons.helpers import make_template, template_body
from tests.factories.catalog import create_product, product_body, sku_body
from tests.factories.orders import make_sku

ADMIN = "/api/admin/v1"
Factory = sessionmaker[Session]
Body = dict[str, Any]


@dataclass
class Case:
    url: str
    body: Body
    other: Callable[[], Body]  # another valid body for the same url
    model: Any
    duplicate: str | None = None


def _n() -> str:
    return uuid.uuid4().hex[:8]


def _window(hours: float = -1) -> dict[str, str]:
    now = utcnow()
    return {"starts_at": (now + dt.timedelta(hours=hours)).isoformat(),
            "ends_at": (now + dt.timedelta(days=3)).isoformat()}


def category(client: TestClient, factory: Factory, tenant: Tenant) -> Case:
    return Case(f"{ADMIN}/categories", {"name": f"镜架 {_n()}"}, lambda: {"name": f"太阳镜 {_n()}"}, Category)


def product(client: TestClient, factory: Factory, tenant: Tenant) -> Case:
    return Case(f"{ADMIN}/products", product_body(f"方框 {_n()}"), lambda: product_body(f"圆框 {_n()}"), Product,
                duplicate="sku_code_taken")


def sku(client: TestClient, factory: Factory, tenant: Tenant) -> Case:
    made = create_product(client, tenant, spec_names=["颜色"])
    return Case(f"{ADMIN}/products/{made['id']}/skus", sku_body({"颜色": "红"}),
                lambda: sku_body({"颜色": f"蓝 {_n()}"}), Sku, duplicate="validation_error")


def coupon_template(client: TestClient, factory: Factory, tenant: Tenant) -> Case:
    return Case(f"{ADMIN}/coupon-templates", template_body("fixed"),
                lambda: template_body("fixed", name=f"券 {_n()}", amount=500), CouponTemplate)


def coupon_codes(client: TestClient, factory: Factory, tenant: Tenant) -> Case:
    template = make_template(factory, tenant.id, "fixed", amount=300, channels=["code"])
    counts = iter(range(3, 100))
    return Case(f"{ADMIN}/coupon-templates/{template}/codes", {"count": 2}, lambda: {"count": next(counts)},
                CouponCode)


def flash_sale(client: TestClient, factory: Factory, tenant: Tenant) -> Case:
    skus = [make_sku(factory, tenant.id, price=10000, stock=1000) for _ in range(2)]

    def body(name: str) -> Body:
        return {"name": name, **_window(), "items": [{"sku_id": s, "flash_price": 5000, "activity_stock": 2}
                                                    for s in skus]}

    return Case(f"{ADMIN}/flash-sales", body("秒杀"), lambda: body(f"秒杀 {_n()}"), FlashSale)


def flash_sale_item(client: TestClient, factory: Factory, tenant: Tenant) -> Case:
    first = make_sku(factory, tenant.id, price=10000, stock=1000)
    r = client.post(f"{ADMIN}/flash-sales", headers=tenant.admin_headers, json={
        "name": "秒杀", **_window(hours=2), "items": [{"sku_id": first, "flash_price": 5000, "activity_stock": 2}]})
    assert r.status_code == 201, r.text

    def body() -> Body:
        return {"sku_id": make_sku(factory, tenant.id, price=10000, stock=1000), "flash_price": 4000,
                "activity_stock": 3}

    return Case(f"{ADMIN}/flash-sales/{r.json()['id']}/items", body(), body, FlashSaleItem,
                duplicate="validation_error")


def promotion(client: TestClient, factory: Factory, tenant: Tenant) -> Case:
    target = make_sku(factory, tenant.id, price=10000)

    def body(price: int) -> Body:
        return {"name": f"限时折扣 {_n()}", "kind": "limited_discount", **_window(hours=2),
                "rules": {"items": [{"sku_id": target, "price": price}]}}

    prices = iter(range(7000, 9000))
    return Case(f"{ADMIN}/promotions", body(8000), lambda: body(next(prices)), Promotion)


def group_buy(client: TestClient, factory: Factory, tenant: Tenant) -> Case:
    target = make_sku(factory, tenant.id, price=10000)

    def body() -> Body:
        return {"name": f"拼团 {_n()}", "sku_id": target, "team_size": 2, "group_price": 8000, **_window()}

    return Case(f"{ADMIN}/group-buys", body(), body, GroupBuy)


def bargain_activity(client: TestClient, factory: Factory, tenant: Tenant) -> Case:
    target = make_sku(factory, tenant.id, price=10000)

    def body() -> Body:
        return {"name": f"砍价 {_n()}", "sku_id": target, "floor_price": 100, "helpers_needed": 3,
                "valid_hours": 24, **_window()}

    return Case(f"{ADMIN}/bargain-activities", body(), body, BargainActivity)


def freight_template(client: TestClient, factory: Factory, tenant: Tenant) -> Case:
    def body() -> Body:
        return {"name": f"顺丰 {_n()}", "rules": [{"regions": ["*"], "first_units": 1, "first_fee": 800}]}

    return Case(f"{ADMIN}/freight-templates", body(), body, FreightTemplate)


def loyalty_level(client: TestClient, factory: Factory, tenant: Tenant) -> Case:
    ranks = iter(range(2, 100))
    return Case(f"{ADMIN}/loyalty/levels", {"rank": 1, "name": "金卡"},
                lambda: {"rank": next(ranks), "name": f"钻石 {_n()}"}, Level, duplicate="level_rank_taken")


def card_plan(client: TestClient, factory: Factory, tenant: Tenant) -> Case:
    def body() -> Body:
        return {"name": f"年卡 {_n()}", "product_id": create_product(client, tenant, f"年卡 {_n()}")["id"], "free_shipping": True}

    return Case(f"{ADMIN}/loyalty/cards", body(), body, CardPlan, duplicate="card_product_taken")


def referral_level(client: TestClient, factory: Factory, tenant: Tenant) -> Case:
    def body() -> Body:
        return {"name": f"L-{_n()}", "tier1_rate_bp": 1000, "tier2_rate_bp": 500}

    return Case(f"{ADMIN}/referral/levels", body(), body, DistributorLevel, duplicate="distributor_level_name_taken")


def commission_rule(client: TestClient, factory: Factory, tenant: Tenant) -> Case:
    def body() -> Body:
        return {"name": f"规则 {_n()}", "tier1_rate_bp": 800}

    return Case(f"{ADMIN}/referral/commission-rules", body(), body, CommissionRule)


def home_slot(client: TestClient, factory: Factory, tenant: Tenant) -> Case:
    def body() -> Body:
        return {"kind": "banner", "title": f"新品 {_n()}", "image_url": "https://img.example.com/b1.jpg"}

    return Case(f"{ADMIN}/home-slots", body(), body, HomeSlot)


def staff(client: TestClient, factory: Factory, tenant: Tenant) -> Case:
    def body() -> Body:
        return {"username": f"clerk-{_n()}", "display_name": "店员", "password": "clerk-pass-1", "role": "operator"}

    return Case(f"{ADMIN}/staff", body(), body, Staff, duplicate="username_taken")


def api_key(client: TestClient, factory: Factory, tenant: Tenant) -> Case:
    return Case(f"{ADMIN}/api-keys", {"name": "ERP"}, lambda: {"name": f"ERP {_n()}"}, AuthToken)


def segment(client: TestClient, factory: Factory, tenant: Tenant) -> Case:
    def body() -> Body:
        return {"name": f"杭州 {_n()}", "definition": {"type": "attribute", "field": "city", "op": "eq",
                                                        "value": "杭州市"}}

    return Case(f"{ADMIN}/segments", body(), body, Segment, duplicate="segment_name_taken")


CASES: dict[str, Callable[[TestClient, Factory, Tenant], Case]] = {
    "category": category,
    "product": product,
    "sku": sku,
    "coupon_template": coupon_template,
    "coupon_codes": coupon_codes,
    "flash_sale": flash_sale,
    "flash_sale_item": flash_sale_item,
    "promotion": promotion,
    "group_buy": group_buy,
    "bargain_activity": bargain_activity,
    "freight_template": freight_template,
    "loyalty_level": loyalty_level,
    "card_plan": card_plan,
    "referral_level": referral_level,
    "commission_rule": commission_rule,
    "home_slot": home_slot,
    "staff": staff,
    "api_key": api_key,
    "segment": segment,
}


def count(factory: Factory, model: Any, merchant_id: int) -> int:
    with factory() as s:
        stmt = select(func.count()).select_from(model).where(model.merchant_id == merchant_id)
        return int(s.scalar(stmt) or 0)


def keys(factory: Factory, merchant_id: int) -> list[IdempotentRequest]:
    with factory() as s:
        stmt = select(IdempotentRequest).where(IdempotentRequest.merchant_id == merchant_id).order_by(
            IdempotentRequest.id)
        return list(s.scalars(stmt))


def keyed(headers: dict[str, str], key: str) -> dict[str, str]:
    return {**headers, "Idempotency-Key": key}
