"""Money is integer fen (分). Never float.

``allocate`` splits an amount over weights with the largest-remainder method, so the parts sum
exactly to the whole; discounts are allocated to order lines this way and refunds use the
allocated amounts.
"""

from __future__ import annotations

from collections.abc import Sequence


def allocate(total: int, weights: Sequence[int]) -> list[int]:
    """Split ``total`` fen in proportion to non-negative integer ``weights``.

    Each part is floor(total * w / sum(w)); the fen left over go one each to the parts with the
    largest remainders (ties to the earlier part). No part exceeds its weight when
    ``total <= sum(weights)``, so a discount never makes a line negative.
    """
    if total < 0:
        raise ValueError("total must be >= 0")
    if any(w < 0 for w in weights):
        raise ValueError("weights must be >= 0")
    n = len(weights)
    if n == 0:
        if total:
            raise ValueError("cannot allocate a non-zero amount over no weights")
        return []
    weight_sum = sum(weights)
    if weight_sum == 0:
        if total:
            raise ValueError("cannot allocate a non-zero amount over zero weights")
        return [0] * n
    parts = [total * w // weight_sum for w in weights]
    remainders = [(total * w % weight_sum, -i) for i, w in enumerate(weights)]
    left = total - sum(parts)
    for _, neg_i in sorted(remainders, reverse=True)[:left]:
        parts[-neg_i] += 1
    return parts


def percent_of(amount: int, basis_points: int) -> int:
    """``amount * basis_points / 10000`` rounded half up, for fees and percentage rules (60 bp = 0.6%)."""
    return (amount * basis_points + 5000) // 10000


def yuan(amount_fen: int) -> str:
    """Display form: ¥12.30."""
    sign = "-" if amount_fen < 0 else ""
    value = abs(amount_fen)
    return f"{sign}¥{value // 100}.{value % 100:02d}"
