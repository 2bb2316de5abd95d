from hypothesis import given
from hypothesis import strategies as st

from siyu.kit.money import allocate, percent_of, yuan


def test_allocate_splits_exactly_by_largest_remainder() -> None:
    assert allocate(100, [1, 1, 1]) == [34, 33, 33]
    assert allocate(10, [3000, 7000]) == [3, 7]
    assert allocate(0, [5, 5]) == [0, 0]
    assert allocate(7, [0, 5]) == [0, 7]


@given(
    weights=st.lists(st.integers(min_value=0, max_value=10_000_000), min_size=1, max_size=30),
    share=st.floats(min_value=0, max_value=1, allow_nan=False),
)
def test_allocation_sums_exactly_and_never_exceeds_a_weight(weights: list[int], share: float) -> None:
    total_weight = sum(weights)
    total = int(total_weight * share)
    parts = allocate(total, weights)
    assert sum(parts) == total
    assert all(0 <= p <= w for p, w in zip(parts, weights, strict=True))


def test_percent_of_rounds_half_up_in_fen() -> None:
    assert percent_of(10_000, 60) == 60  # 0.6% of ¥100
    assert percent_of(83, 60) == 0
    assert percent_of(84, 60) == 1  # 0.504 rounds to 1 fen


def test_yuan_display() -> None:
    assert yuan(123456) == "¥1234.56"
    assert yuan(5) == "¥0.05"
    assert yuan(-250) == "-¥2.50"
