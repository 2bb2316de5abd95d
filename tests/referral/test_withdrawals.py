"""Withdrawals: refused requests and reviews change nothing; a rejection returns the amount;
parallel requests never overdraw and parallel approvals approve once (PostgreSQL)."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from siyu.db.dialect import is_postgres
from siyu.db.session import unit_of_work
from siyu.kit.errors import DomainError
from siyu.referral import repository as repo
from siyu.referral import service
from tests.conftest import Tenant
from tests.referral import helpers as h


def credit(session_factory: sessionmaker[Session], merchant_id: int, distributor_id: int, amount: int) -> None:
    """Arrange a settled balance (as a settlement would) through the account's own movement."""
    with unit_of_work(session_factory) as s:
        repo.move(s, merchant_id, distributor_id, key=f"test:{uuid.uuid4().hex}", entry="settled", amount=amount,
                  deltas={"available": amount})


@pytest.fixture
def distributor(client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session]) -> dict[str, Any]:
    h.configure(client, tenant, min_withdrawal=100)
    h.create_level(client, tenant)
    member_id, headers = h.login(client, tenant)
    dist_id = h.make_distributor(client, tenant, headers)
    credit(session_factory, tenant.id, dist_id, 10000)
    return {"id": dist_id, "member_id": member_id, "headers": headers}


def _request(client: TestClient, headers: dict[str, str], amount: int, key: str | None = None) -> Any:
    extra = {"Idempotency-Key": key or uuid.uuid4().hex}
    return client.post(f"{h.STORE}/withdrawals", json={"amount": amount}, headers={**headers, **extra})


def test_withdrawal_above_the_settled_balance_is_refused(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session], distributor: dict[str, Any]
) -> None:
    before = h.snapshot(session_factory, tenant.id)
    r = _request(client, distributor["headers"], 10001)
    h.refused(r, 409, "withdrawal_exceeds_balance", before, h.snapshot(session_factory, tenant.id))
    assert _request(client, distributor["headers"], 10000).status_code == 201
    before = h.snapshot(session_factory, tenant.id)
    h.refused(_request(client, distributor["headers"], 100), 409, "withdrawal_exceeds_balance", before,
              h.snapshot(session_factory, tenant.id))


def test_other_refused_requests_change_nothing(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session], distributor: dict[str, Any]
) -> None:
    hd = distributor["headers"]
    before = h.snapshot(session_factory, tenant.id)
    h.refused(_request(client, hd, 99), 422, "withdrawal_below_minimum", before, h.snapshot(session_factory, tenant.id))
    r = client.post(f"{h.STORE}/withdrawals", json={"amount": 500}, headers=hd)
    h.refused(r, 400, "idempotency_key_required", before, h.snapshot(session_factory, tenant.id))
    _, stranger = h.login(client, tenant)
    before = h.snapshot(session_factory, tenant.id)
    h.refused(_request(client, stranger, 500), 403, "distributor_not_approved", before,
              h.snapshot(session_factory, tenant.id))
    assert _request(client, hd, 500, key="k1").status_code == 201
    before = h.snapshot(session_factory, tenant.id)
    h.refused(_request(client, hd, 600, key="k1"), 409, "idempotency_key_reused", before,
              h.snapshot(session_factory, tenant.id))


def test_review_rules_and_rejection_returns_the_amount(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session], distributor: dict[str, Any]
) -> None:
    admin = tenant.admin_headers
    wd = _request(client, distributor["headers"], 4000).json()
    assert h.account(session_factory, tenant.id, distributor["id"])["available"] == 6000

    before = h.snapshot(session_factory, tenant.id)
    r = client.post(f"{h.ADMIN}/withdrawals/{wd['id']}/mark-paid", json={"reference": "X"}, headers=admin)
    h.refused(r, 409, "withdrawal_not_approved", before, h.snapshot(session_factory, tenant.id))

    assert client.post(f"{h.ADMIN}/withdrawals/{wd['id']}/approve", json={}, headers=admin).status_code == 200
    before = h.snapshot(session_factory, tenant.id)
    r = client.post(f"{h.ADMIN}/withdrawals/{wd['id']}/approve", json={}, headers=admin)
    h.refused(r, 409, "withdrawal_not_pending", before, h.snapshot(session_factory, tenant.id))

    r = client.post(f"{h.ADMIN}/withdrawals/{wd['id']}/reject", json={"note": "账户信息有误"}, headers=admin)
    assert r.status_code == 200 and r.json()["status"] == "rejected"
    acct = h.account(session_factory, tenant.id, distributor["id"])
    assert (acct["available"], acct["withdrawing"], acct["withdrawn"]) == (10000, 0, 0)

    before = h.snapshot(session_factory, tenant.id)
    for action, body in (("approve", {}), ("reject", {}), ("mark-paid", {"reference": "X"})):
        r = client.post(f"{h.ADMIN}/withdrawals/{wd['id']}/{action}", json=body, headers=admin)
        assert r.status_code == 409, r.text
    assert h.snapshot(session_factory, tenant.id) == before
    assert client.post(f"{h.ADMIN}/withdrawals/999999999/approve", json={}, headers=admin).status_code == 404
    assert h.ledger_sums(session_factory, tenant.id, distributor["id"]) == acct

    mine = client.get(f"{h.STORE}/withdrawals", headers=distributor["headers"]).json()
    assert [(w["id"], w["status"]) for w in mine["items"]] == [(wd["id"], "rejected")]


def _pg_only(session_factory: sessionmaker[Session]) -> None:
    with session_factory() as s:
        if not is_postgres(s):
            pytest.skip("SQLite serialises writers; parallel withdrawals need PostgreSQL row locks")


def test_parallel_withdrawals_never_overdraw(
    tenant: Tenant, session_factory: sessionmaker[Session], distributor: dict[str, Any]
) -> None:
    _pg_only(session_factory)
    n, amount = 12, 3000  # 10000 available: exactly 3 fit
    barrier = threading.Barrier(n)
    outcomes: list[str] = []
    lock = threading.Lock()

    def attempt() -> None:
        barrier.wait()
        try:
            with unit_of_work(session_factory) as s:
                service.request_withdrawal(s, tenant.id, distributor["member_id"], amount,
                                           idempotency_key=uuid.uuid4().hex)
            result = "ok"
        except DomainError as exc:
            result = exc.code
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=attempt) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes.count("ok") == 3 and outcomes.count("withdrawal_exceeds_balance") == n - 3, outcomes
    acct = h.account(session_factory, tenant.id, distributor["id"])
    assert (acct["available"], acct["withdrawing"]) == (1000, 9000)
    assert h.ledger_sums(session_factory, tenant.id, distributor["id"]) == acct


def test_parallel_approvals_approve_once(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session], distributor: dict[str, Any]
) -> None:
    _pg_only(session_factory)
    wd = _request(client, distributor["headers"], 2000).json()
    n = 6
    barrier = threading.Barrier(n)
    outcomes: list[str] = []
    lock = threading.Lock()

    def attempt(i: int) -> None:
        barrier.wait()
        try:
            with unit_of_work(session_factory) as s:
                service.approve_withdrawal(s, tenant.id, wd["id"], f"reviewer {i}", actor=("staff", None))
            result = "ok"
        except DomainError as exc:
            result = exc.code
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes.count("ok") == 1 and outcomes.count("withdrawal_not_pending") == n - 1, outcomes
    acct = h.account(session_factory, tenant.id, distributor["id"])
    assert (acct["available"], acct["withdrawing"]) == (8000, 2000)
    assert h.ledger_sums(session_factory, tenant.id, distributor["id"]) == acct


def test_a_movement_applies_once_per_key(
    tenant: Tenant, session_factory: sessionmaker[Session], distributor: dict[str, Any]
) -> None:
    """A retried movement (same ledger key) is a no-op on both databases."""
    results = []
    for _ in range(3):
        with unit_of_work(session_factory) as s:
            results.append(repo.move(s, tenant.id, distributor["id"], key="retry-me", entry="accrued", amount=700,
                                     deltas={"pending": 700}))
    assert results == [True, False, False]
    acct = h.account(session_factory, tenant.id, distributor["id"])
    assert acct["pending"] == 700
    assert h.ledger_sums(session_factory, tenant.id, distributor["id"]) == acct


def test_another_merchants_ids_are_404(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session], distributor: dict[str, Any]
) -> None:
    wd = _request(client, distributor["headers"], 500).json()
    other = h.other_tenant(session_factory)
    before = h.snapshot(session_factory, tenant.id)
    for method, path, body in (
        ("post", f"/withdrawals/{wd['id']}/approve", {}),
        ("post", f"/withdrawals/{wd['id']}/mark-paid", {"reference": "x"}),
        ("post", f"/distributors/{distributor['id']}/approve", {}),
        ("get", f"/distributors/{distributor['id']}", None),
        ("get", f"/distributors/{distributor['id']}/statement", None),
        ("get", f"/members/{distributor['member_id']}", None),
    ):
        r = client.request(method.upper(), f"{h.ADMIN}{path}", json=body, headers=other.admin_headers)
        assert r.status_code == 404, (path, r.text)
    assert h.snapshot(session_factory, tenant.id) == before
    listed = client.get(f"{h.ADMIN}/withdrawals", headers=other.admin_headers).json()
    assert listed["total"] == 0
