"""Orders and points end to end: earn on paid (once), spend at checkout (clamped, noted), the
submit refusal, cancellation returning points, refunds reversing in proportion and exactly
on a full refund, award on completion."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from sqlalchemy.orm import Session, sessionmaker

from siyu.config import Settings
from siyu.db.session import unit_of_work
from siyu.kit.errors import DomainError
from siyu.kit.timeutil import utcnow
from siyu.loyalty import service, stages
from siyu.loyalty.service import _share
from siyu.orders import service as orders_service
from siyu.orders.pricing import PricedLine, PricingContext, run_pipeline
from siyu.worker.runner import Worker
from tests.conftest import Tenant
from tests.factories import payments as f
from tests.factories.orders import make_sku
from tests.loyalty import helpers as h

STORE = "/api/store/v1"


def _drain(factory: sessionmaker[Session], settings: Settings, tenant: Tenant) -> None:
    Worker(factory, settings, merchant_id=tenant.id).drain()


def _submit(client: TestClient, headers: dict[str, str], items: list[tuple[int, int]], points: int = 0) -> dict[str, Any]:
    body = {"items": [{"sku_id": s, "quantity": q} for s, q in items], "points_to_use": points}
    r = client.post(f"{STORE}/checkout/submit", json=body, headers={**headers, "Idempotency-Key": uuid.uuid4().hex})
    assert r.status_code == 201, r.text
    return dict(r.json())


def _pay(client: TestClient, order_id: int, headers: dict[str, str]) -> None:
    r = client.post(f"{STORE}/orders/{order_id}/pay", headers=headers)
    assert r.status_code == 200, r.text
    r = client.post(r.json()["params"]["complete_url"], headers=headers)
    assert r.status_code == 200, r.text


def _refund(client: TestClient, tenant: Tenant, order_id: int, amount: int, key: str) -> None:
    r = client.post(f"/api/admin/v1/orders/{order_id}/refunds", json={"amount": amount, "reason": "退款"},
                    headers={**tenant.admin_headers, "Idempotency-Key": key})
    assert r.status_code == 201, r.text


def test_order_points_are_earned_once_on_paid_with_bonus_and_multiplier(
    client: TestClient, session_factory: sessionmaker[Session], settings: Settings, tenant: Tenant
) -> None:
    h.add_level(session_factory, tenant.id, 0, "普通会员", points_multiplier_percent=150)
    member, headers = f.paying_customer(session_factory, tenant.id)
    with unit_of_work(session_factory) as s:
        service.evaluate_level(s, tenant.id, member)  # the entry level
    sku = make_sku(session_factory, tenant.id, price=12345, free_shipping=True, bonus_points=10)
    order = _submit(client, headers, [(sku, 2)])
    _pay(client, order["id"], headers)
    _drain(session_factory, settings, tenant)
    _drain(session_factory, settings, tenant)
    earned = [e for e in h.entries(session_factory, tenant.id, member) if e.kind == "earn"]
    # (24690 fen -> 246 points + 2 x 10 bonus) x 1.5
    assert [e.delta for e in earned] == [(246 + 20) * 150 // 100]
    with session_factory() as s:
        summary = service.summary(s, tenant.id, member)
    assert (summary.growth, summary.paid_orders, summary.paid_spend) == (246, 1, 24690)


def test_refunds_reverse_earned_and_return_spent_in_proportion_then_exactly_on_full(
    client: TestClient, session_factory: sessionmaker[Session], settings: Settings, tenant: Tenant
) -> None:
    member, headers = f.paying_customer(session_factory, tenant.id)
    h.award(session_factory, tenant.id, member, 5000, "gift")
    sku = make_sku(session_factory, tenant.id, price=12345, free_shipping=True, bonus_points=10)
    order = _submit(client, headers, [(sku, 2)], points=2000)
    assert order["points_used"] == 2000 and order["payable_amount"] == 24690 - 2000
    assert h.balance(session_factory, tenant.id, member) == 3000
    _pay(client, order["id"], headers)
    _drain(session_factory, settings, tenant)
    paid = 22690
    earned = paid // 100 + 20
    assert h.balance(session_factory, tenant.id, member) == 3000 + earned

    _refund(client, tenant, order["id"], 7000, "r1")
    _drain(session_factory, settings, tenant)
    reversed_1, returned_1 = earned * 7000 // paid, 2000 * 7000 // paid
    assert h.balance(session_factory, tenant.id, member) == 3000 + earned - reversed_1 + returned_1

    _refund(client, tenant, order["id"], 5000, "r2")
    _drain(session_factory, settings, tenant)
    reversed_2, returned_2 = earned * 12000 // paid, 2000 * 12000 // paid
    assert h.balance(session_factory, tenant.id, member) == 3000 + earned - reversed_2 + returned_2

    _refund(client, tenant, order["id"], paid - 12000, "r3")
    _drain(session_factory, settings, tenant)
    # Full refund: every earned point reversed, every spent point back; nothing more.
    assert h.balance(session_factory, tenant.id, member) == 5000
    assert h.entries_sum(session_factory, tenant.id, member) == 5000 == h.open_lots_sum(session_factory, tenant.id, member)
    with session_factory() as s:
        summary = service.summary(s, tenant.id, member)
    assert summary.growth == 0 and summary.paid_spend == 0


def test_refunding_every_item_takes_back_every_point_and_all_growth_although_the_freight_was_kept(
    client: TestClient, session_factory: sessionmaker[Session], settings: Settings, tenant: Tenant
) -> None:
    """Points and growth are earned on the goods (freight excluded), so their reversal follows
    the goods too: a refund counts against the goods first. In proportion to the paid amount
    (freight included), refunding both items of 10,000 + 1,000 freight left 10 of 100 points and 10 growth."""
    from tests.factories.orders import make_freight_template

    make_freight_template(session_factory, tenant.id, default=True)  # 800 fen for the first unit
    member, headers = f.paying_customer(session_factory, tenant.id)
    sku = make_sku(session_factory, tenant.id, price=5000)
    order = _submit(client, headers, [(sku, 2)])
    assert (order["freight_amount"], order["payable_amount"]) == (1000, 11000)  # 800 + 200 for the second unit
    _pay(client, order["id"], headers)
    _drain(session_factory, settings, tenant)
    assert h.balance(session_factory, tenant.id, member) == 100  # 10,000 fen of goods, 1 point per yuan
    with session_factory() as s:
        assert service.summary(s, tenant.id, member).growth == 100

    _refund(client, tenant, order["id"], 5000, "goods-1")  # one item: half the goods
    _drain(session_factory, settings, tenant)
    assert h.balance(session_factory, tenant.id, member) == 50
    with session_factory() as s:
        assert service.summary(s, tenant.id, member).growth == 50

    _refund(client, tenant, order["id"], 5000, "goods-2")  # the other item; the freight stays paid
    _drain(session_factory, settings, tenant)
    assert h.balance(session_factory, tenant.id, member) == 0
    assert h.entries_sum(session_factory, tenant.id, member) == 0 == h.open_lots_sum(session_factory, tenant.id, member)
    with session_factory() as s:
        summary = service.summary(s, tenant.id, member)
    assert (summary.growth, summary.paid_spend) == (0, 1000)


def test_cancelled_order_returns_its_points(
    client: TestClient, session_factory: sessionmaker[Session], settings: Settings, tenant: Tenant
) -> None:
    member, headers = f.paying_customer(session_factory, tenant.id)
    h.award(session_factory, tenant.id, member, 800, "gift")
    sku = make_sku(session_factory, tenant.id, price=10000, free_shipping=True)
    order = _submit(client, headers, [(sku, 1)], points=500)
    assert h.balance(session_factory, tenant.id, member) == 300
    r = client.post(f"{STORE}/orders/{order['id']}/cancel", headers=headers)
    assert r.status_code == 200, r.text
    _drain(session_factory, settings, tenant)
    _drain(session_factory, settings, tenant)
    assert h.balance(session_factory, tenant.id, member) == 800 == h.entries_sum(session_factory, tenant.id, member)
    assert [e.kind for e in h.entries(session_factory, tenant.id, member)] == ["earn", "spend", "reverse"]


def test_points_use_is_clamped_to_balance_and_max_percent_and_noted(
    client: TestClient, session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    h.set_rules(session_factory, tenant.id, deduction={"points_per_yuan": 100, "max_percent": 30, "min_points": 0})
    member, headers = f.paying_customer(session_factory, tenant.id)
    h.award(session_factory, tenant.id, member, 5000, "gift")
    sku = make_sku(session_factory, tenant.id, price=10000, free_shipping=True)
    body = {"items": [{"sku_id": sku, "quantity": 1}], "points_to_use": 9999}
    r = client.post(f"{STORE}/checkout/preview", json=body, headers=headers)
    assert r.status_code == 200, r.text
    out = r.json()
    points_rows = [b for b in out["breakdown"] if b["stage"] == "points"]
    assert points_rows == [{"stage": "points", "code": "points", "label": "积分抵扣（3000 积分）", "amount": -3000,
                            "details": {"points": 3000, "points_per_yuan": 100}}]
    assert out["notes"]["points"] == [{"code": "points_clamped", "requested": 9999, "used": 3000, "reason": "balance"}]
    assert out["payable_amount"] == 7000
    assert h.balance(session_factory, tenant.id, member) == 5000  # a preview spends nothing


def test_below_min_points_is_not_used(client: TestClient, session_factory: sessionmaker[Session], tenant: Tenant) -> None:
    h.set_rules(session_factory, tenant.id, deduction={"min_points": 1000})
    member, headers = f.paying_customer(session_factory, tenant.id)
    h.award(session_factory, tenant.id, member, 5000, "gift")
    sku = make_sku(session_factory, tenant.id, price=10000, free_shipping=True)
    order = _submit(client, headers, [(sku, 1)], points=999)
    assert order["points_used"] == 0 and order["payable_amount"] == 10000
    assert h.balance(session_factory, tenant.id, member) == 5000


def _ctx(session: Session, tenant: Tenant, member: int, points: int, no_points: bool) -> PricingContext:
    lines = [
        PricedLine(sku_id=i, product_id=i, category_id=None, title="t", spec_text="", image_url=None, quantity=1,
                   list_price=10000, sale_price=10000, cost_price=0, weight_g=0, free_shipping=True,
                   coupons_allowed=True, bonus_points=0)
        for i in (1, 2)
    ]
    if no_points:
        lines[1].flags["no_points"] = True
    return PricingContext(session=session, merchant_id=tenant.id, member_id=member, lines=lines, now=utcnow(),
                          points_to_use=points)


def test_points_stage_leaves_no_points_lines_alone(session_factory: sessionmaker[Session], tenant: Tenant) -> None:
    member = f.buyer(session_factory, tenant.id)
    h.award(session_factory, tenant.id, member, 50000, "gift")
    with session_factory() as s:
        ctx = run_pipeline(_ctx(s, tenant, member, 50000, no_points=True))
    # 50% of the one eligible line (10000 fen) = 5000 fen = 5000 points; the flagged line untouched.
    assert [ln.discounts.get("points", 0) for ln in ctx.lines] == [5000, 0]
    assert ctx.points_to_use == 5000


def test_submit_refuses_when_the_balance_fell_below_the_reserved_points(
    session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    member = f.buyer(session_factory, tenant.id)
    h.award(session_factory, tenant.id, member, 100, "gift")
    with pytest.raises(DomainError) as exc, unit_of_work(session_factory) as s:
        ctx = _ctx(s, tenant, member, 0, no_points=False)
        ctx.reservations[stages.RESERVATION] = {"points": 500, "amount": 500}
        stages.points_submit(ctx, 987654)
    assert exc.value.code == "points_insufficient"
    assert h.balance(session_factory, tenant.id, member) == 100
    assert len(h.entries(session_factory, tenant.id, member)) == 1


def test_award_on_completion_waits_for_completion(
    client: TestClient, session_factory: sessionmaker[Session], settings: Settings, tenant: Tenant
) -> None:
    h.set_rules(session_factory, tenant.id, earn={"award_on": "completed"})
    member, headers = f.paying_customer(session_factory, tenant.id)
    sku = make_sku(session_factory, tenant.id, price=10000, free_shipping=True)
    order = _submit(client, headers, [(sku, 1)])
    _pay(client, order["id"], headers)
    _drain(session_factory, settings, tenant)
    assert h.balance(session_factory, tenant.id, member) == 0
    with unit_of_work(session_factory) as s:
        orders_service.ship(s, tenant.id, order["id"], carrier="SF", tracking_no="SF1", actor=h.SYSTEM)
    with unit_of_work(session_factory) as s:
        orders_service.complete(s, tenant.id, order["id"], actor=h.SYSTEM)
    _drain(session_factory, settings, tenant)
    assert h.balance(session_factory, tenant.id, member) == 100


@hsettings(max_examples=300, deadline=None)
@given(
    total=st.integers(min_value=0, max_value=10**7),
    paid=st.integers(min_value=1, max_value=10**8),
    cuts=st.lists(st.integers(min_value=1, max_value=10**6), min_size=1, max_size=8),
)
def test_proportional_reversal_never_exceeds_and_ends_exact(total: int, paid: int, cuts: list[int]) -> None:
    """Running-total shares: monotonic, never above the total, exactly the total at a full refund."""
    refunded, previous, taken = 0, 0, 0
    for cut in cuts:
        refunded = min(paid, refunded + cut)
        target = _share(total, refunded, paid, full=refunded >= paid)
        assert previous <= target <= total
        taken += target - previous
        previous = target
    final = _share(total, paid, paid, full=True)
    taken += final - previous
    assert taken == total


def test_refund_handler_runs_once_per_refund(session_factory: sessionmaker[Session], tenant: Tenant) -> None:
    member = f.buyer(session_factory, tenant.id)
    sku = make_sku(session_factory, tenant.id, price=10000, free_shipping=True)
    from tests.factories.orders import submit_order

    order = submit_order(session_factory, tenant.id, member, [(sku, 1)])
    with unit_of_work(session_factory) as s:
        orders_service.mark_paid(s, tenant.id, order.id, amount=10000, paid_at=utcnow(), actor=h.SYSTEM)
        service.on_order_paid(s, tenant.id, order.id)
    assert h.balance(session_factory, tenant.id, member) == 100
    for _ in range(2):
        with unit_of_work(session_factory) as s:
            service.on_order_refunded(s, tenant.id, order.id, 777, 5000, full=False, now=utcnow() + dt.timedelta(hours=1))
    assert h.balance(session_factory, tenant.id, member) == 50


def test_a_refund_handled_before_the_paid_job_is_netted_when_the_order_is_counted(
    session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    from tests.factories.orders import submit_order

    member = f.buyer(session_factory, tenant.id)
    sku = make_sku(session_factory, tenant.id, price=10000, free_shipping=True)
    order = submit_order(session_factory, tenant.id, member, [(sku, 1)])
    with unit_of_work(session_factory) as s:
        orders_service.mark_paid(s, tenant.id, order.id, amount=10000, paid_at=utcnow(), actor=h.SYSTEM)
        service.on_order_refunded(s, tenant.id, order.id, 991, 2500, full=False)  # the refund job ran first
    with unit_of_work(session_factory) as s:
        service.on_order_paid(s, tenant.id, order.id)
    with session_factory() as s:
        summary = service.summary(s, tenant.id, member)
    assert summary.paid_spend == 7500
    assert h.balance(session_factory, tenant.id, member) == 100 - 100 * 2500 // 10000
    assert summary.growth == 100 - 100 * 2500 // 10000


def test_an_order_refunded_in_full_no_longer_counts_as_a_paid_order_whichever_job_runs_first(
    session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    """paid_orders feeds the level rules (min_orders): buying and refunding must not climb them.
    Two partial refunds emptying the order take it off once; a refund seen before the paid job
    means the order is never counted."""
    from tests.factories.orders import submit_order

    member = f.buyer(session_factory, tenant.id)
    sku = make_sku(session_factory, tenant.id, price=10000, free_shipping=True)
    first, second = (submit_order(session_factory, tenant.id, member, [(sku, 1)]) for _ in range(2))
    with unit_of_work(session_factory) as s:
        orders_service.mark_paid(s, tenant.id, first.id, amount=10000, paid_at=utcnow(), actor=h.SYSTEM)
        service.on_order_paid(s, tenant.id, first.id)
        orders_service.mark_paid(s, tenant.id, second.id, amount=10000, paid_at=utcnow(), actor=h.SYSTEM)
        service.on_order_refunded(s, tenant.id, second.id, 993, 10000, full=True)  # the refund job ran first
    with unit_of_work(session_factory) as s:
        service.on_order_paid(s, tenant.id, second.id)
    with session_factory() as s:
        assert (service.summary(s, tenant.id, member).paid_orders, service.summary(s, tenant.id, member).paid_spend) == (
            1, 10000)
    for refund_id in (994, 995, 995):  # two halves, the second delivered twice
        with unit_of_work(session_factory) as s:
            service.on_order_refunded(s, tenant.id, first.id, refund_id, 5000, full=refund_id == 995)
    with session_factory() as s:
        summary = service.summary(s, tenant.id, member)
    assert (summary.paid_orders, summary.paid_spend) == (0, 0)


def test_a_retried_submit_with_points_spends_them_once(
    client: TestClient, session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    member, headers = f.paying_customer(session_factory, tenant.id)
    h.award(session_factory, tenant.id, member, 1000, "gift")
    sku = make_sku(session_factory, tenant.id, price=10000, free_shipping=True)
    body = {"items": [{"sku_id": sku, "quantity": 1}], "points_to_use": 400}
    first = client.post(f"{STORE}/checkout/submit", json=body, headers={**headers, "Idempotency-Key": "same"})
    again = client.post(f"{STORE}/checkout/submit", json=body, headers={**headers, "Idempotency-Key": "same"})
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["id"] == again.json()["id"] and first.json()["points_used"] == 400
    assert h.balance(session_factory, tenant.id, member) == 600
    assert [e.kind for e in h.entries(session_factory, tenant.id, member)] == ["earn", "spend"]
