"""RFM quintile scores and the eight classic tiers."""

from __future__ import annotations

import numpy as np
import pytest

from siyu.audience.rfm import RFM_TIER_LABELS_ZH, RFM_TIERS, rfm_scores, rfm_tier


def test_scores_range_and_quintiles() -> None:
    n = 1000
    rng = np.random.default_rng(0)
    rec = rng.permutation(n)
    freq = rng.permutation(n) + 1
    mon = rng.permutation(n) * 100
    r, f, m = rfm_scores(rec, freq, mon)
    for s in (r, f, m):
        assert s.min() == 1 and s.max() == 5
        assert np.bincount(s, minlength=6)[1:].tolist() == [200] * 5
    # more recent -> higher R; more purchases / spend -> higher F / M
    order = np.argsort(rec)
    assert np.all(np.diff(r[order]) <= 0)
    assert np.all(np.diff(f[np.argsort(freq)]) >= 0)
    assert np.all(np.diff(m[np.argsort(mon)]) >= 0)
    assert r[rec == 0][0] == 5 and r[rec == n - 1][0] == 1


def test_ties_get_identical_scores() -> None:
    rec = np.array([5, 5, 5, 5, 1, 100, 100, 30])
    freq = np.array([1, 1, 1, 1, 1, 1, 2, 9])
    mon = np.array([10.0, 10.0, 20.0, 20.0, 20.0, 5.0, 5.0, 1000.0])
    r, f, m = rfm_scores(rec, freq, mon)
    assert len(set(r[rec == 5].tolist())) == 1
    assert len(set(r[rec == 100].tolist())) == 1
    assert len(set(f[freq == 1].tolist())) == 1
    assert len(set(m[mon == 20.0].tolist())) == 1
    assert r[rec == 1][0] > r[rec == 5][0] > r[rec == 30][0] > r[rec == 100][0]
    assert f[freq == 9][0] >= f[freq == 2][0] >= f[freq == 1][0]


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 7])
def test_small_populations(n: int) -> None:
    rec = np.arange(n)
    r, f, m = rfm_scores(rec, np.ones(n), np.arange(n) * 2.0)
    for s in (r, f, m):
        assert s.shape == (n,)
        assert np.all((s >= 1) & (s <= 5))
    assert np.all(f == 3)  # everyone identical -> the middle score
    assert np.all(np.diff(r) <= 0) and np.all(np.diff(m) >= 0)
    if n == 1:
        assert (r.tolist(), m.tolist()) == ([3], [3])
    if n == 2:
        assert r.tolist() == [4, 2]


def test_few_distinct_values() -> None:
    r, _f, m = rfm_scores([1, 1, 1, 9, 9, 9], [1, 2, 1, 2, 1, 2], [3, 3, 3, 3, 3, 3])
    assert set(r.tolist()) <= {1, 2, 3, 4, 5}
    assert r[0] > r[3]
    assert np.all(m == 3)


def test_empty_and_invalid() -> None:
    r, f, m = rfm_scores([], [], [])
    assert r.shape == f.shape == m.shape == (0,)
    with pytest.raises(ValueError):
        rfm_scores([1, np.nan], [1, 2], [1, 2])
    with pytest.raises(ValueError):
        rfm_scores([1, 2], [1], [1, 2])
    with pytest.raises(ValueError):
        rfm_tier([0], [3], [3])
    with pytest.raises(ValueError):
        rfm_tier([3], [3], [3], rule="median")  # type: ignore[arg-type]


def test_tier_table() -> None:
    assert [code for code, _, _ in RFM_TIERS] == [
        "important_value",
        "important_develop",
        "important_keep",
        "important_retain",
        "general_value",
        "general_develop",
        "general_keep",
        "general_retain",
    ]
    assert RFM_TIER_LABELS_ZH["important_value"] == "重要价值"
    assert RFM_TIER_LABELS_ZH["general_retain"] == "一般挽留"
    assert len({zh for _, zh, _ in RFM_TIERS}) == 8


def test_tiers_midpoint_all_eight() -> None:
    # (R, F, M) with high = 4/5, low = 1..3
    r = [5, 4, 2, 1, 5, 4, 3, 1]
    f = [5, 1, 4, 3, 4, 2, 5, 1]
    m = [4, 5, 5, 4, 3, 1, 2, 3]
    got = rfm_tier(r, f, m, rule="midpoint").tolist()
    assert got == [
        "important_value",
        "important_develop",
        "important_keep",
        "important_retain",
        "general_value",
        "general_develop",
        "general_keep",
        "general_retain",
    ]


def test_tiers_mean_rule() -> None:
    # means: R = 2.5, F = 2.0, M = 3.0 -> R high iff >= 3, F high iff >= 3, M high iff >= 4
    r = np.array([3, 3, 2, 2, 3, 3, 2, 2])
    f = np.array([3, 1, 3, 1, 3, 1, 3, 1])
    m = np.array([4, 4, 4, 4, 2, 2, 2, 2])
    got = rfm_tier(r, f, m).tolist()
    assert got == [code for code, _, _ in RFM_TIERS]
    # the same scores under the midpoint rule: nobody has R or F above 3
    assert set(rfm_tier(r, f, m, rule="midpoint").tolist()) == {"important_retain", "general_retain"}


def test_tiers_uniform_population_and_empty() -> None:
    assert rfm_tier([3, 3], [3, 3], [3, 3]).tolist() == ["general_retain", "general_retain"]
    assert rfm_tier([], [], []).shape == (0,)


def test_scores_feed_tiers() -> None:
    rng = np.random.default_rng(3)
    rec = rng.integers(0, 365, 500)
    freq = rng.integers(1, 20, 500)
    mon = rng.gamma(2.0, 5000.0, 500)
    tiers = rfm_tier(*rfm_scores(rec, freq, mon))
    assert set(tiers.tolist()) <= {code for code, _, _ in RFM_TIERS}
    assert len(set(tiers.tolist())) == 8
