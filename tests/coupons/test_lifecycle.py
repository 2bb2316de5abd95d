"""Wallet transitions at the service level: each moves a coupon once, and a coupon that comes
back after its validity comes back expired."""

from __future__ import annotations

import datetime as dt

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from siyu.coupons import service
from siyu.db.session import unit_of_work
from siyu.kit.audit import AuditEvent
from siyu.kit.errors import DomainError
from siyu.orders import checkout
from siyu.orders.schemas import CheckoutIn
from tests.conftest import Tenant
from tests.coupons.helpers import STORE, coupon, give, make_product_sku, make_template, template
from tests.factories import payments as f
from tests.factories.orders import buyer, make_member

TIMEOUT = dt.timedelta(minutes=30)


def _order_with(factory: sessionmaker[Session], tenant: Tenant, member: int, sku: int, coupon_id: int) -> int:
    with unit_of_work(factory) as s:
        body = CheckoutIn.model_validate({"items": [{"sku_id": sku, "quantity": 1}], "coupon_ids": [coupon_id]})
        order, _ = checkout.submit(s, tenant.id, member, body, idempotency_key=f"k{coupon_id}", payment_timeout=TIMEOUT)
        return order.id


def test_cancel_after_validity_returns_it_expired(session_factory: sessionmaker[Session], tenant: Tenant) -> None:
    member = buyer(session_factory, tenant.id)
    sku, _, _ = make_product_sku(session_factory, tenant.id, price=3000)
    c = give(session_factory, tenant.id, make_template(session_factory, tenant.id, "fixed", amount=300, valid_days=1),
             member)
    order_id = _order_with(session_factory, tenant, member, sku, c)
    later = coupon(session_factory, tenant.id, c).valid_until + dt.timedelta(seconds=1)
    with unit_of_work(session_factory) as s:
        assert service.on_order_cancelled(s, tenant.id, order_id, later) == [(c, "expired")]
        assert service.on_order_cancelled(s, tenant.id, order_id, later) == []  # once
    back = coupon(session_factory, tenant.id, c)
    assert back.status == "expired" and back.order_id is None and back.expired_at is not None


def test_paid_and_refunded_move_once_and_are_audited(session_factory: sessionmaker[Session], tenant: Tenant) -> None:
    member = buyer(session_factory, tenant.id)
    sku, _, _ = make_product_sku(session_factory, tenant.id, price=3000)
    c = give(session_factory, tenant.id, make_template(session_factory, tenant.id, "fixed", amount=300), member)
    order_id = _order_with(session_factory, tenant, member, sku, c)
    with unit_of_work(session_factory) as s:
        now = dt.datetime.now(dt.UTC)
        assert service.on_order_paid(s, tenant.id, order_id, 2700, now) == [c]
        assert service.on_order_paid(s, tenant.id, order_id, 2700, now) == []
        assert service.on_order_cancelled(s, tenant.id, order_id, now) == []  # a used coupon is not "cancelled"
    assert (coupon(session_factory, tenant.id, c).status, coupon(session_factory, tenant.id, c).order_amount) == (
        "used", 2700)
    with unit_of_work(session_factory) as s:
        assert service.on_order_refunded(s, tenant.id, order_id, now) == [(c, "unused")]
        assert service.on_order_refunded(s, tenant.id, order_id, now) == []
    with session_factory() as s:
        actions = [a.action for a in s.query(AuditEvent).filter_by(
            merchant_id=tenant.id, subject_type="member_coupon", subject_id=c).order_by(AuditEvent.id)]
    assert actions == ["locked", "used", "returned"]


def test_claim_with_idempotency_key_returns_the_same_coupon(
    client: TestClient, session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    _, headers = f.paying_customer(session_factory, tenant.id)
    tpl = make_template(session_factory, tenant.id, "fixed", amount=300, per_member_limit=3)
    url = f"{STORE}/coupons/templates/{tpl}/claim"
    first = client.post(url, headers={**headers, "Idempotency-Key": "tap-1"}).json()
    again = client.post(url, headers={**headers, "Idempotency-Key": "tap-1"}).json()
    other = client.post(url, headers={**headers, "Idempotency-Key": "tap-2"}).json()
    assert first["id"] == again["id"] != other["id"]
    assert template(session_factory, tenant.id, tpl).issued == 2


def test_stopping_a_template_keeps_issued_coupons_usable(
    client: TestClient, session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    member, headers = f.paying_customer(session_factory, tenant.id)
    sku, _, _ = make_product_sku(session_factory, tenant.id, price=3000)
    tpl = make_template(session_factory, tenant.id, "fixed", amount=300)
    c = give(session_factory, tenant.id, tpl, member)
    r = client.patch(f"/api/admin/v1/coupon-templates/{tpl}", json={"status": "stopped"}, headers=tenant.admin_headers)
    assert r.status_code == 200
    r = client.post(f"{STORE}/coupons/templates/{tpl}/claim", headers=headers)
    assert r.status_code == 409 and r.json()["code"] == "coupon_template_inactive"
    preview = client.post(f"{STORE}/checkout/preview", json={"items": [{"sku_id": sku, "quantity": 1}]},
                          headers=headers).json()
    assert [b["code"] for b in preview["breakdown"] if b["stage"] == "coupons"] == [f"coupon:{c}"]


def test_issue_key_reused_for_another_member_or_template_is_refused(
    session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    a, b = make_member(session_factory, tenant.id), make_member(session_factory, tenant.id)
    t1 = make_template(session_factory, tenant.id, "fixed", amount=100)
    t2 = make_template(session_factory, tenant.id, "fixed", amount=200)
    with unit_of_work(session_factory) as s:
        first = service.issue_to_member(s, tenant.id, t1, a, source="api:lottery", idempotency_key="prize-1")
        assert service.issue_to_member(s, tenant.id, t1, a, source="api:lottery", idempotency_key="prize-1") is first
    for template_id, member_id in ((t1, b), (t2, a)):
        with pytest.raises(DomainError) as err, unit_of_work(session_factory) as s:
            service.issue_to_member(s, tenant.id, template_id, member_id, source="api", idempotency_key="prize-1")
        assert err.value.code == "idempotency_key_reused"
    assert template(session_factory, tenant.id, t1).issued == 1 and template(session_factory, tenant.id, t2).issued == 0


def test_wallet_shows_a_coupon_past_validity_as_expired_before_the_job_runs(
    client: TestClient, session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    member, headers = f.paying_customer(session_factory, tenant.id)
    tpl = make_template(session_factory, tenant.id, "fixed", amount=100, valid_days=1, per_member_limit=2)
    stale = give(session_factory, tenant.id, tpl, member, now=dt.datetime.now(dt.UTC) - dt.timedelta(days=2))
    fresh = give(session_factory, tenant.id, tpl, member)
    assert coupon(session_factory, tenant.id, stale).status == "unused"  # the job has not run
    unused = client.get(f"{STORE}/coupons/mine?status=unused", headers=headers).json()
    expired = client.get(f"{STORE}/coupons/mine?status=expired", headers=headers).json()
    assert [c["id"] for c in unused["items"]] == [fresh]
    assert [(c["id"], c["status"]) for c in expired["items"]] == [(stale, "expired")]
