"""Property tests of the COUPONS stage over random carts and wallets (no database: the stage's
decision runs on in-memory rows). For any cart left by earlier stages and any wallet:

- the payable is >= 0 and no line goes negative;
- the coupon discount allocated to the lines sums exactly to the stage's entries, and lands
  only on lines the coupon may touch (scope, ``coupons_allowed``, ``no_coupon``);
- each applied coupon takes exactly its rule on the eligible lines' current amount
  (percent capped, fixed capped at what is left);
- with no explicit choice, no single usable coupon would have taken more off.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from siyu.coupons.models import CouponTemplate, MemberCoupon
from siyu.coupons.service import _in_scope, apply_rows, discount_value, evaluate
from siyu.kit.errors import DomainError
from siyu.orders.pricing import COUPONS, ITEM_PROMOTIONS, PricedLine, PricingContext

NOW = dt.datetime(2026, 6, 1, 12, tzinfo=dt.UTC)
MEMBER = 7


@st.composite
def carts(draw: st.DrawFn) -> list[PricedLine]:
    lines = []
    for i in range(draw(st.integers(min_value=1, max_value=6))):
        price = draw(st.integers(min_value=0, max_value=500_000))
        line = PricedLine(
            sku_id=i + 1, product_id=100 + draw(st.integers(min_value=0, max_value=4)),
            category_id=draw(st.sampled_from([None, 1, 2, 3])), title=f"line {i}", spec_text="", image_url=None,
            quantity=draw(st.integers(min_value=1, max_value=5)), list_price=price, sale_price=price, cost_price=0,
            weight_g=100, free_shipping=False, coupons_allowed=draw(st.booleans()), bonus_points=0,
        )
        earlier = draw(st.integers(min_value=0, max_value=line.goods_amount))  # what earlier stages took
        if earlier:
            line.discounts[ITEM_PROMOTIONS] = earlier
        if draw(st.integers(min_value=0, max_value=4)) == 0:
            line.flags["no_coupon"] = True
        lines.append(line)
    return lines


@st.composite
def wallets(draw: st.DrawFn) -> list[tuple[MemberCoupon, CouponTemplate]]:
    rows = []
    for i in range(draw(st.integers(min_value=0, max_value=8))):
        kind = draw(st.sampled_from(["fixed", "percent", "threshold"]))
        scope = draw(st.sampled_from(["all", "categories", "products"]))
        scope_ids = [] if scope == "all" else draw(st.lists(
            st.integers(min_value=1, max_value=3) if scope == "categories" else st.integers(min_value=100, max_value=104),
            min_size=1, max_size=3, unique=True))
        t = CouponTemplate(
            id=i + 1, merchant_id=1, name=f"t{i}", kind=kind,
            amount=draw(st.integers(min_value=1, max_value=300_000)) if kind != "percent" else 0,
            threshold=draw(st.integers(min_value=0, max_value=600_000)) if kind != "fixed" else 0,
            percent_off_bp=draw(st.integers(min_value=1, max_value=10_000)) if kind == "percent" else 0,
            max_discount=draw(st.none() | st.integers(min_value=0, max_value=200_000)) if kind == "percent" else None,
            scope=scope, scope_ids=scope_ids,
            excluded_product_ids=draw(st.lists(st.integers(min_value=100, max_value=104), max_size=2, unique=True)),
            stackable=draw(st.booleans()),
        )
        c = MemberCoupon(
            id=1000 + i, merchant_id=1, template_id=t.id, member_id=MEMBER, code=f"C{i}", status="unused",
            valid_from=NOW - dt.timedelta(days=1), valid_until=NOW + dt.timedelta(days=draw(st.integers(1, 30))),
        )
        rows.append((c, t))
    return rows


def _ctx(lines: list[PricedLine], coupon_ids: list[int] | None = None) -> PricingContext:
    return PricingContext(session=None, merchant_id=1, member_id=MEMBER, lines=lines, now=NOW,  # type: ignore[arg-type]
                          coupon_ids=coupon_ids)


def _check_allocation(ctx: PricingContext, rows: list[tuple[MemberCoupon, CouponTemplate]],
                      before: list[int]) -> int:
    entries = [e for e in ctx.entries if e.stage == COUPONS]
    allocated = sum(line.discounts.get(COUPONS, 0) for line in ctx.lines)
    assert allocated == sum(e.amount for e in entries)
    assert all(line.amount >= 0 for line in ctx.lines) and ctx.payable >= 0
    templates = {c.id: t for c, t in rows}
    for line in ctx.lines:
        if line.discounts.get(COUPONS):
            assert line.coupons_allowed and not line.flags.get("no_coupon")
            assert any(_in_scope(templates[e.details["coupon_id"]], line) for e in entries)
    for e in entries:  # each coupon took exactly its rule on the eligible lines' amount before it
        t = templates[e.details["coupon_id"]]
        eligible = [i for i, ln in enumerate(ctx.lines)
                    if _in_scope(t, ln) and ln.coupons_allowed and not ln.flags.get("no_coupon")]
        assert e.amount == discount_value(t, sum(before[i] for i in eligible))
    return allocated


@settings(max_examples=300, deadline=None)
@given(carts(), wallets())
def test_best_choice_never_negative_allocates_exactly_and_takes_the_most(
    lines: list[PricedLine], rows: list[tuple[MemberCoupon, CouponTemplate]]
) -> None:
    before = [line.amount for line in lines]
    probe = _ctx([PricedLine(**{**ln.__dict__, "discounts": dict(ln.discounts), "flags": dict(ln.flags)})
                  for ln in lines])
    best_single = max([cand.value for cand in (evaluate(probe, c, t) for c, t in rows) if cand.reason is None],
                      default=0)
    ctx = _ctx(lines)
    apply_rows(ctx, rows)
    allocated = _check_allocation(ctx, rows, before)
    assert allocated == best_single
    assert len([e for e in ctx.entries if e.stage == COUPONS]) <= 1  # discount coupons never stack with each other
    noted = {n["coupon_id"] for n in ctx.notes.get(COUPONS, [])}
    chosen = {e.details["coupon_id"] for e in ctx.entries}
    assert noted | chosen == {c.id for c, _ in rows} and not noted & chosen


@settings(max_examples=300, deadline=None)
@given(carts(), wallets(), st.data())
def test_explicit_choice_applies_or_refuses_without_touching_lines(
    lines: list[PricedLine], rows: list[tuple[MemberCoupon, CouponTemplate]], data: Any
) -> None:
    if not rows:
        return
    picked = data.draw(st.sampled_from(rows))[0].id
    before = [line.amount for line in lines]
    ctx = _ctx(lines, [picked])
    try:
        apply_rows(ctx, rows)
    except DomainError as exc:
        assert exc.code.startswith("coupon_")
        assert [line.amount for line in ctx.lines] == before and not ctx.entries
        return
    _check_allocation(ctx, rows, before)


def _fake_freight(session: Any, merchant_id: int, lines: Any, province: Any, *, free_shipping: bool = False) -> Any:
    """5.00 per chargeable line (a stand-in for the freight templates: no database)."""
    from siyu.orders.freight import FreightResult

    if free_shipping:
        return FreightResult(0, [])
    return FreightResult(500 * sum(1 for ln in lines if not ln.free_shipping and not ln.flags.get("free_shipping")),
                         [])


@st.composite
def shipping_wallets(draw: st.DrawFn) -> list[tuple[MemberCoupon, CouponTemplate]]:
    rows = draw(wallets())
    for j in range(draw(st.integers(min_value=0, max_value=3))):
        scope = draw(st.sampled_from(["all", "categories"]))
        t = CouponTemplate(
            id=100 + j, merchant_id=1, name=f"s{j}", kind="free_shipping", amount=0,
            threshold=draw(st.integers(min_value=0, max_value=300_000)), percent_off_bp=0, max_discount=None,
            scope=scope, scope_ids=[] if scope == "all" else [draw(st.integers(min_value=1, max_value=3))],
            excluded_product_ids=[], stackable=draw(st.booleans()),
        )
        c = MemberCoupon(id=2000 + j, merchant_id=1, template_id=t.id, member_id=MEMBER, code=f"S{j}",
                         status="unused", valid_from=NOW - dt.timedelta(days=1),
                         valid_until=NOW + dt.timedelta(days=draw(st.integers(1, 30))))
        rows.append((c, t))
    return rows


def _copy(lines: list[PricedLine]) -> list[PricedLine]:
    return [PricedLine(**{**ln.__dict__, "discounts": dict(ln.discounts), "flags": dict(ln.flags)}) for ln in lines]


def _combo_value(lines: list[PricedLine], combo: list[tuple[MemberCoupon, CouponTemplate]]) -> int | None:
    """What an explicit choice of ``combo`` takes off (discount + freight saved); None if refused."""
    ctx = _ctx(_copy(lines), [c.id for c, _ in combo])
    try:
        apply_rows(ctx, combo)
    except DomainError:
        return None
    return sum(e.amount + int(e.details.get("freight_saved", 0)) for e in ctx.entries if e.stage == COUPONS)


@settings(max_examples=200, deadline=None)
@given(carts(), shipping_wallets())
def test_auto_choice_is_the_best_allowed_combination_with_free_shipping(
    lines: list[PricedLine], rows: list[tuple[MemberCoupon, CouponTemplate]]
) -> None:
    """Brute force over every single coupon and every discount + free-shipping pair: the stage's
    own pick takes off at least as much as any combination an explicit choice would accept."""
    from unittest import mock

    with mock.patch("siyu.orders.freight.compute", _fake_freight):
        best = 0
        for i, row in enumerate(rows):
            best = max(best, _combo_value(lines, [row]) or 0)
            for other in rows[i + 1:]:
                if (row[1].kind == "free_shipping") != (other[1].kind == "free_shipping"):
                    best = max(best, _combo_value(lines, [row, other]) or 0)
        ctx = _ctx(_copy(lines))
        apply_rows(ctx, rows)
    got = sum(e.amount + int(e.details.get("freight_saved", 0)) for e in ctx.entries if e.stage == COUPONS)
    assert got == best
    assert all(line.amount >= 0 for line in ctx.lines)
