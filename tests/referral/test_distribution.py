"""Distributor applications and levels, commission rules and who earns: refused inputs change
nothing; per-product overrides; one or two tiers; nobody earns from their own order."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from siyu.catalog.models import Sku
from siyu.config import Settings
from siyu.kit.money import percent_of
from siyu.referral.models import CommissionRule, Distributor
from siyu.referral.service import resolve_rate
from tests.conftest import Tenant
from tests.factories import aftersales as af
from tests.factories.payments import order_lines
from tests.referral import helpers as h


def _product_of(session_factory: sessionmaker[Session], sku_id: int) -> int:
    with session_factory() as s:
        product_id = s.scalar(select(Sku.product_id).where(Sku.id == sku_id))
        assert product_id is not None
        return int(product_id)


def test_commission_rate_above_100_percent_is_refused(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session]
) -> None:
    admin = tenant.admin_headers
    before = h.snapshot(session_factory, tenant.id)
    r = client.post(f"{h.ADMIN}/levels", json={"name": "团长", "tier1_rate_bp": 10001}, headers=admin)
    h.refused(r, 422, "commission_rate_invalid", before, h.snapshot(session_factory, tenant.id))
    r = client.post(f"{h.ADMIN}/levels", json={"name": "团长", "tier1_rate_bp": 100, "tier2_rate_bp": -1}, headers=admin)
    h.refused(r, 422, "commission_rate_invalid", before, h.snapshot(session_factory, tenant.id))
    level_id = h.create_level(client, tenant, tier1=10000, tier2=0)  # exactly 100% is allowed
    before = h.snapshot(session_factory, tenant.id)
    r = client.patch(f"{h.ADMIN}/levels/{level_id}", json={"tier2_rate_bp": 20000}, headers=admin)
    h.refused(r, 422, "commission_rate_invalid", before, h.snapshot(session_factory, tenant.id))
    r = client.post(f"{h.ADMIN}/commission-rules", json={"name": "x", "tier1_rate_bp": 10001}, headers=admin)
    h.refused(r, 422, "commission_rate_invalid", before, h.snapshot(session_factory, tenant.id))
    with session_factory() as s:
        assert s.scalar(select(CommissionRule.id).where(CommissionRule.merchant_id == tenant.id)) is None
    r = client.get(f"{h.ADMIN}/levels", headers=admin)
    assert [lv["tier2_rate_bp"] for lv in r.json()] == [0]
    r = client.patch(f"{h.ADMIN}/levels/{level_id}", json={"tier1_rate_bp": 15000}, headers={
        **admin, "Accept-Language": "en"})
    assert "100%" in r.json()["message"]


def test_application_lifecycle_and_refusals(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session]
) -> None:
    admin = tenant.admin_headers
    _, m = h.login(client, tenant)
    r = client.post(f"{h.STORE}/distributor/apply", json={"real_name": "李四"}, headers=m)
    assert r.status_code == 201 and r.json()["status"] == "applied"
    dist_id = r.json()["id"]
    before = h.snapshot(session_factory, tenant.id)
    again = client.post(f"{h.STORE}/distributor/apply", json={}, headers=m)
    h.refused(again, 409, "distributor_already_applied", before, h.snapshot(session_factory, tenant.id))
    r = client.post(f"{h.ADMIN}/distributors/{dist_id}/approve", json={}, headers=admin)
    h.refused(r, 422, "distributor_level_required", before, h.snapshot(session_factory, tenant.id))
    r = client.post(f"{h.ADMIN}/distributors/{dist_id}/reject", json={"note": "资料不全"}, headers=admin)
    assert r.json()["status"] == "rejected"
    before = h.snapshot(session_factory, tenant.id)
    r = client.post(f"{h.ADMIN}/distributors/{dist_id}/reject", json={}, headers=admin)
    h.refused(r, 409, "distributor_not_pending", before, h.snapshot(session_factory, tenant.id))
    # after a rejection the member may apply again; approval takes the default level
    assert client.post(f"{h.STORE}/distributor/apply", json={}, headers=m).json()["status"] == "applied"
    level_id = h.create_level(client, tenant)
    r = client.post(f"{h.ADMIN}/distributors/{dist_id}/approve", json={}, headers=admin)
    assert (r.json()["status"], r.json()["level_id"]) == ("approved", level_id)
    listed = client.get(f"{h.ADMIN}/distributors", params={"status": "approved"}, headers=admin).json()
    assert [d["id"] for d in listed["items"]] == [dist_id]
    assert client.get(f"{h.STORE}/distributor", headers=m).json()["status"] == "approved"


def test_an_application_with_a_phone_that_is_not_one_or_a_blank_name_is_refused(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session]
) -> None:
    """A phone "abcdefg" and a blank name were stored (the phone masked)."""
    _, m = h.login(client, tenant)
    before = h.snapshot(session_factory, tenant.id)
    cases = [({"phone": "abcdefg"}, "body.phone", "string_pattern_mismatch"),
             ({"real_name": "   "}, "body.real_name", "real_name_not_printable"),
             ({"real_name": "张\u0007三"}, "body.real_name", "real_name_not_printable")]
    for body, path, code in cases:
        r = client.post(f"{h.STORE}/distributor/apply", json=body, headers=m)
        assert r.status_code == 422 and [(f["path"], f["code"]) for f in r.json()["fields"]] == [(path, code)], r.text
        assert "张" not in r.text  # the name is never echoed
    assert r.json()["fields"][0]["message"] == "姓名应为可打印的文字"
    assert h.snapshot(session_factory, tenant.id) == before
    r = client.post(f"{h.STORE}/distributor/apply", json={"real_name": " 李四 ", "phone": "+86 138-0000-0000"}, headers=m)
    assert r.status_code == 201 and r.json()["real_name_masked"] == "李*", r.text


def test_auto_approval(client: TestClient, tenant: Tenant) -> None:
    h.configure(client, tenant, auto_approve_distributors=True)
    h.create_level(client, tenant)
    _, m = h.login(client, tenant)
    assert client.post(f"{h.STORE}/distributor/apply", json={}, headers=m).json()["status"] == "approved"


def test_rule_specificity() -> None:
    dist = Distributor(id=7, level_id=3)

    def rule(i: int, **kw: Any) -> CommissionRule:
        return CommissionRule(id=i, name=str(i), tier1_rate_bp=i * 100, tier2_rate_bp=kw.pop("t2", None),
                              enabled=True, **kw)

    rules = [
        rule(1),  # catch-all
        rule(2, level_id=3),
        rule(3, distributor_id=7),
        rule(4, product_id=50),
        rule(5, product_id=50, level_id=3),
        rule(6, product_id=50, distributor_id=7, t2=42),
        rule(9, product_id=50, distributor_id=8),  # someone else's
        rule(10, level_id=4),  # another level
    ]
    assert resolve_rate(rules, 50, dist, None, 1) == 600
    assert resolve_rate(rules, 50, dist, None, 2) == 42
    assert resolve_rate(rules[:5], 50, dist, None, 1) == 500
    assert resolve_rate(rules[:4], 50, dist, None, 1) == 400
    assert resolve_rate(rules, 51, dist, None, 1) == 300
    assert resolve_rate(rules[:2], 51, dist, None, 1) == 200
    assert resolve_rate(rules[:1], 51, dist, None, 1) == 100
    assert resolve_rate([], 51, dist, None, 1) == 0


def test_group_leader_override_and_two_tiers(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    """A community group leader earns 20% on the group's product; the rest at the level rate;
    the leader's own inviter (a distributor) earns tier 2."""
    h.configure(client, tenant)
    h.create_level(client, tenant, tier1=1000, tier2=300)
    group_sku, other_sku = af.make_product(session_factory, tenant.id, [8888, 1999])
    (separate_sku,) = af.make_product(session_factory, tenant.id, [4321])
    _, top = h.login(client, tenant)
    dist_top = h.make_distributor(client, tenant, top)
    _, leader = h.login(client, tenant, inviter=h.code_of(client, top))
    dist_leader = h.make_distributor(client, tenant, leader)
    r = client.post(
        f"{h.ADMIN}/commission-rules",
        json={"name": "团长 20%", "product_id": _product_of(session_factory, separate_sku),
              "distributor_id": dist_leader, "tier1_rate_bp": 2000},
        headers=tenant.admin_headers,
    )
    assert r.status_code == 201, r.text
    _, buyer = h.login(client, tenant, inviter=h.code_of(client, leader))
    order = af.paid_order(client, tenant, session_factory, buyer,
                          [(group_sku, 1), (other_sku, 2), (separate_sku, 3)], discount_amount=777)
    h.drain(session_factory, settings, tenant)
    t1, t2 = h.commissions(session_factory, tenant.id, order["id"])
    assert (t1.distributor_id, t2.distributor_id) == (dist_leader, dist_top)
    sep_product = _product_of(session_factory, separate_sku)
    lines = order_lines(session_factory, tenant.id, order["id"])
    expected_t1 = sum(percent_of(ln.payable_amount, 2000 if ln.product_id == sep_product else 1000) for ln in lines)
    expected_t2 = sum(percent_of(ln.payable_amount, 300) for ln in lines)
    assert (t1.amount, t2.amount) == (expected_t1, expected_t2)
    detail = client.get(f"{h.ADMIN}/commissions/{t1.id}", headers=tenant.admin_headers).json()
    assert sorted(x["rate_bp"] for x in detail["lines"]) == [1000, 1000, 2000]


def test_one_tier_setting_pays_only_the_direct_inviter(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    h.configure(client, tenant, tiers=1)
    h.create_level(client, tenant, tier1=1000, tier2=300)
    (sku,) = af.make_product(session_factory, tenant.id, [5000])
    _, top = h.login(client, tenant)
    h.make_distributor(client, tenant, top)
    _, leader = h.login(client, tenant, inviter=h.code_of(client, top))
    dist_leader = h.make_distributor(client, tenant, leader)
    _, buyer = h.login(client, tenant, inviter=h.code_of(client, leader))
    order = af.paid_order(client, tenant, session_factory, buyer, [(sku, 1)])
    h.drain(session_factory, settings, tenant)
    assert [(c.tier, c.distributor_id) for c in h.commissions(session_factory, tenant.id, order["id"])] == [
        (1, dist_leader)
    ]


def test_nobody_earns_from_their_own_order_or_through_a_non_distributor(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    h.configure(client, tenant)
    h.create_level(client, tenant, tier1=1000, tier2=300)
    (sku,) = af.make_product(session_factory, tenant.id, [5000])
    _, top = h.login(client, tenant)
    h.make_distributor(client, tenant, top)
    # A distributor without an inviter buying for themselves: nobody earns.
    _, self_buyer = h.login(client, tenant)
    dist_self = h.make_distributor(client, tenant, self_buyer)
    order = af.paid_order(client, tenant, session_factory, self_buyer, [(sku, 1)])
    # The buyer's inviter is a plain member (not a distributor): no commission at all.
    _, plain = h.login(client, tenant, inviter=h.code_of(client, top))
    _, buyer = h.login(client, tenant, inviter=h.code_of(client, plain))
    order2 = af.paid_order(client, tenant, session_factory, buyer, [(sku, 1)])
    h.drain(session_factory, settings, tenant)
    assert h.commissions(session_factory, tenant.id, order["id"]) == []
    assert h.commissions(session_factory, tenant.id, order2["id"]) == []
    assert h.account(session_factory, tenant.id, dist_self)["pending"] == 0
