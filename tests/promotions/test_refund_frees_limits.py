"""Refunds free promotion purchase limits: a partial refund frees the refunded quantity of the
promotion's lines, a full refund frees everything the order held (item and order kinds alike);
each refund counts once, and a refund of other lines frees nothing."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from siyu.config import Settings
from siyu.db.session import unit_of_work
from siyu.orders.models import Order
from siyu.payments import service as payments_service
from siyu.payments.models import Refund
from siyu.promotions import service
from siyu.promotions.models import PromotionMemberCounter
from tests.conftest import Tenant
from tests.factories.aftersales import ADMIN, admin_order, drain, pay, request_aftersale
from tests.factories.orders import make_sku
from tests.factories.promotions import create_promotion, preview, shopper, submit


def _units(factory: sessionmaker[Session], promotion_id: int) -> int:
    with factory() as s:
        found = s.scalar(
            select(PromotionMemberCounter.units).where(PromotionMemberCounter.promotion_id == promotion_id)
        )
        return int(found or 0)


def _refund_lines(
    client: TestClient,
    tenant: Tenant,
    settings: Settings,
    factory: sessionmaker[Session],
    headers: dict[str, str],
    order_id: int,
    lines: list[tuple[int, int]],
) -> None:
    r = request_aftersale(client, headers, order_id, "refund_only", lines, reason_code="changed_mind")
    assert r.status_code == 201, r.text
    r = client.post(f"{ADMIN}/aftersales/{r.json()['id']}/approve", json={}, headers=tenant.admin_headers)
    assert r.status_code == 200, r.text
    drain(factory, settings, tenant)


def _refund_whole_order(
    factory: sessionmaker[Session], settings: Settings, tenant: Tenant, order_id: int
) -> None:
    """A whole-order refund by amount (no lines), as the group-buy timeout and operators make."""
    with unit_of_work(factory) as s:
        payments_service.request_refund(
            s,
            tenant.id,
            order_id,
            lines=None,
            amount=_refundable(s, tenant.id, order_id),
            reason="operator",
            idempotency_key=f"full:{order_id}",
            actor=("system", None),
        )
    drain(factory, settings, tenant)


def _refundable(s: Session, merchant_id: int, order_id: int) -> int:
    order = s.scalar(select(Order).where(Order.merchant_id == merchant_id, Order.id == order_id))
    assert order is not None
    return order.paid_amount - order.refunded_amount


def test_partial_refund_frees_the_refunded_units_and_the_full_refund_frees_the_rest(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    plain = make_sku(session_factory, tenant.id, price=3000, free_shipping=True)
    sku = make_sku(session_factory, tenant.id, price=10000, free_shipping=True)
    promo = create_promotion(
        client, tenant, "limited_discount", {"items": [{"sku_id": sku, "price": 5000}]}, per_member_limit=3
    )
    headers = shopper(client, tenant)
    r = submit(client, headers, [(plain, 2), (sku, 3)])  # the promotion's line is the second one
    assert r.status_code == 201, r.text
    order_id = r.json()["id"]
    pay(client, headers, order_id)
    drain(session_factory, settings, tenant)
    assert _units(session_factory, promo["id"]) == 3
    refused = preview(client, headers, [(sku, 1)])
    assert refused.status_code == 409 and refused.json()["code"] == "promotion_limit_reached"
    lines = {ln["sku_id"]: ln["id"] for ln in admin_order(client, tenant, order_id)["lines"]}

    _refund_lines(client, tenant, settings, session_factory, headers, order_id, [(lines[plain], 1)])
    assert _units(session_factory, promo["id"]) == 3  # another line refunded: nothing freed

    _refund_lines(client, tenant, settings, session_factory, headers, order_id, [(lines[sku], 2)])
    assert _units(session_factory, promo["id"]) == 1  # the two refunded units are free again
    assert preview(client, headers, [(sku, 2)]).status_code == 200
    again = preview(client, headers, [(sku, 3)])
    assert again.status_code == 409 and again.json()["code"] == "promotion_limit_reached"

    # A replayed refund event frees nothing twice.
    with unit_of_work(session_factory) as s:
        refund_ids = sorted(
            s.scalars(select(Refund.id).where(Refund.merchant_id == tenant.id, Refund.order_id == order_id))
        )
    with unit_of_work(session_factory) as s:
        assert (
            service.record_refund(
                s,
                tenant.id,
                order_id,
                refund_ids[-1],
                1,
                lines=[{"order_line_id": lines[sku], "quantity": 2, "amount": 1}],
            )
            == 0
        )
    assert _units(session_factory, promo["id"]) == 1

    # The rest of the order refunded: the order is refunded in full and the last unit is free.
    _refund_lines(
        client, tenant, settings, session_factory, headers, order_id, [(lines[plain], 1), (lines[sku], 1)]
    )
    assert admin_order(client, tenant, order_id)["refund_status"] == "full"
    assert _units(session_factory, promo["id"]) == 0
    assert submit(client, headers, [(sku, 3)]).status_code == 201


def test_full_refund_by_amount_frees_item_and_order_promotion_limits(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    sku = make_sku(session_factory, tenant.id, price=10000, free_shipping=True)
    limited = create_promotion(
        client,
        tenant,
        "limited_discount",
        {"items": [{"sku_id": sku, "percent_off": 10}]},
        per_member_limit=2,
    )
    save = create_promotion(
        client, tenant, "spend_save", {"tiers": [{"threshold": 15000, "discount": 1000}]}, per_member_limit=1
    )
    headers = shopper(client, tenant)
    r = submit(client, headers, [(sku, 2)])
    assert r.status_code == 201, r.text
    order_id = r.json()["id"]
    assert r.json()["payable_amount"] == 2 * 9000 - 1000
    pay(client, headers, order_id)
    drain(session_factory, settings, tenant)
    assert (_units(session_factory, limited["id"]), _units(session_factory, save["id"])) == (2, 1)
    blocked = preview(client, headers, [(sku, 2)])
    assert blocked.status_code == 409 and blocked.json()["code"] == "promotion_limit_reached"

    _refund_whole_order(session_factory, settings, tenant, order_id)

    assert admin_order(client, tenant, order_id)["refund_status"] == "full"
    assert (_units(session_factory, limited["id"]), _units(session_factory, save["id"])) == (0, 0)
    again = submit(client, headers, [(sku, 2)])
    assert again.status_code == 201 and again.json()["payable_amount"] == 2 * 9000 - 1000, again.text
