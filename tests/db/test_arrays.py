"""``db.arrays.in_values``: the same rows as ``IN`` on both dialects, for ids and strings."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from siyu.db.arrays import in_values
from siyu.db.session import unit_of_work
from siyu.members.models import Member
from tests.conftest import Tenant


def test_in_values_matches_in_for_ids_and_strings(session_factory: sessionmaker[Session], tenant: Tenant) -> None:
    with unit_of_work(session_factory) as s:
        rows = [Member(merchant_id=tenant.id, openid=f"a-{uuid.uuid4().hex[:12]}") for _ in range(8)]
        s.add_all(rows)
        s.flush()
        ids = [m.id for m in rows]
        openids = [m.openid for m in rows]
    with session_factory() as s:
        base = select(Member.id).where(Member.merchant_id == tenant.id)
        wanted = ids[1:6:2]
        assert sorted(s.scalars(base.where(in_values(s, Member.id, wanted)))) == sorted(wanted)
        assert sorted(s.scalars(base.where(in_values(s, Member.id, set(wanted))))) == sorted(wanted)
        named = [openids[0], openids[7], "no-such-openid"]
        assert sorted(s.scalars(base.where(in_values(s, Member.openid, named)))) == sorted([ids[0], ids[7]])
        assert list(s.scalars(base.where(in_values(s, Member.id, [])))) == []
        many = ids + list(range(10**9, 10**9 + 600))  # past psycopg's 50-parameter statement cache
        assert sorted(s.scalars(base.where(in_values(s, Member.id, many)))) == sorted(ids)
