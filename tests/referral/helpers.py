"""Builders for referral tests: program settings and levels over the admin API, customers logged
in through the sandbox WeChat login, distributors applied and approved over HTTP, and read
helpers for asserting accounts and ledgers."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from siyu.config import Settings
from siyu.kit.audit import AuditEvent
from siyu.referral.models import (
    BUCKETS,
    Commission,
    CommissionLedger,
    CommissionLine,
    Distributor,
    ReferralProfile,
    ReferralReward,
    Withdrawal,
)
from siyu.worker.runner import Worker
from tests.conftest import Tenant, unique

ADMIN = "/api/admin/v1/referral"
STORE = "/api/store/v1/referral"


def configure(client: TestClient, tenant: Tenant, **settings: Any) -> dict[str, Any]:
    body = {"binding_rule": "first", "min_withdrawal": 100, **settings}
    r = client.put(f"{ADMIN}/settings", json=body, headers=tenant.admin_headers)
    assert r.status_code == 200, r.text
    return dict(r.json())


def create_level(client: TestClient, tenant: Tenant, tier1: int = 1000, tier2: int = 500, **kw: Any) -> int:
    body = {"name": kw.pop("name", f"L-{uuid.uuid4().hex[:6]}"), "tier1_rate_bp": tier1, "tier2_rate_bp": tier2,
            "is_default": kw.pop("is_default", True), **kw}
    r = client.post(f"{ADMIN}/levels", json=body, headers=tenant.admin_headers)
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


def login(
    client: TestClient, tenant: Tenant, *, inviter: str | None = None, code: str | None = None
) -> tuple[int, dict[str, str]]:
    """A member through the sandbox WeChat login (new unless ``code`` was used): ``(member_id, headers)``."""
    body: dict[str, Any] = {"code": code or f"sandbox-{uuid.uuid4().hex[:12]}"}
    if inviter:
        body["inviter"] = inviter
    r = client.post("/api/store/v1/auth/wechat-login", json=body, headers=tenant.store_headers)
    assert r.status_code == 200, r.text
    return int(r.json()["member_id"]), {"Authorization": f"Bearer {r.json()['token']}"}


def code_of(client: TestClient, headers: dict[str, str]) -> str:
    r = client.get(f"{STORE}/me", headers=headers)
    assert r.status_code == 200, r.text
    return str(r.json()["code"])


def bind(client: TestClient, headers: dict[str, str], code: str) -> Any:
    return client.post(f"{STORE}/bind", json={"code": code}, headers=headers)


def make_distributor(client: TestClient, tenant: Tenant, headers: dict[str, str], level_id: int | None = None) -> int:
    r = client.post(f"{STORE}/distributor/apply", json={"real_name": "王五"}, headers=headers)
    assert r.status_code == 201, r.text
    dist_id = int(r.json()["id"])
    body = {"level_id": level_id} if level_id else {}
    r = client.post(f"{ADMIN}/distributors/{dist_id}/approve", json=body, headers=tenant.admin_headers)
    assert r.status_code == 200, r.text
    return dist_id


def drain(session_factory: sessionmaker[Session], settings: Settings, tenant: Tenant, now: dt.datetime | None = None) -> int:
    return Worker(session_factory, settings, merchant_id=tenant.id).drain(now=now)


def account(session_factory: sessionmaker[Session], merchant_id: int, distributor_id: int) -> dict[str, int]:
    with session_factory() as s:
        d = s.scalar(select(Distributor).where(Distributor.merchant_id == merchant_id, Distributor.id == distributor_id))
        assert d is not None
        return {b: int(getattr(d, b)) for b in BUCKETS}


def ledger_sums(session_factory: sessionmaker[Session], merchant_id: int, distributor_id: int) -> dict[str, int]:
    with session_factory() as s:
        cols = [func.coalesce(func.sum(getattr(CommissionLedger, f"d_{b}")), 0) for b in BUCKETS]
        row = s.execute(
            select(*cols).where(
                CommissionLedger.merchant_id == merchant_id, CommissionLedger.distributor_id == distributor_id
            )
        ).one()
        return {b: int(v) for b, v in zip(BUCKETS, row, strict=True)}


def commissions(session_factory: sessionmaker[Session], merchant_id: int, order_id: int | None = None) -> list[Commission]:
    with session_factory() as s:
        stmt = select(Commission).where(Commission.merchant_id == merchant_id)
        if order_id is not None:
            stmt = stmt.where(Commission.order_id == order_id)
        return list(s.scalars(stmt.order_by(Commission.tier, Commission.id)))


def commission_lines(session_factory: sessionmaker[Session], merchant_id: int, commission_id: int) -> list[CommissionLine]:
    with session_factory() as s:
        stmt = select(CommissionLine).where(
            CommissionLine.merchant_id == merchant_id, CommissionLine.commission_id == commission_id
        )
        return list(s.scalars(stmt.order_by(CommissionLine.id)))


def rewards(session_factory: sessionmaker[Session], merchant_id: int) -> list[ReferralReward]:
    with session_factory() as s:
        stmt = select(ReferralReward).where(ReferralReward.merchant_id == merchant_id)
        return list(s.scalars(stmt.order_by(ReferralReward.id)))


def snapshot(session_factory: sessionmaker[Session], merchant_id: int) -> dict[str, Any]:
    """Everything a referral call may change, to assert that a refused call changed nothing."""
    with session_factory() as s:
        def rows(model: Any, *cols: str) -> list[tuple[Any, ...]]:
            found = s.scalars(select(model).where(model.merchant_id == merchant_id).order_by(model.id))
            return [tuple(getattr(x, c) for c in cols) for x in found]

        return {
            "profiles": rows(ReferralProfile, "id", "member_id", "inviter_member_id", "bound_at", "locked_at"),
            "distributors": rows(Distributor, "id", "status", "level_id", *BUCKETS),
            "withdrawals": rows(Withdrawal, "id", "status", "amount", "provider_reference"),
            "ledger": rows(CommissionLedger, "id", "key"),
            "audit": s.scalar(select(func.count()).where(AuditEvent.merchant_id == merchant_id)),
        }


def refused(resp: Any, status: int, code: str, before: dict[str, Any], after: dict[str, Any]) -> None:
    assert resp.status_code == status, resp.text
    assert resp.json()["code"] == code, resp.text
    assert after == before


def other_tenant(session_factory: sessionmaker[Session]) -> Tenant:
    """A second merchant with its owner, to check that foreign ids are 404."""
    from siyu.db.session import unit_of_work
    from siyu.tenancy import service

    code = unique("m")
    with unit_of_work(session_factory) as s:
        merchant = service.create_merchant(s, code=code, name=f"Other {code}")
        owner = service.create_staff(s, merchant.id, username="owner", password="owner-pass-1", role="owner")
        token, _ = service.login_staff(
            s, merchant_code=code, username="owner", password="owner-pass-1", ttl=dt.timedelta(hours=1)
        )
        return Tenant(id=merchant.id, code=code, owner_id=owner.id, owner_token=token)


def members_with_codes(client: TestClient, tenant: Tenant, n: int) -> tuple[list[int], list[str]]:
    """``n`` new members, logged in: their ids and invite codes."""
    ids: list[int] = []
    codes: list[str] = []
    for _ in range(n):
        member_id, headers = login(client, tenant)
        ids.append(member_id)
        codes.append(code_of(client, headers))
    return ids, codes
