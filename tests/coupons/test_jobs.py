"""Coupon jobs: expiry and the once-per-coupon reminder, the recurring schedule, coupons on
registration and after payment, and the operator's bulk issue by conditions."""

from __future__ import annotations

import datetime as dt

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from siyu.config import Settings
from siyu.coupons import service
from siyu.db.session import unit_of_work
from siyu.kit.events import subscribe
from siyu.kit.outbox import Schedule
from siyu.kit.timeutil import utcnow
from siyu.members.models import Member, MemberTag
from siyu.worker.registry import JobContext
from siyu.worker.runner import Worker
from tests.conftest import Tenant, customer_login
from tests.coupons.helpers import (
    ADMIN,
    STORE,
    coupon,
    give,
    make_product_sku,
    make_template,
    template,
    wallet,
)
from tests.factories import payments as f
from tests.factories.orders import make_member


@subscribe("coupon.expiring", "test.coupons.expiring")
def _on_expiring(ctx: JobContext) -> None:
    pass


def _drain(factory: sessionmaker[Session], settings: Settings, tenant: Tenant, now: dt.datetime | None = None) -> None:
    Worker(factory, settings, merchant_id=tenant.id).drain(now=now)


def test_expiry_job_expires_due_coupons_and_reminds_once(
    session_factory: sessionmaker[Session], settings: Settings, tenant: Tenant
) -> None:
    member = make_member(session_factory, tenant.id)
    tpl = make_template(session_factory, tenant.id, "fixed", amount=100, valid_days=30, per_member_limit=10,
                        expiry_reminder_days=3)
    now = utcnow()
    due = give(session_factory, tenant.id, tpl, member, now=now - dt.timedelta(days=31))
    soon = give(session_factory, tenant.id, tpl, member, now=now - dt.timedelta(days=28))  # 2 days left
    later = give(session_factory, tenant.id, tpl, member)
    with session_factory() as s:  # the schedule came with the active template
        sched = s.scalar(select(Schedule).where(Schedule.merchant_id == tenant.id, Schedule.name == "coupons.expire"))
        assert sched is not None and sched.kind == "coupons.expire"
    _drain(session_factory, settings, tenant, now=now + dt.timedelta(hours=1))  # fires the schedule
    assert coupon(session_factory, tenant.id, due).status == "expired"
    assert coupon(session_factory, tenant.id, soon).status == "unused"
    assert coupon(session_factory, tenant.id, later).status == "unused"
    reminders = f.jobs(session_factory, tenant.id, "test.coupons.expiring")
    assert [j.payload["coupon_id"] for j in reminders] == [soon]
    with unit_of_work(session_factory) as s:  # running again changes nothing
        assert service.expire_and_remind(s, tenant.id) == (0, 0)
    assert f.job_count(session_factory, tenant.id, "test.coupons.expiring") == 1


def test_registration_coupon_once_per_member(
    client: TestClient, session_factory: sessionmaker[Session], settings: Settings, tenant: Tenant
) -> None:
    tpl = make_template(session_factory, tenant.id, "fixed", amount=800, channels=["registration"])
    make_template(session_factory, tenant.id, "fixed", amount=900, channels=["claim"])  # not on registration
    headers = customer_login(client, tenant, "newbie")
    _drain(session_factory, settings, tenant)
    customer_login(client, tenant, "newbie")  # a second login is not a registration
    _drain(session_factory, settings, tenant)
    mine = client.get(f"{STORE}/coupons/mine", headers=headers).json()
    assert [(c["template_id"], c["source"]) for c in mine["items"]] == [(tpl, "registration")]


def test_next_order_coupon_after_payment_above_minimum(
    client: TestClient, session_factory: sessionmaker[Session], settings: Settings, tenant: Tenant
) -> None:
    tpl = make_template(session_factory, tenant.id, "fixed", amount=1000, channels=["after_payment"],
                        after_payment_min_amount=10000, per_member_limit=5)
    member, headers = f.paying_customer(session_factory, tenant.id)
    small, _, _ = make_product_sku(session_factory, tenant.id, price=5000)
    big, _, _ = make_product_sku(session_factory, tenant.id, price=12000)
    for key, sku in (("s", small), ("b", big)):
        order = client.post(f"{STORE}/checkout/submit", json={"items": [{"sku_id": sku, "quantity": 1}]},
                            headers={**headers, "Idempotency-Key": key}).json()
        r = client.post(f"{STORE}/orders/{order['id']}/pay", headers=headers)
        client.post(r.json()["params"]["complete_url"], headers=headers)
        _drain(session_factory, settings, tenant)
    got = wallet(session_factory, tenant.id, member)
    assert [(c.template_id, c.source) for c in got] == [(tpl, "after_payment")]
    assert template(session_factory, tenant.id, tpl).issued == 1


def test_bulk_issue_by_conditions_is_idempotent_per_batch(
    client: TestClient, session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    members = [make_member(session_factory, tenant.id) for _ in range(5)]
    with unit_of_work(session_factory) as s:
        for i, mid in enumerate(members):
            m = s.get(Member, mid)
            assert m is not None
            m.province, m.gender = ("浙江省" if i < 3 else "江苏省"), ("female" if i % 2 == 0 else "male")
        s.add(MemberTag(merchant_id=tenant.id, member_id=members[4], tag_id=77, source="manual"))
    tpl = make_template(session_factory, tenant.id, "fixed", amount=500, total_quantity=3)
    url = f"{ADMIN}/coupon-templates/{tpl}/issue"

    r = client.post(url, json={"batch_key": "b1", "province": "浙江省", "gender": "female"},
                    headers=tenant.admin_headers)
    assert r.status_code == 200, r.text
    assert r.json() == {"matched": 2, "issued": 2, "already": 0, "refused": {}, "queued": False}  # members 0, 2
    r = client.post(url, json={"batch_key": "b1", "province": "浙江省", "gender": "female"},
                    headers=tenant.admin_headers)
    assert r.json() == {"matched": 2, "issued": 0, "already": 2, "refused": {}, "queued": False}
    # In id order: member 0 is refused by the limit (a unit was free), member 1 takes the last
    # unit, then everyone is refused as sold out (the total is checked before the limit).
    r = client.post(url, json={"batch_key": "b2", "member_ids": members}, headers=tenant.admin_headers)
    assert r.json() == {"matched": 5, "issued": 1, "already": 0,
                        "refused": {"coupon_limit_reached": 1, "coupon_sold_out": 3}, "queued": False}
    r = client.post(url, json={"batch_key": "b3"}, headers=tenant.admin_headers)
    assert r.status_code == 422 and r.json()["fields"][0]["code"] == "audience_required"
    assert template(session_factory, tenant.id, tpl).issued == 3
    listed = client.get(f"{ADMIN}/coupons?template_id={tpl}", headers=tenant.admin_headers).json()
    assert listed["total"] == 3 and {c["source"] for c in listed["items"]} == {"operator"}
    tagged = make_template(session_factory, tenant.id, "fixed", amount=500)
    r = client.post(f"{ADMIN}/coupon-templates/{tagged}/issue", json={"batch_key": "t", "tag_id": 77},
                    headers=tenant.admin_headers)
    assert r.json()["issued"] == 1 and [c.template_id for c in wallet(session_factory, tenant.id, members[4])][-1] == tagged


def test_large_audience_is_issued_by_chunked_jobs(
    client: TestClient, session_factory: sessionmaker[Session], settings: Settings, tenant: Tenant,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(service, "BULK_SYNC_LIMIT", 3)
    monkeypatch.setattr(service, "BULK_CHUNK", 2)
    members = [make_member(session_factory, tenant.id) for _ in range(7)]
    tpl = make_template(session_factory, tenant.id, "fixed", amount=500, total_quantity=6)
    r = client.post(f"{ADMIN}/coupon-templates/{tpl}/issue", json={"batch_key": "big", "member_ids": members},
                    headers=tenant.admin_headers)
    assert r.status_code == 200, r.text
    assert r.json() == {"matched": 7, "issued": 0, "already": 0, "refused": {}, "queued": True}
    assert template(session_factory, tenant.id, tpl).issued == 0
    _drain(session_factory, settings, tenant)
    got = {m: len(wallet(session_factory, tenant.id, m)) for m in members}
    assert list(got.values()) == [1, 1, 1, 1, 1, 1, 0]  # sold out after six, in member order
    assert f.job_count(session_factory, tenant.id, "coupons.bulk_issue") == 4
    # Re-sending the batch queues nothing new: the first chunk's job key is taken.
    client.post(f"{ADMIN}/coupon-templates/{tpl}/issue", json={"batch_key": "big", "member_ids": members},
                headers=tenant.admin_headers)
    assert f.job_count(session_factory, tenant.id, "coupons.bulk_issue") == 4


def test_reminder_days_are_per_template_and_zero_turns_them_off(
    session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    member = make_member(session_factory, tenant.id)
    now = utcnow()
    off = make_template(session_factory, tenant.id, "fixed", amount=100, valid_days=30, expiry_reminder_days=0)
    week = make_template(session_factory, tenant.id, "fixed", amount=100, valid_days=30, expiry_reminder_days=7)
    give(session_factory, tenant.id, off, member, now=now - dt.timedelta(days=29))  # 1 day left, reminders off
    six_days = give(session_factory, tenant.id, week, member, now=now - dt.timedelta(days=24))  # 6 days left
    with unit_of_work(session_factory) as s:
        assert service.expire_and_remind(s, tenant.id, now) == (0, 1)
    assert [j.payload["coupon_id"] for j in f.jobs(session_factory, tenant.id, "test.coupons.expiring")] == [six_days]
