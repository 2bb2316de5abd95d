"""Limited-time discounts and first-order specials never price a virtual product (``products.kind``:
a membership card, a service): listing its SKU is refused with ``promotion_virtual_product``, and
a product made virtual after a promotion listed its SKU is sold at its own price.

The same holds for every other item-level price: an add-on item, a spend-and-gift gift, a group
buy, a bargain and a flash-sale item are refused on write with the same code; one set up before
the product turned virtual is refused at checkout (a gift is left out)."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from siyu.catalog.models import KIND_VIRTUAL, Product, Sku
from siyu.db.session import unit_of_work
from siyu.kit.timeutil import utcnow
from tests.bargains import helpers as bargain_h
from tests.conftest import Tenant
from tests.factories.orders import make_sku
from tests.factories.promotions import (
    ADMIN,
    STORE,
    create_promotion,
    entries,
    preview,
    promotion_body,
    shopper,
    submit,
)
from tests.flash_sales.helpers import create_sale
from tests.group_buys import helpers as group_h


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
        for lang, words, field_text in (
            ("zh-CN", "虚拟商品", "虚拟商品的 SKU 不能参加此活动"),
            ("en", "Virtual products", "a virtual product's SKU cannot be listed"),
        ):
            r = client.post(f"{ADMIN}/promotions", json=promotion_body(kind, {"items": items}),
                            headers={**tenant.admin_headers, "Accept-Language": lang})
            assert r.status_code == 422, r.text
            problem = r.json()
            assert problem["code"] == "promotion_virtual_product"
            assert words in problem["message"] and str(card) in problem["message"]
            index = [it["sku_id"] for it in items].index(card)
            assert problem["fields"] == [{"path": f"rules.items.{index}.sku_id", "code": "virtual_product",
                                          "message": field_text}]
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


def _window() -> dict[str, str]:
    now = utcnow()
    return {"starts_at": (now - dt.timedelta(hours=1)).isoformat(), "ends_at": (now + dt.timedelta(days=1)).isoformat()}


def _refused(r: Any, path: str, sku: int) -> None:
    assert r.status_code == 422, r.text
    problem = r.json()
    assert problem["code"] == "promotion_virtual_product" and str(sku) in problem["message"]
    assert [f["path"] for f in problem["fields"]] == [path]


def test_an_add_on_gift_group_buy_bargain_or_flash_sale_on_a_virtual_sku_is_refused_on_write(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session]
) -> None:
    physical = make_sku(session_factory, tenant.id, price=10000, free_shipping=True)
    card = make_sku(session_factory, tenant.id, price=19900, free_shipping=True, title="年卡 Annual card")
    _make_virtual(session_factory, card)
    admin = tenant.admin_headers
    r = client.post(f"{ADMIN}/promotions", headers=admin, json=promotion_body("add_on", {
        "threshold": 5000, "items": [{"sku_id": physical, "price": 100, "stock": 5},
                                     {"sku_id": card, "price": 100, "stock": 5}]}))
    _refused(r, "rules.items.1.sku_id", card)
    r = client.post(f"{ADMIN}/promotions", headers=admin, json=promotion_body("spend_gift", {
        "tiers": [{"threshold": 5000, "gift_sku_id": physical}, {"threshold": 9000, "gift_sku_id": card}]}))
    _refused(r, "rules.tiers.1.gift_sku_id", card)
    r = client.post(f"{ADMIN}/group-buys", headers=admin, json={
        "name": "年卡拼团", "sku_id": card, "team_size": 2, "group_price": 9900, **_window()})
    _refused(r, "sku_id", card)
    r = client.post(f"{ADMIN}/bargain-activities", headers=admin, json={
        "name": "年卡砍价", "sku_id": card, "floor_price": 100, "helpers_needed": 3, "valid_hours": 24, **_window()})
    _refused(r, "sku_id", card)
    r = client.post(f"{ADMIN}/flash-sales", headers=admin, json={
        "name": "年卡秒杀", **_window(), "items": [{"sku_id": card, "flash_price": 100, "activity_stock": 5}]})
    assert r.status_code == 422 and r.json()["code"] == "promotion_virtual_product", r.text
    assert client.get(f"{ADMIN}/promotions", headers=admin).json()["total"] == 0
    for path in ("/group-buys", "/bargain-activities", "/flash-sales"):
        assert client.get(f"{ADMIN}{path}", headers=admin).json()["total"] == 0, path


def test_activities_set_up_before_the_product_turned_virtual_refuse_it_at_checkout(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session]
) -> None:
    physical = make_sku(session_factory, tenant.id, price=10000, free_shipping=True)
    card = make_sku(session_factory, tenant.id, price=19900, stock=50, free_shipping=True, title="年卡 Annual card")
    gb = group_h.make_group_buy(session_factory, tenant.id, card, group_price=9900)
    act = bargain_h.make_activity(session_factory, tenant.id, card, helpers_needed=1)
    sale = create_sale(client, tenant, [{"sku_id": card, "flash_price": 100, "activity_stock": 5}])
    item = int(sale["items"][0]["id"])
    add_on = create_promotion(client, tenant, "add_on", {
        "threshold": 5000, "items": [{"sku_id": card, "price": 100, "stock": 5}]})
    create_promotion(client, tenant, "spend_gift", {"tiers": [{"threshold": 5000, "gift_sku_id": card}]})
    headers = shopper(client, tenant)
    member = int(client.get("/api/store/v1/me", headers=headers).json()["id"])
    bargain_id = bargain_h.start(session_factory, tenant.id, member, act)
    before = preview(client, headers, [(physical, 1)]).json()
    assert [ln["sku_id"] for ln in before["lines"]] == [physical, card]  # the gift, while it is physical

    _make_virtual(session_factory, card)
    out = preview(client, headers, [(physical, 1)])
    assert out.status_code == 200, out.text
    assert [ln["sku_id"] for ln in out.json()["lines"]] == [physical]  # no card given away
    key = {"Idempotency-Key": uuid.uuid4().hex}
    r = client.post(f"{STORE}/group-buys/{gb}/teams", json={}, headers={**headers, **key})
    _refused(r, "options.group_buy.activity_id", card)
    r = client.post(f"{STORE}/bargains/{bargain_id}/buy", json={}, headers={**headers, **key})
    _refused(r, "options.bargain.bargain_id", card)
    r = client.post(f"{STORE}/bargains/activities/{act}/start", headers=headers)  # no help to gather in vain
    _refused(r, "path.activity_id", card)
    r = client.post(f"{STORE}/flash-sales/{item}/buy", json={"quantity": 1}, headers={**headers, **key})
    _refused(r, "options.flash_sale.item_id", card)
    r = submit(client, headers, [(physical, 1)],
               options={"add_on": [{"promotion_id": add_on["id"], "sku_id": card, "quantity": 1}]})
    _refused(r, "options.add_on.sku_id", card)
    with session_factory() as s:
        from sqlalchemy import func, select

        from siyu.orders.models import Order

        assert s.scalar(select(func.count()).select_from(Order).where(Order.merchant_id == tenant.id)) == 0
