"""Predicted customer value: the BG/NBD purchase model and the Gamma-Gamma spend model.

Pure numpy/scipy; the inputs are the per-customer summaries of
:func:`siyu.audience.summary.summarize_transactions`.

Units
-----
Time is measured in "periods": whatever unit ``x``/``t_x``/``T`` were computed in (Siyu uses
days or weeks, ``period_days`` of the summary). Fitted ``alpha`` (BG/NBD) is in that unit, and
every ``t``/``horizon_periods`` argument must be in it too.

Money
-----
Spend figures are floats in the unit of the monetary input (Siyu passes integer fen). They are
estimates, so the float math is fine; callers convert to integer fen at the boundary, rounding
half to even (``np.rint(v).astype(np.int64)``) or with ``decimal`` if they prefer half-up.

BG/NBD (Fader, Hardie & Lee 2005, "Counting your customers the easy way")
-------------------------------------------------------------------------
While alive a customer buys as a Poisson process with rate lambda; after each purchase she
becomes inactive with probability p. Across customers lambda ~ Gamma(shape r, rate alpha) and
p ~ Beta(a, b). For one customer with ``x`` repeat purchases, the last at ``t_x``, observed
for ``T`` periods since the first purchase, the likelihood (paper eq. 6) is

    L = B(a, b+x)/B(a, b) * Gamma(r+x) alpha^r / (Gamma(r) (alpha+T)^(r+x))
        + [x > 0] B(a+1, b+x-1)/B(a, b) * Gamma(r+x) alpha^r / (Gamma(r) (alpha+t_x)^(r+x)).

We evaluate its logarithm as ``A + logaddexp(u1, u2)`` with ``A = lnGamma(r+x) - lnGamma(r)
+ r ln alpha - lnB(a, b)``, ``u1 = lnB(a, b+x) - (r+x) ln(alpha+T)`` and ``u2 = lnB(a+1,
b+x-1) - (r+x) ln(alpha+t_x)`` (``-inf`` when x = 0), so nothing overflows however large x
or T get. The fit maximises the summed log-likelihood over (ln r, ln alpha, ln a, ln b) with
L-BFGS-B and the analytic gradient; duplicate (x, t_x, T) rows are collapsed into weights.

- Unconditional expectation (eq. 7): E[X(t)] = (a+b-1)/(a-1) *
  [1 - (alpha/(alpha+t))^r 2F1(r, b; a+b-1; t/(alpha+t))].
- P(alive | x, t_x, T) (eq. 11) = 1 / (1 + [x > 0] a/(b+x-1) ((alpha+T)/(alpha+t_x))^(r+x)).
- Conditional expectation (eq. 10): E[Y(t) | x, t_x, T] = (a+b+x-1)/(a-1) *
  [1 - ((alpha+T)/(alpha+T+t))^(r+x) 2F1(r+x, b+x; a+b+x-1; t/(alpha+T+t))] /
  (1 + [x > 0] a/(b+x-1) ((alpha+T)/(alpha+t_x))^(r+x)).

These formulas hold for any a != 1 (for a < 1 numerator and denominator are both negative).

Gamma-Gamma (Fader, Hardie & Lee 2005, "RFM and CLV: using iso-value curves", after Colombo &
Jiang 1999; Fader & Hardie's note "The Gamma-Gamma model of monetary value")
-------------------------------------------------------------------------------------------
The values of one customer's transactions are i.i.d. Gamma(shape p, rate nu); across customers
nu ~ Gamma(shape q, rate gamma). The mean ``m`` of a customer's ``x`` repeat transaction values
then has density

    f(m | x) = Gamma(p x + q) / (Gamma(p x) Gamma(q)) * gamma^q m^(p x - 1) x^(p x)
               / (gamma + m x)^(p x + q),

which we maximise over customers with x > 0 (log-parameters, L-BFGS-B, analytic gradient).
The conditional expected spend per transaction is the posterior mean

    E[Z | m, x] = p (gamma + m x) / (p x + q - 1)
                = (q-1)/(p x+q-1) * (p gamma/(q-1)) + (p x)/(p x+q-1) * m,

a weighted average of the population mean ``p gamma/(q-1)`` and the observed mean ``m``
(finite only for q > 1). The model assumes spend is independent of purchase frequency; check
that the correlation between ``x`` and ``m`` is weak before relying on it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import optimize, special

__all__ = [
    "BgNbdParams",
    "FitError",
    "GammaGammaParams",
    "bgnbd_log_likelihood",
    "conditional_expected_spend",
    "customer_lifetime_value",
    "expected_purchases",
    "expected_purchases_new_customer",
    "fit_bgnbd",
    "fit_gamma_gamma",
    "gamma_gamma_log_likelihood",
    "probability_alive",
]

FloatArray = npt.NDArray[np.float64]


class FitError(RuntimeError):
    """The optimiser did not converge to a usable maximum."""


@dataclass(frozen=True, slots=True)
class BgNbdParams:
    """Fitted BG/NBD parameters (lambda ~ Gamma(r, alpha), p ~ Beta(a, b)).

    ``alpha`` is in the period unit of the data. ``log_likelihood`` is the maximised total
    log-likelihood over the ``n_customers`` customers used in the fit.
    """

    r: float
    alpha: float
    a: float
    b: float
    log_likelihood: float = float("nan")
    n_customers: int = 0


@dataclass(frozen=True, slots=True)
class GammaGammaParams:
    """Fitted Gamma-Gamma parameters (z ~ Gamma(p, nu), nu ~ Gamma(q, gamma)).

    ``gamma`` is in the money unit of the data. ``n_customers`` counts customers with x > 0.
    """

    p: float
    q: float
    gamma: float
    log_likelihood: float = float("nan")
    n_customers: int = 0

    @property
    def population_mean_spend(self) -> float:
        """Mean spend per transaction across the population, ``p gamma / (q - 1)`` (q > 1)."""
        return self.p * self.gamma / (self.q - 1.0) if self.q > 1.0 else float("inf")


# --------------------------------------------------------------------------------------------
# helpers


def _as_float(v: npt.ArrayLike) -> FloatArray:
    return np.asarray(v, dtype=np.float64)


def _check_rft(x: FloatArray, t_x: FloatArray, T: FloatArray) -> None:
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(t_x)) and np.all(np.isfinite(T))):
        raise ValueError("x, t_x and T must be finite")
    if np.any(x < 0) or np.any(x != np.floor(x)):
        raise ValueError("x must be non-negative whole numbers")
    if np.any(t_x < 0) or np.any(t_x > T + 1e-9):
        raise ValueError("need 0 <= t_x <= T")


def _collapse_inverse(*cols: FloatArray) -> tuple[list[FloatArray], FloatArray, npt.NDArray[np.intp]]:
    """Unique rows of the given columns, their multiplicities (float weights) and, for every
    input row, the index of its unique row. (lexsort + run detection: much faster than
    ``np.unique(axis=0)`` on millions of rows.)"""
    n = cols[0].shape[0]
    if n == 0:
        return [c[:0] for c in cols], np.zeros(0), np.zeros(0, dtype=np.intp)
    order = np.lexsort(cols[::-1])
    sorted_cols = [c[order] for c in cols]
    new_row = np.zeros(n, dtype=bool)
    new_row[0] = True
    for c in sorted_cols:
        new_row[1:] |= c[1:] != c[:-1]
    starts = np.flatnonzero(new_row)
    counts = np.diff(np.append(starts, n)).astype(np.float64)
    inverse = np.empty(n, dtype=np.intp)
    inverse[order] = np.cumsum(new_row) - 1
    return [np.ascontiguousarray(c[starts]) for c in sorted_cols], counts, inverse


def _collapse(*cols: FloatArray) -> tuple[list[FloatArray], FloatArray]:
    """Unique rows of the stacked columns and their multiplicities (as float weights)."""
    columns, weights, _ = _collapse_inverse(*cols)
    return columns, weights


def _maximise(
    neg_ll_and_grad: Callable[[FloatArray], tuple[float, FloatArray]],
    start: FloatArray,
    what: str,
) -> tuple[FloatArray, float]:
    """Minimise a negative log-likelihood over log-parameters; returns (log-params, min value)."""
    # Bound the log-parameters so that exp() never overflows during line searches.
    bounds = [(-20.0, 20.0)] * start.shape[0]
    res = optimize.minimize(
        neg_ll_and_grad,
        start,
        jac=True,
        method="L-BFGS-B",
        bounds=bounds,
        options={"maxiter": 2000, "ftol": 1e-14, "gtol": 1e-9, "maxcor": 20},
    )
    best_x = np.asarray(res.x, dtype=np.float64)
    best_f = float(res.fun)
    if not res.success or not np.isfinite(best_f):
        # Rare: L-BFGS-B stopped on a line-search failure. Fall back to a derivative-free polish.
        polish = optimize.minimize(
            lambda z: neg_ll_and_grad(z)[0],
            best_x,
            method="Nelder-Mead",
            options={"xatol": 1e-9, "fatol": 1e-10, "maxiter": 4000},
        )
        if np.isfinite(polish.fun) and polish.fun <= best_f:
            best_x, best_f = np.asarray(polish.x, dtype=np.float64), float(polish.fun)
    if not np.isfinite(best_f) or best_f >= 1e299:
        raise FitError(f"{what}: optimisation failed ({res.message})")
    return best_x, best_f


# --------------------------------------------------------------------------------------------
# BG/NBD


def _bgnbd_terms(
    r: float, alpha: float, a: float, b: float, x: FloatArray, t_x: FloatArray, T: FloatArray
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray, npt.NDArray[np.bool_]]:
    """Per-customer log-likelihood and the pieces the gradient needs (u1, u2, lse)."""
    rx = r + x
    pos = x > 0
    u1 = special.betaln(a, b + x) - rx * np.log(alpha + T)
    # b + x - 1 may be <= 0 when x == 0; substitute a harmless value and mask the term out.
    bx1 = np.where(pos, b + x - 1.0, 1.0)
    u2 = np.where(pos, special.betaln(a + 1.0, bx1) - rx * np.log(alpha + t_x), -np.inf)
    lse = np.logaddexp(u1, u2)
    ll = special.gammaln(rx) - special.gammaln(r) + r * np.log(alpha) - special.betaln(a, b) + lse
    return ll, u1, u2, lse, pos


def bgnbd_log_likelihood(
    params: BgNbdParams | tuple[float, float, float, float],
    x: npt.ArrayLike,
    t_x: npt.ArrayLike,
    T: npt.ArrayLike,
) -> FloatArray:
    """Per-customer BG/NBD log-likelihood ``ln L(r, alpha, a, b | x, t_x, T)`` (paper eq. 6)."""
    r, alpha, a, b = _bg_tuple(params)
    xa, ta, Ta = _as_float(x), _as_float(t_x), _as_float(T)
    return _bgnbd_terms(r, alpha, a, b, xa, ta, Ta)[0]


def _bg_tuple(params: BgNbdParams | tuple[float, float, float, float]) -> tuple[float, float, float, float]:
    if isinstance(params, BgNbdParams):
        return params.r, params.alpha, params.a, params.b
    r, alpha, a, b = params
    return float(r), float(alpha), float(a), float(b)


def _bgnbd_neg_ll_grad(
    log_params: FloatArray, x: FloatArray, t_x: FloatArray, T: FloatArray, w: FloatArray
) -> tuple[float, FloatArray]:
    r, alpha, a, b = np.exp(log_params)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        ll, u1, u2, lse, pos = _bgnbd_terms(r, alpha, a, b, x, t_x, T)
        total = float(np.dot(w, ll))
        if not np.isfinite(total):
            return 1e300, np.zeros(4)
        w1 = np.exp(u1 - lse)
        w2 = np.where(pos, np.exp(u2 - lse), 0.0)
        rx = r + x
        dig = special.digamma
        ab_x = dig(a + b + x)
        bx1 = np.where(pos, b + x - 1.0, 1.0)
        d_r = dig(rx) - dig(r) + np.log(alpha) - w1 * np.log(alpha + T) - w2 * np.log(alpha + t_x)
        d_alpha = r / alpha - w1 * rx / (alpha + T) - w2 * rx / (alpha + t_x)
        d_a = -(dig(a) - dig(a + b)) + w1 * (dig(a) - ab_x) + w2 * (dig(a + 1.0) - ab_x)
        d_b = -(dig(b) - dig(a + b)) + w1 * (dig(b + x) - ab_x) + w2 * (dig(bx1) - ab_x)
    grad = np.array([np.dot(w, d_r) * r, np.dot(w, d_alpha) * alpha, np.dot(w, d_a) * a, np.dot(w, d_b) * b])
    if not np.all(np.isfinite(grad)):
        return 1e300, np.zeros(4)
    return -total, -grad


def fit_bgnbd(
    x: npt.ArrayLike,
    t_x: npt.ArrayLike,
    T: npt.ArrayLike,
    initial: BgNbdParams | tuple[float, float, float, float] | None = None,
) -> BgNbdParams:
    """Fit the BG/NBD model by maximum likelihood.

    ``x`` repeat purchases, ``t_x`` recency and ``T`` age per customer, in one period unit
    (see module docstring). Customers with identical (x, t_x, T) are collapsed into weighted
    rows, so a million customers summarised in whole days or weeks fit in well under a second
    of likelihood work. ``initial`` is an optional starting point (r, alpha, a, b).

    Raises ``ValueError`` for invalid input and :class:`FitError` if the optimiser fails.
    """
    xa, ta, Ta = _as_float(x), _as_float(t_x), _as_float(T)
    if xa.ndim != 1 or not (xa.shape == ta.shape == Ta.shape):
        raise ValueError("x, t_x and T must be 1-D arrays of the same length")
    if xa.shape[0] == 0:
        raise ValueError("no customers to fit")
    _check_rft(xa, ta, Ta)
    n = int(xa.shape[0])
    (ux, ut, uT), w = _collapse(xa, ta, Ta)

    if initial is None:
        mean_T = float(np.mean(Ta)) or 1.0
        start = np.log(np.array([1.0, max(mean_T, 1e-3), 1.0, 1.0]))
    else:
        start = np.log(np.array(_bg_tuple(initial), dtype=np.float64))

    def f(z: FloatArray) -> tuple[float, FloatArray]:
        return _bgnbd_neg_ll_grad(z, ux, ut, uT, w)

    z, fmin = _maximise(f, start, "BG/NBD")
    r, alpha, a, b = (float(v) for v in np.exp(z))
    return BgNbdParams(r=r, alpha=alpha, a=a, b=b, log_likelihood=-fmin, n_customers=n)


def _log_alive_odds(
    r: float, alpha: float, a: float, b: float, x: FloatArray, t_x: FloatArray, T: FloatArray
) -> FloatArray:
    """ln of a/(b+x-1) ((alpha+T)/(alpha+t_x))^(r+x) for x > 0, -inf for x == 0."""
    pos = x > 0
    bx1 = np.where(pos, b + x - 1.0, 1.0)
    val = np.log(a) - np.log(bx1) + (r + x) * (np.log(alpha + T) - np.log(alpha + t_x))
    return np.where(pos, val, -np.inf)


def probability_alive(
    params: BgNbdParams,
    x: npt.ArrayLike,
    t_x: npt.ArrayLike,
    T: npt.ArrayLike,
) -> FloatArray:
    """P(customer still active at T | x, t_x, T) (paper eq. 11); 1 for customers with x == 0."""
    xa, ta, Ta = np.broadcast_arrays(_as_float(x), _as_float(t_x), _as_float(T))
    odds = _log_alive_odds(params.r, params.alpha, params.a, params.b, xa, ta, Ta)
    return np.asarray(special.expit(-odds), dtype=np.float64)


def _hyp2f1(a: Any, b: Any, c: Any, z: Any) -> FloatArray:
    return np.asarray(special.hyp2f1(a, b, c, z), dtype=np.float64)


def _expected_purchases_bracket(
    r: float, alpha: float, a: float, b: float, t: FloatArray, x: FloatArray, T: FloatArray
) -> FloatArray:
    """The bracket of eq. 10, 1 - ((alpha+T)/(alpha+T+t))^(r+x) 2F1(r+x, b+x; a+b+x-1; z),
    z = t/(alpha+T+t), evaluated through Euler's transformation
    2F1(A, B; C; z) = (1-z)^(C-A-B) 2F1(C-A, C-B; C; z). Since 1 - z = (alpha+T)/(alpha+T+t),
    the bracket becomes

        1 - ((alpha+T)/(alpha+T+t))^(a-1) 2F1(a+b-1-r, a-1; a+b+x-1; z),

    whose 2F1 parameters no longer grow with x (only C does, which speeds convergence), so
    heavy buyers and long horizons neither overflow nor lose the answer to inf * 0.
    """
    z = t / (alpha + T + t)
    log_ratio = (a - 1.0) * (np.log(alpha + T) - np.log(alpha + T + t))
    return 1.0 - np.exp(log_ratio) * _hyp2f1(a + b - 1.0 - r, a - 1.0, a + b + x - 1.0, z)


def expected_purchases_new_customer(params: BgNbdParams, t: npt.ArrayLike) -> FloatArray:
    """Unconditional E[X(t)]: expected purchases of a random customer within t periods of
    entering (paper eq. 7; counts repeat purchases after time 0), using Gauss's 2F1."""
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    ta = _as_float(t)
    if np.any(ta < 0):
        raise ValueError("t must be >= 0")
    # Euler's transformation of eq. 7 (see _expected_purchases_bracket): E[X(t)] is the
    # conditional expectation of a customer with x = 0, T = 0.
    bracket = _expected_purchases_bracket(r, alpha, a, b, ta, np.zeros_like(ta), np.zeros_like(ta))
    return (a + b - 1.0) / (a - 1.0) * bracket + 0.0  # + 0.0 turns -0.0 at t = 0 into 0.0


def expected_purchases(
    params: BgNbdParams,
    t: npt.ArrayLike,
    x: npt.ArrayLike,
    t_x: npt.ArrayLike,
    T: npt.ArrayLike,
) -> FloatArray:
    """Conditional expectation E[Y(t) | x, t_x, T]: expected purchases in the next t periods
    (the interval (T, T+t]) of a customer with history (x, t_x, T) (paper eq. 10).

    All arguments broadcast against each other (e.g. scalar t, per-customer arrays).
    """
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    ta, xa, txa, Ta = (
        np.asarray(v, dtype=np.float64)
        for v in np.broadcast_arrays(_as_float(t), _as_float(x), _as_float(t_x), _as_float(T))
    )
    if np.any(ta < 0):
        raise ValueError("t must be >= 0")
    numer = (a + b + xa - 1.0) / (a - 1.0) * _expected_purchases_bracket(r, alpha, a, b, ta, xa, Ta)
    odds = _log_alive_odds(r, alpha, a, b, xa, txa, Ta)
    # numer / (1 + e^odds) == numer * expit(-odds), stable for large odds.
    return np.asarray(numer * special.expit(-odds), dtype=np.float64)


# --------------------------------------------------------------------------------------------
# Gamma-Gamma


def _gg_ll(p: float, q: float, g: float, x: FloatArray, m: FloatArray) -> FloatArray:
    px = p * x
    return (
        special.gammaln(px + q)
        - special.gammaln(px)
        - special.gammaln(q)
        + q * np.log(g)
        + (px - 1.0) * np.log(m)
        + px * np.log(x)
        - (px + q) * np.log(g + m * x)
    )


def gamma_gamma_log_likelihood(params: GammaGammaParams, x: npt.ArrayLike, m: npt.ArrayLike) -> FloatArray:
    """Per-customer Gamma-Gamma log-density of the mean repeat value ``m`` given ``x`` (x > 0)."""
    return _gg_ll(params.p, params.q, params.gamma, _as_float(x), _as_float(m))


def _gg_neg_ll_grad(
    log_params: FloatArray, x: FloatArray, m: FloatArray, w: FloatArray
) -> tuple[float, FloatArray]:
    p, q, g = np.exp(log_params)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        ll = _gg_ll(p, q, g, x, m)
        total = float(np.dot(w, ll))
        if not np.isfinite(total):
            return 1e300, np.zeros(3)
        px = p * x
        dig = special.digamma
        dpq = dig(px + q)
        log_gmx = np.log(g + m * x)
        d_p = x * (dpq - dig(px) + np.log(m) + np.log(x) - log_gmx)
        d_q = dpq - dig(q) + np.log(g) - log_gmx
        d_g = q / g - (px + q) / (g + m * x)
    grad = np.array([np.dot(w, d_p) * p, np.dot(w, d_q) * q, np.dot(w, d_g) * g])
    if not np.all(np.isfinite(grad)):
        return 1e300, np.zeros(3)
    return -total, -grad


def fit_gamma_gamma(
    x: npt.ArrayLike,
    m: npt.ArrayLike,
    initial: GammaGammaParams | tuple[float, float, float] | None = None,
) -> GammaGammaParams:
    """Fit the Gamma-Gamma spend model by maximum likelihood.

    ``x`` repeat purchases and ``m`` mean value of the repeat transactions per customer (as
    produced by ``summarize_transactions``). Only customers with ``x > 0`` and ``m > 0`` enter
    the fit (the others carry no information about spend); the rest are ignored.
    """
    xa, ma = _as_float(x), _as_float(m)
    if xa.ndim != 1 or xa.shape != ma.shape:
        raise ValueError("x and m must be 1-D arrays of the same length")
    if not (np.all(np.isfinite(xa)) and np.all(np.isfinite(ma))):
        raise ValueError("x and m must be finite")
    use = (xa > 0) & (ma > 0)
    xs, ms = xa[use], ma[use]
    n = int(xs.shape[0])
    if n < 2:
        raise ValueError("need at least two customers with x > 0 and positive spend")
    (ux, um), w = _collapse(xs, ms)

    if initial is None:
        # Method-of-moments-ish start: p ~ 1 / CV^2 of m, q = 2, gamma from the mean.
        mean_m = float(np.mean(ms))
        var_m = float(np.var(ms)) or mean_m**2
        p0 = min(max(mean_m**2 / var_m, 0.1), 100.0)
        q0 = 2.0
        g0 = mean_m * (q0 - 1.0) / p0
        start = np.log(np.array([p0, q0, g0]))
    elif isinstance(initial, GammaGammaParams):
        start = np.log(np.array([initial.p, initial.q, initial.gamma]))
    else:
        start = np.log(np.array(initial, dtype=np.float64))

    def f(z: FloatArray) -> tuple[float, FloatArray]:
        return _gg_neg_ll_grad(z, ux, um, w)

    z, fmin = _maximise(f, start, "Gamma-Gamma")
    p, q, g = (float(v) for v in np.exp(z))
    return GammaGammaParams(p=p, q=q, gamma=g, log_likelihood=-fmin, n_customers=n)


def conditional_expected_spend(params: GammaGammaParams, x: npt.ArrayLike, m: npt.ArrayLike) -> FloatArray:
    """E[spend per transaction | x, m] = p (gamma + m x) / (p x + q - 1).

    For ``x == 0`` this is the population mean ``p gamma / (q - 1)``. Requires q > 1.
    Money unit = unit of ``m``; callers round to integer fen at the boundary.
    """
    if params.q <= 1.0:
        raise ValueError("expected spend is infinite for q <= 1")
    xa, ma = np.broadcast_arrays(_as_float(x), _as_float(m))
    ma = np.where(xa > 0, ma, 0.0)
    p, q, g = params.p, params.q, params.gamma
    return np.asarray(p * (g + ma * xa) / (p * xa + q - 1.0), dtype=np.float64)


# --------------------------------------------------------------------------------------------
# CLV


def customer_lifetime_value(
    bgnbd: BgNbdParams,
    gg: GammaGammaParams,
    x: npt.ArrayLike,
    t_x: npt.ArrayLike,
    T: npt.ArrayLike,
    m: npt.ArrayLike,
    horizon_periods: float,
    discount_rate_per_period: float = 0.0,
    step: float = 1,
) -> FloatArray:
    """Discounted expected spend of each customer over the next ``horizon_periods`` periods.

    The horizon (0, H] is cut into steps of ``step`` periods (the last one shortened to end at
    H). For the step ending at time s the expected purchases are
    ``E[Y(s) | .] - E[Y(s - step) | .]`` (BG/NBD, eq. 10), valued at the Gamma-Gamma expected
    spend per transaction and discounted by ``(1 + d) ** -s`` with ``d`` the discount rate per
    period (e.g. a 10 % yearly rate in weekly periods is ``1.10 ** (1/52) - 1``):

        CLV = E[Z | x, m] * sum_k (E[Y(s_k)] - E[Y(s_{k-1})]) / (1 + d) ** s_k.

    Periods are the unit of x/t_x/T (days or weeks in Siyu). With ``d == 0`` the result is
    simply ``E[Y(H)] * E[Z]``. Returns float64 in the money unit of ``m``; callers convert to
    integer fen (``np.rint(v).astype(np.int64)``). Customers sharing (x, t_x, T) are evaluated
    once, so large populations cost one 2F1 evaluation per distinct history and step.
    """
    if horizon_periods < 0:
        raise ValueError("horizon_periods must be >= 0")
    if step <= 0:
        raise ValueError("step must be positive")
    if discount_rate_per_period <= -1.0:
        raise ValueError("discount_rate_per_period must be > -1")
    xa, ta, Ta, ma = (
        np.ravel(v) for v in np.broadcast_arrays(_as_float(x), _as_float(t_x), _as_float(T), _as_float(m))
    )
    spend = conditional_expected_spend(gg, xa, ma)
    if xa.shape[0] == 0 or horizon_periods == 0:
        return np.zeros_like(spend)

    (ux, ut, uT), _, inverse = _collapse_inverse(xa, ta, Ta)

    n_steps = int(np.ceil(horizon_periods / step - 1e-12))
    edges = np.minimum(np.arange(1, n_steps + 1, dtype=np.float64) * step, float(horizon_periods))
    if discount_rate_per_period == 0.0:
        purchases = expected_purchases(bgnbd, float(horizon_periods), ux, ut, uT)
    else:
        purchases = np.zeros(ux.shape[0])
        prev = np.zeros(ux.shape[0])
        log1d = np.log1p(discount_rate_per_period)
        for s in edges:
            cur = expected_purchases(bgnbd, float(s), ux, ut, uT)
            purchases += (cur - prev) * np.exp(-log1d * s)
            prev = cur
    return np.asarray(purchases[inverse] * spend, dtype=np.float64)
