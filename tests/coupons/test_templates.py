"""Templates configured over the admin API and validated on write, and every refusal of a
claim: each bad input gets its own code and changes nothing."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from siyu.db.session import unit_of_work
from siyu.kit.timeutil import utcnow
from siyu.tenancy import service as tenancy_service
from tests.conftest import Tenant, unique
from tests.coupons.helpers import (
    ADMIN,
    STORE,
    coupon,
    give,
    make_product_sku,
    make_template,
    template,
    template_body,
    wallet,
)
from tests.factories import payments as f

URL = f"{ADMIN}/coupon-templates"


def _count(client: TestClient, tenant: Tenant) -> int:
    return int(client.get(URL, headers=tenant.admin_headers).json()["total"])


def test_crud_and_list(client: TestClient, tenant: Tenant) -> None:
    r = client.post(URL, json=template_body("percent", percent_off=15, max_discount=3000, status="draft"),
                    headers=tenant.admin_headers)
    assert r.status_code == 201, r.text
    t = r.json()
    assert (t["percent_off_bp"], t["max_discount"], t["status"], t["issued"]) == (1500, 3000, "draft", 0)
    r = client.patch(f"{URL}/{t['id']}", json={"percent_off_bp": 1250, "status": "active"},
                     headers=tenant.admin_headers)
    assert r.status_code == 200, r.text and r.json()["percent_off_bp"] == 1250
    assert client.get(f"{URL}?status=active&kind=percent", headers=tenant.admin_headers).json()["total"] == 1
    assert client.get(f"{URL}/{t['id']}", headers=tenant.admin_headers).json()["status"] == "active"
    assert client.delete(f"{URL}/{t['id']}", headers=tenant.admin_headers).status_code == 204
    assert client.get(f"{URL}/{t['id']}", headers=tenant.admin_headers).status_code == 404


BAD: list[tuple[str, dict[str, Any], str]] = [
    ("percent", {"percent_off": 101}, "percent_out_of_range"),
    ("percent", {"percent_off_bp": 0, "percent_off": None}, "percent_out_of_range"),
    ("percent", {"max_discount": -1}, "cap_negative"),
    ("fixed", {"max_discount": 100}, "cap_not_allowed"),
    ("percent", {"amount": 100}, "amount_not_allowed"),
    ("fixed", {"amount": 0}, "amount_invalid"),
    ("fixed", {"amount": -5}, "amount_invalid"),
    ("threshold", {"threshold": 0}, "threshold_required"),
    ("threshold", {"amount": 20000, "threshold": 10000}, "amount_above_threshold"),
    ("fixed", {"scope": "categories"}, "scope_ids_required"),
    ("fixed", {"scope_ids": [1]}, "scope_ids_not_allowed"),
    ("fixed", {"validity_mode": "relative", "valid_days": 0}, "valid_days_invalid"),
    ("fixed", {"validity_mode": "fixed", "valid_days": None}, "valid_until_required"),
    ("fixed", {"total_quantity": 0}, "quantity_invalid"),
    ("fixed", {"per_member_limit": 0}, "limit_invalid"),
    ("fixed", {"channels": []}, "channels_required"),
    ("fixed", {"percent_off": 10}, "percent_not_allowed"),
    ("percent", {"percent_off": 10, "percent_off_bp": 1000}, "percent_ambiguous"),
]


@pytest.mark.parametrize(("kind", "fields", "code"), BAD, ids=[c for _, _, c in BAD])
def test_bad_template_is_refused_with_its_own_code(
    client: TestClient, tenant: Tenant, kind: str, fields: dict[str, Any], code: str
) -> None:
    body = template_body(kind, **fields)
    r = client.post(URL, json={k: v for k, v in body.items() if v is not None or k == "percent_off"},
                    headers=tenant.admin_headers)
    assert r.status_code == 422, r.text
    assert code in [e["code"] for e in r.json()["fields"]], r.json()
    assert _count(client, tenant) == 0


def test_rules_freeze_once_issued_and_status_moves_only_forward(
    client: TestClient, session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    member, _ = f.paying_customer(session_factory, tenant.id)
    t = client.post(URL, json=template_body("fixed", amount=500, total_quantity=10), headers=tenant.admin_headers).json()
    give(session_factory, tenant.id, t["id"], member)
    r = client.patch(f"{URL}/{t['id']}", json={"amount": 900}, headers=tenant.admin_headers)
    assert r.status_code == 409 and r.json()["code"] == "coupon_template_in_use"
    r = client.patch(f"{URL}/{t['id']}", json={"total_quantity": 0}, headers=tenant.admin_headers)
    assert r.status_code == 422 and r.json()["fields"][0]["code"] in ("quantity_invalid", "quantity_below_issued")
    r = client.patch(f"{URL}/{t['id']}", json={"status": "draft"}, headers=tenant.admin_headers)
    assert r.status_code == 409 and r.json()["code"] == "coupon_template_state_invalid"
    r = client.delete(f"{URL}/{t['id']}", headers=tenant.admin_headers)
    assert r.status_code == 409 and r.json()["code"] == "coupon_template_in_use"
    after = template(session_factory, tenant.id, t["id"])
    assert (after.amount, after.total_quantity, after.status) == (500, 10, "active")
    # Harmless changes are allowed.
    r = client.patch(f"{URL}/{t['id']}", json={"name": "改名", "total_quantity": 20, "status": "stopped"},
                     headers=tenant.admin_headers)
    assert r.status_code == 200 and r.json()["status"] == "stopped" and r.json()["total_quantity"] == 20


def test_claim_refusals_each_with_its_code_change_nothing(
    client: TestClient, session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    member, headers = f.paying_customer(session_factory, tenant.id)
    now = utcnow()

    def make(**fields: Any) -> int:
        r = client.post(URL, json=template_body("fixed", **fields), headers=tenant.admin_headers)
        assert r.status_code == 201, r.text
        return int(r.json()["id"])

    later = make(issue_starts_at=(now + dt.timedelta(days=1)).isoformat())
    over = make(issue_starts_at=(now - dt.timedelta(days=2)).isoformat(),
                issue_ends_at=(now - dt.timedelta(days=1)).isoformat())
    stopped = make()
    assert client.patch(f"{URL}/{stopped}", json={"status": "stopped"}, headers=tenant.admin_headers).status_code == 200
    draft = make(status="draft")
    one = make(total_quantity=1, per_member_limit=1)
    limited = make(per_member_limit=1)
    claim = f"{STORE}/coupons/templates/{{}}/claim"
    _, other_headers = f.paying_customer(session_factory, tenant.id)
    assert client.post(claim.format(one), headers=other_headers).status_code == 201  # takes the only unit
    assert client.post(claim.format(limited), headers=headers).status_code == 201
    issued_before = {t: template(session_factory, tenant.id, t).issued for t in (later, over, stopped, one, limited)}
    mine_before = len(wallet(session_factory, tenant.id, member))

    cases = {later: (409, "coupon_not_started"), over: (409, "coupon_ended"), stopped: (409, "coupon_template_inactive"),
             draft: (404, "not_found"), one: (409, "coupon_sold_out"), limited: (409, "coupon_limit_reached"),
             987_654_321: (404, "not_found")}
    for tid, (status, code) in cases.items():
        r = client.post(claim.format(tid), headers=headers)
        assert (r.status_code, r.json()["code"]) == (status, code), (tid, r.text)
    assert {t: template(session_factory, tenant.id, t).issued for t in issued_before} == issued_before
    assert len(wallet(session_factory, tenant.id, member)) == mine_before
    # The claim centre tells why before one taps.
    listed = {x["template"]["id"]: x for x in client.get(f"{STORE}/coupons/claimable", headers=headers).json()}
    assert over not in listed and stopped not in listed
    assert listed[later]["reason"] == "coupon_not_started" and listed[one]["reason"] == "coupon_sold_out"
    assert listed[limited]["reason"] == "coupon_limit_reached" and listed[limited]["received"] == 1


def test_foreign_template_and_coupon_are_404(
    client: TestClient, session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    with unit_of_work(session_factory) as s:
        other = tenancy_service.create_merchant(s, code=unique("m"), name="other")
        other_id = other.id
    foreign_tpl = make_template(session_factory, other_id, "fixed", amount=100)
    foreign_member, _ = f.paying_customer(session_factory, other_id)
    foreign_coupon = give(session_factory, other_id, foreign_tpl, foreign_member)
    _, headers = f.paying_customer(session_factory, tenant.id)
    assert client.get(f"{URL}/{foreign_tpl}", headers=tenant.admin_headers).status_code == 404
    assert client.patch(f"{URL}/{foreign_tpl}", json={"name": "x"}, headers=tenant.admin_headers).status_code == 404
    assert client.get(f"{URL}/{foreign_tpl}/stats", headers=tenant.admin_headers).status_code == 404
    assert client.post(f"{STORE}/coupons/templates/{foreign_tpl}/claim", headers=headers).status_code == 404
    assert client.post(f"{ADMIN}/coupons/{foreign_coupon}/void", headers=tenant.admin_headers).status_code == 404
    sku, _, _ = make_product_sku(session_factory, tenant.id, price=3000)
    r = client.post(f"{STORE}/checkout/preview", json={"items": [{"sku_id": sku, "quantity": 1}],
                                                      "coupon_ids": [foreign_coupon]}, headers=headers)
    assert r.status_code == 404 and r.json()["code"] == "not_found"
    r = client.post(f"{STORE}/checkout/submit", json={"items": [{"sku_id": sku, "quantity": 1}],
                                                     "coupon_ids": [foreign_coupon]},
                    headers={**headers, "Idempotency-Key": "foreign"})
    assert r.status_code == 404 and r.json()["code"] == "not_found"
    assert client.get(f"{STORE}/orders", headers=headers).json()["total"] == 0
    assert template(session_factory, other_id, foreign_tpl).issued == 1
    assert coupon(session_factory, other_id, foreign_coupon).status == "unused"


def test_void_only_unused(client: TestClient, session_factory: sessionmaker[Session], tenant: Tenant) -> None:
    member, _ = f.paying_customer(session_factory, tenant.id)
    c = give(session_factory, tenant.id, make_template(session_factory, tenant.id, "fixed", amount=100), member)
    r = client.post(f"{ADMIN}/coupons/{c}/void", headers=tenant.admin_headers)
    assert r.status_code == 200 and r.json()["status"] == "voided"
    r = client.post(f"{ADMIN}/coupons/{c}/void", headers=tenant.admin_headers)
    assert r.status_code == 409 and r.json()["code"] == "coupon_not_voidable"
