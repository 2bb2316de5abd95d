"""Level-exclusive coupons (等级专属券, ``level_ids``): validated against the merchant's levels,
received only by members whose effective level (rules level or an active card's) is one of them,
by every channel (claim, code, bulk issue, registration, other modules), listed in the coupon
centre with ``level_required``, and usable at checkout once held whatever the level does later."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from siyu.coupons import service
from siyu.coupons.models import CouponCode, CouponMemberCounter
from siyu.db.session import unit_of_work
from siyu.kit.errors import DomainError
from siyu.kit.timeutil import utcnow
from siyu.loyalty import repository as loyalty_repo
from siyu.loyalty import service as loyalty
from siyu.loyalty.models import CARD_ACTIVE, MemberCard
from siyu.loyalty.schemas import LevelIn
from siyu.orders import checkout
from siyu.orders.schemas import CheckoutIn
from tests.conftest import Tenant
from tests.coupons.helpers import (
    ADMIN,
    STORE,
    SYSTEM,
    coupon,
    make_product_sku,
    template,
    template_body,
    wallet,
)
from tests.factories import payments as f

URL = f"{ADMIN}/coupon-templates"


def _levels(factory: sessionmaker[Session], merchant_id: int) -> dict[str, int]:
    """普通会员 (entry, rank 1), 金卡 (rank 2), 钻石卡 (rank 3)."""
    out = {}
    with unit_of_work(factory) as s:
        for rank, name, spend in ((1, "普通会员", None), (2, "金卡", 100_000), (3, "钻石卡", 500_000)):
            out[name] = loyalty.save_level(s, merchant_id, LevelIn(rank=rank, name=name, min_spend=spend),
                                           level_id=None, actor=SYSTEM).id
    return out


def _set_level(factory: sessionmaker[Session], merchant_id: int, member_id: int, level_id: int | None) -> None:
    with unit_of_work(factory) as s:
        loyalty_repo.member_state(s, merchant_id, member_id, lock=True).level_id = level_id


def _give_card(factory: sessionmaker[Session], merchant_id: int, member_id: int, level_id: int, *,
               ends_in: dt.timedelta) -> None:
    now = utcnow()
    with unit_of_work(factory) as s:
        s.add(MemberCard(merchant_id=merchant_id, member_id=member_id, plan_id=1, order_id=uuid.uuid4().int % 10**9,
                         level_id=level_id, starts_at=now + min(ends_in, dt.timedelta(0)) - dt.timedelta(days=30),
                         ends_at=now + ends_in, status=CARD_ACTIVE))


def _member(factory: sessionmaker[Session], tenant: Tenant, level_id: int | None) -> tuple[int, dict[str, str]]:
    member, headers = f.paying_customer(factory, tenant.id)
    _set_level(factory, tenant.id, member, level_id)
    return member, headers


def _create(client: TestClient, tenant: Tenant, **fields: Any) -> dict[str, Any]:
    r = client.post(URL, json=template_body("fixed", **fields), headers=tenant.admin_headers)
    assert r.status_code == 201, r.text
    return dict(r.json())


def _counters(factory: sessionmaker[Session], merchant_id: int, template_id: int) -> int:
    with factory() as s:
        return int(s.scalar(select(func.count()).select_from(CouponMemberCounter).where(
            CouponMemberCounter.merchant_id == merchant_id, CouponMemberCounter.template_id == template_id)) or 0)


def test_level_ids_must_be_the_merchants_levels_and_a_refusal_changes_nothing(
    client: TestClient, session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    levels = _levels(session_factory, tenant.id)
    with unit_of_work(session_factory) as s:
        from siyu.tenancy import service as tenancy_service

        foreign_merchant = tenancy_service.create_merchant(s, code=f"m-{uuid.uuid4().hex[:10]}", name="Other store")
        foreign = loyalty.save_level(s, foreign_merchant.id, LevelIn(rank=1, name="外店等级"), level_id=None,
                                     actor=SYSTEM).id
    before = client.get(URL, headers=tenant.admin_headers).json()["total"]
    body = template_body("fixed", level_ids=[levels["金卡"], foreign, 987_654_321])
    for lang, text in (("zh-CN", "会员等级"), ("en", "is not a member level of this store")):
        r = client.post(URL, json=body, headers={**tenant.admin_headers, "Accept-Language": lang})
        assert r.status_code == 422, r.text
        problem = r.json()
        assert [(e["path"], e["code"]) for e in problem["fields"]] == [("level_ids", "coupon_level_unknown")] * 2
        named = sorted(next(i for i in (foreign, 987_654_321, levels["金卡"]) if f" {i} " in e["message"])
                       for e in problem["fields"])
        assert named == sorted([foreign, 987_654_321])
        assert all(text in e["message"] for e in problem["fields"])
    assert client.get(URL, headers=tenant.admin_headers).json()["total"] == before

    # Saved de-duplicated and sorted; the admin view shows them; a PATCH with an unknown id
    # leaves the template as it was.
    t = _create(client, tenant, level_ids=[levels["钻石卡"], levels["金卡"], levels["钻石卡"]])
    assert t["level_ids"] == sorted([levels["金卡"], levels["钻石卡"]])
    r = client.patch(f"{URL}/{t['id']}", json={"level_ids": [levels["金卡"], foreign]}, headers=tenant.admin_headers)
    assert r.status_code == 422 and r.json()["fields"][0]["code"] == "coupon_level_unknown"
    assert template(session_factory, tenant.id, t["id"]).level_ids == sorted([levels["金卡"], levels["钻石卡"]])
    # Levels may change after issue (not a frozen discount rule); [] opens it to everyone.
    r = client.patch(f"{URL}/{t['id']}", json={"level_ids": []}, headers=tenant.admin_headers)
    assert r.status_code == 200 and r.json()["level_ids"] == []
    # A template without levels says so: [].
    assert _create(client, tenant)["level_ids"] == []


def test_the_openapi_document_states_the_rule(client: TestClient) -> None:
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    for name in ("TemplateOut", "TemplateIn", "TemplateUpdate"):
        described = schemas[name]["properties"]["level_ids"]["description"]
        assert "coupon_level_required" in described and "effective level" in described, name
    assert "level_required" in schemas["ClaimableOut"]["properties"]


def test_claim_follows_the_effective_level_and_a_refusal_changes_nothing(
    client: TestClient, session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    levels = _levels(session_factory, tenant.id)
    t = _create(client, tenant, level_ids=[levels["金卡"], levels["钻石卡"]], per_member_limit=1)
    url = f"{STORE}/coupons/templates/{t['id']}/claim"

    for level_id in (None, levels["普通会员"]):
        member, headers = _member(session_factory, tenant, level_id)
        r = client.post(url, headers={**headers, "Accept-Language": "zh-CN"})
        assert r.status_code == 403, r.text
        assert r.json()["code"] == "coupon_level_required" and "金卡、钻石卡" in r.json()["message"]
        r = client.post(url, headers={**headers, "Accept-Language": "en", "Idempotency-Key": "k1"})
        assert r.status_code == 403 and "金卡, 钻石卡" in r.json()["message"]
        assert wallet(session_factory, tenant.id, member) == []
    assert template(session_factory, tenant.id, t["id"]).issued == 0
    assert _counters(session_factory, tenant.id, t["id"]) == 0

    gold, headers = _member(session_factory, tenant, levels["金卡"])
    r = client.post(url, headers=headers)
    assert r.status_code == 201, r.text
    assert r.json()["member_id"] == gold
    assert template(session_factory, tenant.id, t["id"]).issued == 1


def test_an_active_cards_level_counts_and_an_ended_one_does_not(
    client: TestClient, session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    levels = _levels(session_factory, tenant.id)
    t = _create(client, tenant, level_ids=[levels["金卡"]])
    url = f"{STORE}/coupons/templates/{t['id']}/claim"
    carded, headers = _member(session_factory, tenant, levels["普通会员"])
    _give_card(session_factory, tenant.id, carded, levels["金卡"], ends_in=dt.timedelta(days=30))
    lapsed, lapsed_headers = _member(session_factory, tenant, levels["普通会员"])
    _give_card(session_factory, tenant.id, lapsed, levels["金卡"], ends_in=-dt.timedelta(days=1))

    r = client.post(url, headers=lapsed_headers)
    assert r.status_code == 403 and r.json()["code"] == "coupon_level_required"
    r = client.post(url, headers=headers)
    assert r.status_code == 201, r.text
    assert [c.member_id for c in wallet(session_factory, tenant.id, carded)] == [carded]
    # The effective level is the higher one: a diamond rules level outranks a gold card, and a
    # gold-only coupon is not for diamond members (levels are a set, not a minimum).
    diamond, diamond_headers = _member(session_factory, tenant, levels["钻石卡"])
    _give_card(session_factory, tenant.id, diamond, levels["金卡"], ends_in=dt.timedelta(days=30))
    r = client.post(url, headers=diamond_headers)
    assert r.status_code == 403 and r.json()["code"] == "coupon_level_required"


def test_the_coupon_centre_lists_exclusive_coupons_with_the_levels_needed(
    client: TestClient, session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    levels = _levels(session_factory, tenant.id)
    open_t = _create(client, tenant, name="人人可领")
    gold_t = _create(client, tenant, name="金卡专享", level_ids=[levels["金卡"]])
    _, plain = _member(session_factory, tenant, levels["普通会员"])
    _, gold = _member(session_factory, tenant, levels["金卡"])

    listed = {x["template"]["id"]: x for x in client.get(f"{STORE}/coupons/claimable", headers=plain).json()}
    assert listed[open_t["id"]]["can_claim"] is True and listed[open_t["id"]]["level_required"] is None
    exclusive = listed[gold_t["id"]]
    assert (exclusive["can_claim"], exclusive["reason"]) == (False, "coupon_level_required")
    assert exclusive["level_required"] == [{"id": levels["金卡"], "name": "金卡"}]
    assert exclusive["template"]["level_ids"] == [levels["金卡"]]

    listed = {x["template"]["id"]: x for x in client.get(f"{STORE}/coupons/claimable", headers=gold).json()}
    assert (listed[gold_t["id"]]["can_claim"], listed[gold_t["id"]]["reason"]) == (True, None)
    assert listed[gold_t["id"]]["level_required"] == [{"id": levels["金卡"], "name": "金卡"}]
    # Claimed up to its limit, the limit is the reason (the level is fine).
    assert client.post(f"{STORE}/coupons/templates/{gold_t['id']}/claim", headers=gold).status_code == 201
    listed = {x["template"]["id"]: x for x in client.get(f"{STORE}/coupons/claimable", headers=gold).json()}
    assert listed[gold_t["id"]]["reason"] == "coupon_limit_reached"


def test_a_redeem_code_follows_the_rule_and_stays_unredeemed_when_refused(
    client: TestClient, session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    levels = _levels(session_factory, tenant.id)
    t = _create(client, tenant, level_ids=[levels["金卡"]])
    r = client.post(f"{URL}/{t['id']}/codes", json={"count": 1}, headers=tenant.admin_headers)
    assert r.status_code == 201, r.text
    (code,) = r.json()["codes"]
    plain, plain_headers = _member(session_factory, tenant, levels["普通会员"])
    gold, gold_headers = _member(session_factory, tenant, levels["金卡"])

    r = client.post(f"{STORE}/coupons/redeem", json={"code": code}, headers=plain_headers)
    assert r.status_code == 403 and r.json()["code"] == "coupon_level_required"
    with session_factory() as s:
        row = s.scalar(select(CouponCode).where(CouponCode.merchant_id == tenant.id, CouponCode.code == code))
        assert row is not None and row.redeemed_by is None and row.member_coupon_id is None
    assert wallet(session_factory, tenant.id, plain) == [] and template(session_factory, tenant.id, t["id"]).issued == 0

    r = client.post(f"{STORE}/coupons/redeem", json={"code": code}, headers=gold_headers)
    assert r.status_code == 201, r.text
    assert r.json()["member_id"] == gold and r.json()["source"] == "code"


def test_bulk_issue_skips_members_outside_the_levels_and_counts_them(
    client: TestClient, session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    levels = _levels(session_factory, tenant.id)
    t = _create(client, tenant, level_ids=[levels["金卡"], levels["钻石卡"]])
    gold, _ = _member(session_factory, tenant, levels["金卡"])
    diamond, _ = _member(session_factory, tenant, levels["钻石卡"])
    plain, _ = _member(session_factory, tenant, levels["普通会员"])
    nobody, _ = _member(session_factory, tenant, None)
    carded, _ = _member(session_factory, tenant, None)
    _give_card(session_factory, tenant.id, carded, levels["金卡"], ends_in=dt.timedelta(days=10))

    body = {"batch_key": "vip-day", "member_ids": [gold, diamond, plain, nobody, carded]}
    r = client.post(f"{URL}/{t['id']}/issue", json=body, headers=tenant.admin_headers)
    assert r.status_code == 200, r.text
    out = r.json()
    assert (out["matched"], out["issued"], out["already"]) == (5, 3, 0)
    assert out["refused"] == {"coupon_level_required": 2}
    assert [len(wallet(session_factory, tenant.id, m)) for m in (gold, diamond, plain, nobody, carded)] == [1, 1, 0, 0, 1]
    assert template(session_factory, tenant.id, t["id"]).issued == 3
    # Re-sending the batch issues nothing twice and still skips the same two.
    again = client.post(f"{URL}/{t['id']}/issue", json=body, headers=tenant.admin_headers).json()
    assert (again["issued"], again["already"], again["refused"]) == (0, 3, {"coupon_level_required": 2})


def test_registration_and_module_issues_go_only_to_eligible_members(
    session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    levels = _levels(session_factory, tenant.id)
    from tests.coupons.helpers import make_template

    tpl = make_template(session_factory, tenant.id, "fixed", channels=["registration", "api"],
                        level_ids=[levels["金卡"]], per_member_limit=3)
    plain, _ = _member(session_factory, tenant, levels["普通会员"])
    gold, _ = _member(session_factory, tenant, levels["金卡"])
    with unit_of_work(session_factory) as s:
        assert service.issue_on_registration(s, tenant.id, plain) == 0
        assert service.issue_on_registration(s, tenant.id, gold) == 1
    with pytest.raises(DomainError) as err, unit_of_work(session_factory) as s:
        service.issue_to_member(s, tenant.id, tpl, plain, source="api:lottery", idempotency_key="prize-plain")
    assert err.value.code == "coupon_level_required" and err.value.status == 403
    with unit_of_work(session_factory) as s:
        c = service.issue_to_member(s, tenant.id, tpl, gold, source="api:lottery", idempotency_key="prize-gold")
        assert c.member_id == gold
    assert len(wallet(session_factory, tenant.id, plain)) == 0 and len(wallet(session_factory, tenant.id, gold)) == 2
    assert template(session_factory, tenant.id, tpl).issued == 2


def test_a_level_reward_that_is_exclusive_to_that_level_reaches_the_member_moving_up(
    session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    levels = _levels(session_factory, tenant.id)
    from tests.coupons.helpers import make_template

    tpl = make_template(session_factory, tenant.id, "fixed", channels=["api"], level_ids=[levels["金卡"]])
    with unit_of_work(session_factory) as s:
        loyalty.save_level(s, tenant.id, LevelIn(rank=2, name="金卡", min_spend=100_000, coupon_template_ids=[tpl]),
                           level_id=levels["金卡"], actor=SYSTEM)
    member, _ = _member(session_factory, tenant, levels["普通会员"])
    with unit_of_work(session_factory) as s:
        loyalty_repo.member_state(s, tenant.id, member, lock=True).paid_spend = 150_000
        reached = loyalty.evaluate_level(s, tenant.id, member)
        assert reached is not None and reached.id == levels["金卡"]
    assert [(c.template_id, c.source) for c in wallet(session_factory, tenant.id, member)] == [(tpl, "level")]


def test_a_coupon_held_stays_usable_after_the_level_drops(
    client: TestClient, session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    levels = _levels(session_factory, tenant.id)
    t = _create(client, tenant, amount=1500, level_ids=[levels["金卡"]])
    member, headers = _member(session_factory, tenant, levels["金卡"])
    r = client.post(f"{STORE}/coupons/templates/{t['id']}/claim", headers=headers)
    assert r.status_code == 201, r.text
    cid = r.json()["id"]
    _set_level(session_factory, tenant.id, member, levels["普通会员"])  # e.g. the yearly review moved them down

    sku, _, _ = make_product_sku(session_factory, tenant.id, price=6000)
    body = CheckoutIn.model_validate({"items": [{"sku_id": sku, "quantity": 1}], "coupon_ids": [cid]})
    with session_factory() as s:
        out = checkout.preview(s, tenant.id, member, body)
    assert [row["code"] for row in out.breakdown if row["stage"] == "coupons"] == [f"coupon:{cid}"]
    with unit_of_work(session_factory) as s:
        order, _ = checkout.submit(s, tenant.id, member, body, idempotency_key="after-drop",
                                   payment_timeout=dt.timedelta(minutes=30))
    locked = coupon(session_factory, tenant.id, cid)
    assert (locked.status, locked.order_id, locked.discount_amount) == ("locked", order.id, 1500)
    # Another claim of it is refused now: the restriction is at receipt.
    r = client.post(f"{STORE}/coupons/templates/{t['id']}/claim", headers={**headers, "Idempotency-Key": "again"})
    assert r.status_code == 403 and r.json()["code"] == "coupon_level_required"
