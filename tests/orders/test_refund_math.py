"""``line_refund_amount``: refunding every unit, in any batches, returns exactly the line's payable."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from siyu.kit.errors import DomainError
from siyu.orders.models import OrderLine
from siyu.orders.service import line_refund_amount


def _line(quantity: int, payable: int) -> OrderLine:
    return OrderLine(id=1, quantity=quantity, payable_amount=payable, refunded_quantity=0, refunded_amount=0)


@st.composite
def batches(draw: st.DrawFn) -> tuple[int, int, list[int]]:
    quantity = draw(st.integers(min_value=1, max_value=999))
    payable = draw(st.integers(min_value=0, max_value=10**9))
    sizes: list[int] = []
    left = quantity
    while left:
        size = draw(st.integers(min_value=1, max_value=left))
        sizes.append(size)
        left -= size
    return quantity, payable, sizes


@given(batches())
def test_refunding_all_units_in_any_batches_returns_exactly_the_payable(case: tuple[int, int, list[int]]) -> None:
    quantity, payable, sizes = case
    line = _line(quantity, payable)
    total = 0
    for size in sizes:
        part = line_refund_amount(line, size)
        assert 0 <= part <= payable
        total += part
        line.refunded_quantity += size
        line.refunded_amount += part
        assert line.refunded_amount <= payable
    assert total == payable


@given(st.integers(min_value=1, max_value=999), st.integers(min_value=0, max_value=10**9))
def test_unit_by_unit_sums_to_payable_and_shares_differ_by_at_most_one_fen(quantity: int, payable: int) -> None:
    line = _line(quantity, payable)
    parts = []
    for _ in range(quantity):
        parts.append(line_refund_amount(line, 1))
        line.refunded_quantity += 1
    assert sum(parts) == payable
    assert max(parts) - min(parts) <= 1


def test_bad_quantities_are_refused() -> None:
    line = _line(3, 100)
    for q in (0, -1, 4):
        with pytest.raises(DomainError) as err:
            line_refund_amount(line, q)
        assert err.value.code == "refund_quantity_invalid"
    line.refunded_quantity = 2
    with pytest.raises(DomainError):
        line_refund_amount(line, 2)
    assert line_refund_amount(line, 1) == 100 - 100 * 2 // 3
