"""Binding rules and every refused binding (each refused call changes nothing)."""

from __future__ import annotations

import datetime as dt
import itertools
import threading
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from siyu.config import Settings
from siyu.db.dialect import is_postgres
from siyu.db.session import unit_of_work
from siyu.kit.errors import DomainError
from siyu.members.models import Member
from siyu.referral import service
from siyu.referral.models import ReferralBindingLog
from tests.conftest import Tenant
from tests.factories import aftersales as af
from tests.referral import helpers as h


def _inviter(client: TestClient, headers: dict[str, str]) -> int | None:
    return client.get(f"{h.STORE}/me", headers=headers).json()["inviter_member_id"]


def test_self_invite_is_refused(client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session]) -> None:
    _, a = h.login(client, tenant)
    code = h.code_of(client, a)
    before = h.snapshot(session_factory, tenant.id)
    r = h.bind(client, a, code)
    h.refused(r, 422, "referral_self_invite", before, h.snapshot(session_factory, tenant.id))
    assert r.json()["message"] == "不能邀请自己"
    r = client.post(f"{h.STORE}/bind", json={"code": code}, headers={**a, "Accept-Language": "en"})
    assert r.json()["message"] == "You cannot invite yourself"


def test_unknown_code_is_refused(client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session]) -> None:
    _, a = h.login(client, tenant)
    h.code_of(client, a)
    before = h.snapshot(session_factory, tenant.id)
    h.refused(h.bind(client, a, "NOSUCH99"), 404, "invite_code_invalid", before, h.snapshot(session_factory, tenant.id))


def test_two_member_loop_is_refused(client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session]) -> None:
    h.configure(client, tenant, binding_rule="latest")
    _, a = h.login(client, tenant)
    _, b = h.login(client, tenant)
    assert h.bind(client, b, h.code_of(client, a)).status_code == 200
    before = h.snapshot(session_factory, tenant.id)
    h.refused(h.bind(client, a, h.code_of(client, b)), 422, "referral_loop", before, h.snapshot(session_factory, tenant.id))


def test_longer_cycle_is_refused(client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session]) -> None:
    """A ← B ← C ← D: A cannot be bound to D (nor to C or B)."""
    h.configure(client, tenant, binding_rule="latest")
    members = [h.login(client, tenant) for _ in range(4)]
    for (_, upper), (_, lower) in itertools.pairwise(members):
        assert h.bind(client, lower, h.code_of(client, upper)).status_code == 200
    a = members[0][1]
    for _, other in members[1:]:
        code = h.code_of(client, other)
        before = h.snapshot(session_factory, tenant.id)
        h.refused(h.bind(client, a, code), 422, "referral_loop", before, h.snapshot(session_factory, tenant.id))


def test_first_inviter_forever_refuses_a_second_inviter(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session]
) -> None:
    h.configure(client, tenant, binding_rule="first")
    a_id, a = h.login(client, tenant)
    _, c = h.login(client, tenant)
    _, b = h.login(client, tenant)
    r = h.bind(client, b, h.code_of(client, a))
    assert r.status_code == 200 and r.json()["changed"] is True
    again = h.bind(client, b, h.code_of(client, a))  # the same inviter again: a no-op
    assert again.status_code == 200 and again.json()["changed"] is False
    code_c = h.code_of(client, c)
    before = h.snapshot(session_factory, tenant.id)
    h.refused(h.bind(client, b, code_c), 409, "referral_already_bound", before, h.snapshot(session_factory, tenant.id))
    assert _inviter(client, b) == a_id


def test_latest_inviter_wins_until_the_first_paid_order(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    h.configure(client, tenant, binding_rule="latest")
    (sku,) = af.make_product(session_factory, tenant.id, [1500])
    _, a = h.login(client, tenant)
    c_id, c = h.login(client, tenant)
    _, d = h.login(client, tenant)
    b_id, b = h.login(client, tenant)
    assert h.bind(client, b, h.code_of(client, a)).json()["changed"] is True
    assert h.bind(client, b, h.code_of(client, c)).json()["changed"] is True
    assert _inviter(client, b) == c_id
    with session_factory() as s:
        log = s.scalars(
            select(ReferralBindingLog).where(ReferralBindingLog.merchant_id == tenant.id,
                                             ReferralBindingLog.member_id == b_id).order_by(ReferralBindingLog.id)
        ).all()
        assert [x.previous_inviter_id for x in log][1] == log[0].inviter_member_id
    af.paid_order(client, tenant, session_factory, b, [(sku, 1)])
    h.drain(session_factory, settings, tenant)
    assert client.get(f"{h.STORE}/me", headers=b).json()["locked"] is True
    code_d = h.code_of(client, d)
    before = h.snapshot(session_factory, tenant.id)
    h.refused(h.bind(client, b, code_d), 409, "referral_locked", before, h.snapshot(session_factory, tenant.id))
    assert _inviter(client, b) == c_id


def test_a_member_who_already_bought_cannot_be_bound(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session]
) -> None:
    """Even before the worker ran ``order.paid``: the paid order itself refuses the binding."""
    (sku,) = af.make_product(session_factory, tenant.id, [1500])
    _, a = h.login(client, tenant)
    _, b = h.login(client, tenant)
    af.paid_order(client, tenant, session_factory, b, [(sku, 1)])
    code = h.code_of(client, a)
    h.code_of(client, b)
    before = h.snapshot(session_factory, tenant.id)
    h.refused(h.bind(client, b, code), 409, "referral_locked", before, h.snapshot(session_factory, tenant.id))


def test_window_rule_binds_only_within_n_days_of_the_first_visit(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session]
) -> None:
    h.configure(client, tenant, binding_rule="window", window_days=3)
    _, a = h.login(client, tenant)
    code = h.code_of(client, a)
    _, fresh = h.login(client, tenant)
    assert h.bind(client, fresh, code).status_code == 200
    old_id, old = h.login(client, tenant)
    h.code_of(client, old)
    with unit_of_work(session_factory) as s:
        member = s.scalar(select(Member).where(Member.merchant_id == tenant.id, Member.id == old_id))
        assert member is not None
        member.registered_at = member.registered_at - dt.timedelta(days=3, minutes=1)
    before = h.snapshot(session_factory, tenant.id)
    r = h.bind(client, old, code)
    h.refused(r, 409, "referral_window_closed", before, h.snapshot(session_factory, tenant.id))
    assert "3" in r.json()["message"]


def test_login_with_inviter_code_binds_new_members_only(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session]
) -> None:
    a_id, a = h.login(client, tenant)
    code = h.code_of(client, a)
    b_id, b = h.login(client, tenant, inviter=code)
    assert _inviter(client, b) == a_id
    # A bad code never fails the login.
    c_id, c = h.login(client, tenant, inviter="BADCODE1")
    assert _inviter(client, c) is None
    # An existing member logging in again with another code is not re-bound.
    _, d = h.login(client, tenant)
    d_code = h.code_of(client, d)
    wx = "sandbox-returning-b"
    r_id, r = h.login(client, tenant, code=wx, inviter=code)
    assert _inviter(client, r) == a_id
    again_id, _ = h.login(client, tenant, code=wx, inviter=d_code)
    assert again_id == r_id and _inviter(client, r) == a_id
    admin = client.get(f"{h.ADMIN}/members/{a_id}/invitees", headers=tenant.admin_headers).json()
    assert b_id in [i["member_id"] for i in admin["items"]] and c_id not in [i["member_id"] for i in admin["items"]]


def test_foreign_member_is_404(client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session]) -> None:
    from tests.conftest import unique

    with unit_of_work(session_factory) as s:
        from siyu.tenancy import service as tenancy_service

        other = tenancy_service.create_merchant(s, code=unique("m"), name="other")
        s.flush()
        member = Member(merchant_id=other.id, openid=unique("o"))
        s.add(member)
        s.flush()
        foreign = member.id
    r = client.get(f"{h.ADMIN}/members/{foreign}/invitees", headers=tenant.admin_headers)
    assert r.status_code == 404
    r = client.get(f"{h.ADMIN}/members/{foreign}", headers=tenant.admin_headers)
    assert r.status_code == 404 and r.json()["code"] == "not_found"


def test_admin_sees_a_members_referral(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    (sku,) = af.make_product(session_factory, tenant.id, [1500])
    a_id, a = h.login(client, tenant)
    b_id, b = h.login(client, tenant, inviter=h.code_of(client, a))
    order = af.paid_order(client, tenant, session_factory, b, [(sku, 1)])
    h.drain(session_factory, settings, tenant)
    r = client.get(f"{h.ADMIN}/members/{b_id}", headers=tenant.admin_headers).json()
    assert (r["inviter_member_id"], r["bind_source"], r["first_paid_order_id"]) == (a_id, "register", order["id"])
    assert r["locked_at"] is not None and r["distributor_id"] is None
    r = client.get(f"{h.ADMIN}/members/{a_id}", headers=tenant.admin_headers).json()
    assert (r["invitee_count"], r["code"]) == (1, h.code_of(client, a))


def test_concurrent_cross_bindings_never_make_a_loop(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session]
) -> None:
    """A binds to B while B binds to A, in parallel: exactly one wins, the other is a loop."""
    with session_factory() as s:
        if not is_postgres(s):
            pytest.skip("SQLite serialises writers; the row-lock race needs PostgreSQL")
    h.configure(client, tenant, binding_rule="latest")
    a_id, a = h.login(client, tenant)
    b_id, b = h.login(client, tenant)
    codes = {a_id: h.code_of(client, a), b_id: h.code_of(client, b)}
    for _ in range(5):
        outcomes: list[Any] = []
        barrier = threading.Barrier(2)

        def attempt(member: int, inviter: int, out: list[Any] = outcomes, br: threading.Barrier = barrier) -> None:
            br.wait()
            try:
                with unit_of_work(session_factory) as s:
                    service.bind(s, tenant.id, member, codes[inviter])
                    out.append("ok")
            except DomainError as exc:
                out.append(exc.code)

        threads = [threading.Thread(target=attempt, args=(a_id, b_id)), threading.Thread(target=attempt, args=(b_id, a_id))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(outcomes) == ["ok", "referral_loop"], outcomes
        with session_factory() as s:
            assert not (service.repo.inviter_of(s, tenant.id, a_id) == b_id
                        and service.repo.inviter_of(s, tenant.id, b_id) == a_id)
        # reset for the next round
        with unit_of_work(session_factory) as s:
            for m in (a_id, b_id):
                prof = service.repo.profile(s, tenant.id, m)
                assert prof is not None
                prof.inviter_member_id = None


def test_four_member_ring_is_refused_when_closing(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session]
) -> None:
    """A→B→C→D bound one after another (each member's inviter is the next); D→A closes the
    ring and is refused, whatever the rule."""
    h.configure(client, tenant, binding_rule="latest")
    members = [h.login(client, tenant) for _ in range(4)]
    for (_, lower), (_, upper) in itertools.pairwise(members):
        assert h.bind(client, lower, h.code_of(client, upper)).status_code == 200
    d, a = members[3][1], members[0][1]
    before = h.snapshot(session_factory, tenant.id)
    h.refused(h.bind(client, d, h.code_of(client, a)), 422, "referral_loop", before, h.snapshot(session_factory, tenant.id))
    assert _inviter(client, d) is None


def test_concurrent_binds_never_close_a_four_member_ring(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session]
) -> None:
    """B→C and D→A are bound; then A→B and C→D are bound in parallel. Each alone is fine, but
    together they close A→B→C→D→A: exactly one wins, the other is ``referral_loop``. Their
    first locked rows are disjoint ({A, B} and {C, D}), so this needs the chain locking."""
    with session_factory() as s:
        if not is_postgres(s):
            pytest.skip("SQLite serialises writers; the row-lock race needs PostgreSQL")
    h.configure(client, tenant, binding_rule="latest")
    ids, codes = h.members_with_codes(client, tenant, 4)
    a, b, c, d = ids
    for round_ in range(5):
        with unit_of_work(session_factory) as s:
            for m in ids:
                prof = service.repo.profile(s, tenant.id, m)
                assert prof is not None
                prof.inviter_member_id = None
        with unit_of_work(session_factory) as s:
            service.bind(s, tenant.id, b, codes[2])  # B → C
            service.bind(s, tenant.id, d, codes[0])  # D → A
        outcomes: list[Any] = []
        barrier = threading.Barrier(2)

        def attempt(member: int, code: str, out: list[Any] = outcomes, br: threading.Barrier = barrier) -> None:
            br.wait()
            try:
                with unit_of_work(session_factory) as s:
                    service.bind(s, tenant.id, member, code)
                    out.append("ok")
            except DomainError as exc:
                out.append(exc.code)
            except Exception as exc:  # pragma: no cover - reported by the assertion below
                out.append(type(exc).__name__)

        pairs = [(a, codes[1]), (c, codes[3])] if round_ % 2 == 0 else [(c, codes[3]), (a, codes[1])]
        threads = [threading.Thread(target=attempt, args=pair) for pair in pairs]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(outcomes) == ["ok", "referral_loop"], outcomes
        with session_factory() as s:
            inviters = {m: service.repo.inviter_of(s, tenant.id, m) for m in ids}
        assert None in inviters.values(), inviters  # no ring: someone is a root
        assert sum(v is not None for v in inviters.values()) == 3
