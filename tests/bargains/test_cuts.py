"""The pre-generated cuts: exact sum, each at least 1 fen, H of them, reproducible from the seed."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from siyu.bargains.service import generate_cuts


@settings(max_examples=300, deadline=None)
@given(
    helpers=st.integers(min_value=1, max_value=200),
    extra=st.integers(min_value=0, max_value=1_000_000),
    seed=st.integers(min_value=0, max_value=2**62),
)
def test_cuts_sum_exactly_each_at_least_one_fen(helpers: int, extra: int, seed: int) -> None:
    total = helpers + extra
    cuts = generate_cuts(total, helpers, seed)
    assert len(cuts) == helpers
    assert sum(cuts) == total
    assert min(cuts) >= 1
    assert cuts == sorted(cuts, reverse=True)
    assert generate_cuts(total, helpers, seed) == cuts  # the stored seed regenerates them


def test_one_helper_takes_the_whole_range() -> None:
    assert generate_cuts(9000, 1, 7) == [9000]


def test_exactly_one_fen_each_when_the_range_equals_h() -> None:
    assert generate_cuts(5, 5, 123) == [1, 1, 1, 1, 1]


@pytest.mark.parametrize(("total", "helpers"), [(2, 3), (0, 1), (5, 0)])
def test_impossible_ranges_are_refused(total: int, helpers: int) -> None:
    with pytest.raises(ValueError):
        generate_cuts(total, helpers, 1)
