"""``rebuild_stats`` (after an import or a bulk load) against an independent per-member
recomputation from the orders, on both dialects: for a list of members and for the whole
merchant, in one chunk or many; idempotent; members outside the list untouched."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from siyu.audience import repository as repo
from siyu.audience.models import MemberStats
from siyu.db.session import unit_of_work
from siyu.members.models import Member
from siyu.orders import models as om
from siyu.tenancy import service as tenancy_service
from tests.conftest import Tenant

T0 = dt.datetime(2026, 3, 1, 2, 0, tzinfo=dt.UTC)
DERIVED = ("paid_orders", "paid_total", "first_order_at", "second_order_at", "last_order_at")


@dataclass(frozen=True)
class Ord:
    """An order to write: status, minutes after T0 it was paid (None: never), paid, refunded."""

    status: str
    minutes: int | None
    paid: int = 0
    refunded: int = 0


# name -> orders, written in this order (ids ascending)
CASES: dict[str, list[Ord]] = {
    "no_orders": [],
    "one_paid": [Ord(om.PAID, 10, 1990)],
    "several": [Ord(om.COMPLETED, 300, 5000), Ord(om.SHIPPED, 100, 2500), Ord(om.PAID, 200, 1200)],
    "partly_refunded": [Ord(om.COMPLETED, 50, 8000, 3000), Ord(om.PAID, 60, 1000)],
    "only_unpaid": [Ord(om.PENDING_PAYMENT, None), Ord(om.CANCELLED, None), Ord(om.CLOSED, 30, 4000, 4000)],
    "closed_and_paid": [Ord(om.CLOSED, 5, 4000, 4000), Ord(om.PAID, 500, 700), Ord(om.CANCELLED, None)],
    "tie_first": [Ord(om.PAID, 40, 100), Ord(om.PAID, 40, 200), Ord(om.COMPLETED, 90, 300)],
    "tie_second": [Ord(om.PAID, 90, 300), Ord(om.SHIPPED, 70, 100), Ord(om.PAID, 70, 200), Ord(om.COMPLETED, 20, 50)],
    "tie_all": [Ord(om.PAID, 15, 1), Ord(om.PAID, 15, 2), Ord(om.PAID, 15, 3)],
    "stale_row": [Ord(om.CANCELLED, None)],  # a stats row with wrong values, no paid order: reset
    "stale_buyer": [Ord(om.PAID, 1, 999)],  # a stats row with wrong values: rewritten
    "no_row_yet": [Ord(om.SHIPPED, 7, 321)],  # no stats row before the rebuild
}
PAID = (om.PAID, om.SHIPPED, om.COMPLETED)


def expected(orders: list[tuple[int, Ord]]) -> dict[str, Any]:
    """What the stats must say, recomputed member by member in Python from the written orders."""
    paid = sorted(
        ((T0 + dt.timedelta(minutes=o.minutes), order_id, o) for order_id, o in orders
         if o.status in PAID and o.minutes is not None),
        key=lambda x: (x[0], x[1]),
    )
    return {
        "paid_orders": len(paid),
        "paid_total": sum(o.paid - o.refunded for _, _, o in paid),
        "first_order_at": paid[0][0] if paid else None,
        "second_order_at": paid[1][0] if len(paid) > 1 else None,
        "last_order_at": paid[-1][0] if paid else None,
    }


def populate(factory: sessionmaker[Session], merchant_id: int, copies: int = 1) -> dict[int, dict[str, Any]]:
    """Every case ``copies`` times (members interleaved with another merchant's); returns the
    expected values per member id. Stats rows exist for all but ``no_row_yet``, zeroed, except
    the ``stale_*`` ones, which hold wrong values."""
    out: dict[int, dict[str, Any]] = {}
    with unit_of_work(factory) as s:
        for _ in range(copies):
            for name, orders in CASES.items():
                member = Member(merchant_id=merchant_id, openid=f"o-{uuid.uuid4().hex[:12]}", registered_at=T0)
                s.add(member)
                s.flush()
                written = []
                for o in orders:
                    paid_at = T0 + dt.timedelta(minutes=o.minutes) if o.minutes is not None else None
                    row = om.Order(
                        merchant_id=merchant_id, order_no=uuid.uuid4().hex[:20], member_id=member.id, status=o.status,
                        idempotency_key=uuid.uuid4().hex, request_hash="x", goods_amount=o.paid, payable_amount=o.paid,
                        paid_amount=o.paid, refunded_amount=o.refunded, paid_at=paid_at,
                    )
                    s.add(row)
                    s.flush()
                    written.append((row.id, o))
                out[member.id] = {"case": name, **expected(written)}
                if name != "no_row_yet":
                    repo.ensure_rows(s, merchant_id, {member.id})
                if name.startswith("stale"):
                    s.execute(
                        update(MemberStats)
                        .where(MemberStats.merchant_id == merchant_id, MemberStats.member_id == member.id)
                        .values(paid_orders=7, paid_total=123456, first_order_at=T0, second_order_at=T0,
                                last_order_at=T0 + dt.timedelta(days=9))
                    )
    return out


def stats_of(factory: sessionmaker[Session], merchant_id: int) -> dict[int, dict[str, Any]]:
    with factory() as s:
        rows = s.scalars(select(MemberStats).where(MemberStats.merchant_id == merchant_id)).all()
        return {
            r.member_id: {
                **{c: getattr(r, c) for c in DERIVED},
                "refunded_total": r.refunded_total, "product_views": r.product_views, "lifecycle_stage": r.lifecycle_stage,
                "registered_at": r.registered_at,
            }
            for r in rows
        }


def assert_rebuilt(got: dict[int, dict[str, Any]], want: dict[int, dict[str, Any]]) -> None:
    for member_id, values in want.items():
        assert member_id in got, values["case"]
        assert {c: got[member_id][c] for c in DERIVED} == {c: values[c] for c in DERIVED}, values["case"]


@pytest.fixture
def other_merchant(session_factory: sessionmaker[Session]) -> int:
    code = f"other-{uuid.uuid4().hex[:8]}"
    with unit_of_work(session_factory) as s:
        return tenancy_service.create_merchant(s, code=code, name=code).id


@pytest.mark.parametrize("how", ["list", "all"])
@pytest.mark.parametrize("chunked", [False, True], ids=["one-chunk", "many-chunks"])
def test_rebuild_equals_recomputation_and_is_idempotent(
    session_factory: sessionmaker[Session], tenant: Tenant, other_merchant: int, monkeypatch: pytest.MonkeyPatch,
    how: str, chunked: bool,
) -> None:
    if chunked:  # several chunks, boundaries falling inside the cases
        monkeypatch.setattr(repo, "_ID_CHUNK", 5)
        monkeypatch.setattr(repo, "_RANGE_CHUNK", 4)
    want = populate(session_factory, tenant.id, copies=2)
    theirs = populate(session_factory, other_merchant)  # another merchant's stale rows stay stale
    theirs_before = stats_of(session_factory, other_merchant)
    with unit_of_work(session_factory) as s:
        written = repo.rebuild_stats(s, tenant.id, list(want) if how == "list" else None)
    got = stats_of(session_factory, tenant.id)
    assert set(got) == set(want)
    assert_rebuilt(got, want)
    # rows written: exactly the members whose values were wrong (the zeroed rows of buyers, the
    # stale rows, the new rows of buyers); a created row of a member without orders is right already
    assert written == sum(1 for v in want.values() if v["paid_orders"] or v["case"].startswith("stale"))
    # the other columns are not the rebuild's: a created row starts as any new row does
    new_rows = [m for m, v in want.items() if v["case"] == "no_row_yet"]
    assert all(got[m]["registered_at"] == T0 and got[m]["lifecycle_stage"] == "never_purchased" for m in new_rows)
    assert stats_of(session_factory, other_merchant) == theirs_before
    assert set(theirs_before) == set(theirs) - {m for m, v in theirs.items() if v["case"] == "no_row_yet"}
    # again: nothing to write, same values
    with unit_of_work(session_factory) as s:
        assert repo.rebuild_stats(s, tenant.id, list(want) if how == "list" else None) == 0
    assert stats_of(session_factory, tenant.id) == got


def test_rebuild_of_a_subset_leaves_the_others_untouched(
    session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    want = populate(session_factory, tenant.id, copies=2)
    ids = sorted(want)
    subset = ids[::2]
    before = stats_of(session_factory, tenant.id)
    with unit_of_work(session_factory) as s:
        # columns the rebuild does not own keep their values on the rebuilt members too
        s.execute(update(MemberStats).where(MemberStats.merchant_id == tenant.id).values(refunded_total=55, product_views=3))
        repo.rebuild_stats(s, tenant.id, subset)
    got = stats_of(session_factory, tenant.id)
    assert_rebuilt(got, {m: want[m] for m in subset})
    for m in ids[1::2]:
        if m in before:
            assert got[m] == {**before[m], "refunded_total": 55, "product_views": 3}
        else:
            assert m not in got  # no row was created for a member outside the list
    assert all(got[m]["refunded_total"] == 55 and got[m]["product_views"] == 3 for m in subset if m in before)
    # an empty list writes nothing
    with unit_of_work(session_factory) as s:
        assert repo.rebuild_stats(s, tenant.id, []) == 0


def test_ensure_rows_creates_only_missing_rows_of_the_merchants_members(
    session_factory: sessionmaker[Session], tenant: Tenant, other_merchant: int
) -> None:
    with unit_of_work(session_factory) as s:
        mine = [Member(merchant_id=tenant.id, openid=f"o-{uuid.uuid4().hex[:12]}", registered_at=T0) for _ in range(3)]
        theirs = Member(merchant_id=other_merchant, openid=f"o-{uuid.uuid4().hex[:12]}")
        s.add_all([*mine, theirs])
        s.flush()
        ids = [m.id for m in mine]
        repo.ensure_rows(s, tenant.id, {ids[0]})
        s.execute(update(MemberStats).where(MemberStats.member_id == ids[0]).values(paid_orders=4, product_views=9))
        repo.ensure_rows(s, tenant.id, {*ids, theirs.id})
        repo.ensure_rows(s, tenant.id, set(ids))  # again: nothing to do
    got = stats_of(session_factory, tenant.id)
    assert set(got) == set(ids)
    assert (got[ids[0]]["paid_orders"], got[ids[0]]["product_views"]) == (4, 9)  # kept
    assert got[ids[1]]["registered_at"] == T0 and got[ids[1]]["paid_orders"] == 0
    assert stats_of(session_factory, other_merchant) == {}
