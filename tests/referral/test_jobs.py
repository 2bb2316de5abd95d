"""Referral jobs are idempotent and order-tolerant; an automatic payout provider pays an approved
withdrawal through the ``referral.payout`` job; concurrent first orders reward once (PostgreSQL)."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from siyu.config import Settings
from siyu.db.dialect import is_postgres
from siyu.db.session import unit_of_work
from siyu.referral import payout, service
from tests.conftest import Tenant
from tests.factories import aftersales as af
from tests.factories.payments import job_count
from tests.referral import helpers as h
from tests.referral.test_withdrawals import credit


@pytest.fixture
def referred(client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session]) -> dict[str, Any]:
    h.configure(client, tenant, inviter_rewards=[{"kind": "points", "points": 10}],
                invitee_rewards=[{"kind": "points", "points": 5}])
    h.create_level(client, tenant, tier1=1500, tier2=0)
    (sku,) = af.make_product(session_factory, tenant.id, [4000], stock=50)
    _, a = h.login(client, tenant)
    dist = h.make_distributor(client, tenant, a)
    b_id, b = h.login(client, tenant, inviter=h.code_of(client, a))
    return {"sku": sku, "dist": dist, "buyer": b, "buyer_id": b_id}


def test_running_the_handlers_again_changes_nothing(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session], settings: Settings,
    referred: dict[str, Any],
) -> None:
    order = af.paid_order(client, tenant, session_factory, referred["buyer"], [(referred["sku"], 2)], completed=True)
    h.drain(session_factory, settings, tenant)
    before = (h.snapshot(session_factory, tenant.id), [(r.id, r.status) for r in h.rewards(session_factory, tenant.id)],
              [(c.id, c.status, c.amount) for c in h.commissions(session_factory, tenant.id)])
    assert len(before[1]) == 2 and before[2][0][1] == "frozen"
    for _ in range(2):
        with unit_of_work(session_factory) as s:
            service.on_order_paid(s, tenant.id, order["id"], settings)
            service.freeze_for_order(s, tenant.id, order["id"], settings)
    after = (h.snapshot(session_factory, tenant.id), [(r.id, r.status) for r in h.rewards(session_factory, tenant.id)],
             [(c.id, c.status, c.amount) for c in h.commissions(session_factory, tenant.id)])
    assert after == before
    assert job_count(session_factory, tenant.id, "referral.settle") == 1


def test_a_late_paid_job_after_completion_still_freezes(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session], settings: Settings,
    referred: dict[str, Any],
) -> None:
    """The completion handler ran before the commission existed: the paid handler freezes it."""
    order = af.paid_order(client, tenant, session_factory, referred["buyer"], [(referred["sku"], 1)], completed=True)
    with unit_of_work(session_factory) as s:
        service.freeze_for_order(s, tenant.id, order["id"], settings)  # nothing yet
        service.on_order_paid(s, tenant.id, order["id"], settings)
    (c,) = h.commissions(session_factory, tenant.id, order["id"])
    assert c.status == "frozen" and c.settle_at is not None
    acct = h.account(session_factory, tenant.id, referred["dist"])
    assert (acct["pending"], acct["frozen"]) == (0, c.amount)


class FakeTransfer:
    """An automatic provider like WeChat Pay's transfer API, paying at once."""

    name = "fake_transfer"
    automatic = True

    def __init__(self) -> None:
        self.sent: list[payout.PayoutRequest] = []

    def send(self, request: payout.PayoutRequest) -> payout.PayoutResult:
        self.sent.append(request)
        return payout.PayoutResult(status="paid", reference=f"TR-{request.withdrawal_id}")


def test_automatic_provider_pays_through_the_job(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session], settings: Settings,
    referred: dict[str, Any],
) -> None:
    provider = FakeTransfer()
    payout.register(provider)
    r = client.put(f"{h.ADMIN}/settings", json={"payout_provider": "nope"}, headers=tenant.admin_headers)
    assert r.status_code == 422 and r.json()["code"] == "payout_provider_unknown"
    h.configure(client, tenant, payout_provider="fake_transfer")
    _, d = h.login(client, tenant)
    dist = h.make_distributor(client, tenant, d)
    credit(session_factory, tenant.id, dist, 5000)
    wd = client.post(f"{h.STORE}/withdrawals", json={"amount": 1200},
                     headers={**d, "Idempotency-Key": uuid.uuid4().hex}).json()
    assert wd["provider"] == "fake_transfer"
    assert client.post(f"{h.ADMIN}/withdrawals/{wd['id']}/approve", json={}, headers=tenant.admin_headers).status_code == 200
    assert provider.sent == []  # nothing is sent inside the request
    h.drain(session_factory, settings, tenant)
    h.drain(session_factory, settings, tenant)
    assert [(x.withdrawal_id, x.amount) for x in provider.sent] == [(wd["id"], 1200)]
    listed = client.get(f"{h.ADMIN}/withdrawals", params={"status": "paid"}, headers=tenant.admin_headers).json()
    assert [(w["id"], w["provider_reference"]) for w in listed["items"]] == [(wd["id"], f"TR-{wd['id']}")]
    acct = h.account(session_factory, tenant.id, dist)
    assert (acct["available"], acct["withdrawn"]) == (3800, 1200)


def test_concurrent_first_orders_reward_once(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session], settings: Settings,
    referred: dict[str, Any],
) -> None:
    with session_factory() as s:
        if not is_postgres(s):
            pytest.skip("SQLite serialises writers; the conditional first-order claim race needs PostgreSQL")
    orders = [
        af.paid_order(client, tenant, session_factory, referred["buyer"], [(referred["sku"], 1)]) for _ in range(4)
    ]
    barrier = threading.Barrier(len(orders))
    errors: list[BaseException] = []

    def run(order_id: int) -> None:
        barrier.wait()
        try:
            with unit_of_work(session_factory) as s:
                service.on_order_paid(s, tenant.id, order_id, settings)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(o["id"],)) for o in orders]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    rewards = h.rewards(session_factory, tenant.id)
    assert len(rewards) == 2 and len({r.order_id for r in rewards}) == 1
    assert rewards[0].order_id == orders[0]["id"]  # the earliest paid order is the first one
    assert len(h.commissions(session_factory, tenant.id)) == 4
