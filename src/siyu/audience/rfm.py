"""RFM: quintile scores for recency, frequency and monetary value, and the classic eight tiers.

Inputs are per-customer arrays (numpy), typically from
:func:`siyu.audience.summary.summarize_transactions` (``recency_days``, ``x + 1`` or
``n_orders``, ``total_spend``). Only customers with at least one purchase belong in the
population: the caller filters out members who never bought (they have no recency) and puts
them in a segment of its own (e.g. "no purchase yet") before calling these functions, since
including them would drag every quintile down.

Scores
------
Each dimension is scored 1..5 by its percentile rank within the population passed in:
``score = floor(5 * (rank - 0.5) / n) + 1`` with ``rank`` the average rank of the value (ties
share one average rank, so identical inputs always get the same score). Higher frequency and
monetary value score higher; for recency FEWER days since the last purchase score higher.
The formula works for any population size: a single customer scores 3, two customers score 2
and 4, and with fewer than five distinct values some scores are simply not used. A large tie
group (e.g. most customers bought once) all get the score of the group's middle rank.

Tiers
-----
Each score is "high" when it is strictly above the population mean of that score
(``rule="mean"``, the usual practice), or strictly above the midpoint 3 of the 1..5 scale, i.e.
4 or 5 (``rule="midpoint"``, which does not depend on who else is in the population). The three
high/low flags give the eight classic tiers of :data:`RFM_TIERS`. When every customer has the
same score in a dimension, nobody is high in it under the mean rule.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import numpy.typing as npt
from scipy import stats

__all__ = [
    "RFM_TIERS",
    "RFM_TIER_LABELS_EN",
    "RFM_TIER_LABELS_ZH",
    "rfm_scores",
    "rfm_tier",
]

IntArray = npt.NDArray[np.int64]

#: (code, Chinese label, English label), in the conventional order.
RFM_TIERS: tuple[tuple[str, str, str], ...] = (
    ("important_value", "重要价值", "Important value"),  # R high F high M high
    ("important_develop", "重要发展", "Important to develop"),  # R high F low  M high
    ("important_keep", "重要保持", "Important to keep"),  # R low  F high M high
    ("important_retain", "重要挽留", "Important to win back"),  # R low  F low  M high
    ("general_value", "一般价值", "General value"),  # R high F high M low
    ("general_develop", "一般发展", "General to develop"),  # R high F low  M low
    ("general_keep", "一般保持", "General to keep"),  # R low  F high M low
    ("general_retain", "一般挽留", "General to win back"),  # R low  F low  M low
)
RFM_TIER_LABELS_ZH: dict[str, str] = {code: zh for code, zh, _ in RFM_TIERS}
RFM_TIER_LABELS_EN: dict[str, str] = {code: en for code, _, en in RFM_TIERS}

_CODES = np.array([code for code, _, _ in RFM_TIERS])
# index into RFM_TIERS by the bits (r_high, f_high, m_high) -> 4*r + 2*f + m
_BITS_TO_TIER = np.array(
    [
        7,  # r0 f0 m0 general_retain
        3,  # r0 f0 m1 important_retain
        6,  # r0 f1 m0 general_keep
        2,  # r0 f1 m1 important_keep
        5,  # r1 f0 m0 general_develop
        1,  # r1 f0 m1 important_develop
        4,  # r1 f1 m0 general_value
        0,  # r1 f1 m1 important_value
    ],
    dtype=np.int64,
)


def _quintile(values: npt.NDArray[np.float64]) -> IntArray:
    n = values.shape[0]
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    ranks = stats.rankdata(values, method="average")
    scores = np.floor(5.0 * (ranks - 0.5) / n).astype(np.int64) + 1
    return np.clip(scores, 1, 5)


def _as_1d(name: str, v: npt.ArrayLike) -> npt.NDArray[np.float64]:
    arr = np.asarray(v, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite (filter out customers without purchases first)")
    return arr


def rfm_scores(
    recency_days: npt.ArrayLike,
    frequency: npt.ArrayLike,
    monetary: npt.ArrayLike,
) -> tuple[IntArray, IntArray, IntArray]:
    """Quintile scores 1..5 ``(r, f, m)`` for one population of customers who have purchased.

    ``recency_days``: days since the last purchase (fewer days -> higher R). ``frequency``:
    number of purchases (or occasions). ``monetary``: spend in any unit (fen). The three arrays
    are aligned, one entry per customer; customers with no purchase must be left out by the
    caller. See the module docstring for the scoring rule and ties.
    """
    rec = _as_1d("recency_days", recency_days)
    freq = _as_1d("frequency", frequency)
    mon = _as_1d("monetary", monetary)
    if not (rec.shape == freq.shape == mon.shape):
        raise ValueError("recency_days, frequency and monetary must have the same length")
    return _quintile(-rec), _quintile(freq), _quintile(mon)


def _high(scores: IntArray, rule: str) -> npt.NDArray[np.bool_]:
    if rule == "mean":
        return scores > scores.mean() if scores.shape[0] else np.zeros(0, dtype=bool)
    return scores > 3


def rfm_tier(
    r: npt.ArrayLike,
    f: npt.ArrayLike,
    m: npt.ArrayLike,
    rule: Literal["mean", "midpoint"] = "mean",
) -> npt.NDArray[np.str_]:
    """Tier code (see :data:`RFM_TIERS`) of every customer from its ``(r, f, m)`` scores.

    ``rule="mean"``: a score is high when strictly above the mean of that score over the
    arrays passed in (so pass the whole population at once). ``rule="midpoint"``: high when
    strictly above 3, i.e. 4 or 5. Labels: ``RFM_TIER_LABELS_ZH[code]`` /
    ``RFM_TIER_LABELS_EN[code]``.
    """
    if rule not in ("mean", "midpoint"):
        raise ValueError("rule must be 'mean' or 'midpoint'")
    ra, fa, ma = (np.asarray(v, dtype=np.int64) for v in (r, f, m))
    if ra.ndim != 1 or not (ra.shape == fa.shape == ma.shape):
        raise ValueError("r, f and m must be 1-D arrays of the same length")
    for name, arr in (("r", ra), ("f", fa), ("m", ma)):
        if arr.shape[0] and (arr.min() < 1 or arr.max() > 5):
            raise ValueError(f"{name} scores must be in 1..5")
    bits = (
        4 * _high(ra, rule).astype(np.int64)
        + 2 * _high(fa, rule).astype(np.int64)
        + _high(ma, rule).astype(np.int64)
    )
    return _CODES[_BITS_TO_TIER[bits]]
