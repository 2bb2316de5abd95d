"""Each promotion kind through the HTTP checkout preview and submit, with its stacking settings,
its refusals (which change nothing) and its usage ledger."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from siyu.catalog.models import Sku
from siyu.config import Settings
from siyu.orders.models import Order
from siyu.promotions.models import (
    FirstOrderClaim,
    PromotionMemberCounter,
    PromotionSkuCounter,
    PromotionUsage,
)
from tests.conftest import Tenant
from tests.factories.aftersales import drain, pay
from tests.factories.orders import make_sku, sku_stock
from tests.factories.promotions import (
    ADMIN,
    STORE,
    create_promotion,
    entries,
    preview,
    shopper,
    submit,
    window,
)


def _sku(factory: sessionmaker[Session], tenant: Tenant, price: int, stock: int = 50, **kw: Any) -> int:
    return make_sku(factory, tenant.id, price=price, stock=stock, free_shipping=True, **kw)


def _state(factory: sessionmaker[Session], tenant: Tenant) -> dict[str, Any]:
    """Everything a checkout can change, to assert that a refused one changed nothing."""
    with factory() as s:
        def count(model: Any) -> int:
            return int(s.scalar(select(func.count()).select_from(model).where(model.merchant_id == tenant.id)) or 0)

        return {
            "orders": count(Order), "usages": count(PromotionUsage), "claims": count(FirstOrderClaim),
            "counters": sorted(
                (c.promotion_id, c.member_id, c.units)
                for c in s.scalars(select(PromotionMemberCounter).where(PromotionMemberCounter.merchant_id == tenant.id))
            ),
            "add_on": sorted(
                (c.promotion_id, c.sku_id, c.sold)
                for c in s.scalars(select(PromotionSkuCounter).where(PromotionSkuCounter.merchant_id == tenant.id))
            ),
        }


# -- limited-time discount ------------------------------------------------------------------------------


def test_limited_discount_price_and_percent_through_preview_and_submit(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session]
) -> None:
    a, b = _sku(session_factory, tenant, 10000), _sku(session_factory, tenant, 8000)
    promo = create_promotion(client, tenant, "limited_discount", {
        "items": [{"sku_id": a, "price": 7900}, {"sku_id": b, "percent_off": 20}],
    })
    headers = shopper(client, tenant)
    r = preview(client, headers, [(a, 2), (b, 1)])
    assert r.status_code == 200, r.text
    out = r.json()
    assert [ln["payable_amount"] for ln in out["lines"]] == [2 * 7900, 8000 - 1600]
    labels = {row["label"]: -row["amount"] for row in entries(out, "item_promotions")}
    assert labels == {"限时折扣": 2 * (10000 - 7900), "限时8折": 1600}
    assert all(ln["flags"]["promotion"] == f"limited_discount:{promo['id']}" for ln in out["lines"])
    r = submit(client, headers, [(a, 2), (b, 1)])
    assert r.status_code == 201, r.text
    assert r.json()["payable_amount"] == out["payable_amount"] == 2 * 7900 + 6400


def test_purchase_limit_counts_pending_orders_and_a_cancel_gives_units_back(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    sku = _sku(session_factory, tenant, 10000)
    promo = create_promotion(client, tenant, "limited_discount", {"items": [{"sku_id": sku, "price": 5000}]},
                             per_member_limit=3)
    headers = shopper(client, tenant)
    first = submit(client, headers, [(sku, 2)])
    assert first.status_code == 201, first.text
    before = _state(session_factory, tenant)
    stock_before = sku_stock(session_factory, sku)
    refused = submit(client, headers, [(sku, 2)])
    assert refused.status_code == 409 and refused.json()["code"] == "promotion_limit_reached", refused.text
    assert "还可购买 1 件" in refused.json()["message"]
    assert _state(session_factory, tenant) == before and sku_stock(session_factory, sku) == stock_before
    assert submit(client, headers, [(sku, 1)]).status_code == 201  # exactly up to the limit
    r = client.post(f"{STORE}/orders/{first.json()['id']}/cancel", headers=headers)
    assert r.status_code == 200, r.text
    drain(session_factory, settings, tenant)
    again = submit(client, headers, [(sku, 2)])
    assert again.status_code == 201, again.text
    with session_factory() as s:
        units = s.scalar(select(PromotionMemberCounter.units).where(PromotionMemberCounter.promotion_id == promo["id"]))
    assert units == 3


def test_activity_lines_keep_their_stacking_flags(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session]
) -> None:
    """allows_coupons/points/order_promotions=False and free_shipping carry to the later stages:
    the limited line is left out of the spend-and-save basis."""
    promo_sku, plain = _sku(session_factory, tenant, 20000), _sku(session_factory, tenant, 20000)
    create_promotion(client, tenant, "limited_discount", {"items": [{"sku_id": promo_sku, "price": 18000}]},
                     allows_coupons=False, allows_points=False, allows_order_promotions=False, free_shipping=True)
    create_promotion(client, tenant, "spend_save", {"tiers": [{"threshold": 30000, "discount": 3000}]})
    headers = shopper(client, tenant)
    out = preview(client, headers, [(promo_sku, 1), (plain, 1)]).json()
    flags = out["lines"][0]["flags"]
    assert flags["no_coupon"] and flags["no_points"] and flags["no_order_promotions"] and flags["free_shipping"]
    assert entries(out, "order_promotions") == []  # only 200 of eligible lines: below 300
    assert any(n["code"] == "spend_save_almost" and n["short"] == 10000 for n in out["notes"]["order_promotions"])
    out = preview(client, headers, [(promo_sku, 1), (plain, 2)]).json()
    (row,) = entries(out, "order_promotions")
    assert row["label"] == "满300减30" and row["amount"] == -3000
    assert out["lines"][0]["discounts"] == {"item_promotions": 2000}  # nothing from the order stage


# -- first-order special ---------------------------------------------------------------------------------


def test_first_order_special_for_a_new_member_only(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    sku = _sku(session_factory, tenant, 10000)
    promo = create_promotion(client, tenant, "first_order", {"items": [{"sku_id": sku, "price": 990}]})
    headers = shopper(client, tenant)
    out = preview(client, headers, [(sku, 2)]).json()
    (row,) = entries(out, "item_promotions")
    assert row["label"] == "首单特价" and row["amount"] == -(10000 - 990)  # one unit only
    assert out["payable_amount"] == 990 + 10000
    order = submit(client, headers, [(sku, 1)], options={"first_order": {"promotion_id": promo["id"]}})
    assert order.status_code == 201 and order.json()["payable_amount"] == 990, order.text
    # pending: a second first order is not offered, and refused when asked for
    out = preview(client, headers, [(sku, 1)]).json()
    assert out["payable_amount"] == 10000
    assert any(n["code"] == "first_order_not_eligible" for n in out["notes"]["item_promotions"])
    pay(client, headers, order.json()["id"])
    drain(session_factory, settings, tenant)
    before = _state(session_factory, tenant)
    refused = submit(client, headers, [(sku, 1)], options={"first_order": {"promotion_id": promo["id"]}})
    assert refused.status_code == 409 and refused.json()["code"] == "first_order_not_eligible", refused.text
    assert _state(session_factory, tenant) == before


def test_a_cancelled_first_order_frees_the_special(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    sku = _sku(session_factory, tenant, 10000)
    create_promotion(client, tenant, "first_order", {"items": [{"sku_id": sku, "price": 100}]})
    headers = shopper(client, tenant)
    order = submit(client, headers, [(sku, 1)]).json()
    assert order["payable_amount"] == 100
    assert preview(client, headers, [(sku, 1)]).json()["payable_amount"] == 10000
    client.post(f"{STORE}/orders/{order['id']}/cancel", headers=headers)
    drain(session_factory, settings, tenant)
    assert preview(client, headers, [(sku, 1)]).json()["payable_amount"] == 100


# -- spend-and-save ----------------------------------------------------------------------------------------


def test_spend_save_tiers_and_near_miss_note(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session]
) -> None:
    a, b = _sku(session_factory, tenant, 12000), _sku(session_factory, tenant, 5000)
    create_promotion(client, tenant, "spend_save", {
        "tiers": [{"threshold": 30000, "discount": 3000}, {"threshold": 50000, "discount": 6000}],
    })
    headers = shopper(client, tenant)
    out = preview(client, headers, [(a, 2), (b, 1)]).json()  # 290
    assert entries(out, "order_promotions") == []
    (note,) = [n for n in out["notes"]["order_promotions"] if n["code"] == "spend_save_almost"]
    assert note["message"] == "再买 ¥10.00 可减 ¥30.00"
    out = preview(client, headers, [(a, 2), (b, 2)]).json()  # 340
    (row,) = entries(out, "order_promotions")
    assert (row["label"], row["amount"]) == ("满300减30", -3000)
    assert sum(ln["discounts"].get("order_promotions", 0) for ln in out["lines"]) == 3000
    assert out["payable_amount"] == 34000 - 3000
    out = preview(client, headers, [(a, 4)]).json()  # 480
    assert [n["message"] for n in out["notes"]["order_promotions"]] == ["再买 ¥20.00 可减 ¥60.00"]
    out = preview(client, headers, [(a, 5)]).json()  # 600
    assert entries(out, "order_promotions")[0]["label"] == "满500减60"
    r = submit(client, headers, [(a, 5)])
    assert r.status_code == 201 and r.json()["payable_amount"] == 60000 - 6000


def test_repeating_spend_save_is_capped(client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session]) -> None:
    sku = _sku(session_factory, tenant, 10000)
    create_promotion(client, tenant, "spend_save", {
        "tiers": [{"threshold": 30000, "discount": 3000}], "repeat": True, "max_discount": 7000,
    })
    headers = shopper(client, tenant)
    out = preview(client, headers, [(sku, 6)]).json()
    assert entries(out, "order_promotions")[0]["amount"] == -6000
    assert entries(out, "order_promotions")[0]["label"] == "每满300减30"
    out = preview(client, headers, [(sku, 9)]).json()
    assert entries(out, "order_promotions")[0]["amount"] == -7000


def test_exclusive_spend_saves_pick_the_best_and_stackable_ones_add_up(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session]
) -> None:
    sku = _sku(session_factory, tenant, 10000)
    create_promotion(client, tenant, "spend_save", {"tiers": [{"threshold": 30000, "discount": 3000}]})
    create_promotion(client, tenant, "spend_save", {"tiers": [{"threshold": 30000, "discount": 4000}]})
    headers = shopper(client, tenant)
    rows = entries(preview(client, headers, [(sku, 3)]).json(), "order_promotions")
    assert [r["amount"] for r in rows] == [-4000]  # mutual exclusion: the better one only
    create_promotion(client, tenant, "spend_save", {"tiers": [{"threshold": 20000, "discount": 2500}]},
                     exclusive=False)
    create_promotion(client, tenant, "spend_save", {"tiers": [{"threshold": 10000, "discount": 2000}]},
                     exclusive=False)
    rows = entries(preview(client, headers, [(sku, 3)]).json(), "order_promotions")
    assert sorted(r["amount"] for r in rows) == [-2500, -2000]  # 45 stacked beats 40 alone


# -- spend-and-gift ----------------------------------------------------------------------------------------


def test_spend_gift_adds_a_zero_price_line_and_takes_its_stock(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session]
) -> None:
    sku = _sku(session_factory, tenant, 20000)
    gift = _sku(session_factory, tenant, 1500, stock=1, title="眼镜布 Cloth")
    create_promotion(client, tenant, "spend_gift", {"tiers": [{"threshold": 30000, "gift_sku_id": gift, "quantity": 1}]})
    headers = shopper(client, tenant)
    out = preview(client, headers, [(sku, 1)]).json()
    assert len(out["lines"]) == 1 and out["notes"]["order_promotions"][0]["code"] == "spend_gift_almost"
    out = preview(client, headers, [(sku, 2)]).json()
    assert len(out["lines"]) == 2
    gift_line = out["lines"][1]
    assert (gift_line["sku_id"], gift_line["payable_amount"], gift_line["flags"]["gift"]) == (gift, 0, True)
    assert entries(out, "order_promotions")[0]["label"] == "满300赠 眼镜布 Cloth ×1"
    assert out["payable_amount"] == 40000
    r = submit(client, headers, [(sku, 2)])
    assert r.status_code == 201, r.text
    assert sku_stock(session_factory, gift) == 0
    out = preview(client, headers, [(sku, 2)]).json()  # gift stock gone: noted, not added
    assert len(out["lines"]) == 1
    assert any(n["code"] == "gift_out_of_stock" for n in out["notes"]["order_promotions"])


# -- add-on deal ---------------------------------------------------------------------------------------------


def test_add_on_offer_request_limits_and_stock(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    sku = _sku(session_factory, tenant, 10000)
    extra = _sku(session_factory, tenant, 6800, title="护理液 Solution")
    promo = create_promotion(client, tenant, "add_on", {
        "threshold": 20000, "items": [{"sku_id": extra, "price": 990, "per_order_limit": 2, "stock": 3}],
    })
    add_on = {"add_on": [{"promotion_id": promo["id"], "sku_id": extra, "quantity": 2}]}
    headers = shopper(client, tenant)
    out = preview(client, headers, [(sku, 1)]).json()
    assert [n["code"] for n in out["notes"]["order_promotions"]] == ["add_on_almost"]
    before = _state(session_factory, tenant)
    r = submit(client, headers, [(sku, 1)], options=add_on)
    assert r.status_code == 409 and r.json()["code"] == "add_on_threshold_not_met", r.text
    assert "再买 ¥100.00" in r.json()["message"]
    assert _state(session_factory, tenant) == before
    out = preview(client, headers, [(sku, 2)]).json()
    (offer,) = out["notes"]["order_promotions"]
    assert offer["code"] == "add_on_offer" and offer["items"][0]["price"] == 990
    out = preview(client, headers, [(sku, 2)], options=add_on).json()
    assert out["lines"][1]["sku_id"] == extra and out["lines"][1]["payable_amount"] == 2 * 990
    assert out["payable_amount"] == 20000 + 1980
    r = submit(client, headers, [(sku, 2)], options={"add_on": [{"promotion_id": promo["id"], "sku_id": extra,
                                                                  "quantity": 3}]})
    assert r.status_code == 409 and r.json()["code"] == "add_on_limit_reached"
    first = submit(client, headers, [(sku, 2)], options=add_on)
    assert first.status_code == 201, first.text
    assert sku_stock(session_factory, extra) == 48
    other = shopper(client, tenant)
    r = submit(client, other, [(sku, 2)], options=add_on)  # 1 of 3 left
    assert r.status_code == 409 and r.json()["code"] == "add_on_sold_out"
    client.post(f"{STORE}/orders/{first.json()['id']}/cancel", headers=headers)
    drain(session_factory, settings, tenant)
    assert submit(client, other, [(sku, 2)], options=add_on).status_code == 201


def test_activity_not_started_or_ended_is_refused(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session]
) -> None:
    sku, extra = _sku(session_factory, tenant, 30000), _sku(session_factory, tenant, 5000)
    rules = {"threshold": 100, "items": [{"sku_id": extra, "price": 100, "stock": 5}]}
    later = create_promotion(client, tenant, "add_on", rules, **window(1, 5))
    assert later["effective_status"] == "scheduled"
    first = create_promotion(client, tenant, "first_order", {"items": [{"sku_id": sku, "price": 100}]})
    headers = shopper(client, tenant)
    before = _state(session_factory, tenant)
    r = submit(client, headers, [(sku, 1)], options={"add_on": [{"promotion_id": later["id"], "sku_id": extra}]})
    assert r.status_code == 409 and r.json()["code"] == "promotion_not_started", r.text
    client.post(f"{ADMIN}/promotions/{first['id']}/stop", headers=tenant.admin_headers)
    r = submit(client, headers, [(sku, 1)], options={"first_order": {"promotion_id": first["id"]}})
    assert r.status_code == 409 and r.json()["code"] == "promotion_ended", r.text
    assert _state(session_factory, tenant) == before


# -- usage ledger and stats --------------------------------------------------------------------------------


def test_usage_stats_count_paid_orders_and_reverse_cancelled_ones(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    sku = _sku(session_factory, tenant, 10000)
    promo = create_promotion(client, tenant, "spend_save", {"tiers": [{"threshold": 20000, "discount": 2000}]})
    a, b = shopper(client, tenant), shopper(client, tenant)
    paid = submit(client, a, [(sku, 3)]).json()
    cancelled = submit(client, b, [(sku, 2)]).json()
    pending = submit(client, b, [(sku, 2)]).json()
    pay(client, a, paid["id"])
    client.post(f"{STORE}/orders/{cancelled['id']}/cancel", headers=b)
    drain(session_factory, settings, tenant)
    r = client.get(f"{ADMIN}/promotions/{promo['id']}/stats", headers=tenant.admin_headers)
    assert r.status_code == 200, r.text
    stats = r.json()
    assert (stats["paid_orders"], stats["pending_orders"], stats["released_orders"]) == (1, 1, 1)
    assert stats["discount"] == 2000 and stats["gmv"] == paid["payable_amount"] == 28000
    assert stats["gmv_per_discount"] == 14.0
    assert pending["payable_amount"] == 18000


def test_order_promotion_limit_counts_orders_per_member(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    sku = _sku(session_factory, tenant, 10000)
    create_promotion(client, tenant, "spend_save", {"tiers": [{"threshold": 20000, "discount": 2000}]},
                     per_member_limit=1)
    headers = shopper(client, tenant)
    first = submit(client, headers, [(sku, 2)])
    assert first.json()["payable_amount"] == 18000
    out = preview(client, headers, [(sku, 2)]).json()
    assert out["payable_amount"] == 20000
    assert [n["code"] for n in out["notes"]["order_promotions"]] == ["promotion_limit_reached"]
    assert preview(client, shopper(client, tenant), [(sku, 2)]).json()["payable_amount"] == 18000
    client.post(f"{STORE}/orders/{first.json()['id']}/cancel", headers=headers)
    drain(session_factory, settings, tenant)
    assert preview(client, headers, [(sku, 2)]).json()["payable_amount"] == 18000


def test_scope_counts_only_the_lines_of_its_categories(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session]
) -> None:
    from siyu.catalog.models import Category, Product
    from siyu.db.session import unit_of_work

    frames, lenses = _sku(session_factory, tenant, 20000), _sku(session_factory, tenant, 20000)
    with unit_of_work(session_factory) as s:
        category = Category(merchant_id=tenant.id, name="镜框")
        s.add(category)
        s.flush()
        sku_row = s.get(Sku, frames)
        assert sku_row is not None
        product = s.get(Product, sku_row.product_id)
        assert product is not None
        product.category_id = category.id
        category_id = category.id
    create_promotion(client, tenant, "spend_save", {"scope": {"type": "categories", "ids": [category_id]},
                                                    "tiers": [{"threshold": 30000, "discount": 3000}]})
    headers = shopper(client, tenant)
    out = preview(client, headers, [(frames, 1), (lenses, 1)]).json()  # only ¥200 in the category
    assert entries(out, "order_promotions") == []
    out = preview(client, headers, [(frames, 2), (lenses, 1)]).json()
    assert entries(out, "order_promotions")[0]["amount"] == -3000
    assert "order_promotions" not in out["lines"][1]["discounts"]  # the lens line takes no part
