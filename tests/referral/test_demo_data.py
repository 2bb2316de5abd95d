"""The demo data leaves commissions in every state and withdrawals paid and requested, with each
distributor's account equal to its ledger; seeding twice changes nothing."""

from __future__ import annotations

import datetime as dt
import uuid

from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from siyu.config import Settings
from siyu.db.session import unit_of_work
from siyu.kit.timeutil import utcnow
from siyu.referral import demo_data
from siyu.referral.models import CommissionLedger, Distributor, Withdrawal
from tests.conftest import Tenant
from tests.factories import aftersales as af
from tests.referral import helpers as h


def test_demo_data_has_every_state(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    (big, small) = af.make_product(session_factory, tenant.id, [50000, 3000])
    buyers = [h.login(client, tenant) for _ in range(4)]
    settled = af.paid_order(client, tenant, session_factory, buyers[0][1], [(big, 1)], completed=True)
    af.set_order_times(session_factory, tenant.id, settled["id"], completed_at=utcnow() - dt.timedelta(days=30))
    af.paid_order(client, tenant, session_factory, buyers[1][1], [(small, 1)], completed=True)
    af.paid_order(client, tenant, session_factory, buyers[2][1], [(small, 2)])
    refunded = af.paid_order(client, tenant, session_factory, buyers[3][1], [(small, 1)])
    r = client.post(f"/api/admin/v1/orders/{refunded['id']}/refunds", json={"amount": refunded["paid_amount"]},
                    headers={**tenant.admin_headers, "Idempotency-Key": uuid.uuid4().hex})
    assert r.status_code == 201, r.text
    h.drain(session_factory, settings, tenant)
    for _ in range(3):
        h.login(client, tenant)

    with unit_of_work(session_factory) as s:
        demo_data.seed(s, tenant.id)
    states = {c.status for c in h.commissions(session_factory, tenant.id)}
    assert states == {"pending", "frozen", "settled", "reversed"}
    with session_factory() as s:
        withdrawals = sorted(
            s.scalars(select(Withdrawal.status).where(Withdrawal.merchant_id == tenant.id)).all()
        )
        dists = list(s.scalars(select(Distributor).where(Distributor.merchant_id == tenant.id)))
        ledger_rows = s.scalar(select(func.count()).where(CommissionLedger.merchant_id == tenant.id))
    assert withdrawals == ["paid", "requested"]
    assert sorted(d.status for d in dists) == ["applied", "approved", "approved"]
    for d in dists:
        assert h.ledger_sums(session_factory, tenant.id, d.id) == h.account(session_factory, tenant.id, d.id)

    with unit_of_work(session_factory) as s:
        demo_data.seed(s, tenant.id)
    with session_factory() as s:
        assert s.scalar(select(func.count()).where(CommissionLedger.merchant_id == tenant.id)) == ledger_rows
