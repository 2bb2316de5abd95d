"""A paid membership card bought through checkout: its product becomes virtual when a card plan
sells it (coupons off by default, and it cannot be turned physical while a plan sells it); a
customer without any address buys it, pays in the sandbox, the card is granted and the order
completed; a full refund in the plan's window revokes the card (the existing rule)."""

from __future__ import annotations

import datetime as dt
import uuid

from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from siyu.catalog.models import KIND_PHYSICAL, KIND_VIRTUAL, Product, Sku
from siyu.config import Settings
from siyu.db.session import unit_of_work
from siyu.loyalty import service
from siyu.loyalty.models import MemberCard
from siyu.loyalty.schemas import CardPlanIn
from siyu.orders.models import CLOSED, COMPLETED
from siyu.tenancy import service as tenancy_service
from siyu.worker.runner import Worker
from tests.conftest import Tenant
from tests.factories.catalog import ADMIN, create_product
from tests.factories.orders import make_freight_template, make_member, make_sku
from tests.loyalty import helpers as h

STORE = "/api/store/v1"


def _product_of(factory: sessionmaker[Session], sku_id: int) -> int:
    with factory() as s:
        sku = s.get(Sku, sku_id)
        assert sku is not None
        return sku.product_id


def _product(factory: sessionmaker[Session], product_id: int) -> Product:
    with factory() as s:
        found = s.get(Product, product_id)
        assert found is not None
        return found


def test_saving_a_card_plan_makes_its_product_virtual_with_coupons_off(
    session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    product_id = _product_of(session_factory, make_sku(session_factory, tenant.id, price=9900, title="年卡"))
    assert _product(session_factory, product_id).kind == KIND_PHYSICAL
    assert _product(session_factory, product_id).coupons_allowed is True
    with unit_of_work(session_factory) as s:
        plan = service.save_card_plan(s, tenant.id, CardPlanIn(name="年卡", product_id=product_id, free_shipping=True),
                                      plan_id=None, actor=h.SYSTEM)
    product = _product(session_factory, product_id)
    assert product.kind == KIND_VIRTUAL and product.coupons_allowed is False
    # The merchant allows coupons again; saving the plan once more leaves that choice alone.
    with unit_of_work(session_factory) as s:
        s.get(Product, product_id).coupons_allowed = True  # type: ignore[union-attr]
    with unit_of_work(session_factory) as s:
        service.save_card_plan(s, tenant.id, CardPlanIn(name="年卡 2", product_id=product_id, free_shipping=True),
                               plan_id=plan.id, actor=h.SYSTEM)
    product = _product(session_factory, product_id)
    assert product.kind == KIND_VIRTUAL and product.coupons_allowed is True


def test_admin_products_carry_kind_and_a_card_product_cannot_turn_physical(
    client: TestClient, session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    service_card = create_product(client, tenant, "验光服务", kind="virtual")
    assert service_card["kind"] == "virtual"
    glasses = create_product(client, tenant, "镜框")
    assert glasses["kind"] == "physical"
    # A virtual product no plan sells may turn physical, and back.
    r = client.patch(f"{ADMIN}/products/{service_card['id']}", json={"kind": "physical"},
                     headers=tenant.admin_headers)
    assert r.status_code == 200 and r.json()["kind"] == "physical", r.text
    r = client.patch(f"{ADMIN}/products/{glasses['id']}", json={"kind": None}, headers=tenant.admin_headers)
    assert r.status_code == 422, r.text

    r = client.post(f"{ADMIN}/loyalty/cards", headers=tenant.admin_headers,
                    json={"name": "年卡", "product_id": glasses["id"], "term_days": 365, "free_shipping": True})
    assert r.status_code == 201, r.text
    r = client.patch(f"{ADMIN}/products/{glasses['id']}", json={"kind": "physical"}, headers=tenant.admin_headers)
    assert r.status_code == 409 and r.json()["code"] == "card_product_virtual", r.text
    assert _product(session_factory, glasses["id"]).kind == KIND_VIRTUAL


def test_card_bought_without_address_is_granted_on_sandbox_payment_and_revoked_by_a_full_refund(
    client: TestClient, session_factory: sessionmaker[Session], settings: Settings, tenant: Tenant
) -> None:
    make_freight_template(session_factory, tenant.id, default=True)
    vip = h.add_level(session_factory, tenant.id, 1, "VIP", min_points=10, member_price_percent=80)
    gold = h.add_level(session_factory, tenant.id, 2, "金卡", min_points=10**9, member_price_percent=70,
                       points_multiplier_percent=300)
    product_id = _product_of(session_factory, make_sku(session_factory, tenant.id, price=9900, title="金卡年卡"))
    r = client.post(f"{ADMIN}/loyalty/cards", headers=tenant.admin_headers,
                    json={"name": "金卡年卡", "product_id": product_id, "level_id": gold, "term_days": 365,
                          "refund_days": 7})
    assert r.status_code == 201, r.text
    plan_id = r.json()["id"]
    member = make_member(session_factory, tenant.id)  # no address
    h.award(session_factory, tenant.id, member, 10, "to-vip")
    with unit_of_work(session_factory) as s:
        service.evaluate_level(s, tenant.id, member)
        token, _ = tenancy_service.issue_customer_token(s, tenant.id, member, dt.timedelta(hours=1))
    headers = {"Authorization": f"Bearer {token}"}
    assert h.level_of(session_factory, tenant.id, member) == "VIP"

    r = client.post(f"{STORE}/loyalty/cards/{plan_id}/buy", json={},
                    headers={**headers, "Idempotency-Key": uuid.uuid4().hex})
    assert r.status_code == 201, r.text
    order = r.json()
    # The VIP's 20 % member price does not touch the card; nothing ships, so no freight.
    assert (order["payable_amount"], order["freight_amount"], order["discount_amount"]) == (9900, 0, 0)
    assert order["address"] == {} and [ln["is_virtual"] for ln in order["lines"]] == [True]

    r = client.post(f"{STORE}/orders/{order['id']}/pay", headers=headers)
    assert r.status_code in (200, 201), r.text
    r = client.post(r.json()["params"]["complete_url"], headers=headers)
    assert r.status_code < 300, r.text
    Worker(session_factory, settings, merchant_id=tenant.id).drain()
    detail = client.get(f"{STORE}/orders/{order['id']}", headers=headers).json()
    assert detail["status"] == COMPLETED and detail["completed_at"] is not None
    with session_factory() as s:
        (card,) = s.scalars(select(MemberCard).where(MemberCard.merchant_id == tenant.id)).all()
    assert card.status == "active" and card.order_id == order["id"] and card.level_id == gold
    assert h.level_of(session_factory, tenant.id, member) == "金卡"
    # The card's own order earns at the level held before it (VIP, 1×): 99 points, not 3 × 99.
    assert h.balance(session_factory, tenant.id, member) == 10 + 99

    r = client.post(f"{ADMIN}/orders/{order['id']}/refunds", json={"amount": 9900, "reason": "不要了"},
                    headers={**tenant.admin_headers, "Idempotency-Key": "card-refund"})
    assert r.status_code == 201, r.text
    Worker(session_factory, settings, merchant_id=tenant.id).drain()
    with session_factory() as s:
        (card,) = s.scalars(select(MemberCard).where(MemberCard.merchant_id == tenant.id)).all()
    assert card.status == "revoked"
    assert client.get(f"{STORE}/orders/{order['id']}", headers=headers).json()["status"] == CLOSED
    assert h.level_of(session_factory, tenant.id, member) == "VIP"
    assert vip  # the rules level is what remains


def test_the_demo_card_is_virtual_and_checks_out_without_address(
    session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    from siyu.loyalty import demo_data
    from siyu.loyalty import repository as repo
    from siyu.orders import checkout
    from siyu.orders.schemas import CheckoutIn

    with unit_of_work(session_factory) as s:
        demo_data.seed(s, tenant.id)
    with session_factory() as s:
        (plan,) = repo.card_plans(s, tenant.id)
        sku_id = s.scalar(select(Sku.id).where(Sku.merchant_id == tenant.id, Sku.product_id == plan.product_id))
    product = _product(session_factory, plan.product_id)
    assert product.kind == KIND_VIRTUAL and product.coupons_allowed is False
    member = make_member(session_factory, tenant.id)
    with session_factory() as s:
        preview = checkout.preview(s, tenant.id, member, CheckoutIn.model_validate(
            {"items": [{"sku_id": sku_id, "quantity": 1}]}))
    assert preview.payable_amount == 9900 and preview.freight_amount == 0 and preview.address is None
