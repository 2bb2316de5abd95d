"""Freight templates: count and weight modes, region rules, fallback, free threshold, unreachable
regions, free-shipping products and flags, the default template, and the admin CRUD."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from siyu.kit.errors import DomainError
from siyu.kit.timeutil import utcnow
from siyu.orders import checkout
from siyu.orders.checkout import build_lines
from siyu.orders.freight import template_fee
from siyu.orders.models import FreightTemplate
from siyu.orders.pricing import PricedLine, PricingContext
from siyu.orders.schemas import CheckoutIn
from siyu.orders.stages import freight_stage
from tests.conftest import Tenant
from tests.factories.orders import buyer, make_freight_template, make_sku

RULES = [
    {"regions": ["浙江省", "上海市"], "first_units": 1, "first_fee": 600, "extra_units": 1, "extra_fee": 100},
    {"regions": ["*"], "first_units": 2, "first_fee": 1000, "extra_units": 2, "extra_fee": 500},
]


def _template(**kw: Any) -> FreightTemplate:
    values: dict[str, Any] = {"mode": "count", "rules": RULES, "free_threshold": None, "unreachable_regions": []}
    values.update(kw)
    return FreightTemplate(**values)


def _line(quantity: int = 1, price: int = 1000, weight_g: int = 300, **kw: Any) -> PricedLine:
    values: dict[str, Any] = dict(
        sku_id=1, product_id=1, category_id=None, title="t", spec_text="", image_url=None, quantity=quantity,
        list_price=price, sale_price=price, cost_price=0, weight_g=weight_g, free_shipping=False,
        coupons_allowed=True, bonus_points=0,
    )
    values.update(kw)
    return PricedLine(**values)


def test_count_mode_region_rule_and_extra_units() -> None:
    t = _template()
    assert template_fee(t, [_line(1)], "浙江省") == 600
    assert template_fee(t, [_line(3)], "上海市") == 600 + 2 * 100
    assert template_fee(t, [_line(2), _line(2)], "浙江省") == 600 + 3 * 100


def test_wildcard_fallback_with_started_blocks() -> None:
    t = _template()
    assert template_fee(t, [_line(2)], "广东省") == 1000
    assert template_fee(t, [_line(3)], "广东省") == 1000 + 500  # one started block of 2
    assert template_fee(t, [_line(5)], "广东省") == 1000 + 2 * 500


def test_weight_mode_counts_grams() -> None:
    rules = [{"regions": ["*"], "first_units": 1000, "first_fee": 800, "extra_units": 500, "extra_fee": 300}]
    t = _template(mode="weight", rules=rules)
    assert template_fee(t, [_line(2, weight_g=400)], "北京市") == 800  # 800 g
    assert template_fee(t, [_line(3, weight_g=400)], "北京市") == 800 + 300  # 1200 g
    assert template_fee(t, [_line(1, weight_g=2001)], "北京市") == 800 + 3 * 300


def test_free_threshold_uses_the_amount_after_discounts() -> None:
    t = _template(free_threshold=5000)
    line = _line(5, price=1000)
    assert template_fee(t, [line], "浙江省") == 0
    line.discounts["coupons"] = 1
    assert template_fee(t, [line], "浙江省") == 600 + 4 * 100


def test_unreachable_and_unmatched_regions() -> None:
    t = _template(unreachable_regions=["西藏自治区"])
    with pytest.raises(DomainError) as err:
        template_fee(t, [_line()], "西藏自治区")
    assert err.value.code == "region_not_deliverable" and err.value.status == 409
    no_wildcard = _template(rules=[RULES[0]])
    with pytest.raises(DomainError) as err:
        template_fee(no_wildcard, [_line()], "新疆维吾尔自治区")
    assert err.value.code == "region_not_deliverable"


def _preview(factory: sessionmaker[Session], tenant: Tenant, member_id: int, items: list[tuple[int, int]]) -> Any:
    with factory() as s:
        body = CheckoutIn.model_validate({"items": [{"sku_id": k, "quantity": q} for k, q in items]})
        return checkout.preview(s, tenant.id, member_id, body)


def test_pipeline_uses_product_template_default_template_and_free_shipping(
    session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    default_id = make_freight_template(session_factory, tenant.id, default=True)  # 800 + 200/unit
    special_id = make_freight_template(
        session_factory, tenant.id, rules=[{"regions": ["*"], "first_units": 1, "first_fee": 1500}]
    )
    plain = make_sku(session_factory, tenant.id, price=1000)
    special = make_sku(session_factory, tenant.id, price=1000, freight_template_id=special_id)
    free = make_sku(session_factory, tenant.id, price=1000, free_shipping=True)
    member = buyer(session_factory, tenant.id)
    assert _preview(session_factory, tenant, member, [(plain, 2)]).freight_amount == 1000
    assert _preview(session_factory, tenant, member, [(special, 3)]).freight_amount == 1500
    assert _preview(session_factory, tenant, member, [(free, 3)]).freight_amount == 0
    out = _preview(session_factory, tenant, member, [(plain, 1), (special, 1), (free, 5)])
    assert out.freight_amount == 800 + 1500
    assert out.payable_amount == 7000 + 2300
    assert [r["stage"] for r in out.breakdown][-2:] == ["freight", "payable"]
    assert default_id


def test_unreachable_province_is_409_in_checkout(session_factory: sessionmaker[Session], tenant: Tenant) -> None:
    make_freight_template(session_factory, tenant.id, default=True, unreachable=["西藏自治区"])
    sku = make_sku(session_factory, tenant.id)
    member = buyer(session_factory, tenant.id, province="西藏自治区")
    with pytest.raises(DomainError) as err:
        _preview(session_factory, tenant, member, [(sku, 1)])
    assert err.value.code == "region_not_deliverable"


def test_free_shipping_flag_from_an_earlier_stage(session_factory: sessionmaker[Session], tenant: Tenant) -> None:
    make_freight_template(session_factory, tenant.id, default=True)
    sku = make_sku(session_factory, tenant.id)
    with session_factory() as s:
        lines = build_lines(s, tenant.id, [(sku, 1)])
        ctx = PricingContext(session=s, merchant_id=tenant.id, member_id=None, lines=lines, now=utcnow(), province="浙江省")
        freight_stage(ctx)
        assert ctx.freight == 800
        ctx.free_shipping = True  # e.g. a free-shipping coupon
        freight_stage(ctx)
        assert ctx.freight == 0
        ctx.free_shipping = False
        lines[0].flags["free_shipping"] = True  # e.g. an activity that ships free
        freight_stage(ctx)
        assert ctx.freight == 0


def test_admin_crud_with_one_default(client: TestClient, tenant: Tenant) -> None:
    h = tenant.admin_headers
    body = {"name": "顺丰", "mode": "count", "rules": RULES, "is_default": True}
    first = client.post("/api/admin/v1/freight-templates", json=body, headers=h)
    assert first.status_code == 201, first.text
    second = client.post("/api/admin/v1/freight-templates", json={**body, "name": "中通"}, headers=h)
    listed = client.get("/api/admin/v1/freight-templates", headers=h).json()
    assert [t["is_default"] for t in listed] == [False, True]
    r = client.patch(f"/api/admin/v1/freight-templates/{first.json()['id']}", json={"free_threshold": 9900}, headers=h)
    assert r.status_code == 200 and r.json()["free_threshold"] == 9900
    r = client.delete(f"/api/admin/v1/freight-templates/{second.json()['id']}", headers=h)
    assert r.status_code == 204
    assert len(client.get("/api/admin/v1/freight-templates", headers=h).json()) == 1


def test_admin_bad_templates_change_nothing(client: TestClient, tenant: Tenant) -> None:
    h = tenant.admin_headers
    bad = [
        {"name": "x", "mode": "volume", "rules": RULES},
        {"name": "x", "rules": []},
        {"name": "x", "rules": [{"regions": ["*"], "first_units": 0, "first_fee": 1}]},
        {"name": "x", "rules": [{"regions": ["*"], "first_units": 1, "first_fee": -1}]},
        {"name": "x", "rules": [RULES[0], {**RULES[1], "regions": ["浙江省"]}]},
    ]
    for body in bad:
        r = client.post("/api/admin/v1/freight-templates", json=body, headers=h)
        assert r.status_code == 422 and r.json()["code"] == "validation_error", body
    assert client.get("/api/admin/v1/freight-templates", headers=h).json() == []


def test_other_merchants_template_is_404(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session]
) -> None:
    from siyu.db.session import unit_of_work
    from siyu.tenancy import service
    from tests.conftest import unique

    with unit_of_work(session_factory) as s:
        other = service.create_merchant(s, code=unique("o"), name="Other").id
    foreign = make_freight_template(session_factory, other)
    r = client.patch(f"/api/admin/v1/freight-templates/{foreign}", json={"name": "mine"}, headers=tenant.admin_headers)
    assert r.status_code == 404 and r.json()["code"] == "not_found"
