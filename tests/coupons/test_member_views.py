"""The member's coupons in the personal-data export and the usable count for the 360 view."""

from __future__ import annotations

import datetime as dt

from sqlalchemy.orm import Session, sessionmaker

from siyu.coupons import service
from siyu.kit.timeutil import utcnow
from siyu.members import privacy
from tests.conftest import Tenant
from tests.coupons.helpers import give, make_template
from tests.factories.orders import make_member


def test_export_lists_the_wallet_and_count_only_usable(session_factory: sessionmaker[Session], tenant: Tenant) -> None:
    member = make_member(session_factory, tenant.id)
    other = make_member(session_factory, tenant.id)
    tpl = make_template(session_factory, tenant.id, "fixed", amount=100, per_member_limit=3)
    fresh = give(session_factory, tenant.id, tpl, member)
    give(session_factory, tenant.id, tpl, member, now=utcnow() - dt.timedelta(days=40))  # past its validity
    give(session_factory, tenant.id, tpl, other)
    with session_factory() as s:
        exported = privacy.export(s, tenant.id, member)
        assert service.member_coupon_count(s, tenant.id, member) == 1
    assert [c["member_id"] for c in exported["coupons"]] == [member, member]
    assert exported["coupons"][0]["id"] == fresh
