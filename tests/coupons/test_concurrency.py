"""Real parallel connections on PostgreSQL: total quantity and the per-member limit hold under
a stampede of claims; a coupon is locked by one pending order only."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from siyu.config import Settings
from siyu.coupons import service
from siyu.coupons.models import CouponMemberCounter, MemberCoupon
from siyu.db.engine import make_engine
from siyu.db.session import make_session_factory, unit_of_work
from siyu.orders import checkout
from siyu.orders.models import Order
from siyu.orders.schemas import CheckoutIn
from tests.conftest import Tenant
from tests.coupons.helpers import give, make_product_sku, make_template, template
from tests.factories.concurrency import race
from tests.factories.orders import buyer, make_member

THREADS = 240
MEMBERS = 160
TOTAL = 100
POOL = 20


@pytest.fixture
def race_factory(settings: Settings, db_url: str) -> Iterator[sessionmaker[Session]]:
    if settings.is_sqlite:
        pytest.skip("SQLite serialises every writer with BEGIN IMMEDIATE; the race is only meaningful on PostgreSQL")
    # Our own pool of 20: enough real connections to race, well under the server's max_connections
    # (other suites share it); threads beyond the pool queue for a connection.
    engine: Engine = make_engine(db_url, pool_size=POOL, max_overflow=0)
    engine.pool._timeout = 120  # type: ignore[attr-defined]
    # Open the pool's connections before the race, so a busy shared server fails the setup
    # loudly instead of turning racing threads into connection errors.
    held = [engine.connect() for _ in range(POOL)]
    for conn in held:
        conn.close()
    yield make_session_factory(engine)
    engine.dispose()


def test_240_concurrent_claims_issue_exactly_the_total_and_nobody_gets_two(
    race_factory: sessionmaker[Session], session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    tpl = make_template(session_factory, tenant.id, "fixed", amount=500, total_quantity=TOTAL, per_member_limit=1)
    members = [make_member(session_factory, tenant.id) for _ in range(MEMBERS)]

    def claim(i: int) -> str:
        # 80 members claim twice at once, each attempt with its own key: only the limit stops them.
        with unit_of_work(race_factory) as s:
            c = service.issue_to_member(s, tenant.id, tpl, members[i % MEMBERS], source="claim",
                                        idempotency_key=f"race:{i}")
            return f"coupon:{c.id}"

    results = race(THREADS, claim)
    outcomes = Counter("ok" if r.startswith("coupon:") else r for r in results)
    assert not [r for r in results if r.startswith("crash")], results
    assert outcomes["ok"] == TOTAL, outcomes
    assert set(outcomes) <= {"ok", "coupon_sold_out", "coupon_limit_reached"}, outcomes
    with session_factory() as s:
        rows = s.execute(
            select(MemberCoupon.member_id, func.count()).where(MemberCoupon.merchant_id == tenant.id)
            .group_by(MemberCoupon.member_id)
        ).all()
        counters = s.scalar(select(func.sum(CouponMemberCounter.received))
                            .where(CouponMemberCounter.merchant_id == tenant.id))
    assert sum(n for _, n in rows) == TOTAL and max(n for _, n in rows) == 1
    assert template(session_factory, tenant.id, tpl).issued == TOTAL == counters
    print(f"\n{THREADS} racing claims, total {TOTAL}: {dict(outcomes)}")


def test_a_member_tapping_claim_twenty_times_at_once_gets_one_coupon(
    race_factory: sessionmaker[Session], session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    tpl = make_template(session_factory, tenant.id, "fixed", amount=500, total_quantity=50, per_member_limit=1)
    member = make_member(session_factory, tenant.id)

    def tap(i: int) -> str:
        with unit_of_work(race_factory) as s:
            return f"coupon:{service.claim(s, tenant.id, member, tpl)[0].id}"

    results = race(20, tap)
    # A tap racing the first one gets the same coupon (same derived key); a tap that starts after
    # the first claim committed is a second claim, past the limit: refused, never a second coupon.
    coupons = {r for r in results if r.startswith("coupon:")}
    assert len(coupons) == 1, results
    assert set(results) - coupons <= {"coupon_limit_reached"}, results
    assert template(session_factory, tenant.id, tpl).issued == 1


def test_two_orders_racing_for_one_coupon_only_one_locks_it(
    race_factory: sessionmaker[Session], session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    member = buyer(session_factory, tenant.id)
    sku, _, _ = make_product_sku(session_factory, tenant.id, price=5000)
    c = give(session_factory, tenant.id, make_template(session_factory, tenant.id, "fixed", amount=800), member)

    def submit(i: int) -> str:
        with unit_of_work(race_factory) as s:
            body = CheckoutIn.model_validate({"items": [{"sku_id": sku, "quantity": 1}], "coupon_ids": [c]})
            order, _ = checkout.submit(s, tenant.id, member, body, idempotency_key=f"o{i}",
                                       payment_timeout=dt.timedelta(minutes=30))
            return f"order:{order.id}"

    results = race(8, submit)
    orders = [r for r in results if r.startswith("order:")]
    assert len(orders) == 1 and Counter(results)["coupon_locked"] == 7, results
    with session_factory() as s:
        assert s.scalar(select(func.count()).select_from(Order).where(Order.merchant_id == tenant.id)) == 1
        locked = s.get(MemberCoupon, c)
        assert locked is not None and locked.status == "locked" and f"order:{locked.order_id}" == orders[0]
