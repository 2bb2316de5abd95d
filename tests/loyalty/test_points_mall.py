"""The points mall: the merchant lists coupon templates with a points price in the loyalty rules
(``mall``); a member buys one with points over the store API. Points spent and the coupon issued
go together: any refusal (short balance, the template's per-member limit or stock, an item not in
the mall, no Idempotency-Key) spends nothing and issues nothing; a retry with the key returns the
first redemption without a second charge."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from siyu.coupons.models import MemberCoupon
from tests.conftest import Tenant, customer_login
from tests.coupons.helpers import make_template
from tests.loyalty import helpers as h

ADMIN = "/api/admin/v1/loyalty"
STORE = "/api/store/v1/loyalty"


def _coupons(factory: sessionmaker[Session], tenant: Tenant, member: int) -> list[tuple[int, str]]:
    with factory() as s:
        return [(c.template_id, c.source) for c in s.scalars(
            select(MemberCoupon).where(MemberCoupon.merchant_id == tenant.id, MemberCoupon.member_id == member)
            .order_by(MemberCoupon.id))]


def _member(client: TestClient, tenant: Tenant) -> tuple[dict[str, str], int]:
    headers = customer_login(client, tenant)
    return headers, int(client.get(f"{STORE}/me", headers=headers).json()["member_id"])


def _redeem(client: TestClient, headers: dict[str, str], template: int, key: str | None) -> Any:
    extra = {"Idempotency-Key": key} if key is not None else {}
    return client.post(f"{STORE}/mall/{template}/redeem", headers={**headers, **extra})


def test_a_mall_coupon_costs_its_points_once_and_a_retry_returns_it(
    client: TestClient, session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    cheap = make_template(session_factory, tenant.id, name="满减 10 元", per_member_limit=5)
    hidden = make_template(session_factory, tenant.id, name="下架券")
    r = client.put(f"{ADMIN}/rules", headers=tenant.admin_headers, json={"mall": [
        {"coupon_template_id": cheap, "points": 300}, {"coupon_template_id": hidden, "points": 1, "enabled": False},
    ]})
    assert r.status_code == 200, r.text
    headers, member = _member(client, tenant)
    assert client.get(f"{STORE}/mall", headers=tenant.store_headers).json() == [
        {"kind": "coupon", "coupon_template_id": cheap, "points": 300, "name": "满减 10 元", "can_redeem": True,
         "reason": None, "level_required": None},
    ]
    h.award(session_factory, tenant.id, member, 700, "mall-start")

    r = _redeem(client, headers, cheap, "buy-1")
    assert r.status_code == 201, r.text
    first = r.json()
    assert (first["coupon_template_id"], first["points"], first["balance_after"]) == (cheap, 300, 400)
    again = _redeem(client, headers, cheap, "buy-1")
    assert again.status_code == 200 and again.headers.get("Idempotent-Replayed") == "true", again.text
    assert again.json() == first
    assert h.balance(session_factory, tenant.id, member) == 400
    assert _coupons(session_factory, tenant, member) == [(cheap, "points_mall")]
    statement = client.get(f"{STORE}/me/points/statement", headers=headers).json()["items"]
    assert [(e["delta"], e["reason"], e["ref"]) for e in statement][:1] == [(-300, "mall", f"coupon_template:{cheap}")]

    assert _redeem(client, headers, cheap, "buy-2").status_code == 201
    assert h.balance(session_factory, tenant.id, member) == 100
    assert len(_coupons(session_factory, tenant, member)) == 2


def test_refusals_spend_nothing_and_issue_nothing(
    client: TestClient, session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    once = make_template(session_factory, tenant.id, name="每人一张", per_member_limit=1)
    other = make_template(session_factory, tenant.id, name="另一张", per_member_limit=5)
    off = make_template(session_factory, tenant.id, name="停用")
    r = client.put(f"{ADMIN}/rules", headers=tenant.admin_headers, json={"mall": [
        {"coupon_template_id": once, "points": 100}, {"coupon_template_id": other, "points": 1000},
        {"coupon_template_id": off, "points": 1, "enabled": False},
    ]})
    assert r.status_code == 200, r.text
    headers, member = _member(client, tenant)
    h.award(session_factory, tenant.id, member, 500, "mall-refusals")

    assert _redeem(client, headers, once, "ok").status_code == 201
    cases = [
        (once, "limit", 409, "coupon_limit_reached"),  # the template's per-member limit, after the points
        (other, "short", 409, "points_insufficient"),  # 1,000 points, 400 left
        (off, "off", 404, "mall_item_not_found"),  # disabled
        (987654321, "none", 404, "mall_item_not_found"),
        (once, None, 400, "idempotency_key_required"),
        (other, "ok", 409, "idempotency_key_reused"),  # the key of the first redemption, another coupon
    ]
    for template, key, status, code in cases:
        r = _redeem(client, headers, template, key)
        assert (r.status_code, r.json()["code"]) == (status, code), (template, key, r.text)
        assert h.balance(session_factory, tenant.id, member) == 400
        assert _coupons(session_factory, tenant, member) == [(once, "points_mall")]


def test_the_mall_in_the_rules_is_validated(client: TestClient, session_factory: sessionmaker[Session],
                                            tenant: Tenant) -> None:
    template = make_template(session_factory, tenant.id)
    before = client.get(f"{ADMIN}/rules", headers=tenant.admin_headers).json()
    assert before["mall"] == []
    for mall, path in (
        ([{"coupon_template_id": 987654321, "points": 10}], "mall.0.coupon_template_id"),
        ([{"coupon_template_id": template, "points": 0}], None),
        ([{"coupon_template_id": template, "points": 10}, {"coupon_template_id": template, "points": 20}], None),
    ):
        r = client.put(f"{ADMIN}/rules", headers=tenant.admin_headers, json={"mall": mall})
        assert r.status_code == 422, r.text
        if path:
            assert [f["path"] for f in r.json()["fields"]] == [path]
    assert client.get(f"{ADMIN}/rules", headers=tenant.admin_headers).json() == before


def test_level_exclusive_mall_coupons_are_listed_to_everyone_redeemable_by_their_levels(
    client: TestClient, session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    """Like the coupon centre: a level-exclusive coupon is shown to every member (and anonymous
    visitors) with level_required; can_redeem is false (coupon_level_required) outside its levels,
    and buying it is refused there by coupons with nothing spent."""
    from siyu.db.session import unit_of_work
    from siyu.loyalty import repository as repo
    from siyu.loyalty import service

    h.add_level(session_factory, tenant.id, 1, "普通会员")
    gold = h.add_level(session_factory, tenant.id, 2, "金卡", min_spend=100_000)
    everyone = make_template(session_factory, tenant.id, name="通用券", per_member_limit=5)
    golden = make_template(session_factory, tenant.id, name="金卡专享", per_member_limit=5, level_ids=[gold])
    r = client.put(f"{ADMIN}/rules", headers=tenant.admin_headers, json={"mall": [
        {"coupon_template_id": everyone, "points": 100}, {"coupon_template_id": golden, "points": 200},
    ]})
    assert r.status_code == 200, r.text
    headers, member = _member(client, tenant)
    with unit_of_work(session_factory) as s:
        service.evaluate_level(s, tenant.id, member)  # 普通会员
    h.award(session_factory, tenant.id, member, 1000, "mall-levels")

    def listing(hdrs: dict[str, str]) -> list[tuple[int, bool, str | None, Any]]:
        r = client.get(f"{STORE}/mall", headers=hdrs)
        assert r.status_code == 200, r.text
        return [(i["coupon_template_id"], i["can_redeem"], i["reason"], i["level_required"]) for i in r.json()]

    gold_only = [{"id": gold, "name": "金卡"}]
    refused = [(everyone, True, None, None), (golden, False, "coupon_level_required", gold_only)]
    assert listing(headers) == refused
    assert listing(tenant.store_headers) == refused  # anonymous: no level
    r = _redeem(client, headers, golden, "gold-1")
    assert r.status_code == 403 and r.json()["code"] == "coupon_level_required", r.text
    assert h.balance(session_factory, tenant.id, member) == 1000 and _coupons(session_factory, tenant, member) == []

    with unit_of_work(session_factory) as s:
        repo.member_state(s, tenant.id, member, lock=True).level_id = gold
    assert listing(headers) == [(everyone, True, None, None), (golden, True, None, gold_only)]
    assert _redeem(client, headers, golden, "gold-2").status_code == 201
