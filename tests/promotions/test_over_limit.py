"""Limited-time discounts over the purchase limit: ``rules.over_limit``.

- ``refuse`` (每人每种商品限购 N 件, the default): the checkout is refused (covered in
  test_pricing_api / test_refund_frees_limits / test_concurrency, unchanged).
- ``full_price`` (每人每种商品前 N 件享受折扣): the first N units of the member get the discount,
  the others are sold at the normal price; only the discounted units count against the limit,
  and refunds free discounted units last.

Pure stage logic first (no database), then the admin API, the checkout and refunds over HTTP.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from siyu.config import Settings
from siyu.kit.errors import DomainError
from siyu.orders.pricing import ITEM_PROMOTIONS, PricedLine, PricingContext
from siyu.promotions import service
from siyu.promotions.models import Promotion, PromotionMemberCounter, PromotionUsage
from tests.conftest import Tenant
from tests.factories.aftersales import admin_order, drain, pay, request_aftersale
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
    window,
)

NOW = dt.datetime(2026, 11, 11, 4, 0, tzinfo=dt.UTC)


# -- the stage logic ---------------------------------------------------------------------------------------


def _line(sku_id: int, price: int, qty: int) -> PricedLine:
    return PricedLine(
        sku_id=sku_id, product_id=sku_id, category_id=1, title=f"sku {sku_id}", spec_text="", image_url=None,
        quantity=qty, list_price=price, sale_price=price, cost_price=price // 2, weight_g=100, free_shipping=False,
        coupons_allowed=True, bonus_points=0,
    )


def _promo(pid: int, items: list[dict[str, Any]], limit: int | None, over_limit: str) -> Promotion:
    return Promotion(
        id=pid, merchant_id=1, name=f"p{pid}", kind="limited_discount", status="active",
        rules={"items": items, "over_limit": over_limit}, starts_at=NOW - dt.timedelta(days=1),
        ends_at=NOW + dt.timedelta(days=1), allows_coupons=True, allows_points=True, allows_order_promotions=True,
        free_shipping=False, per_member_limit=limit, exclusive=True,
    )


def _price(lines: list[PricedLine], promo: Promotion, held: int = 0) -> PricingContext:
    ctx = PricingContext(session=None, merchant_id=1, member_id=7, lines=lines, now=NOW)  # type: ignore[arg-type]
    service.apply_item_promotions(ctx, [promo], service.ItemFacts(member_units={promo.id: held}))
    return ctx


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(st.integers(1, 100_000), st.integers(1, 6), st.booleans(), st.integers(1, 99)),
             min_size=1, max_size=5),
    st.integers(1, 12), st.integers(0, 14),
)
def test_full_price_discounts_exactly_the_units_left_and_refuse_refuses_the_same_cart(
    cart: list[tuple[int, int, bool, int]], limit: int, held: int
) -> None:
    """Over random carts: ``full_price`` never refuses and discounts exactly ``min(units, left)``
    units, in line order (two lines share one allowance), each line's discount being the rule on
    its discounted units' share; ``refuse`` gives the same discounts when the cart fits and
    refuses it otherwise."""
    items = [
        {"sku_id": i + 1, "price": price * pct // 100, "percent_off": None} if fixed
        else {"sku_id": i + 1, "price": None, "percent_off": pct}
        for i, (price, _q, fixed, pct) in enumerate(cart)
    ]
    full = _price([_line(i + 1, p, q) for i, (p, q, _f, _pct) in enumerate(cart)], _promo(1, items, limit, "full_price"),
                  held)
    left = max(0, limit - held)
    reserved = full.reservations.get("promotions", [])
    discounted = sum(int(r["units"]) for r in reserved)
    assert discounted <= left
    expected_left = left
    by_line = {int(r["lines"][0][0]): r for r in reserved}
    for i, line in enumerate(full.lines):
        want = min(line.quantity, expected_left)
        probe = _line(line.sku_id, line.sale_price, line.quantity)
        amount, _unit = service.limited_discount_amount(probe, service.LimitedDiscountRules.model_validate(
            {"items": [items[i]]}).items[0], want) if want else (0, 0)
        if amount > 0:
            row = by_line[i]
            assert row["units"] == want and row["lines"] == [[i, line.sku_id, want, line.quantity]]
            assert line.discounts[ITEM_PROMOTIONS] == amount
            expected_left -= want
        else:
            assert i not in by_line and ITEM_PROMOTIONS not in line.discounts
    assert discounted == left - expected_left
    assert full.lines_amount >= 0

    total = sum(q for _p, q, _f, _pct in cart)
    try:
        refused = _price([_line(i + 1, p, q) for i, (p, q, _f, _pct) in enumerate(cart)],
                         _promo(1, items, limit, "refuse"), held)
    except DomainError as exc:
        assert exc.code == "promotion_limit_reached"
        assert held + total > limit
        return
    # Not refused: every discounted line fitted; where every unit fits, full_price is the same price.
    if held + total <= limit:
        assert refused.payable == full.payable


def test_a_partly_discounted_line_shows_its_discounted_and_full_price_units() -> None:
    promo = _promo(1, [{"sku_id": 1, "price": 5000}], 2, "full_price")
    ctx = _price([_line(1, 10000, 3)], promo)
    assert ctx.payable == 2 * 5000 + 10000
    (entry,) = [e for e in ctx.entries if e.stage == ITEM_PROMOTIONS]
    assert (entry.amount, entry.details["units"], entry.details["full_price_units"], entry.details["unit_price"]) == (
        10000, 2, 1, 5000)
    (note,) = ctx.notes[ITEM_PROMOTIONS]
    assert note["code"] == "promotion_limit_partial" and (note["units"], note["full_price_units"]) == (2, 1)
    assert note["message"] == "每人前 2 件享折扣：2 件享折扣，1 件原价"
    assert ctx.reservations["promotions"][0]["units"] == 2

    # Odd fen: 15 % off 2 of 3 units at 9.99 is 15 % of their share ¥19.98, rounded down (¥2.99).
    pct = _promo(2, [{"sku_id": 1, "percent_off": 15}], 2, "full_price")
    ctx = _price([_line(1, 999, 3)], pct)
    assert ctx.payable == 2997 - 1998 * 15 // 100 == 2698

    # Nothing left: the line is at its normal price, untouched and unflagged, with a note.
    ctx = _price([_line(1, 10000, 3)], promo, held=2)
    assert ctx.payable == 30000 and not ctx.entries and not ctx.lines[0].flags
    assert [n["code"] for n in ctx.notes[ITEM_PROMOTIONS]] == ["promotion_limit_used"]
    assert "promotions" not in ctx.reservations


def _usage(lines: list[list[int]], units: int) -> PromotionUsage:
    return PromotionUsage(units=units, units_freed=0, lines=lines)


def test_refunds_free_discounted_units_last() -> None:
    """A line of 3 with 2 discounted: the first unit refunded is a full-price one (nothing freed,
    the member still keeps 2 units); the next two free one discounted unit each."""
    usage = _usage([[0, 11, 2, 0, 3, 0]], 2)
    steps = []
    for _ in range(3):
        free = service._units_to_free(usage, {100: 1}, [100], full=False)
        usage.units_freed += free
        steps.append(free)
    assert steps == [0, 1, 1]
    assert usage.lines == [[0, 11, 2, 2, 3, 3]]

    usage = _usage([[0, 11, 2, 0, 3, 0]], 2)
    assert service._units_to_free(usage, {100: 2}, [100], full=False) == 1  # keeps 1 unit: 1 discounted held
    usage.units_freed += 1
    assert service._units_to_free(usage, {999: 1}, [100], full=False) == 0  # another line: nothing
    assert service._units_to_free(usage, {}, [100], full=True) == 1

    # A row written before the setting (four numbers: every unit of the line discounted).
    old = _usage([[0, 11, 3, 0]], 3)
    assert service._units_to_free(old, {100: 2}, [100], full=False) == 2
    assert old.lines == [[0, 11, 3, 2, 3, 2]]


# -- over HTTP ---------------------------------------------------------------------------------------------


def _units(factory: sessionmaker[Session], promotion_id: int) -> int:
    with factory() as s:
        found = s.scalar(select(PromotionMemberCounter.units).where(PromotionMemberCounter.promotion_id == promotion_id))
        return int(found or 0)


def test_over_limit_is_a_limited_discount_rule_validated_on_write_and_locked_at_the_start(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session]
) -> None:
    sku = make_sku(session_factory, tenant.id, price=10000)
    rules = {"items": [{"sku_id": sku, "price": 5000}], "over_limit": "full_price"}

    r = client.post(f"{ADMIN}/promotions", json=promotion_body("limited_discount", {**rules, "over_limit": "cheap"}),
                    headers=tenant.admin_headers)
    assert r.status_code == 422, r.text
    (bad,) = r.json()["fields"]
    assert (bad["path"], bad["code"]) == ("rules.over_limit", "over_limit_invalid")
    assert bad["message"] == "over_limit 应为 refuse（超出限购拒绝下单）或 full_price（超出部分按原价）"
    r = client.post(f"{ADMIN}/promotions", json=promotion_body("limited_discount", {**rules, "over_limit": "cheap"}),
                    headers={**tenant.admin_headers, "Accept-Language": "en"})
    assert r.json()["fields"][0]["message"].startswith("over_limit must be refuse")
    for kind, other in (("first_order", {"items": [{"sku_id": sku, "price": 100}]}),
                        ("spend_save", {"tiers": [{"threshold": 100, "discount": 10}]})):
        r = client.post(f"{ADMIN}/promotions", json=promotion_body(kind, {**other, "over_limit": "full_price"}),
                        headers=tenant.admin_headers)
        assert r.status_code == 422, r.text
        assert [(f["path"], f["code"]) for f in r.json()["fields"]] == [
            ("rules.over_limit", "over_limit_limited_discount_only")]

    scheduled = create_promotion(client, tenant, "limited_discount", rules, per_member_limit=2, **window(1, 3))
    assert (scheduled["over_limit"], scheduled["rules"]["over_limit"]) == ("full_price", "full_price")
    r = client.patch(f"{ADMIN}/promotions/{scheduled['id']}", json={"rules": {**rules, "over_limit": "refuse"}},
                     headers=tenant.admin_headers)
    assert r.status_code == 200 and r.json()["over_limit"] == "refuse", r.text  # before the start: still open

    started = create_promotion(client, tenant, "limited_discount", rules, per_member_limit=2)
    r = client.patch(f"{ADMIN}/promotions/{started['id']}", json={"rules": {**rules, "over_limit": "refuse"}},
                     headers=tenant.admin_headers)
    assert r.status_code == 409 and r.json()["code"] == "promotion_state_invalid", r.text
    assert client.get(f"{ADMIN}/promotions/{started['id']}", headers=tenant.admin_headers).json()["over_limit"] == (
        "full_price")

    # The product page says what the limit does.
    r = client.get(f"{STORE}/promotions", params={"sku_id": sku}, headers=tenant.store_headers)
    shown = {p["promotion_id"]: p for p in r.json()}[started["id"]]
    assert (shown["over_limit"], shown["limit_label"], shown["per_member_limit"]) == (
        "full_price", "每人前 2 件享折扣", 2)
    spend = create_promotion(client, tenant, "spend_save", {"tiers": [{"threshold": 100, "discount": 10}]})
    assert spend["over_limit"] is None


def test_first_units_discounted_the_rest_at_full_price_and_refunds_free_discounted_units_last(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    sku = make_sku(session_factory, tenant.id, price=10000, free_shipping=True)
    promo = create_promotion(client, tenant, "limited_discount",
                             {"items": [{"sku_id": sku, "price": 5000}], "over_limit": "full_price"},
                             per_member_limit=2)
    headers = shopper(client, tenant)

    out = preview(client, headers, [(sku, 3)])
    assert out.status_code == 200, out.text
    body = out.json()
    assert body["payable_amount"] == 2 * 5000 + 10000
    (row,) = entries(body, ITEM_PROMOTIONS)
    assert (row["amount"], row["details"]["units"], row["details"]["full_price_units"]) == (-10000, 2, 1)
    assert [n["code"] for n in body["notes"][ITEM_PROMOTIONS]] == ["promotion_limit_partial"]

    r = submit(client, headers, [(sku, 3)])
    assert r.status_code == 201 and r.json()["payable_amount"] == 20000, r.text
    order_id = r.json()["id"]
    pay(client, headers, order_id)
    drain(session_factory, settings, tenant)
    assert _units(session_factory, promo["id"]) == 2
    with session_factory() as s:
        usage = s.scalar(select(PromotionUsage).where(PromotionUsage.order_id == order_id))
        assert usage is not None and (usage.units, usage.discount, usage.lines) == (2, 10000, [[0, sku, 2, 0, 3, 0]])

    # The allowance is used: a new cart is at the normal price, with a note, and not refused.
    again = preview(client, headers, [(sku, 1)]).json()
    assert again["payable_amount"] == 10000 and not entries(again, ITEM_PROMOTIONS)
    assert [n["code"] for n in again["notes"][ITEM_PROMOTIONS]] == ["promotion_limit_used"]

    line = admin_order(client, tenant, order_id)["lines"][0]["id"]

    def refund(qty: int) -> None:
        r = request_aftersale(client, headers, order_id, "refund_only", [(line, qty)], reason_code="changed_mind")
        assert r.status_code == 201, r.text
        r = client.post(f"{ADMIN}/aftersales/{r.json()['id']}/approve", json={}, headers=tenant.admin_headers)
        assert r.status_code == 200, r.text
        drain(session_factory, settings, tenant)

    refund(1)  # the member keeps 2 units, both discounted ones: nothing freed
    assert _units(session_factory, promo["id"]) == 2
    assert preview(client, headers, [(sku, 1)]).json()["payable_amount"] == 10000
    refund(1)  # keeps 1: one discounted unit is free again
    assert _units(session_factory, promo["id"]) == 1
    assert preview(client, headers, [(sku, 2)]).json()["payable_amount"] == 5000 + 10000
    refund(1)  # the whole line refunded: everything free
    assert _units(session_factory, promo["id"]) == 0
    assert preview(client, headers, [(sku, 2)]).json()["payable_amount"] == 2 * 5000


def test_lines_of_one_checkout_share_one_allowance(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    """The same SKU twice in a checkout is one merged line; two SKUs of the promotion on two lines
    share the member's allowance, in line order."""
    a = make_sku(session_factory, tenant.id, price=10000, free_shipping=True)
    b = make_sku(session_factory, tenant.id, price=8000, free_shipping=True)
    promo = create_promotion(
        client, tenant, "limited_discount",
        {"items": [{"sku_id": a, "price": 5000}, {"sku_id": b, "percent_off": 50}], "over_limit": "full_price"},
        per_member_limit=3,
    )
    headers = shopper(client, tenant)

    same = preview(client, headers, [(a, 2), (a, 2)]).json()
    assert [(ln["sku_id"], ln["quantity"]) for ln in same["lines"]] == [(a, 4)]
    assert same["payable_amount"] == 3 * 5000 + 10000
    assert entries(same, ITEM_PROMOTIONS)[0]["details"]["units"] == 3

    r = submit(client, headers, [(a, 2), (b, 2)])
    assert r.status_code == 201, r.text
    assert r.json()["payable_amount"] == 2 * 5000 + 4000 + 8000
    with session_factory() as s:
        usage = s.scalar(select(PromotionUsage).where(PromotionUsage.order_id == r.json()["id"]))
        assert usage is not None and usage.units == 3
        assert usage.lines == [[0, a, 2, 0, 2, 0], [1, b, 1, 0, 2, 0]]
    assert _units(session_factory, promo["id"]) == 3  # pending orders hold their units too
    assert preview(client, headers, [(b, 1)]).json()["payable_amount"] == 8000
