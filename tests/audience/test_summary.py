"""Transactions -> (x, t_x, T, monetary value) summaries, on hand-made data."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from siyu.audience.summary import summarize_transactions, to_day_numbers


def _days(*iso: str) -> np.ndarray:
    return np.array(iso, dtype="datetime64[D]")


def test_basic_rules() -> None:
    ids = np.array([7, 7, 7, 7, 3, 9, 9])
    ts = _days(
        "2024-01-01", "2024-01-01", "2024-01-08", "2024-01-15", "2024-01-10", "2024-01-02", "2024-02-10"
    )
    amounts = np.array([100, 50, 200, 400, 80, 10, 999])
    s = summarize_transactions(ids, ts, amounts, np.datetime64("2024-01-31"))
    np.testing.assert_array_equal(s.customer_id, [3, 7, 9])
    np.testing.assert_array_equal(s.x, [0, 2, 0])  # 7: same-day rows merge; 9: Feb row is after the end
    np.testing.assert_array_equal(s.t_x, [0, 14, 0])
    np.testing.assert_array_equal(s.T, [21, 30, 29])
    np.testing.assert_array_equal(s.monetary_mean_of_repeat, [0, 300, 0])  # first occasion excluded
    np.testing.assert_array_equal(s.total_spend, [80, 750, 10])
    np.testing.assert_array_equal(s.n_orders, [1, 4, 1])
    np.testing.assert_array_equal(s.recency_days, [21, 16, 29])
    assert s.x.dtype == np.int64 and s.T.dtype == np.float64


def test_same_day_occasion_value_is_summed() -> None:
    ids = np.array(["a", "a", "a", "a"])
    ts = np.array(
        ["2024-03-01T08:00", "2024-03-01T23:59", "2024-03-05T00:01", "2024-03-05T10:00"],
        dtype="datetime64[m]",
    )
    s = summarize_transactions(ids, ts, [1.0, 2.0, 3.0, 4.0], dt.date(2024, 3, 10))
    assert s.x.tolist() == [1]
    assert s.monetary_mean_of_repeat.tolist() == [7.0]
    assert s.total_spend.tolist() == [10.0]
    assert s.customer_id.tolist() == ["a"]


def test_weeks_and_int_days_and_unsorted_input() -> None:
    rng = np.random.default_rng(1)
    ids = np.array([1, 1, 1, 2])
    days = np.array([0, 7, 10, 3])
    perm = rng.permutation(4)
    s = summarize_transactions(ids[perm], days[perm], np.array([5, 6, 7, 8])[perm], 14, period_days=7)
    np.testing.assert_allclose(s.t_x, [10 / 7, 0])
    np.testing.assert_allclose(s.T, [2, 11 / 7])
    np.testing.assert_allclose(s.monetary_mean_of_repeat, [6.5, 0])
    np.testing.assert_array_equal(s.first_day, [0, 3])
    np.testing.assert_array_equal(s.last_day, [10, 3])


def test_observation_start_and_empty() -> None:
    s = summarize_transactions([1, 1, 2], [1, 5, 2], [1, 1, 1], calibration_end=10, observation_start=3)
    assert s.customer_id.tolist() == [1]
    assert s.x.tolist() == [0]
    assert s.T.tolist() == [5.0]
    e = summarize_transactions([1], [20], [1], calibration_end=10)
    assert len(e) == 0 and e.x.shape == (0,)
    e2 = summarize_transactions(np.array([], dtype=np.int64), np.array([], dtype="datetime64[D]"), [], 10)
    assert len(e2) == 0


def test_validation() -> None:
    with pytest.raises(ValueError):
        summarize_transactions([1, 2], [1], [1, 2], 10)
    with pytest.raises(ValueError):
        summarize_transactions([1], [1], [1], 10, period_days=0)
    assert to_day_numbers(np.array(["1970-01-02"], dtype="datetime64[s]")).tolist() == [1]
    assert to_day_numbers(
        np.array([dt.date(1970, 1, 3), dt.datetime(1970, 1, 4, 12)], dtype=object)
    ).tolist() == [2, 3]


def test_matches_naive_implementation() -> None:
    rng = np.random.default_rng(42)
    n = 5000
    ids = rng.integers(0, 300, n)
    days = rng.integers(0, 200, n)
    amounts = rng.integers(1, 10_000, n).astype(float)
    end = 150
    s = summarize_transactions(ids, days, amounts, end, period_days=7)
    for k, cid in enumerate(s.customer_id):
        mask = (ids == cid) & (days <= end)
        occ: dict[int, float] = {}
        for d, a in zip(days[mask], amounts[mask], strict=True):
            occ[int(d)] = occ.get(int(d), 0.0) + float(a)
        ordered = sorted(occ)
        assert s.x[k] == len(ordered) - 1
        assert s.t_x[k] == pytest.approx((ordered[-1] - ordered[0]) / 7)
        assert s.T[k] == pytest.approx((end - ordered[0]) / 7)
        repeat = [occ[d] for d in ordered[1:]]
        assert s.monetary_mean_of_repeat[k] == pytest.approx(np.mean(repeat) if repeat else 0.0)
        assert s.total_spend[k] == pytest.approx(sum(occ.values()))
        assert s.n_orders[k] == int(mask.sum())
    assert len(s) == len(np.unique(ids[days <= end]))
