"""The loyalty demo seed: a 4-level ladder, a card plan, balances consistent with the ledger."""

from __future__ import annotations

from sqlalchemy.orm import Session, sessionmaker

from siyu.db.session import unit_of_work
from siyu.loyalty import demo_data
from siyu.loyalty import repository as repo
from tests.conftest import Tenant
from tests.factories.orders import make_member
from tests.loyalty import helpers as h


def test_demo_seed_builds_a_ladder_and_balances(session_factory: sessionmaker[Session], tenant: Tenant) -> None:
    members = [make_member(session_factory, tenant.id) for _ in range(4)]
    for _ in range(2):  # idempotent
        with unit_of_work(session_factory) as s:
            demo_data.seed(s, tenant.id)
    with session_factory() as s:
        assert [lv.name for lv in repo.levels(s, tenant.id)] == ["普通会员", "正式会员", "中级会员", "高级会员"]
        assert len(repo.card_plans(s, tenant.id)) == 1
    assert [h.balance(session_factory, tenant.id, m) for m in members] == [120, 800, 2500, 6000]
    assert [h.level_of(session_factory, tenant.id, m) for m in members] == ["普通会员", "普通会员", "中级会员", "中级会员"]
    for m in members:
        assert h.balance(session_factory, tenant.id, m) == h.entries_sum(session_factory, tenant.id, m)
