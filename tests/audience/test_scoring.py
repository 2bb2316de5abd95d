"""RFM, predicted value and super-user recomputes on the database; the CDNOW figures through the importer."""

from __future__ import annotations

import datetime as dt
import uuid

import numpy as np
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from siyu.audience import clv, scoring
from siyu.audience import repository as repo
from siyu.audience.models import MemberStats, PredictionModel
from siyu.audience.summary import summarize_transactions
from siyu.db.session import unit_of_work
from siyu.imports import service as imports
from siyu.members.models import Member
from tests.audience.test_clv_cdnow import CDNOW_DIR, _need
from tests.conftest import Tenant

NOW = dt.datetime(2026, 11, 23, 4, 0, tzinfo=dt.UTC)
SHANGHAI = 8 * 3600


def _members_with_orders(factory: sessionmaker[Session], merchant_id: int, spec: list[tuple[int, int, int]]) -> list[int]:
    """spec: (days since last order, paid orders, paid total fen) per member."""
    ids = []
    with unit_of_work(factory) as s:
        for days, orders, total in spec:
            m = Member(merchant_id=merchant_id, openid=f"o-{uuid.uuid4().hex[:10]}")
            s.add(m)
            s.flush()
            repo.ensure_rows(s, merchant_id, {m.id})
            row = repo.stats_row(s, merchant_id, m.id)
            assert row is not None
            row.last_order_at = NOW - dt.timedelta(days=days)
            row.paid_orders, row.paid_total = orders, total
            ids.append(m.id)
    return ids


def test_rfm_scores_and_tiers_written_per_member(session_factory: sessionmaker[Session], tenant: Tenant) -> None:
    spec = [(5, 10, 500000), (10, 8, 400000), (200, 1, 5000), (300, 1, 3000), (30, 3, 90000), (400, 2, 300000)]
    ids = _members_with_orders(session_factory, tenant.id, spec)
    never = _members_with_orders(session_factory, tenant.id, [(0, 0, 0)])[0]
    with unit_of_work(session_factory) as s:
        assert scoring.recompute_rfm(s, tenant.id, NOW) == len(spec)
    with session_factory() as s:
        rows = {r.member_id: r for r in s.scalars(select(MemberStats).where(MemberStats.merchant_id == tenant.id))}
    best, worst = rows[ids[0]], rows[ids[3]]
    assert (best.rfm_r, best.rfm_f, best.rfm_m) == (5, 5, 5) and best.rfm_tier == "important_value"
    assert worst.rfm_tier == "general_retain"
    assert rows[never].rfm_r is None  # no purchase: no RFM score
    assert all(1 <= rows[i].rfm_r <= 5 for i in ids)  # type: ignore[operator]


def test_super_user_score_ranks_frequent_big_spenders_first(session_factory: sessionmaker[Session], tenant: Tenant) -> None:
    ids = _members_with_orders(session_factory, tenant.id, [(5, 20, 900000), (100, 1, 1000), (50, 5, 100000)])
    with unit_of_work(session_factory) as s:
        scoring.recompute_super_users(s, tenant.id, NOW)
    with session_factory() as s:
        scores = {r.member_id: r.super_score for r in s.scalars(select(MemberStats).where(MemberStats.merchant_id == tenant.id))}
    assert scores[ids[0]] > scores[ids[2]] > scores[ids[1]]  # type: ignore[operator]
    assert all(0 <= v <= 100 for v in scores.values())  # type: ignore[operator]


def test_super_user_recompute_writes_only_the_scores_that_moved(
    session_factory: sessionmaker[Session], tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = _members_with_orders(session_factory, tenant.id, [(5, 20, 900000), (100, 1, 1000), (50, 5, 100000)])
    written: list[list[dict[str, object]]] = []
    real = scoring.bulk_update

    def recording(session: Session, table: object, keys: list[str], rows: list[dict[str, object]]) -> None:
        written.append(list(rows))
        real(session, table, keys, rows)  # type: ignore[arg-type]

    monkeypatch.setattr(scoring, "bulk_update", recording)
    with unit_of_work(session_factory) as s:
        assert scoring.recompute_super_users(s, tenant.id, NOW) == 3
    assert sorted(int(r["member_id"]) for r in written[-1]) == sorted(ids)  # type: ignore[call-overload]
    with unit_of_work(session_factory) as s:  # nothing changed: every buyer scored, no row written
        assert scoring.recompute_super_users(s, tenant.id, NOW) == 3
    assert written[-1] == []
    with unit_of_work(session_factory) as s:  # the low spender becomes the top buyer: only moved scores are written
        row = repo.stats_row(s, tenant.id, ids[1])
        assert row is not None
        row.paid_orders, row.paid_total, row.last_order_at = 40, 2_000_000, NOW
    with unit_of_work(session_factory) as s:
        scoring.recompute_super_users(s, tenant.id, NOW)
    with session_factory() as s:
        scores = {r.member_id: r.super_score for r in s.scalars(select(MemberStats).where(MemberStats.merchant_id == tenant.id))}
    moved = {int(r["member_id"]) for r in written[-1]}  # type: ignore[call-overload]
    assert ids[1] in moved and scores[ids[1]] == max(v for v in scores.values() if v is not None)
    assert all(int(r["member_id"]) in moved for r in written[-1])  # type: ignore[call-overload]


def test_a_member_whose_orders_were_all_refunded_loses_rfm_super_and_prediction_scores(
    session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    ids = _members_with_orders(session_factory, tenant.id, [(5, 20, 900000), (100, 1, 1000), (50, 5, 100000)])
    with unit_of_work(session_factory) as s:
        scoring.recompute_rfm(s, tenant.id, NOW)
        scoring.recompute_super_users(s, tenant.id, NOW)
        row = repo.stats_row(s, tenant.id, ids[0])
        assert row is not None and row.super_score is not None and row.rfm_tier is not None
        row.p_alive, row.expected_purchases_90d, row.predicted_clv, row.clv_percentile = 0.9, 1.5, 12000, 99.0
    with unit_of_work(session_factory) as s:  # the top buyer's orders are all refunded
        row = repo.stats_row(s, tenant.id, ids[0])
        assert row is not None
        row.paid_orders, row.paid_total = 0, 0
    with unit_of_work(session_factory) as s:
        assert scoring.recompute_rfm(s, tenant.id, NOW) == 2
        assert scoring.recompute_super_users(s, tenant.id, NOW) == 2
        result = scoring.refresh_predictions(s, tenant.id, now=NOW, timezone="Asia/Shanghai")
    assert result.status == "skipped"  # no paid orders in the table at all here
    with session_factory() as s:
        row = repo.stats_row(s, tenant.id, ids[0])
        assert row is not None
        assert (row.rfm_r, row.rfm_f, row.rfm_m, row.rfm_tier, row.super_score) == (None, None, None, None, None)
        assert (row.p_alive, row.expected_purchases_90d, row.predicted_clv, row.clv_percentile) == (None, None, None, None)
        others = [repo.stats_row(s, tenant.id, i) for i in ids[1:]]
        assert all(o is not None and o.super_score is not None and o.rfm_tier is not None for o in others)
        total, top = repo.top_super_users(s, tenant.id, 0.0, 10)
        assert ids[0] not in {r[0] for r in top} and total == 2


def test_predictions_skip_with_a_reason_on_too_little_history(session_factory: sessionmaker[Session], tenant: Tenant) -> None:
    with unit_of_work(session_factory) as s:
        result = scoring.refresh_predictions(s, tenant.id, now=NOW, timezone="Asia/Shanghai")
    assert result.status == "skipped"
    with session_factory() as s:
        model = s.scalar(select(PredictionModel).where(PredictionModel.merchant_id == tenant.id))
        assert model is not None and model.status == "skipped"


def _cdnow_csv() -> tuple[str, str]:
    raw = np.loadtxt(_need(CDNOW_DIR / "CDNOW_sample.txt"), dtype=str, ndmin=2)
    sample_ids = sorted({int(r[1]) for r in raw})
    members = "external_id,registered_at\n" + "".join(f"c{i},1997-01-01 00:00:00\n" for i in sample_ids)
    orders = ["external_order_id,member_external_id,paid_at,amount_fen"]
    for n, (_, sid, date, _cds, dollars) in enumerate(raw):
        paid = f"{date[:4]}-{date[4:6]}-{date[6:]} 10:00:00"
        orders.append(f"t{n},c{int(sid)},{paid},{round(float(dollars) * 100)}")
    return members, "\n".join(orders) + "\n"


def test_cdnow_through_the_importer_reproduces_the_published_estimates(
    session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    """Import the CDNOW sample as members and orders, read the orders back, fit: the published table."""
    members_csv, orders_csv = _cdnow_csv()
    with unit_of_work(session_factory) as s:
        report = imports.run_import(s, tenant.id, members_csv=members_csv, orders_csv=orders_csv, dry_run=False)
    assert report.committed and report.members_created == 2357 and report.orders_created == 6919
    with session_factory() as s:
        tx = scoring.load_transactions(s, tenant.id, SHANGHAI)
    end = (dt.date(1997, 9, 30) - dt.date(1970, 1, 1)).days
    summary = summarize_transactions(tx.member_ids, tx.days, tx.amounts, calibration_end=end, period_days=7)
    assert len(summary) == 2357
    bg = clv.fit_bgnbd(summary.x, summary.t_x, summary.T)
    assert (round(bg.r, 3), round(bg.alpha, 3), round(bg.a, 3), round(bg.b, 3)) == (0.243, 4.414, 0.793, 2.426)
    assert round(bg.log_likelihood, 1) == -9582.4
    gg = clv.fit_gamma_gamma(summary.x, summary.monetary_mean_of_repeat / 100.0)  # fen -> dollars
    assert (round(gg.p, 2), round(gg.q, 2)) == (6.25, 3.74)
    assert abs(gg.gamma - 15.44) < 0.01  # the likelihood's maximum is 15.448; the paper prints 15.44


def test_prediction_refresh_writes_every_buyer(session_factory: sessionmaker[Session], tenant: Tenant) -> None:
    members_csv, orders_csv = _cdnow_csv()
    with unit_of_work(session_factory) as s:
        imports.run_import(s, tenant.id, members_csv=members_csv, orders_csv=orders_csv, dry_run=False)
    now = dt.datetime(1998, 7, 1, tzinfo=dt.UTC)
    with unit_of_work(session_factory) as s:
        result = scoring.refresh_predictions(s, tenant.id, now=now, timezone="Asia/Shanghai")
    assert result.status == "fitted" and result.customers == 2357
    with session_factory() as s:
        rows = list(s.scalars(select(MemberStats).where(MemberStats.merchant_id == tenant.id)))
    assert len(rows) == 2357 and all(r.p_alive is not None and 0 < r.p_alive <= 1 for r in rows)
    assert all(r.predicted_clv is not None and r.predicted_clv >= 0 for r in rows)
    percentiles = sorted(r.clv_percentile for r in rows if r.clv_percentile is not None)
    assert percentiles[0] < 1 and percentiles[-1] > 99
