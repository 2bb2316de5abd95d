"""Speed and parameter-recovery check for siyu.audience (not a unit test; no assertions).

Simulates customers from the BG/NBD purchase process with Gamma-Gamma spend, summarises the
raw transactions with ``summarize_transactions``, fits both models and computes CLV, printing
timings and the true vs fitted parameters.

    .venv/bin/python bench/bench_clv.py                 # 1,000,000 customers, ~5M transactions
    .venv/bin/python bench/bench_clv.py --customers 100000

Process (time in weeks): each customer's first purchase is uniform in the first 13 weeks;
while active she buys as a Poisson process with rate lambda ~ Gamma(r, rate alpha); after every
repeat purchase she drops out with probability p ~ Beta(a, b). Each transaction's value is
Gamma(p_s, rate nu) with nu ~ Gamma(q, rate gamma), in integer fen. Transactions are floored
to whole days, so two purchases on one day merge into one occasion (a small deviation from the
continuous-time model, visible as a slight bias in the recovered parameters).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from siyu.audience import clv, rfm
from siyu.audience.summary import summarize_transactions

TRUE_BG = {"r": 0.6, "alpha": 3.0, "a": 0.8, "b": 3.0}
TRUE_GG = {"p": 6.0, "q": 4.0, "gamma": 15000.0}  # mean spend p*gamma/(q-1) = 30000 fen
ENTRY_WEEKS = 13.0
CALIBRATION_WEEKS = 52.0
BASE_DAY = np.datetime64("2024-01-01")


def simulate(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.datetime64]:
    rng = np.random.default_rng(seed)
    lam = rng.gamma(TRUE_BG["r"], 1.0 / TRUE_BG["alpha"], n)
    p_drop = rng.beta(TRUE_BG["a"], TRUE_BG["b"], n)
    nu = rng.gamma(TRUE_GG["q"], 1.0 / TRUE_GG["gamma"], n)

    t = rng.uniform(0.0, ENTRY_WEEKS, n)
    cust_chunks = [np.arange(n)]
    time_chunks = [t.copy()]
    active = np.arange(n)
    t_act = t
    while active.size:
        t_act = t_act + rng.exponential(1.0, active.size) / lam[active]
        inside = t_act < CALIBRATION_WEEKS
        active, t_act = active[inside], t_act[inside]
        cust_chunks.append(active)
        time_chunks.append(t_act)
        survive = rng.random(active.size) >= p_drop[active]
        active, t_act = active[survive], t_act[survive]
    cust = np.concatenate(cust_chunks)
    weeks = np.concatenate(time_chunks)
    amounts = np.maximum(np.rint(rng.gamma(TRUE_GG["p"], 1.0 / nu[cust])), 1).astype(np.int64)
    days = BASE_DAY + np.floor(weeks * 7).astype(np.int64)
    ids = rng.permutation(n).astype(np.int64) + 10_000_000  # member ids, unrelated to order
    order = rng.permutation(cust.size)  # rows arrive unsorted, like a database scan
    end = BASE_DAY + int(CALIBRATION_WEEKS * 7) - 1
    return ids[cust][order], days[order], amounts[order], end


def _timed(label: str, fn, *args, **kwargs):  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    print(f"{label:<42s} {time.perf_counter() - t0:8.2f} s")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=2024)
    args = parser.parse_args()

    ids, days, amounts, end = _timed("simulate", simulate, args.customers, args.seed)
    print(f"customers {args.customers:,}, transactions {ids.size:,}")

    s = _timed(
        "summarize_transactions (weeks)", summarize_transactions, ids, days, amounts, end, period_days=7
    )
    print(
        f"summarised customers {len(s):,}, with repeat purchases {(s.x > 0).sum():,}, mean x {s.x.mean():.3f}"
    )

    bg = _timed("fit_bgnbd", clv.fit_bgnbd, s.x, s.t_x, s.T)
    gg = _timed("fit_gamma_gamma", clv.fit_gamma_gamma, s.x, s.monetary_mean_of_repeat)

    _timed("probability_alive", clv.probability_alive, bg, s.x, s.t_x, s.T)
    _timed("expected_purchases (52 weeks)", clv.expected_purchases, bg, 52, s.x, s.t_x, s.T)
    value = _timed(
        "customer_lifetime_value (52 wk, disc, step 4)",
        clv.customer_lifetime_value,
        bg,
        gg,
        s.x,
        s.t_x,
        s.T,
        s.monetary_mean_of_repeat,
        horizon_periods=52,
        discount_rate_per_period=1.10 ** (1 / 52) - 1,
        step=4,
    )
    fen = np.rint(value).astype(np.int64)
    scores = _timed("rfm_scores", rfm.rfm_scores, s.recency_days, s.x + 1, s.total_spend)
    tiers = _timed("rfm_tier", rfm.rfm_tier, *scores)

    print("\nBG/NBD    true   fitted")
    for name, true in TRUE_BG.items():
        print(f"  {name:<7s} {true:7.3f} {getattr(bg, name):8.3f}")
    print(f"  log-likelihood {bg.log_likelihood:,.1f}")
    print("Gamma-Gamma true   fitted")
    for name, true in TRUE_GG.items():
        print(f"  {name:<7s} {true:9.3f} {getattr(gg, name):10.3f}")
    print(f"\nCLV (fen): mean {fen.mean():,.0f}, median {np.median(fen):,.0f}, max {fen.max():,}")
    codes, counts = np.unique(tiers, return_counts=True)
    print("RFM tiers: " + ", ".join(f"{c} {k:,}" for c, k in zip(codes, counts, strict=True)))


if __name__ == "__main__":
    main()
