"""Recomputes for every member of a merchant: RFM, predicted value (BG/NBD + Gamma-Gamma), super users.

Each reads what it needs in one query into numpy arrays, computes vectorised, and writes back
with ``db.dialect.bulk_update`` (COPY + one UPDATE on PostgreSQL).

Super-user score (documented rule, 0..100): among the merchant's buyers, the weighted mean of
five percentile ranks — purchase frequency (paid orders) 30 %, spend (net paid) 30 %, referrals
that bought (invitees with a first paid order, from ``referral``) 15 %, engagement (reviews +
shares + favourites) 15 %, recency (newer is better) 10 % — turned into a percentile itself, so
a member's score says what share of the buyers scores lower. The merchant's top
``super_user_top_percent`` (audience settings, default 5 %) are super users: ``super_score >=
100 - top_percent``; segments use the score or the ``super_user`` condition.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.stats import rankdata
from sqlalchemy import Float, cast, func, select
from sqlalchemy.orm import Session

from siyu.audience import clv, rfm
from siyu.audience import repository as repo
from siyu.audience.models import MemberStats, PredictionModel
from siyu.audience.summary import summarize_transactions
from siyu.db.dialect import bulk_update, epoch_seconds
from siyu.orders import models as om

PAID = (om.PAID, om.SHIPPED, om.COMPLETED)
MIN_REPEAT_BUYERS = 20
RFM_COLUMNS = ("rfm_r", "rfm_f", "rfm_m", "rfm_tier")
PREDICTION_COLUMNS = ("p_alive", "expected_purchases_90d", "predicted_clv", "clv_percentile")
DROPOUT_CONCENTRATION_CAP = 1000.0  # a + b of the dropout Beta beyond which it is a point mass


def _stats_arrays(session: Session, merchant_id: int) -> dict[str, np.ndarray]:
    """The buyers' stats as float arrays, with their current RFM scores (0 when not scored yet),
    tier ("" when none) and super score (-1 when none) so a recompute can write only what
    changed."""
    s = MemberStats
    rows = session.execute(
        select(
            s.member_id, cast(epoch_seconds(session, s.last_order_at), Float), s.paid_orders, s.paid_total, s.shares,
            s.favorites, func.coalesce(s.rfm_r, 0), func.coalesce(s.rfm_f, 0), func.coalesce(s.rfm_m, 0),
            func.coalesce(s.rfm_tier, ""), func.coalesce(s.super_score, -1.0),
        )
        .where(s.merchant_id == merchant_id, s.paid_orders > 0)
    ).all()
    # plain tuples of numbers: numpy converts them at C speed (Row objects make it probe attributes)
    data = np.array([(*r[:9], r[10]) for r in rows], dtype=np.float64).reshape(-1, 10)
    keys = ("member_id", "last_epoch", "orders", "total", "shares", "favorites", "r", "f", "m", "super")
    out = {k: data[:, i] for i, k in enumerate(keys)}
    out["tier"] = np.array([r[9] for r in rows], dtype=str)
    return out


def recompute_rfm(session: Session, merchant_id: int, now: dt.datetime) -> int:
    """Score every buyer; only the rows whose scores or tier changed are written (a daily
    recompute changes a fraction of them); a member whose every paid order was refunded loses
    their scores. Returns the number of buyers scored."""
    repo.clear_non_buyer_scores(session, merchant_id, RFM_COLUMNS)
    a = _stats_arrays(session, merchant_id)
    if len(a["member_id"]) == 0:
        return 0
    recency = (now.timestamp() - a["last_epoch"]) / 86400.0
    r, f, m = rfm.rfm_scores(recency, a["orders"], a["total"])
    tiers = rfm.rfm_tier(r, f, m)
    changed = (r != a["r"]) | (f != a["f"]) | (m != a["m"]) | (tiers != a["tier"])
    rows = [
        {"merchant_id": merchant_id, "member_id": int(mid), "rfm_r": int(ri), "rfm_f": int(fi), "rfm_m": int(mi), "rfm_tier": str(t)}
        for mid, ri, fi, mi, t in zip(a["member_id"][changed], r[changed], f[changed], m[changed], tiers[changed], strict=True)
    ]
    bulk_update(session, MemberStats.__table__, ["merchant_id", "member_id"], rows)  # type: ignore[arg-type]
    return len(r)


def _per_member_counts(session: Session, stmt: Any, member_ids: np.ndarray) -> np.ndarray:
    """``stmt`` yields (member_id, count): the counts aligned with ``member_ids`` (0 where none)."""
    counts = {int(m): int(c) for m, c in session.execute(stmt)}
    return np.array([counts.get(int(m), 0) for m in member_ids], dtype=np.float64)


def recompute_super_users(session: Session, merchant_id: int, now: dt.datetime) -> int:
    from siyu.referral.models import ReferralProfile
    from siyu.reviews.models import ProductReview

    repo.clear_non_buyer_scores(session, merchant_id, ("super_score",))
    a = _stats_arrays(session, merchant_id)
    n = len(a["member_id"])
    if n == 0:
        return 0
    p = ReferralProfile
    referred = _per_member_counts(session, select(p.inviter_member_id, func.count()).where(
        p.merchant_id == merchant_id, p.inviter_member_id.is_not(None), p.first_paid_order_id.is_not(None),
    ).group_by(p.inviter_member_id), a["member_id"])
    r = ProductReview
    reviews = _per_member_counts(session, select(r.member_id, func.count()).where(r.merchant_id == merchant_id)
                                 .group_by(r.member_id), a["member_id"])

    def pct(values: np.ndarray) -> np.ndarray:
        return np.asarray((rankdata(values, method="average") - 0.5) / n * 100.0)

    weighted = (
        0.30 * pct(a["orders"]) + 0.30 * pct(a["total"]) + 0.15 * pct(referred)
        + 0.15 * pct(reviews + a["shares"] + a["favorites"]) + 0.10 * pct(a["last_epoch"])
    )
    score = np.round(pct(weighted), 2)
    changed = score != np.round(a["super"], 2)  # only the rows whose stored score moves are written
    rows = [
        {"merchant_id": merchant_id, "member_id": int(mid), "super_score": float(sc)}
        for mid, sc in zip(a["member_id"][changed], score[changed], strict=True)
    ]
    bulk_update(session, MemberStats.__table__, ["merchant_id", "member_id"], rows)  # type: ignore[arg-type]
    return n


@dataclass
class Transactions:
    member_ids: np.ndarray
    days: np.ndarray  # local day numbers since 1970-01-01
    amounts: np.ndarray  # fen


def load_transactions(session: Session, merchant_id: int, utc_offset_seconds: int) -> Transactions:
    o = om.Order
    stmt = select(o.member_id, epoch_seconds(session, o.paid_at), o.paid_amount - o.refunded_amount).where(
        o.merchant_id == merchant_id, o.status.in_(PAID), o.paid_at.is_not(None)
    )
    # Streamed in chunks straight into numpy: 4.4M paid orders as Row objects took ~1.7 GB and
    # the nightly refit at 1M members peaked at 2.4 GB; the arrays themselves are ~100 MB.
    chunks = [
        np.array([tuple(r) for r in part], dtype=np.float64).reshape(-1, 3)
        for part in session.execute(stmt.execution_options(yield_per=100_000)).partitions()
    ]
    data = np.concatenate(chunks) if chunks else np.empty((0, 3), dtype=np.float64)
    days = np.floor((data[:, 1] + utc_offset_seconds) / 86400.0).astype(np.int64)
    return Transactions(member_ids=data[:, 0].astype(np.int64), days=days, amounts=data[:, 2])


@dataclass
class PredictionResult:
    status: str
    reason: str | None
    params: dict[str, Any]
    customers: int


def refresh_predictions(
    session: Session, merchant_id: int, *, now: dt.datetime, timezone: str, period_days: int = 7,
    horizon_days: int = 365, annual_discount: float = 0.1,
) -> PredictionResult:
    """Fit both models on the merchant's own history and write each member's predictions."""
    from zoneinfo import ZoneInfo

    offset = int(now.astimezone(ZoneInfo(timezone)).utcoffset().total_seconds())  # type: ignore[union-attr]
    tx = load_transactions(session, merchant_id, offset)
    today = int(np.floor((now.timestamp() + offset) / 86400.0))
    result = PredictionResult("skipped", "no paid orders yet", {}, 0)
    if len(tx.member_ids):
        summary = summarize_transactions(tx.member_ids, tx.days, tx.amounts, calibration_end=today, period_days=period_days)
        result = _fit_and_write(session, merchant_id, summary, period_days, horizon_days, annual_discount)
    if result.status == "fitted" or not len(tx.member_ids):  # a skipped fit keeps the last good predictions
        repo.clear_non_buyer_scores(session, merchant_id, PREDICTION_COLUMNS)
    session.add(
        PredictionModel(merchant_id=merchant_id, fitted_at=now, period_days=period_days, customers=result.customers,
                        params=result.params, status=result.status, reason=result.reason)
    )
    return result


@np.errstate(invalid="ignore", over="ignore", divide="ignore")  # non-finite results are checked below
def _fit_and_write(
    session: Session, merchant_id: int, summary: Any, period_days: int, horizon_days: int, annual_discount: float
) -> PredictionResult:
    x, t_x, big_t, m = summary.x, summary.t_x, summary.T, summary.monetary_mean_of_repeat
    repeaters = int(np.sum(x > 0))
    if repeaters < MIN_REPEAT_BUYERS:
        return PredictionResult("skipped", f"only {repeaters} repeat buyers (need {MIN_REPEAT_BUYERS})", {}, len(x))
    try:
        bg = clv.fit_bgnbd(x, t_x, big_t)
        gg = clv.fit_gamma_gamma(x, m)
    except (clv.FitError, ValueError, FloatingPointError) as exc:
        return PredictionResult("skipped", f"fit failed: {exc}", {}, len(x))
    def predict(bg: clv.BgNbdParams) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        periods = horizon_days / period_days
        rate = (1 + annual_discount) ** (period_days / 365.0) - 1
        return (
            clv.probability_alive(bg, x, t_x, big_t),
            clv.expected_purchases(bg, 90.0 / period_days, x, t_x, big_t),
            clv.customer_lifetime_value(bg, gg, x, t_x, big_t, m, horizon_periods=periods,
                                        discount_rate_per_period=rate, step=4),
        )

    def finite(*arrays: np.ndarray) -> bool:
        return all(bool(np.all(np.isfinite(a))) for a in arrays)

    p_alive, expected_90, value = predict(bg)
    capped = False
    if not finite(p_alive, expected_90, value) and bg.a + bg.b > DROPOUT_CONCENTRATION_CAP:
        # Everyone drops out with about the same probability: the likelihood is flat in a + b
        # there and the optimiser runs off towards infinity, where the 2F1 of the expectations
        # overflows. Keep the mean dropout a / (a + b) and cap a + b (a Beta this concentrated
        # is that point mass for every purpose here; the log-likelihood moves by ~0.01).
        scale = DROPOUT_CONCENTRATION_CAP / (bg.a + bg.b)
        bg = dataclasses.replace(bg, a=bg.a * scale, b=bg.b * scale)
        bg = dataclasses.replace(bg, log_likelihood=float(np.sum(clv.bgnbd_log_likelihood(bg, x, t_x, big_t))))
        p_alive, expected_90, value = predict(bg)
        capped = True
    if not finite(p_alive, expected_90, value):
        # A history with no sign of dropout drives a and b to the edge of the parameter space,
        # where the 2F1 of the expectations cannot be evaluated: say so rather than write zeros.
        return PredictionResult(
            "skipped", "the fit reached the edge of the parameter space (no sign of dropout in the history); "
            "predictions not written", {"bgnbd": {"r": bg.r, "alpha": bg.alpha, "a": bg.a, "b": bg.b}}, len(x),
        )
    percentile = (rankdata(value, method="average") - 0.5) / len(value) * 100.0
    rows = [
        {"merchant_id": merchant_id, "member_id": int(mid), "p_alive": float(pa),
         "expected_purchases_90d": float(e), "predicted_clv": int(np.rint(v)),
         "clv_percentile": round(float(pc), 2)}
        for mid, pa, e, v, pc in zip(summary.customer_id, p_alive, expected_90, value, percentile, strict=True)
    ]
    bulk_update(session, MemberStats.__table__, ["merchant_id", "member_id"], rows)  # type: ignore[arg-type]
    params = {
        "bgnbd": {"r": bg.r, "alpha": bg.alpha, "a": bg.a, "b": bg.b, "log_likelihood": bg.log_likelihood},
        "gamma_gamma": {"p": gg.p, "q": gg.q, "gamma": gg.gamma, "log_likelihood": gg.log_likelihood},
        "period_days": period_days, "repeat_buyers": repeaters, "dropout_concentration_capped": capped,
    }
    return PredictionResult("fitted", None, params, len(x))
