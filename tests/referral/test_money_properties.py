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
