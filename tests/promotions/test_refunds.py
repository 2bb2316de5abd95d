"""Refund claw-back with promotions applied: refunds use each line's allocated paid amount, so a
partial refund of a line returns exactly its paid share and refunding every line returns exactly
what was paid (through the after-sales API and the sandbox provider)."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from siyu.config import Settings
from siyu.db.session import unit_of_work
from siyu.payments.models import Refund
from siyu.promotions import service
from tests.conftest import Tenant
from tests.factories.aftersales import ADMIN, admin_order, drain, pay, request_aftersale
from tests.factories.orders import make_sku
from tests.factories.promotions import create_promotion, shopper, submit


def _refund(
    client: TestClient, tenant: Tenant, settings: Settings, factory: sessionmaker[Session], headers: dict[str, str],
    order_id: int, lines: list[tuple[int, int]],
) -> int:
    r = request_aftersale(client, headers, order_id, "refund_only", lines, reason_code="changed_mind")
    assert r.status_code == 201, r.text
    amount = int(r.json()["refund_amount"])
    r = client.post(f"{ADMIN}/aftersales/{r.json()['id']}/approve", json={}, headers=tenant.admin_headers)
    assert r.status_code == 200, r.text
    drain(factory, settings, tenant)
    return amount


def test_partial_and_full_refunds_return_exactly_the_paid_shares(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    a = make_sku(session_factory, tenant.id, price=3333, free_shipping=True)
    b = make_sku(session_factory, tenant.id, price=10001, free_shipping=True)
    extra = make_sku(session_factory, tenant.id, price=4999, free_shipping=True)
    create_promotion(client, tenant, "limited_discount", {"items": [{"sku_id": a, "percent_off": 17}]})
    save = create_promotion(client, tenant, "spend_save", {"tiers": [{"threshold": 20000, "discount": 2999}]})
    add_on = create_promotion(client, tenant, "add_on", {
        "threshold": 10000, "items": [{"sku_id": extra, "price": 1234, "per_order_limit": 2, "stock": 5}],
    })
    headers = shopper(client, tenant)
    r = submit(client, headers, [(a, 3), (b, 2)],
               options={"add_on": [{"promotion_id": add_on["id"], "sku_id": extra, "quantity": 2}]})
    assert r.status_code == 201, r.text
    order_id = r.json()["id"]
    pay(client, headers, order_id)
    drain(session_factory, settings, tenant)
    order = admin_order(client, tenant, order_id)
    lines = {ln["sku_id"]: ln for ln in order["lines"]}
    assert lines[a]["discounts"].keys() == {"item_promotions", "order_promotions"}
    assert lines[extra]["payable_amount"] == 2 * 1234
    paid = order["paid_amount"]
    assert paid == sum(ln["payable_amount"] for ln in order["lines"]) + order["freight_amount"]

    la = lines[a]
    first = _refund(client, tenant, settings, session_factory, headers, order_id, [(la["id"], 1)])
    assert first == la["payable_amount"] * 1 // 3  # one unit's paid share of the discounted line
    rest = _refund(client, tenant, settings, session_factory, headers, order_id,
                   [(la["id"], 2), (lines[b]["id"], 2), (lines[extra]["id"], 2)])
    assert rest == paid - first
    order = admin_order(client, tenant, order_id)
    assert order["refunded_amount"] == order["paid_amount"] == paid
    assert order["refund_status"] == "full"
    assert {ln["sku_id"]: ln["refunded_amount"] for ln in order["lines"]} == {
        sku: ln["payable_amount"] for sku, ln in lines.items()
    }

    # the usage ledger follows: each refund counted once, net GMV down to zero
    stats = client.get(f"{ADMIN}/promotions/{save['id']}/stats", headers=tenant.admin_headers).json()
    assert (stats["paid_orders"], stats["gmv"], stats["refunded"], stats["net_gmv"]) == (1, paid, paid, 0)
    with unit_of_work(session_factory) as s:
        refund_ids = list(s.scalars(select(Refund.id).where(Refund.merchant_id == tenant.id, Refund.order_id == order_id)))
        assert len(refund_ids) == 2
        assert service.record_refund(s, tenant.id, order_id, refund_ids[0], first) == 0  # a replayed event: no-op
