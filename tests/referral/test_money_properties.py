"""Property tests for commission money: proportional reversal over any sequence of partial
refunds, and the distributor account under any sequence of movements (never negative, always
equal to the ledger, nothing created or lost)."""

from __future__ import annotations

import datetime as dt
import uuid
from fractions import Fraction

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.orm import Session, sessionmaker

from siyu.db.session import unit_of_work
from siyu.kit.errors import DomainError
from siyu.kit.money import percent_of
from siyu.kit.timeutil import utcnow
from siyu.members.models import Member
from siyu.referral import repository as repo
from siyu.referral import service
from siyu.referral.models import Distributor
from siyu.tenancy import service as tenancy_service
from tests.conftest import unique
from tests.referral import helpers as h


@st.composite
def refund_sequences(draw: st.DrawFn) -> tuple[int, int, list[int]]:
    base = draw(st.integers(min_value=1, max_value=10**8))
    rate = draw(st.integers(min_value=0, max_value=10000))
    parts: list[int] = []
    left = base
    while left and len(parts) < 8:
        part = draw(st.integers(min_value=1, max_value=left))
        parts.append(part)
        left -= part
    return base, rate, parts


@given(refund_sequences())
def test_reversals_add_up_monotonically_and_exactly(case: tuple[int, int, list[int]]) -> None:
    base, rate, parts = case
    amount = percent_of(base, rate)
    refunded = reversed_total = 0
    for part in parts:
        refunded += part
        target = service.reversal_target(amount, base, refunded)
        assert reversed_total <= target <= amount  # never gives back, never exceeds
        assert abs(Fraction(amount * refunded, base) - target) <= Fraction(1, 2)  # proportional to the fen
        reversed_total = target
    if refunded == base:
        assert reversed_total == amount


@given(st.integers(min_value=0, max_value=10**9), st.integers(min_value=0, max_value=10000))
def test_commission_never_exceeds_the_basis(base: int, rate: int) -> None:
    assert 0 <= percent_of(base, rate) <= base


OPS = st.lists(
    st.tuples(
        st.sampled_from(["accrue", "freeze", "settle", "reverse_pending", "clawback", "withdraw", "reject", "pay"]),
        st.integers(min_value=1, max_value=5000),
    ),
    min_size=1,
    max_size=25,
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=OPS)
def test_account_stays_non_negative_and_equal_to_its_ledger(
    session_factory: sessionmaker[Session], ops: list[tuple[str, int]]
) -> None:
    with unit_of_work(session_factory) as s:
        merchant = tenancy_service.create_merchant(s, code=unique("m"), name="prop")
        member = Member(merchant_id=merchant.id, openid=unique("o"), registered_at=utcnow())
        s.add(member)
        s.flush()
        dist = Distributor(merchant_id=merchant.id, member_id=member.id, status="approved",
                           applied_at=utcnow() - dt.timedelta(days=1))
        s.add(dist)
        s.flush()
        mid, did, member_id = merchant.id, dist.id, member.id
    earned = 0  # accrued minus reversed minus clawed back
    open_withdrawals: list[int] = []
    for op, x in ops:
        acct = h.account(session_factory, mid, did)
        try:
            with unit_of_work(session_factory) as s:
                key = f"prop:{uuid.uuid4().hex}"
                if op == "accrue":
                    repo.move(s, mid, did, key=key, entry="accrued", amount=x, deltas={"pending": x})
                    earned += x
                elif op == "freeze":
                    y = min(x, acct["pending"])
                    repo.move(s, mid, did, key=key, entry="frozen", amount=y, deltas={"pending": -y, "frozen": y})
                elif op == "settle":
                    y = min(x, acct["frozen"])
                    service._credit_available(s, mid, did, y, key=key, entry="settled", extra={"frozen": -y})
                elif op == "reverse_pending":
                    y = min(x, acct["pending"])
                    repo.move(s, mid, did, key=key, entry="reversed", amount=y, deltas={"pending": -y})
                    earned -= y
                elif op == "clawback":  # as reverse_for_refund does for a settled commission
                    d = repo.distributor(s, mid, did, lock=True)
                    assert d is not None
                    take = min(d.available, x)
                    repo.move(s, mid, did, key=key, entry="clawback", amount=x,
                              deltas={"available": -take, "debt": x - take})
                    earned -= x
                elif op == "withdraw":
                    w, _ = service.request_withdrawal(s, mid, member_id, x, idempotency_key=key)
                    open_withdrawals.append(w.id)
                elif op in ("reject", "pay") and open_withdrawals:
                    wid = open_withdrawals.pop()
                    service.approve_withdrawal(s, mid, wid, None, actor=("staff", None))
                    if op == "reject":
                        service.reject_withdrawal(s, mid, wid, None, actor=("staff", None))
                    else:
                        service.mark_withdrawal_paid(s, mid, wid, "REF", actor=("staff", None))
        except DomainError as exc:
            assert exc.code in ("withdrawal_exceeds_balance", "withdrawal_below_minimum"), exc.code
            assert op == "withdraw"
        after = h.account(session_factory, mid, did)
        assert all(v >= 0 for v in after.values()), after
        assert h.ledger_sums(session_factory, mid, did) == after
        held = after["pending"] + after["frozen"] + after["available"] + after["withdrawing"] + after["withdrawn"]
        assert held - after["debt"] == earned
        assert not (after["available"] and after["debt"])  # debt is paid before anything becomes available


@st.composite
def refunded_orders(draw: st.DrawFn) -> tuple[int, list[int], list[tuple[int, int]], bool]:
    """(rate, line payables, refund steps (line index, amount), finish with a full refund)."""
    rate = draw(st.integers(min_value=1, max_value=10000))
    payables = draw(st.lists(st.integers(min_value=10_000, max_value=10**6), min_size=1, max_size=3))  # >= 1 fen at 1 bp
    left = list(payables)
    steps: list[tuple[int, int]] = []
    for _ in range(draw(st.integers(min_value=1, max_value=6))):
        open_lines = [i for i, x in enumerate(left) if x > 0]
        if not open_lines:
            break
        i = draw(st.sampled_from(open_lines))
        amount = draw(st.integers(min_value=1, max_value=left[i]))
        left[i] -= amount
        steps.append((i, amount))
    return rate, payables, steps, draw(st.booleans())


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=refunded_orders())
def test_refunds_in_any_order_reverse_exactly_through_the_service(
    session_factory: sessionmaker[Session], case: tuple[int, list[int], list[tuple[int, int]], bool]
) -> None:
    from siyu.orders.models import PAID, Order, OrderLine
    from siyu.referral.models import DistributorLevel

    rate, payables, steps, finish_full = case
    with unit_of_work(session_factory) as s:
        merchant = tenancy_service.create_merchant(s, code=unique("m"), name="prop")
        mid = merchant.id
        inviter = Member(merchant_id=mid, openid=unique("o"), registered_at=utcnow())
        buyer = Member(merchant_id=mid, openid=unique("o"), registered_at=utcnow())
        s.add_all([inviter, buyer])
        s.flush()
        level = DistributorLevel(merchant_id=mid, name="L", tier1_rate_bp=rate, tier2_rate_bp=0, is_default=True)
        s.add(level)
        s.flush()
        dist = Distributor(merchant_id=mid, member_id=inviter.id, status="approved", level_id=level.id,
                           applied_at=utcnow())
        s.add(dist)
        service.ensure_profile(s, mid, inviter.id)
        prof = service.ensure_profile(s, mid, buyer.id)
        prof.inviter_member_id = inviter.id
        total = sum(payables)
        order = Order(merchant_id=mid, order_no=unique("n")[:32], member_id=buyer.id, status=PAID,
                      idempotency_key=unique("k"), request_hash="x", goods_amount=total, payable_amount=total,
                      paid_amount=total, paid_at=utcnow())
        s.add(order)
        s.flush()
        lines = [
            OrderLine(merchant_id=mid, order_id=order.id, product_id=1, sku_id=1, title="t", quantity=1,
                      list_price=p, sale_price=p, goods_amount=p, payable_amount=p)
            for p in payables
        ]
        s.add_all(lines)
        s.flush()
        (commission,) = service.accrue_commissions(s, mid, order.id)
        oid, cid, did, line_ids = order.id, commission.id, dist.id, [ln.id for ln in lines]
    refunded = dict.fromkeys(line_ids, 0)
    for refund_id, (i, amount) in enumerate(steps, start=1):
        for _ in range(2):  # a retried event changes nothing
            with unit_of_work(session_factory) as s:
                service.reverse_for_refund(s, mid, oid, refund_id, amount=amount,
                                           lines=[{"order_line_id": line_ids[i], "amount": amount}], full=False)
        refunded[line_ids[i]] += amount
        clines = h.commission_lines(session_factory, mid, cid)
        for cl in clines:
            exact = Fraction(cl.amount * refunded[cl.order_line_id], cl.base_amount)
            assert cl.reversed_amount == int(exact + Fraction(1, 2))  # half up, per line, cumulative
        (c,) = h.commissions(session_factory, mid, oid)
        assert c.reversed_amount == sum(cl.reversed_amount for cl in clines) <= c.amount
        assert h.account(session_factory, mid, did)["pending"] == c.amount - c.reversed_amount
    if finish_full:
        with unit_of_work(session_factory) as s:
            service.reverse_for_refund(s, mid, oid, 999, amount=0, lines=None, full=True)
    (c,) = h.commissions(session_factory, mid, oid)
    if finish_full or all(refunded[x] == p for x, p in zip(line_ids, payables, strict=True)):
        assert c.reversed_amount == c.amount and h.account(session_factory, mid, did)["pending"] == 0
    assert h.ledger_sums(session_factory, mid, did) == h.account(session_factory, mid, did)
