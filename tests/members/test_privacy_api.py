"""Consent, export and anonymising deletion over the admin and store APIs: the export holds the
member's orders and points; deletion (owners only, confirmed) anonymises the member and keeps
the orders' amounts; another merchant's members are 404."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from siyu.loyalty.models import PointsEntry
from siyu.members.models import MemberConsentLog
from siyu.orders.models import Order
from tests.conftest import Tenant
from tests.factories.aftersales import admin_order, make_product, paid_order
from tests.members.api_helpers import ADMIN, STORE, count, login, ok, other_tenant, refused, staff


def _points(client: TestClient, tenant: Tenant, member_id: int, points: int) -> None:
    ok(client.post(f"{ADMIN}/loyalty/members/{member_id}/points/adjust", json={"points": points, "reason": "补偿"},
                   headers={**tenant.admin_headers, "Idempotency-Key": uuid.uuid4().hex}), 201)


def _customer_with_history(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session]
) -> tuple[int, dict[str, str], dict[str, Any]]:
    member_id, headers = login(client, tenant)
    ok(client.patch(f"{STORE}/me/profile", json={"nickname": "李四", "city": "杭州市", "gender": "female"}, headers=headers))
    sku = make_product(session_factory, tenant.id, [12800])[0]
    order = paid_order(client, tenant, session_factory, headers, [(sku, 2)])
    _points(client, tenant, member_id, 300)
    return member_id, headers, order


def test_my_consents_are_set_per_channel_logged_and_visible_to_the_admin(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session]
) -> None:
    member_id, headers = login(client, tenant)
    start = ok(client.get(f"{STORE}/me/consents", headers=headers))
    assert [(c["channel"], c["granted"]) for c in start] == [
        ("subscribe_message", False), ("sms", False), ("email", False), ("wecom", False), ("official_account", False),
    ]
    ok(client.put(f"{STORE}/me/consents", json={"consents": {"sms": True, "email": True}}, headers=headers))
    out = ok(client.put(f"{STORE}/me/consents", json={"consents": {"sms": False, "email": True}}, headers=headers))
    assert {c["channel"] for c in out if c["granted"]} == {"email"}
    admin = ok(client.get(f"{ADMIN}/members/{member_id}/consents", headers=tenant.admin_headers))
    assert {c["channel"]: (c["granted"], c["source"]) for c in admin if c["source"]} == {
        "sms": (False, "mini_program"), "email": (True, "mini_program"),
    }
    assert count(session_factory, MemberConsentLog, tenant.id, member_id=member_id) == 3
    refused(client.put(f"{STORE}/me/consents", json={"consents": {"fax": True}}, headers=headers), 422, "validation_error")


def test_export_contains_the_members_orders_and_points(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session]
) -> None:
    member_id, headers, order = _customer_with_history(client, tenant, session_factory)
    mine = ok(client.get(f"{STORE}/me/export", headers=headers))
    assert mine["member_id"] == member_id and mine["member"]["profile"]["nickname"] == "李四"
    assert [(o["order_no"], o["paid_amount"]) for o in mine["orders"]["orders"]] == [(order["order_no"], 25600)]
    adjusted = [e for e in mine["loyalty"]["points_entries"] if e["reason"] == "补偿"]
    assert [e["delta"] for e in adjusted] == [300] and mine["loyalty"]["summary"] is not None
    by_admin = ok(client.get(f"{ADMIN}/members/{member_id}/export", headers=tenant.admin_headers))
    assert by_admin["orders"] == mine["orders"] and by_admin["loyalty"]["points_entries"] == mine["loyalty"]["points_entries"]
    _, operator = staff(session_factory, tenant, "operator")
    _, finance = staff(session_factory, tenant, "finance")
    assert client.get(f"{ADMIN}/members/{member_id}/export", headers=operator).status_code == 200
    refused(client.get(f"{ADMIN}/members/{member_id}/export", headers=finance), 403, "forbidden")


def test_deletion_anonymises_the_member_and_keeps_the_orders_amounts(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session]
) -> None:
    member_id, headers, order = _customer_with_history(client, tenant, session_factory)
    points_before = count(session_factory, PointsEntry, tenant.id, member_id=member_id)
    out = ok(client.post(f"{ADMIN}/members/{member_id}/delete", json={"confirm": True}, headers=tenant.admin_headers))
    assert out["member_id"] == member_id and out["status"] == "deleted"
    assert out["summary"]["orders"]["orders_anonymised"] == 1
    member = ok(client.get(f"{ADMIN}/members/{member_id}/profile", headers=tenant.admin_headers))
    assert (member["nickname"], member["city"], member["gender"], member["phone"]) == (None, None, None, None)
    after = admin_order(client, tenant, order["id"])
    assert {k: after[k] for k in ("order_no", "payable_amount", "paid_amount", "refunded_amount", "status")} == {
        k: order[k] for k in ("order_no", "payable_amount", "paid_amount", "refunded_amount", "status")
    }
    assert after["member_id"] == member_id and "detail" not in after["address"] and "name" not in after["address"]
    assert count(session_factory, Order, tenant.id, member_id=member_id) == 1
    assert count(session_factory, PointsEntry, tenant.id, member_id=member_id) == points_before
    assert client.get(f"{STORE}/me", headers=headers).status_code == 401
    refused(client.post(f"{ADMIN}/members/{member_id}/delete", json={"confirm": True}, headers=tenant.admin_headers),
            409, "member_already_deleted")


def test_deletion_is_for_owners_only_and_needs_the_confirmation(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session]
) -> None:
    member_id, _ = login(client, tenant)
    _, operator = staff(session_factory, tenant, "operator")
    url = f"{ADMIN}/members/{member_id}/delete"
    refused(client.post(url, json={"confirm": True}, headers=operator), 403, "forbidden")
    body = refused(client.post(url, json={"confirm": False}, headers=tenant.admin_headers), 422, "validation_error")
    assert body["fields"][0]["path"] == "body.confirm"
    refused(client.post(url, json={}, headers=tenant.admin_headers), 422, "validation_error")
    assert ok(client.get(f"{ADMIN}/members/{member_id}", headers=tenant.admin_headers))["status"] == "active"


def test_another_merchants_member_is_404_for_consents_export_and_deletion(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session]
) -> None:
    other = other_tenant(session_factory)
    theirs, _ = login(client, other)
    h = tenant.admin_headers
    refused(client.get(f"{ADMIN}/members/{theirs}/consents", headers=h), 404, "not_found")
    refused(client.get(f"{ADMIN}/members/{theirs}/export", headers=h), 404, "not_found")
    refused(client.post(f"{ADMIN}/members/{theirs}/delete", json={"confirm": True}, headers=h), 404, "not_found")
    refused(client.get(f"{ADMIN}/members/{theirs}/merges", headers=h), 404, "not_found")
    assert ok(client.get(f"{ADMIN}/members/{theirs}", headers=other.admin_headers))["status"] == "active"


def test_a_member_deleting_their_own_data_is_anonymised_and_logged_out(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session]
) -> None:
    member_id, headers, order = _customer_with_history(client, tenant, session_factory)
    refused(client.post(f"{STORE}/me/delete", json={}, headers=headers), 422, "validation_error")
    out = ok(client.post(f"{STORE}/me/delete", json={"confirm": True}, headers=headers))
    assert (out["member_id"], out["status"]) == (member_id, "deleted")
    assert client.get(f"{STORE}/me", headers=headers).status_code == 401
    assert admin_order(client, tenant, order["id"])["paid_amount"] == order["paid_amount"] == 25600
    assert ok(client.get(f"{ADMIN}/members/{member_id}", headers=tenant.admin_headers))["nickname"] is None
