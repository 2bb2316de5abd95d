"""A member merge (same person through two entries) carries the referral side along: invitees,
the binding (one, never a self-invite or a ring), invite code, rewards, the distributor account
with its commissions, ledger and withdrawals. Nothing stays orphaned under the merged id."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from siyu.config import Settings
from siyu.db.session import unit_of_work
from siyu.members.models import Member, MemberMerge
from siyu.referral import repository as repo
from siyu.referral.models import (
    Commission,
    CommissionLedger,
    Distributor,
    ReferralBindingLog,
    ReferralProfile,
    Withdrawal,
)
from tests.conftest import Tenant
from tests.factories import aftersales as af
from tests.referral import helpers as h


def _merge_by_phone(client: TestClient, keep: dict[str, str], drop: dict[str, str]) -> int:
    """Both bind the same phone; the older member (``keep``, logged in first) is kept."""
    code = f"sandbox-{uuid.uuid4().int % 10**8}"
    assert client.post("/api/store/v1/me/phone", json={"code": code}, headers=drop).status_code == 200
    r = client.post("/api/store/v1/me/phone", json={"code": code}, headers=keep)
    assert r.status_code == 200, r.text
    return int(r.json()["id"])


def _credit(
    session_factory: sessionmaker[Session], merchant_id: int, distributor_id: int, amount: int
) -> None:
    with unit_of_work(session_factory) as s:
        repo.move(
            s,
            merchant_id,
            distributor_id,
            key=f"test:{uuid.uuid4().hex}",
            entry="settled",
            amount=amount,
            deltas={"available": amount},
        )


def _rows(session_factory: sessionmaker[Session], model: Any, merchant_id: int, **where: Any) -> list[Any]:
    with session_factory() as s:
        stmt = select(model).where(model.merchant_id == merchant_id)
        for k, v in where.items():
            stmt = stmt.where(getattr(model, k) == v)
        return list(s.scalars(stmt.order_by(model.id)))


def test_merge_moves_bindings_distributor_commissions_and_withdrawals(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    h.configure(client, tenant, binding_rule="first", min_withdrawal=100)
    h.create_level(client, tenant, tier1=1000, tier2=0)
    (sku,) = af.make_product(session_factory, tenant.id, [5000])
    _, i1 = h.login(client, tenant)
    i2_id, i2 = h.login(client, tenant)
    i1_id = client.get("/api/store/v1/me", headers=i1).json()["id"]
    keep_id, keep = h.login(client, tenant, inviter=h.code_of(client, i1))  # bound first
    drop_id, drop = h.login(client, tenant, inviter=h.code_of(client, i2))  # bound later
    drop_code = h.code_of(client, drop)
    x_id, x = h.login(client, tenant, inviter=drop_code)  # invited by the dropped member
    keep_dist = h.make_distributor(client, tenant, keep)
    drop_dist = h.make_distributor(client, tenant, drop)
    _credit(session_factory, tenant.id, keep_dist, 3000)
    _credit(session_factory, tenant.id, drop_dist, 7000)
    r = client.post(
        f"{h.STORE}/withdrawals", json={"amount": 2000}, headers={**drop, "Idempotency-Key": "w-1"}
    )
    assert r.status_code == 201, r.text
    wd_id = r.json()["id"]
    # the same client key on the kept member's account: it must survive the fold
    r = client.post(
        f"{h.STORE}/withdrawals", json={"amount": 1000}, headers={**keep, "Idempotency-Key": "w-1"}
    )
    assert r.status_code == 201, r.text
    order = af.paid_order(
        client, tenant, session_factory, x, [(sku, 1)]
    )  # commission to the dropped distributor
    h.drain(session_factory, settings, tenant)
    [comm] = h.commissions(session_factory, tenant.id, order["id"])
    assert (comm.distributor_id, comm.amount) == (drop_dist, 500)
    total_before = {
        b: h.account(session_factory, tenant.id, keep_dist)[b]
        + h.account(session_factory, tenant.id, drop_dist)[b]
        for b in h.account(session_factory, tenant.id, keep_dist)
    }

    assert _merge_by_phone(client, keep, drop) == keep_id

    # one binding remains: the kept member's earlier one (rule "first"), none on the alias row
    profiles = _rows(session_factory, ReferralProfile, tenant.id)
    by_member = {p.member_id: p for p in profiles}
    assert by_member[keep_id].inviter_member_id == i1_id
    assert by_member[drop_id].inviter_member_id is None
    assert by_member[x_id].inviter_member_id == keep_id
    assert not [p for p in profiles if p.inviter_member_id == drop_id]
    assert not _rows(session_factory, ReferralBindingLog, tenant.id, member_id=drop_id)
    assert not _rows(session_factory, ReferralBindingLog, tenant.id, inviter_member_id=drop_id)
    # the distributor accounts are one: buckets added, equal to the ledger, nothing left behind
    assert h.account(session_factory, tenant.id, keep_dist) == total_before
    assert h.ledger_sums(session_factory, tenant.id, keep_dist) == total_before
    assert set(h.account(session_factory, tenant.id, drop_dist).values()) == {0}
    assert not _rows(session_factory, CommissionLedger, tenant.id, distributor_id=drop_dist)
    assert [c.distributor_id for c in _rows(session_factory, Commission, tenant.id)] == [keep_dist]
    wds = _rows(session_factory, Withdrawal, tenant.id)
    assert {(w.distributor_id, w.member_id) for w in wds} == {(keep_dist, keep_id)}
    assert len({w.request_key for w in wds}) == 2
    dists = {d.id: d for d in _rows(session_factory, Distributor, tenant.id)}
    assert (dists[keep_dist].status, dists[drop_dist].status) == ("approved", "disabled")
    # the kept member sees the merged account and can review / withdraw from it
    me = client.get(f"{h.STORE}/distributor", headers=keep)
    assert me.status_code == 200 and me.json()["id"] == keep_dist, me.text
    r = client.post(f"{h.ADMIN}/withdrawals/{wd_id}/approve", json={}, headers=tenant.admin_headers)
    assert r.status_code == 200, r.text
    # the dropped member's shared code still invites, for the kept member
    _, y = h.login(client, tenant, inviter=drop_code)
    assert client.get(f"{h.STORE}/me", headers=y).json()["inviter_member_id"] == keep_id
    with session_factory() as s:
        merge = s.scalar(select(MemberMerge).where(MemberMerge.merchant_id == tenant.id))
        assert merge is not None and merge.moved["distributor"] == 1 and merge.moved["referral_invitees"] == 1
    assert i2_id != keep_id


def test_merge_never_makes_a_ring(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session]
) -> None:
    """The dropped member is bound to X, whom the kept member invited: taking that binding
    would make keep → X → keep, so the kept member ends unbound and X stays its invitee."""
    h.configure(client, tenant, binding_rule="first")
    keep_id, keep = h.login(client, tenant)
    x_id, x = h.login(client, tenant)
    drop_id, drop = h.login(client, tenant)
    assert h.bind(client, x, h.code_of(client, keep)).status_code == 200
    assert h.bind(client, drop, h.code_of(client, x)).status_code == 200
    assert _merge_by_phone(client, keep, drop) == keep_id
    profiles = {p.member_id: p for p in _rows(session_factory, ReferralProfile, tenant.id)}
    assert profiles[keep_id].inviter_member_id is None
    assert profiles[drop_id].inviter_member_id is None
    assert profiles[x_id].inviter_member_id == keep_id


def test_merge_takes_the_dropped_members_profile_when_the_kept_has_none(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session]
) -> None:
    h.configure(client, tenant, binding_rule="first")
    i_id, i = h.login(client, tenant)
    keep_id, keep = h.login(client, tenant)  # never opened referral: no profile
    drop_id, drop = h.login(client, tenant, inviter=h.code_of(client, i))
    drop_code = h.code_of(client, drop)
    assert _merge_by_phone(client, keep, drop) == keep_id
    profiles = {p.member_id: p for p in _rows(session_factory, ReferralProfile, tenant.id)}
    assert drop_id not in profiles
    assert (profiles[keep_id].code, profiles[keep_id].inviter_member_id) == (drop_code, i_id)
    mine = client.get(f"{h.STORE}/me", headers=keep).json()
    assert (mine["code"], mine["inviter_member_id"]) == (drop_code, i_id)
    with session_factory() as s:
        assert s.get(Member, drop_id).status == "merged"  # type: ignore[union-attr]
