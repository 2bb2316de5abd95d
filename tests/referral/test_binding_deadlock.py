"""Parallel binds whose inviter chains grow while they lock (issue 4: a rare deadlock).

``bind`` locks the member, the inviter and the inviter's chain as it read it, then reads the
chain again under those locks; when a bind committed in between made the chain longer, more
rows must be locked. Locking them while holding the first ones is out of id order: two binds
can each hold what the other needs next. This test forces that interleaving on PostgreSQL with
real parallel connections — A→B and C→D lock ({A, B} and {C, D}) only after B→C and D→A were
committed — and asserts the exact outcome: one bind wins, the other is ``referral_loop`` (the
pair would close the ring A→B→C→D→A), no deadlock error, no ring.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

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

WAIT = 20  # seconds; a barrier that times out fails the test instead of hanging it


def test_binds_whose_chains_grow_meanwhile_do_not_deadlock(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    with session_factory() as s:
        if not is_postgres(s):
            pytest.skip("SQLite serialises writers; the row-lock interleaving needs PostgreSQL")
    h.configure(client, tenant, binding_rule="latest")
    ids, codes = h.members_with_codes(client, tenant, 4)
    a, b, c, d = ids

    real_lock = repo.lock_profiles
    racers: dict[int, int] = {}  # thread ident → lock calls so far
    before_first_lock = threading.Barrier(3, timeout=WAIT)  # the two racers + the main thread
    go = threading.Barrier(3, timeout=WAIT)
    both_locked = threading.Barrier(2, timeout=WAIT)

    def lock_profiles(session: Session, merchant_id: int, member_ids: Iterable[int]) -> None:
        me = threading.get_ident()
        if me not in racers:
            real_lock(session, merchant_id, member_ids)
            return
        racers[me] += 1
        if racers[me] == 1:
            before_first_lock.wait()  # both have read their inviter's chain: B and D are roots
            go.wait()  # meanwhile B→C and D→A were committed
        real_lock(session, merchant_id, member_ids)
        if racers[me] == 1:
            both_locked.wait()  # {A, B} and {C, D} held: now each chain has grown into the other's

    monkeypatch.setattr(repo, "lock_profiles", lock_profiles)
    outcomes: dict[int, str] = {}

    def attempt(member: int, code: str) -> None:
        racers[threading.get_ident()] = 0
        try:
            with unit_of_work(session_factory) as s:
                s.connection().exec_driver_sql("SET LOCAL lock_timeout = '15s'")
                service.bind(s, tenant.id, member, code)
            outcomes[member] = "ok"
        except DomainError as exc:
            outcomes[member] = exc.code
        except Exception as exc:  # a deadlock or a barrier timeout, reported by the assertion
            outcomes[member] = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"

    threads = [threading.Thread(target=attempt, args=(a, codes[1])), threading.Thread(target=attempt, args=(c, codes[3]))]
    for t in threads:
        t.start()
    before_first_lock.wait()
    with unit_of_work(session_factory) as s:
        service.bind(s, tenant.id, b, codes[2])  # B → C
        service.bind(s, tenant.id, d, codes[0])  # D → A
    go.wait()
    for t in threads:
        t.join(WAIT * 3)
    assert sorted(outcomes.values()) == ["ok", "referral_loop"], outcomes
    with session_factory() as s:
        inviters = {m: repo.inviter_of(s, tenant.id, m) for m in ids}
    winner = next(m for m, o in outcomes.items() if o == "ok")
    expected = {a: None, b: c, c: None, d: a}
    expected[winner] = b if winner == a else d
    assert inviters == expected
