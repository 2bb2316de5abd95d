"""Limited-time discounts and first-order specials never price a virtual product (``products.kind``:
a membership card, a service): listing its SKU is refused with ``promotion_virtual_product``, and
a product made virtual after a promotion listed its SKU is sold at its own price."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from siyu.catalog.models import KIND_VIRTUAL, Product, Sku
from siyu.db.session import unit_of_work
from tests.conftest import Tenant
from tests.factories.orders import make_sku
from tests.factories.promotions import (
    ADMIN,
    create_promotion,
    entries,
    preview,
    promotion_body,
    shopper,
    submit,
)


def _make_virtual(factory: sessionmaker[Session], sku_id: int) -> None:
    with unit_of_work(factory) as s:
        sku = s.get(Sku, sku_id)
        assert sku is not None
        s.execute(update(Product).where(Product.id == sku.product_id).values(kind=KIND_VIRTUAL))


def test_listing_a_virtual_sku_in_a_limited_discount_or_first_order_special_is_refused(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session]
) -> None:
    physical = make_sku(session_factory, tenant.id, price=10000, free_shipping=True)
    card = make_sku(session_factory, tenant.id, price=19900, free_shipping=True, title="年卡 Annual card")
    _make_virtual(session_factory, card)
    for kind, items in (
        ("limited_discount", [{"sku_id": physical, "price": 8000}, {"sku_id": card, "price": 9900}]),
        ("first_order", [{"sku_id": card, "price": 100}]),
    ):
        for lang, words in (("zh-CN", "虚拟商品"), ("en", "Virtual products")):
            r = client.post(f"{ADMIN}/promotions", json=promotion_body(kind, {"items": items}),
                            headers={**tenant.admin_headers, "Accept-Language": lang})
            assert r.status_code == 422, r.text
            problem = r.json()
            assert problem["code"] == "promotion_virtual_product"
            assert words in problem["message"] and str(card) in problem["message"]
            index = [it["sku_id"] for it in items].index(card)
            assert problem["fields"] == [{"path": f"rules.items.{index}.sku_id", "code": "virtual_product",
                                          "message": "a virtual product's SKU cannot be listed"}]
    r = client.get(f"{ADMIN}/promotions", headers=tenant.admin_headers)
    assert r.status_code == 200 and r.json()["total"] == 0  # nothing was created
    # A physical SKU alone is still fine, and so is a virtual one in a spend-and-save (order level).
    create_promotion(client, tenant, "limited_discount", {"items": [{"sku_id": physical, "price": 8000}]})


def test_a_product_made_virtual_later_keeps_its_price_and_a_requested_special_on_it_is_refused(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session]
) -> None:
    physical = make_sku(session_factory, tenant.id, price=10000, free_shipping=True)
    card = make_sku(session_factory, tenant.id, price=19900, free_shipping=True, title="年卡 Annual card")
    create_promotion(client, tenant, "limited_discount",
                     {"items": [{"sku_id": physical, "price": 8000}, {"sku_id": card, "price": 9900}]})
    first = create_promotion(client, tenant, "first_order", {"items": [{"sku_id": card, "price": 100}]})
    headers = shopper(client, tenant)
    before = preview(client, headers, [(physical, 1), (card, 1)]).json()
    assert [ln["payable_amount"] for ln in before["lines"]] == [8000, 100]  # the card got the first-order price

    _make_virtual(session_factory, card)
    out = preview(client, headers, [(physical, 1), (card, 1)])
    assert out.status_code == 200, out.text
    lines = out.json()["lines"]
    assert [ln["payable_amount"] for ln in lines] == [8000, 19900]
    assert "promotion" not in lines[1]["flags"]
    assert [row["amount"] for row in entries(out.json(), "item_promotions")] == [-2000]
    order = submit(client, headers, [(physical, 1), (card, 1)])
    assert order.status_code == 201, order.text
    assert order.json()["payable_amount"] == 8000 + 19900

    refused = submit(client, headers, [(card, 1)], options={"first_order": {"promotion_id": first["id"]}})
    assert refused.status_code == 422, refused.text
    assert refused.json()["code"] == "promotion_virtual_product"
