"""Referral and distribution end to end over HTTP with the sandbox payment:

A invites B; B's first paid order rewards both once (a second order does not); B's orders pay
A commission, pending → frozen → settled through the worker jobs; A withdraws, finance approves
and marks it paid. Events are observed through test subscribers.
"""

from __future__ import annotations

import datetime as dt

from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from siyu.config import Settings
from siyu.coupons.models import CouponTemplate, MemberCoupon
from siyu.db.session import unit_of_work
from siyu.kit.events import subscribe
from siyu.kit.money import percent_of
from siyu.kit.timeutil import utcnow
from siyu.loyalty.models import PointsEntry
from siyu.referral import service
from siyu.tenancy import service as tenancy_service
from siyu.worker.registry import JobContext
from tests.conftest import Tenant
from tests.coupons.helpers import make_template
from tests.factories import aftersales as af
from tests.factories.payments import job_count, order_lines
from tests.referral import helpers as h


@subscribe("referral.bound", "test.referral.bound")
@subscribe("referral.rewarded", "test.referral.rewarded")
@subscribe("commission.settled", "test.referral.settled")
@subscribe("withdrawal.paid", "test.referral.withdrawal_paid")
def _observe(ctx: JobContext) -> None:
    pass


def finance_headers(session_factory: sessionmaker[Session], tenant: Tenant) -> dict[str, str]:
    with unit_of_work(session_factory) as s:
        tenancy_service.create_staff(s, tenant.id, username="cashier", password="cashier-pass-1", role="finance")
        token, _ = tenancy_service.login_staff(
            s, merchant_code=tenant.code, username="cashier", password="cashier-pass-1", ttl=dt.timedelta(hours=1)
        )
    return {"Authorization": f"Bearer {token}"}


def test_invite_reward_commission_withdrawal_flow(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    coupon_template = make_template(session_factory, tenant.id)
    h.configure(
        client, tenant,
        inviter_rewards=[{"kind": "points", "points": 100}],
        invitee_rewards=[{"kind": "points", "points": 50}, {"kind": "coupon", "template_id": coupon_template}],
    )
    rate = 1000  # 10%
    h.create_level(client, tenant, tier1=rate, tier2=0)
    sku_a, sku_b = af.make_product(session_factory, tenant.id, [3333, 5000])

    # A is a distributor; B registers through A's share link.
    a_id, a_headers = h.login(client, tenant)
    dist_a = h.make_distributor(client, tenant, a_headers)
    me = client.get(f"{h.STORE}/me", headers=a_headers).json()
    assert me["share_path"] == f"pages/index?inviter={me['code']}"
    b_id, b_headers = h.login(client, tenant, inviter=me["code"])
    b_me = client.get(f"{h.STORE}/me", headers=b_headers).json()
    assert b_me["inviter_member_id"] == a_id and b_me["locked"] is False
    invitees = client.get(f"{h.STORE}/invitees", headers=a_headers).json()
    assert [(i["member_id"], i["has_bought"]) for i in invitees["items"]] == [(b_id, False)]

    # B's first paid order (with a discount allocated over the lines).
    first = af.paid_order(client, tenant, session_factory, b_headers, [(sku_a, 3), (sku_b, 2)], discount_amount=1000)
    h.drain(session_factory, settings, tenant)
    rewards = h.rewards(session_factory, tenant.id)
    assert sorted((r.role, r.kind, r.status) for r in rewards) == [
        ("invitee", "coupon", "granted"), ("invitee", "points", "granted"), ("inviter", "points", "granted"),
    ]
    with session_factory() as s:
        wallet = s.scalars(select(MemberCoupon).where(MemberCoupon.merchant_id == tenant.id)).all()
    assert [(c.member_id, c.template_id, c.source) for c in wallet] == [(b_id, coupon_template, "referral")]
    assert {r.order_id for r in rewards} == {first["id"]}
    with session_factory() as s:
        points = {
            e.member_id: e.delta
            for e in s.scalars(select(PointsEntry).where(PointsEntry.merchant_id == tenant.id,
                                                         PointsEntry.idempotency_key.like("referral:%")))
        }
    assert points == {a_id: 100, b_id: 50}
    assert job_count(session_factory, tenant.id, "test.referral.rewarded") == 1
    assert job_count(session_factory, tenant.id, "test.referral.bound") == 1

    (c1,) = h.commissions(session_factory, tenant.id, first["id"])
    lines = order_lines(session_factory, tenant.id, first["id"])
    assert c1.distributor_id == dist_a and c1.tier == 1 and c1.status == "pending"
    assert c1.amount == sum(percent_of(ln.payable_amount, rate) for ln in lines)
    assert c1.base_amount == sum(ln.payable_amount for ln in lines) == first["paid_amount"]
    assert h.account(session_factory, tenant.id, dist_a)["pending"] == c1.amount

    # A second order rewards nobody again but earns commission again.
    second = af.paid_order(client, tenant, session_factory, b_headers, [(sku_b, 1)])
    h.drain(session_factory, settings, tenant)
    assert len(h.rewards(session_factory, tenant.id)) == 3
    assert job_count(session_factory, tenant.id, "test.referral.rewarded") == 1
    (c2,) = h.commissions(session_factory, tenant.id, second["id"])
    # (B's referral coupon applied to this order: commission is on what was paid after discounts)
    assert c2.amount == sum(percent_of(ln.payable_amount, rate) for ln in order_lines(session_factory, tenant.id,
                                                                                      second["id"]))
    assert c2.base_amount == second["paid_amount"]
    assert h.account(session_factory, tenant.id, dist_a)["pending"] == c1.amount + c2.amount
    invitees = client.get(f"{h.STORE}/invitees", headers=a_headers).json()["items"]
    assert invitees[0]["has_bought"] is True and invitees[0]["paid_orders"] == 2

    # Completion freezes the first order's commission; the window's end settles it.
    af.ship(client, tenant, first["id"])
    af.complete(client, tenant, first["id"])
    h.drain(session_factory, settings, tenant)
    (c1,) = h.commissions(session_factory, tenant.id, first["id"])
    assert c1.status == "frozen" and c1.settle_at is not None
    assert c1.settle_at - utcnow() > dt.timedelta(days=settings.aftersales_window_days - 1)
    acct = h.account(session_factory, tenant.id, dist_a)
    assert (acct["pending"], acct["frozen"], acct["available"]) == (c2.amount, c1.amount, 0)
    h.drain(session_factory, settings, tenant, now=utcnow() + dt.timedelta(days=1))  # not yet
    assert h.commissions(session_factory, tenant.id, first["id"])[0].status == "frozen"
    h.drain(session_factory, settings, tenant, now=c1.settle_at + dt.timedelta(seconds=1))
    (c1,) = h.commissions(session_factory, tenant.id, first["id"])
    assert c1.status == "settled"
    acct = h.account(session_factory, tenant.id, dist_a)
    assert (acct["pending"], acct["frozen"], acct["available"]) == (c2.amount, 0, c1.amount)
    assert job_count(session_factory, tenant.id, "test.referral.settled") == 1

    # My account and statement as the distributor sees them.
    r = client.get(f"{h.STORE}/distributor/account", headers=a_headers)
    assert r.json()["available"] == c1.amount
    statement = client.get(f"{h.STORE}/distributor/statement", headers=a_headers, params={"page_size": 2}).json()
    assert statement["total"] == 4 and len(statement["items"]) == 2  # accrued x2, frozen, settled
    assert statement["items"][0]["entry"] == "settled"

    # A withdraws everything available; finance approves and pays by hand.
    key = {"Idempotency-Key": "wd-1"}
    r = client.post(f"{h.STORE}/withdrawals", json={"amount": c1.amount}, headers={**a_headers, **key})
    assert r.status_code == 201, r.text
    wd = r.json()
    replay = client.post(f"{h.STORE}/withdrawals", json={"amount": c1.amount}, headers={**a_headers, **key})
    assert replay.status_code == 200 and replay.json()["id"] == wd["id"]
    acct = h.account(session_factory, tenant.id, dist_a)
    assert (acct["available"], acct["withdrawing"]) == (0, c1.amount)

    fin = finance_headers(session_factory, tenant)
    r = client.post(f"{h.ADMIN}/withdrawals/{wd['id']}/approve", json={}, headers=fin)
    assert r.status_code == 200 and r.json()["status"] == "approved", r.text
    r = client.post(f"{h.ADMIN}/withdrawals/{wd['id']}/mark-paid", json={"reference": "BANK-0001"}, headers=fin)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "paid" and r.json()["provider_reference"] == "BANK-0001"
    acct = h.account(session_factory, tenant.id, dist_a)
    assert (acct["available"], acct["withdrawing"], acct["withdrawn"]) == (0, 0, c1.amount)
    h.drain(session_factory, settings, tenant)
    assert job_count(session_factory, tenant.id, "test.referral.withdrawal_paid") == 1

    # The buckets are exactly the sums of the append-only ledger.
    assert h.ledger_sums(session_factory, tenant.id, dist_a) == acct
    # Finance sees commissions; an operator-level listing by order works.
    listed = client.get(f"{h.ADMIN}/commissions", params={"order_id": first["id"]}, headers=fin).json()
    assert [c["id"] for c in listed["items"]] == [c1.id]

    # Program figures and each side's rewards.
    stats = client.get(f"{h.ADMIN}/stats", headers=tenant.admin_headers).json()
    assert (stats["bound_members"], stats["converted_members"]) == (1, 1)
    assert stats["rewards"] == {"granted": 3} and stats["distributors"] == {"approved": 1}
    assert stats["commissions"] == {"settled": {"count": 1, "amount": c1.amount},
                                    "pending": {"count": 1, "amount": c2.amount}}
    assert stats["withdrawals"] == {"paid": {"count": 1, "amount": c1.amount}}
    mine = client.get(f"{h.STORE}/rewards", headers=a_headers).json()["items"]
    assert [(x["role"], x["points"], x["status"]) for x in mine] == [("inviter", 100, "granted")]
    assert len(client.get(f"{h.STORE}/rewards", headers=b_headers).json()["items"]) == 2


def test_operator_cannot_review_withdrawals(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session]
) -> None:
    with unit_of_work(session_factory) as s:
        tenancy_service.create_staff(s, tenant.id, username="op", password="op-pass-123", role="operator")
        token, _ = tenancy_service.login_staff(
            s, merchant_code=tenant.code, username="op", password="op-pass-123", ttl=dt.timedelta(hours=1)
        )
    r = client.post(f"{h.ADMIN}/withdrawals/1/approve", json={}, headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 403 and r.json()["code"] == "forbidden"


def test_refused_reward_stays_pending_until_a_retry_can_grant_it(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    """A coupon reward the coupons module refuses (the template is a draft) stays pending with
    its reason: nothing is lost. Once the template is active again a retry grants it, once."""
    template_id = make_template(session_factory, tenant.id, status="draft")
    r = client.put(f"{h.ADMIN}/settings", json={"invitee_rewards": [{"kind": "coupon", "template_id": 987654321}]},
                   headers=tenant.admin_headers)
    assert r.status_code == 404 and r.json()["code"] == "not_found"
    h.configure(client, tenant, invitee_rewards=[{"kind": "coupon", "template_id": template_id}])
    (sku,) = af.make_product(session_factory, tenant.id, [2000])
    _, a_headers = h.login(client, tenant)
    b_id, b_headers = h.login(client, tenant, inviter=h.code_of(client, a_headers))
    af.paid_order(client, tenant, session_factory, b_headers, [(sku, 1)])
    h.drain(session_factory, settings, tenant)
    (reward,) = h.rewards(session_factory, tenant.id)
    assert reward.status == "pending" and reward.beneficiary_member_id == b_id
    assert reward.detail is not None and reward.detail.startswith("refused: coupon_")
    r = client.post(f"{h.ADMIN}/rewards/retry", headers=tenant.admin_headers)
    assert r.json() == {"granted": 0, "still_pending": 1}
    listed = client.get(f"{h.ADMIN}/rewards", params={"status": "pending"}, headers=tenant.admin_headers).json()
    assert [x["id"] for x in listed["items"]] == [reward.id]

    with unit_of_work(session_factory) as s:
        template = s.get(CouponTemplate, template_id)
        assert template is not None
        template.status = "active"
    for _ in range(2):
        with unit_of_work(session_factory) as s:
            service.retry_pending_rewards(s, tenant.id)
    (reward,) = h.rewards(session_factory, tenant.id)
    assert reward.status == "granted" and reward.detail is None
    with session_factory() as s:
        wallet = s.scalars(select(MemberCoupon).where(MemberCoupon.merchant_id == tenant.id)).all()
    assert [(c.member_id, c.template_id) for c in wallet] == [(b_id, template_id)]
