"""Scheduled jobs (hourly expiry + notices through the worker's schedules), and coupon rewards
through ``coupons.service.issue_to_member``: a streak reward and a birthday coupon, each once."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from siyu.config import Settings
from siyu.coupons.models import MemberCoupon
from siyu.db.session import unit_of_work
from siyu.kit.outbox import Schedule
from siyu.kit.timeutil import local_date, utcnow
from siyu.loyalty import service
from siyu.members.models import Member
from siyu.worker.runner import Worker
from tests.conftest import Tenant
from tests.coupons.helpers import make_template
from tests.factories.orders import make_member
from tests.loyalty import helpers as h


def _coupons(factory: sessionmaker[Session], tenant: Tenant, member: int) -> list[MemberCoupon]:
    with factory() as s:
        return list(s.scalars(select(MemberCoupon).where(MemberCoupon.merchant_id == tenant.id,
                                                         MemberCoupon.member_id == member)))


def test_rules_install_the_schedules_and_the_hourly_job_expires_due_lots(
    session_factory: sessionmaker[Session], settings: Settings, tenant: Tenant
) -> None:
    h.set_rules(session_factory, tenant.id, expiry={"mode": "days", "days": 1, "notice_days": 0})
    with session_factory() as s:
        names = sorted(s.scalars(select(Schedule.name).where(Schedule.merchant_id == tenant.id)))
    assert names == ["loyalty.daily", "loyalty.hourly"]
    member = make_member(session_factory, tenant.id)
    h.award(session_factory, tenant.id, member, 40, "short", now=utcnow() - dt.timedelta(days=2))
    h.award(session_factory, tenant.id, member, 60, "fresh")
    later = utcnow() + dt.timedelta(hours=2)
    worker = Worker(session_factory, settings, merchant_id=tenant.id)
    assert worker.fire_schedules(now=later) >= 1
    worker.drain(now=later)
    assert [e.kind for e in h.entries(session_factory, tenant.id, member)] == ["earn", "earn", "expire"]
    assert h.balance(session_factory, tenant.id, member) == 60 == h.open_lots_sum(session_factory, tenant.id, member)


def test_a_streak_reward_coupon_is_issued_once(session_factory: sessionmaker[Session], tenant: Tenant) -> None:
    template = make_template(session_factory, tenant.id)
    h.set_rules(session_factory, tenant.id, check_in={
        "points": 1, "streak_rewards": [{"day": 2, "points": 0, "coupon_template_id": template}]})
    member = make_member(session_factory, tenant.id)
    start = h.utc(2026, 6, 1, 4, 0)
    with unit_of_work(session_factory) as s:
        service.check_in(s, tenant.id, member, start)
    with unit_of_work(session_factory) as s:
        row = service.check_in(s, tenant.id, member, start + dt.timedelta(days=1))
        assert row.rewards == [{"kind": "streak", "day": 2, "coupon_template_id": template, "coupon_issued": True}]
    (coupon,) = _coupons(session_factory, tenant, member)
    assert (coupon.template_id, coupon.source) == (template, "check_in")


def test_birthday_coupon_goes_to_members_of_a_level_with_one_once_a_year(
    session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    template = make_template(session_factory, tenant.id)
    h.add_level(session_factory, tenant.id, 0, "普通会员", birthday_coupon_template_id=template)
    now = utcnow()
    today = local_date(now, "Asia/Shanghai")
    birthday = today.replace(year=1990) if not (today.month == 2 and today.day == 29) else dt.date(1992, 2, 29)
    member, other = make_member(session_factory, tenant.id), make_member(session_factory, tenant.id)
    with unit_of_work(session_factory) as s:
        s.get(Member, member).birthday = birthday  # type: ignore[union-attr]
        s.get(Member, other).birthday = birthday + dt.timedelta(days=1)  # type: ignore[union-attr]
        service.evaluate_level(s, tenant.id, member)
        service.evaluate_level(s, tenant.id, other)
    for _ in range(2):
        with unit_of_work(session_factory) as s:
            service.birthday_coupons(s, tenant.id, now)
    assert [c.source for c in _coupons(session_factory, tenant, member)] == ["birthday"]
    assert _coupons(session_factory, tenant, other) == []


def test_a_member_born_on_29_february_gets_the_birthday_coupon_on_the_28th_of_other_years(
    session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    """Born 29 February: on 28 February of 2027 (no 29th) the coupon comes; in 2028 it comes on
    the 29th, not the 28th; once a year either way. A member born on the 28th gets theirs too."""
    template = make_template(session_factory, tenant.id, per_member_limit=10)
    h.add_level(session_factory, tenant.id, 0, "普通会员", birthday_coupon_template_id=template)
    leap, plain = make_member(session_factory, tenant.id), make_member(session_factory, tenant.id)
    with unit_of_work(session_factory) as s:
        s.get(Member, leap).birthday = dt.date(1992, 2, 29)  # type: ignore[union-attr]
        s.get(Member, plain).birthday = dt.date(1990, 2, 28)  # type: ignore[union-attr]
        service.evaluate_level(s, tenant.id, leap)
        service.evaluate_level(s, tenant.id, plain)

    def run(day: dt.date) -> int:
        noon = dt.datetime(day.year, day.month, day.day, 4, tzinfo=dt.UTC)  # 12:00 in Shanghai
        with unit_of_work(session_factory) as s:
            return service.birthday_coupons(s, tenant.id, noon)

    assert run(dt.date(2027, 2, 27)) == 0
    assert run(dt.date(2027, 2, 28)) == 2
    assert run(dt.date(2027, 3, 1)) == 0
    assert run(dt.date(2028, 2, 28)) == 1  # only the member born on the 28th
    assert run(dt.date(2028, 2, 29)) == 1
    assert len(_coupons(session_factory, tenant, leap)) == 2 and len(_coupons(session_factory, tenant, plain)) == 2


def test_a_pending_reward_that_cannot_be_issued_is_marked_failed_and_the_others_go_out(
    session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    """One pending reward whose template is gone must not fail the daily job (which also runs the
    level review and the birthday coupons) every day: it is marked failed, the rest is issued."""
    from siyu.loyalty.models import PendingReward

    template = make_template(session_factory, tenant.id)
    member = make_member(session_factory, tenant.id)
    with unit_of_work(session_factory) as s:
        for key, tid in (("gone", 987654321), ("good", template)):
            s.add(PendingReward(merchant_id=tenant.id, member_id=member, template_id=tid, source="level",
                                idempotency_key=f"pending-{key}", status="pending"))
    with unit_of_work(session_factory) as s:
        assert service.issue_pending_rewards(s, tenant.id) == 1
    with session_factory() as s:
        got = {r.idempotency_key: r.status for r in s.scalars(
            select(PendingReward).where(PendingReward.merchant_id == tenant.id))}
    assert got == {"pending-gone": "failed", "pending-good": "issued"}
    assert [c.template_id for c in _coupons(session_factory, tenant, member)] == [template]
