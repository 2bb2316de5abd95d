"""The COUPONS stage: best combination with a reason for every other wallet coupon, explicit
choices that fail with specific codes (and change nothing), scope, thresholds on what earlier
stages left, percent caps, activity and product exclusions, free shipping and stacking, and
the submit lock."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from siyu.coupons.models import MemberCoupon
from siyu.db.session import unit_of_work
from siyu.kit.errors import DomainError
from siyu.kit.timeutil import utcnow
from siyu.orders import checkout
from siyu.orders.models import Order
from siyu.orders.pricing import ITEM_PROMOTIONS, PricingContext, register_stage
from siyu.orders.schemas import CheckoutIn, CheckoutOut
from tests.conftest import Tenant
from tests.coupons.helpers import coupon, fixed_dates, give, make_product_sku, make_template
from tests.factories.orders import buyer, make_freight_template

TIMEOUT = dt.timedelta(minutes=30)


# Test-only activity stages (ITEM_PROMOTIONS runs before COUPONS).
@register_stage(ITEM_PROMOTIONS, "tests.coupons.half_off")
def _half_off(ctx: PricingContext) -> None:
    idx = ctx.eligible(lambda ln: "[HALF]" in ln.title)
    if idx:
        ctx.discount(ITEM_PROMOTIONS, "test:half", "半价", sum(ctx.lines[i].amount for i in idx) // 2, idx)


@register_stage(ITEM_PROMOTIONS, "tests.coupons.no_coupon")
def _no_coupon(ctx: PricingContext) -> None:
    for line in ctx.lines:
        if "[ACT]" in line.title:
            line.flags["activity"] = "test:1"
            line.flags["no_coupon"] = True


def _body(items: list[tuple[int, int]], **extra: Any) -> CheckoutIn:
    return CheckoutIn.model_validate({"items": [{"sku_id": k, "quantity": q} for k, q in items], **extra})


def _preview(factory: sessionmaker[Session], tenant: Tenant, member: int, items: list[tuple[int, int]],
             **extra: Any) -> CheckoutOut:
    with factory() as s:
        return checkout.preview(s, tenant.id, member, _body(items, **extra))


def _coupon_entries(out: CheckoutOut) -> list[dict[str, Any]]:
    return [row for row in out.breakdown if row["stage"] == "coupons"]


def _reasons(out: CheckoutOut) -> dict[int, str]:
    return {n["coupon_id"]: n["code"] for n in out.notes.get("coupons", [])}


def test_best_combination_is_chosen_and_every_other_coupon_says_why(
    session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    member = buyer(session_factory, tenant.id)
    sku_a, _, cat_a = make_product_sku(session_factory, tenant.id, price=8000, category=True)
    sku_b, prod_b, _ = make_product_sku(session_factory, tenant.id, price=4000)
    _, other_product, _ = make_product_sku(session_factory, tenant.id, price=100)
    past = utcnow() - dt.timedelta(days=40)
    c_fixed = give(session_factory, tenant.id, make_template(session_factory, tenant.id, "fixed", amount=1000), member)
    c_pct = give(session_factory, tenant.id, make_template(
        session_factory, tenant.id, "percent", percent_off=20, max_discount=1500), member)  # 20% of 160.00 capped 15.00
    c_thr = give(session_factory, tenant.id, make_template(
        session_factory, tenant.id, "threshold", amount=3000, threshold=20000), member)  # cart is 160.00
    c_cat = give(session_factory, tenant.id, make_template(
        session_factory, tenant.id, "threshold", amount=2000, threshold=9000, scope="categories",
        scope_ids=[cat_a]), member)  # only 80.00 in the category
    c_scope = give(session_factory, tenant.id, make_template(
        session_factory, tenant.id, "fixed", amount=5000, scope="products", scope_ids=[other_product]), member)
    c_excl = give(session_factory, tenant.id, make_template(
        session_factory, tenant.id, "fixed", amount=4000, scope="all", excluded_product_ids=[prod_b]), member)
    c_old = give(session_factory, tenant.id, make_template(
        session_factory, tenant.id, "fixed", amount=9000, valid_days=30), member, now=past)
    c_later = give(session_factory, tenant.id, make_template(
        session_factory, tenant.id, "fixed", amount=9000, **fixed_dates(2, 30)), member)

    out = _preview(session_factory, tenant, member, [(sku_a, 1), (sku_b, 2)])
    assert out.goods_amount == 16000
    # 40.00 off the in-scope line (a, 80.00) beats 15.00 (capped percent) and 10.00.
    (entry,) = _coupon_entries(out)
    assert entry["code"] == f"coupon:{c_excl}" and entry["amount"] == -4000
    assert out.lines[0].discounts == {"coupons": 4000} and "coupons" not in out.lines[1].discounts
    assert _reasons(out) == {
        c_fixed: "not_best", c_pct: "not_best", c_thr: "below_threshold", c_cat: "below_threshold",
        c_scope: "out_of_scope", c_old: "expired", c_later: "not_started",
    }
    short = next(n for n in out.notes["coupons"] if n["coupon_id"] == c_cat)
    assert short["eligible_amount"] == 8000 and short["short_by"] == 1000 and short["message"]


def test_explicit_choice_errors_have_specific_codes_and_change_nothing(
    session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    member = buyer(session_factory, tenant.id)
    other = buyer(session_factory, tenant.id)
    sku, _, _ = make_product_sku(session_factory, tenant.id, price=5000)
    sku_off, _, _ = make_product_sku(session_factory, tenant.id, price=5000, coupons_allowed=False)
    _, other_product, _ = make_product_sku(session_factory, tenant.id, price=5000)  # not in the cart
    fixed = make_template(session_factory, tenant.id, "fixed", amount=500, per_member_limit=5)
    thr = give(session_factory, tenant.id, make_template(
        session_factory, tenant.id, "threshold", amount=1000, threshold=20000), member)
    scoped = give(session_factory, tenant.id, make_template(
        session_factory, tenant.id, "fixed", amount=100, scope="products", scope_ids=[other_product]), member)
    expired = give(session_factory, tenant.id, make_template(session_factory, tenant.id, "fixed", amount=300),
                   member, now=utcnow() - dt.timedelta(days=31))
    foreign = give(session_factory, tenant.id, fixed, other)
    a, b = give(session_factory, tenant.id, fixed, member), give(session_factory, tenant.id, fixed, member)
    with unit_of_work(session_factory) as s:  # a is locked by a pending order, b is used
        order, _ = checkout.submit(s, tenant.id, member, _body([(sku, 1)], coupon_ids=[a]),
                                   idempotency_key="lock-a", payment_timeout=TIMEOUT)
        s.execute(update(MemberCoupon).where(MemberCoupon.id == b).values(status="used"))

    cases = {
        expired: "coupon_expired", b: "coupon_used", a: "coupon_locked", scoped: "coupon_out_of_scope",
        thr: "coupon_below_threshold", foreign: "not_found", 987_654_321: "not_found",
    }
    mine = give(session_factory, tenant.id, fixed, member)
    for cid, code in cases.items():
        with pytest.raises(DomainError) as err:
            _preview(session_factory, tenant, member, [(sku, 1)], coupon_ids=[cid])
        assert err.value.code == code, (cid, err.value.code)
        with pytest.raises(DomainError) as err, unit_of_work(session_factory) as s:
            checkout.submit(s, tenant.id, member, _body([(sku, 1)], coupon_ids=[mine, cid]),
                            idempotency_key=uuid.uuid4().hex, payment_timeout=TIMEOUT)
        assert err.value.code in (code, "coupon_not_stackable")
    with pytest.raises(DomainError) as err:
        _preview(session_factory, tenant, member, [(sku_off, 1)], coupon_ids=[mine])
    assert err.value.code == "coupon_excluded_by_product"
    with pytest.raises(DomainError) as err:
        _preview(session_factory, tenant, member, [(sku, 1)], coupon_ids=[mine, give(session_factory, tenant.id,
                                                                                      fixed, member)])
    assert err.value.code == "coupon_not_stackable"
    # Nothing changed: one order (the locking one), mine still unused, a still locked to it.
    with session_factory() as s:
        assert s.scalar(select(func.count()).select_from(Order).where(Order.merchant_id == tenant.id)) == 1
    assert coupon(session_factory, tenant.id, mine).status == "unused"
    assert coupon(session_factory, tenant.id, a).order_id == order.id
    # An empty explicit list means no coupon at all.
    out = _preview(session_factory, tenant, member, [(sku, 1)], coupon_ids=[])
    assert _coupon_entries(out) == [] and out.notes.get("coupons") is None


def test_coupon_works_on_what_earlier_stages_left_and_percent_is_capped(
    session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    member = buyer(session_factory, tenant.id)
    half, _, _ = make_product_sku(session_factory, tenant.id, price=10000, title="[HALF] 半价镜框")
    pct = give(session_factory, tenant.id, make_template(
        session_factory, tenant.id, "percent", percent_off=50, max_discount=None), member)
    out = _preview(session_factory, tenant, member, [(half, 1)], coupon_ids=[pct])
    # 50% of the 50.00 left by the half-price stage, not of the 100.00 list amount.
    assert out.lines[0].discounts == {"item_promotions": 5000, "coupons": 2500}
    # Threshold counts the amount after earlier stages: 满80减10 does not apply to 50.00 left.
    thr = give(session_factory, tenant.id, make_template(
        session_factory, tenant.id, "threshold", amount=1000, threshold=8000), member)
    with pytest.raises(DomainError) as err:
        _preview(session_factory, tenant, member, [(half, 1)], coupon_ids=[thr])
    assert err.value.code == "coupon_below_threshold"
    capped = give(session_factory, tenant.id, make_template(
        session_factory, tenant.id, "percent", percent_off_bp=10000, max_discount=1234), member)
    out = _preview(session_factory, tenant, member, [(half, 3)], coupon_ids=[capped])
    assert _coupon_entries(out)[0]["amount"] == -1234
    full = give(session_factory, tenant.id, make_template(
        session_factory, tenant.id, "percent", percent_off=100), member)
    out = _preview(session_factory, tenant, member, [(half, 1)], coupon_ids=[full])
    assert out.lines[0].payable_amount == 0 and out.payable_amount == out.freight_amount


def test_activity_and_product_flags_exclude_lines(session_factory: sessionmaker[Session], tenant: Tenant) -> None:
    member = buyer(session_factory, tenant.id)
    act, _, _ = make_product_sku(session_factory, tenant.id, price=9000, title="[ACT] 秒杀")
    plain, _, _ = make_product_sku(session_factory, tenant.id, price=3000)
    c = give(session_factory, tenant.id, make_template(session_factory, tenant.id, "fixed", amount=5000), member)
    out = _preview(session_factory, tenant, member, [(act, 1)])
    assert _coupon_entries(out) == [] and _reasons(out) == {c: "activity_excludes_coupons"}
    out = _preview(session_factory, tenant, member, [(act, 1), (plain, 1)])
    # Only the plain line takes the coupon: capped at its 30.00.
    assert _coupon_entries(out)[0]["amount"] == -3000
    assert out.lines[0].discounts == {} and out.lines[1].discounts == {"coupons": 3000}
    with pytest.raises(DomainError) as err:
        _preview(session_factory, tenant, member, [(act, 1)], coupon_ids=[c])
    assert err.value.code == "coupon_excluded_by_activity"


def test_free_shipping_stacks_only_when_both_are_stackable(
    session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    make_freight_template(session_factory, tenant.id, default=True)  # 8.00 first unit
    member = buyer(session_factory, tenant.id)
    sku, _, _ = make_product_sku(session_factory, tenant.id, price=5000)
    ship = give(session_factory, tenant.id, make_template(
        session_factory, tenant.id, "free_shipping", stackable=True), member)
    plain = give(session_factory, tenant.id, make_template(session_factory, tenant.id, "fixed", amount=500), member)
    out = _preview(session_factory, tenant, member, [(sku, 1)])
    # 8.00 of freight saved beats 5.00 off; the non-stackable one cannot join.
    assert out.freight_amount == 0 and [e["code"] for e in _coupon_entries(out)] == [f"coupon:{ship}"]
    assert _reasons(out) == {plain: "not_stackable"}

    stack = give(session_factory, tenant.id, make_template(
        session_factory, tenant.id, "fixed", amount=300, stackable=True), member)
    out = _preview(session_factory, tenant, member, [(sku, 1)])
    assert sorted(e["code"] for e in _coupon_entries(out)) == sorted([f"coupon:{ship}", f"coupon:{stack}"])
    assert out.freight_amount == 0 and out.payable_amount == 5000 - 300
    assert _reasons(out) == {plain: "not_best"}
    with pytest.raises(DomainError) as err:
        _preview(session_factory, tenant, member, [(sku, 1)], coupon_ids=[plain, ship])
    assert err.value.code == "coupon_not_stackable"

    with unit_of_work(session_factory) as s:
        order, _ = checkout.submit(s, tenant.id, member, _body([(sku, 1)]), idempotency_key="fs",
                                   payment_timeout=TIMEOUT)
    assert order.freight_amount == 0 and order.payable_amount == 4700
    assert {coupon(session_factory, tenant.id, c).status for c in (ship, stack)} == {"locked"}
    # The free-shipping coupon records the freight it saved (stats count it as discount given).
    assert coupon(session_factory, tenant.id, ship).discount_amount == 800
    assert coupon(session_factory, tenant.id, stack).discount_amount == 300
    assert coupon(session_factory, tenant.id, plain).status == "unused"


@pytest.mark.parametrize(("with_shipping", "most"), [(False, 1), (True, 2)], ids=["discounts", "with_free_shipping"])
def test_coupon_stage_runs_at_most_two_queries_for_ten_wallet_coupons(
    session_factory: sessionmaker[Session], tenant: Tenant, monkeypatch: pytest.MonkeyPatch,
    with_shipping: bool, most: int,
) -> None:
    from sqlalchemy import event

    from siyu.coupons import service

    make_freight_template(session_factory, tenant.id, default=True)
    member = buyer(session_factory, tenant.id)
    sku, _, _ = make_product_sku(session_factory, tenant.id, price=20000)
    for i in range(8 if with_shipping else 10):
        give(session_factory, tenant.id, make_template(session_factory, tenant.id, "fixed", amount=100 * (i + 1),
                                                       stackable=i % 2 == 0), member)
    if with_shipping:
        for stackable in (True, False):
            give(session_factory, tenant.id, make_template(session_factory, tenant.id, "free_shipping",
                                                           stackable=stackable), member)
    inside = {"on": False}
    statements: list[str] = []
    original = service.apply_to_pricing

    def traced(ctx: PricingContext) -> None:
        inside["on"] = True
        try:
            original(ctx)
        finally:
            inside["on"] = False

    monkeypatch.setattr(service, "apply_to_pricing", traced)
    with session_factory() as s:
        def _count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            if inside["on"]:
                statements.append(statement)

        event.listen(s.get_bind(), "before_cursor_execute", _count)
        try:
            out = checkout.preview(s, tenant.id, member, _body([(sku, 1)]))
        finally:
            event.remove(s.get_bind(), "before_cursor_execute", _count)
    assert len(statements) <= most, statements
    assert len([q for q in statements if "member_coupons" in q]) == 1
    assert len(out.notes["coupons"]) + len(_coupon_entries(out)) == 10


def test_free_shipping_coupon_that_saves_nothing_is_not_used(
    session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    make_freight_template(session_factory, tenant.id, default=True, free_threshold=20000)  # free from 200.00
    member = buyer(session_factory, tenant.id)
    big, _, _ = make_product_sku(session_factory, tenant.id, price=25000)
    free, _, _ = make_product_sku(session_factory, tenant.id, price=1000, free_shipping=True)
    ship = give(session_factory, tenant.id, make_template(session_factory, tenant.id, "free_shipping"), member)
    out = _preview(session_factory, tenant, member, [(big, 1)])
    assert _coupon_entries(out) == [] and _reasons(out) == {ship: "no_discount"}
    out = _preview(session_factory, tenant, member, [(free, 1)])
    assert _coupon_entries(out) == [] and _reasons(out) == {ship: "already_free_shipping"}
    for items in ([(big, 1)], [(free, 1)]):
        with pytest.raises(DomainError) as err:
            _preview(session_factory, tenant, member, items, coupon_ids=[ship])
        assert err.value.code == "coupon_no_discount"


def test_the_free_shipping_coupon_that_saves_most_is_picked_not_the_first_to_expire(
    session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    make_freight_template(session_factory, tenant.id, default=True)  # 8.00 first unit, 2.00 each further
    member = buyer(session_factory, tenant.id)
    in_cat, _, cat = make_product_sku(session_factory, tenant.id, price=5000, category=True)
    other, _, _ = make_product_sku(session_factory, tenant.id, price=5000)
    narrow = give(session_factory, tenant.id, make_template(
        session_factory, tenant.id, "free_shipping", scope="categories", scope_ids=[cat], valid_days=2), member)
    wide = give(session_factory, tenant.id, make_template(session_factory, tenant.id, "free_shipping"), member)
    out = _preview(session_factory, tenant, member, [(in_cat, 1), (other, 1)])
    assert [e["code"] for e in _coupon_entries(out)] == [f"coupon:{wide}"] and out.freight_amount == 0
    assert _coupon_entries(out)[0]["details"]["freight_saved"] == 1000
    assert _reasons(out) == {narrow: "not_best"}
