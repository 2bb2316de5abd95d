"""Refunds reverse commissions exactly, per line, for both tiers; money already settled is clawed
back without a negative balance (debt), and a fully refunded first order revokes the rewards."""

from __future__ import annotations

import datetime as dt
import uuid
from fractions import Fraction
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from siyu.config import Settings
from siyu.kit.timeutil import utcnow
from siyu.loyalty.models import PointsEntry
from tests.conftest import Tenant
from tests.factories import aftersales as af
from tests.factories.payments import order_lines, refunds
from tests.referral import helpers as h


def _half_up(value: Fraction) -> int:
    return int(value + Fraction(1, 2))


@pytest.fixture
def shop(client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session]) -> dict[str, Any]:
    """Z (distributor) invited A (distributor) who invited B (a buyer): two tiers."""
    h.configure(client, tenant, inviter_rewards=[{"kind": "points", "points": 80}])
    h.create_level(client, tenant, tier1=1000, tier2=500)
    sku_a, sku_b = af.make_product(session_factory, tenant.id, [3333, 5000])
    _, z = h.login(client, tenant)
    dist_z = h.make_distributor(client, tenant, z)
    a_id, a = h.login(client, tenant, inviter=h.code_of(client, z))
    dist_a = h.make_distributor(client, tenant, a)
    b_id, b = h.login(client, tenant, inviter=h.code_of(client, a))
    return {"a": sku_a, "b": sku_b, "dist_a": dist_a, "dist_z": dist_z, "buyer": b, "buyer_id": b_id,
            "a_headers": a, "a_id": a_id}


def _refund(client: TestClient, tenant: Tenant, order_id: int, body: dict[str, Any]) -> dict[str, Any]:
    r = client.post(f"/api/admin/v1/orders/{order_id}/refunds", json={"reason": "退货", **body},
                    headers={**tenant.admin_headers, "Idempotency-Key": uuid.uuid4().hex})
    assert r.status_code == 201, r.text
    return dict(r.json())


def _check_ledger(session_factory: sessionmaker[Session], tenant: Tenant, *dists: int) -> None:
    for d in dists:
        acct = h.account(session_factory, tenant.id, d)
        assert h.ledger_sums(session_factory, tenant.id, d) == acct
        assert all(v >= 0 for v in acct.values())


def test_partial_refunds_reverse_per_line_then_full_reverses_exactly(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session], settings: Settings,
    shop: dict[str, Any],
) -> None:
    order = af.paid_order(client, tenant, session_factory, shop["buyer"], [(shop["a"], 3), (shop["b"], 2)],
                          discount_amount=1001)
    h.drain(session_factory, settings, tenant)
    tier1, tier2 = h.commissions(session_factory, tenant.id, order["id"])
    assert (tier1.distributor_id, tier2.distributor_id) == (shop["dist_a"], shop["dist_z"])
    assert tier2.amount < tier1.amount
    line_a, line_b = order_lines(session_factory, tenant.id, order["id"])

    refunded: dict[int, int] = {line_a.id: 0, line_b.id: 0}
    for lines in ([(line_a.id, 1)], [(line_b.id, 1)]):
        _refund(client, tenant, order["id"], {"lines": [{"order_line_id": x, "quantity": q} for x, q in lines]})
        h.drain(session_factory, settings, tenant)
        latest = refunds(session_factory, tenant.id, order["id"])[-1]
        assert latest.status == "succeeded"
        for ln in latest.lines:
            refunded[int(ln["order_line_id"])] += int(ln["amount"])
        for c in h.commissions(session_factory, tenant.id, order["id"]):
            clines = h.commission_lines(session_factory, tenant.id, c.id)
            expected = [_half_up(Fraction(cl.amount * refunded[cl.order_line_id], cl.base_amount)) for cl in clines]
            assert [cl.reversed_amount for cl in clines] == expected
            assert c.reversed_amount == sum(expected) and c.status == "pending"
            assert h.account(session_factory, tenant.id, c.distributor_id)["pending"] == c.amount - sum(expected)
    _check_ledger(session_factory, tenant, shop["dist_a"], shop["dist_z"])

    # The rest: the order is now fully refunded and every fen of commission is reversed.
    _refund(client, tenant, order["id"], {"lines": [{"order_line_id": line_a.id, "quantity": 2},
                                                    {"order_line_id": line_b.id, "quantity": 1}]})
    h.drain(session_factory, settings, tenant)
    assert sum(r.amount for r in refunds(session_factory, tenant.id, order["id"])) == order["paid_amount"]
    for c in h.commissions(session_factory, tenant.id, order["id"]):
        assert c.reversed_amount == c.amount and c.status == "reversed"
        assert all(cl.reversed_amount == cl.amount for cl in h.commission_lines(session_factory, tenant.id, c.id))
        assert h.account(session_factory, tenant.id, c.distributor_id)["pending"] == 0
    _check_ledger(session_factory, tenant, shop["dist_a"], shop["dist_z"])


def test_full_refund_by_amount_reverses_everything_and_revokes_rewards(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session], settings: Settings,
    shop: dict[str, Any],
) -> None:
    order = af.paid_order(client, tenant, session_factory, shop["buyer"], [(shop["a"], 2), (shop["b"], 1)],
                          completed=True)
    h.drain(session_factory, settings, tenant)
    (reward,) = h.rewards(session_factory, tenant.id)
    assert reward.status == "granted" and reward.beneficiary_member_id == shop["a_id"]
    commissions = h.commissions(session_factory, tenant.id, order["id"])
    assert [c.status for c in commissions] == ["frozen", "frozen"]

    _refund(client, tenant, order["id"], {"amount": order["paid_amount"]})
    h.drain(session_factory, settings, tenant)
    for c in h.commissions(session_factory, tenant.id, order["id"]):
        assert (c.status, c.reversed_amount) == ("reversed", c.amount)
        acct = h.account(session_factory, tenant.id, c.distributor_id)
        assert (acct["pending"], acct["frozen"], acct["available"]) == (0, 0, 0)
    (reward,) = h.rewards(session_factory, tenant.id)
    assert reward.status == "revoked" and reward.revoked_at is not None
    with session_factory() as s:
        deltas = s.scalars(
            select(PointsEntry.delta).where(PointsEntry.merchant_id == tenant.id,
                                            PointsEntry.member_id == shop["a_id"],
                                            PointsEntry.idempotency_key.like("referral:%"))
        ).all()
    assert sorted(deltas) == [-80, 80]
    # the settlement job finds nothing to settle
    h.drain(session_factory, settings, tenant, now=utcnow() + dt.timedelta(days=30))
    assert all(c.status == "reversed" for c in h.commissions(session_factory, tenant.id, order["id"]))
    _check_ledger(session_factory, tenant, shop["dist_a"], shop["dist_z"])


def test_refund_after_the_window_keeps_the_rewards(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session], settings: Settings,
    shop: dict[str, Any],
) -> None:
    order = af.paid_order(client, tenant, session_factory, shop["buyer"], [(shop["b"], 1)], completed=True)
    h.drain(session_factory, settings, tenant)
    af.set_order_times(session_factory, tenant.id, order["id"],
                       completed_at=utcnow() - dt.timedelta(days=settings.aftersales_window_days + 1))
    _refund(client, tenant, order["id"], {"amount": order["paid_amount"]})
    h.drain(session_factory, settings, tenant)
    (reward,) = h.rewards(session_factory, tenant.id)
    assert reward.status == "granted"


def test_settled_commission_clawed_back_into_debt_then_recovered(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session], settings: Settings,
    shop: dict[str, Any],
) -> None:
    first = af.paid_order(client, tenant, session_factory, shop["buyer"], [(shop["a"], 3), (shop["b"], 2)],
                          completed=True)
    h.drain(session_factory, settings, tenant)
    h.drain(session_factory, settings, tenant, now=utcnow() + dt.timedelta(days=settings.aftersales_window_days + 1))
    c1 = h.commissions(session_factory, tenant.id, first["id"])[0]
    assert c1.status == "settled"
    dist = shop["dist_a"]
    assert h.account(session_factory, tenant.id, dist)["available"] == c1.amount

    # A withdraws most of it; then the order is fully refunded (after settlement).
    keep = 300
    r = client.post(f"{h.STORE}/withdrawals", json={"amount": c1.amount - keep},
                    headers={**shop["a_headers"], "Idempotency-Key": "w1"})
    assert r.status_code == 201, r.text
    _refund(client, tenant, first["id"], {"amount": first["paid_amount"]})
    h.drain(session_factory, settings, tenant)
    acct = h.account(session_factory, tenant.id, dist)
    assert acct["available"] == 0 and acct["debt"] == c1.amount - keep
    assert acct["withdrawing"] == c1.amount - keep
    c1 = h.commissions(session_factory, tenant.id, first["id"])[0]
    assert (c1.reversed_amount, c1.status) == (c1.amount, "reversed")

    # The next settled commission pays the debt first.
    second = af.paid_order(client, tenant, session_factory, shop["buyer"], [(shop["a"], 3), (shop["b"], 3)],
                           completed=True)
    h.drain(session_factory, settings, tenant)
    h.drain(session_factory, settings, tenant, now=utcnow() + dt.timedelta(days=settings.aftersales_window_days + 1))
    c2 = h.commissions(session_factory, tenant.id, second["id"])[0]
    assert c2.status == "settled" and c2.amount > acct["debt"]
    after = h.account(session_factory, tenant.id, dist)
    assert after["debt"] == 0 and after["available"] == c2.amount - acct["debt"]
    _check_ledger(session_factory, tenant, dist, shop["dist_z"])


def test_open_aftersale_postpones_settlement(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session], settings: Settings,
    shop: dict[str, Any],
) -> None:
    order = af.paid_order(client, tenant, session_factory, shop["buyer"], [(shop["a"], 2)], completed=True)
    h.drain(session_factory, settings, tenant)
    r = af.request_aftersale(client, shop["buyer"], order["id"], "return_refund", [(af.line_id(order, shop["a"]), 1)])
    assert r.status_code == 201, r.text
    c = h.commissions(session_factory, tenant.id, order["id"])[0]
    assert c.settle_at is not None
    h.drain(session_factory, settings, tenant, now=c.settle_at + dt.timedelta(seconds=1))
    assert h.commissions(session_factory, tenant.id, order["id"])[0].status == "frozen"


def test_amount_only_refund_counts_goods_in_proportion_to_the_paid_amount(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session], settings: Settings,
    shop: dict[str, Any],
) -> None:
    """Freight is not a commission basis: a refund given as an amount reverses commission on
    the goods' share of it only."""
    from tests.factories.orders import make_freight_template, make_sku

    make_freight_template(session_factory, tenant.id, default=True)
    skus = [make_sku(session_factory, tenant.id, price=p) for p in (2999, 4567)]
    order = af.paid_order(client, tenant, session_factory, shop["buyer"], [(skus[0], 2), (skus[1], 1)])
    h.drain(session_factory, settings, tenant)
    goods = sum(ln.payable_amount for ln in order_lines(session_factory, tenant.id, order["id"]))
    paid = order["paid_amount"]
    assert paid > goods  # freight was paid
    refund_amount = paid // 3
    _refund(client, tenant, order["id"], {"amount": refund_amount})
    h.drain(session_factory, settings, tenant)
    share = refund_amount * goods // paid
    for c in h.commissions(session_factory, tenant.id, order["id"]):
        clines = h.commission_lines(session_factory, tenant.id, c.id)
        assert sum(cl.refunded_base for cl in clines) == share
        assert [cl.reversed_amount for cl in clines] == [
            _half_up(Fraction(cl.amount * cl.refunded_base, cl.base_amount)) for cl in clines
        ]
        assert abs(Fraction(c.reversed_amount) - Fraction(c.amount * refund_amount, paid)) <= len(clines)
        assert c.status == "pending"
    _check_ledger(session_factory, tenant, shop["dist_a"], shop["dist_z"])
