"""The merchant's nightly audience jobs (scheduled with the merchant, run by the worker), the RFM,
prediction and super-user views of the admin API, and the ``super_user`` and
``repurchase_overdue`` segment conditions."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any
from zoneinfo import ZoneInfo

from fastapi.testclient import TestClient
from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from siyu.audience import repository as repo
from siyu.audience.models import MemberStats, PredictionModel, SegmentChange, StageDaily
from siyu.config import Settings, get_settings
from siyu.db.session import unit_of_work
from siyu.kit.outbox import Schedule
from siyu.kit.timeutil import utcnow
from siyu.members.models import Member
from siyu.referral.models import ReferralProfile
from siyu.worker.registry import recurring_jobs
from siyu.worker.runner import Worker
from tests.conftest import Tenant

DAILY, PREDICT = "audience.daily_recompute", "audience.refresh_predictions"


def _buyers(factory: sessionmaker[Session], merchant_id: int, spec: list[tuple[int, int, int, int]]) -> list[int]:
    """spec per member: (days since the first paid order, days since the last, paid orders, paid total fen)."""
    now = utcnow()
    ids = []
    with unit_of_work(factory) as s:
        for first_days, last_days, orders, total in spec:
            m = Member(merchant_id=merchant_id, openid=f"o-{uuid.uuid4().hex[:10]}")
            s.add(m)
            s.flush()
            repo.ensure_rows(s, merchant_id, {m.id})
            row = repo.stats_row(s, merchant_id, m.id)
            assert row is not None
            if orders:
                row.first_order_at = now - dt.timedelta(days=first_days)
                row.last_order_at = now - dt.timedelta(days=last_days)
            row.paid_orders, row.paid_total = orders, total
            ids.append(m.id)
    return ids


def _schedules(factory: sessionmaker[Session], merchant_id: int) -> dict[str, Schedule]:
    with factory() as s:
        rows = s.scalars(select(Schedule).where(Schedule.merchant_id == merchant_id, Schedule.name.in_([DAILY, PREDICT])))
        return {r.name: r for r in rows}


def _preview(client: TestClient, tenant: Tenant, definition: dict[str, Any]) -> int:
    r = client.post("/api/admin/v1/segments/preview", json={"definition": definition}, headers=tenant.admin_headers)
    assert r.status_code == 200, r.text
    return int(r.json()["count"])


def _scheduled(factory: sessionmaker[Session], settings: Settings, tenant: Tenant) -> dict[str, Schedule]:
    """What a long-running worker does for a merchant it has not seen yet (``Worker.poll``)."""
    assert Worker(factory, settings, merchant_id=tenant.id).ensure_schedules() == len(recurring_jobs())
    return _schedules(factory, tenant.id)


def test_a_long_running_worker_gives_each_merchant_its_nightly_jobs_in_its_zone_once(
    session_factory: sessionmaker[Session], settings: Settings, tenant: Tenant
) -> None:
    assert _schedules(session_factory, tenant.id) == {}  # drain() alone schedules nothing
    worker = Worker(session_factory, settings, merchant_id=tenant.id)
    worker.poll()
    found = _schedules(session_factory, tenant.id)
    assert set(found) == {DAILY, PREDICT}
    local = found[DAILY].next_run_at.astimezone(ZoneInfo("Asia/Shanghai"))
    assert (local.hour, local.minute) == (0, 5) and found[DAILY].timezone == "Asia/Shanghai"
    assert found[DAILY].next_run_at > utcnow()
    local = found[PREDICT].next_run_at.astimezone(ZoneInfo("Asia/Shanghai"))
    assert (local.hour, local.minute) == (2, 30)
    with session_factory() as s:
        names = set(s.scalars(select(Schedule.name).where(Schedule.merchant_id == tenant.id)))
    assert names == {j.kind for j in recurring_jobs()} and "referral.retry_rewards" in names
    assert worker.ensure_schedules() == 0  # idempotent

    with unit_of_work(session_factory) as s:  # a merchant whose rows went missing (or predate the jobs)
        s.execute(delete(Schedule).where(Schedule.merchant_id == tenant.id, Schedule.name == PREDICT))
    assert worker.ensure_schedules() == 1
    assert set(_schedules(session_factory, tenant.id)) == {DAILY, PREDICT}


def test_siyu_merchant_create_schedules_the_nightly_jobs_at_once(tmp_path: Any) -> None:
    from typer.testing import CliRunner

    from siyu.cli import app
    from siyu.db.engine import make_engine
    from siyu.db.migrate import upgrade
    from siyu.db.session import make_session_factory

    url = f"sqlite:///{tmp_path / 'cli.sqlite'}"
    engine = make_engine(url)
    upgrade(engine)
    env = {"SIYU_DATABASE_URL": url, "SIYU_DATA_DIR": str(tmp_path)}
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(app, ["merchant", "create", "--code", "cli-shop", "--name", "CLI shop"], env=env)
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    merchant_id = int(result.output.strip().rsplit("id=", 1)[1])
    found = _schedules(make_session_factory(engine), merchant_id)
    engine.dispose()
    assert set(found) == {DAILY, PREDICT}


def test_the_nightly_job_recomputes_stages_scores_history_and_saved_segments(
    client: TestClient, session_factory: sessionmaker[Session], settings: Settings, tenant: Tenant
) -> None:
    silent, active = _buyers(session_factory, tenant.id, [(400, 120, 2, 20000), (60, 10, 3, 50000)])
    r = client.post("/api/admin/v1/segments", headers=tenant.admin_headers,
                    json={"name": "silent", "definition": {"type": "stage", "in": ["silent"]}})
    assert r.status_code == 201, r.text
    segment_id = r.json()["id"]
    assert r.json()["member_count"] == 0  # saved before any stage was computed

    due = _scheduled(session_factory, settings, tenant)[DAILY].next_run_at
    Worker(session_factory, settings, merchant_id=tenant.id).drain(now=due + dt.timedelta(minutes=1))

    with session_factory() as s:
        stats = {r.member_id: r for r in s.scalars(select(MemberStats).where(MemberStats.merchant_id == tenant.id))}
        assert stats[silent].lifecycle_stage == "silent" and stats[active].lifecycle_stage == "active"
        assert stats[silent].rfm_tier is not None and stats[active].rfm_tier is not None
        assert stats[active].super_score > stats[silent].super_score  # type: ignore[operator]
        assert s.scalar(select(StageDaily.members).where(StageDaily.merchant_id == tenant.id,
                                                         StageDaily.stage == "silent")) == 1
        changes = s.execute(select(SegmentChange.member_id, SegmentChange.change)
                            .where(SegmentChange.merchant_id == tenant.id, SegmentChange.segment_id == segment_id)).all()
        assert [tuple(c) for c in changes] == [(silent, "entered")]
    assert client.get(f"/api/admin/v1/segments/{segment_id}", headers=tenant.admin_headers).json()["member_count"] == 1
    # the next run is the following local midnight, not a burst of catch-up runs
    assert _schedules(session_factory, tenant.id)[DAILY].next_run_at > due


def test_the_nightly_predictions_job_records_its_fit_and_the_api_shows_it(
    client: TestClient, session_factory: sessionmaker[Session], settings: Settings, tenant: Tenant
) -> None:
    _buyers(session_factory, tenant.id, [(100, 5, 3, 30000)])
    before = client.get("/api/admin/v1/audience/predictions", headers=tenant.admin_headers)
    assert before.status_code == 200 and before.json()["model"] is None

    due = _scheduled(session_factory, settings, tenant)[PREDICT].next_run_at
    Worker(session_factory, settings, merchant_id=tenant.id).drain(now=due + dt.timedelta(minutes=1))
    with session_factory() as s:
        models = list(s.scalars(select(PredictionModel).where(PredictionModel.merchant_id == tenant.id)))
    assert len(models) == 1 and models[0].status == "skipped"  # one buyer: too little history, said why
    body = client.get("/api/admin/v1/audience/predictions", headers=tenant.admin_headers).json()
    assert body["model"]["status"] == "skipped" and body["model"]["reason"]
    assert body["members_predicted"] == 0

    again = client.post("/api/admin/v1/audience/predictions/refresh", headers=tenant.admin_headers)
    assert again.status_code == 200 and again.json()["model"]["fitted_at"] >= body["model"]["fitted_at"]
    with session_factory() as s:
        assert len(list(s.scalars(select(PredictionModel).where(PredictionModel.merchant_id == tenant.id)))) == 2


def test_rfm_distribution_lists_the_eight_tiers_and_the_buyers_not_scored_yet(
    client: TestClient, session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    _buyers(session_factory, tenant.id, [(300, 5, 10, 900000), (200, 150, 1, 1000), (90, 30, 2, 20000)])
    _buyers(session_factory, tenant.id, [(0, 0, 0, 0)])  # registered, never bought: not in RFM
    rows = client.get("/api/admin/v1/audience/rfm", headers=tenant.admin_headers).json()
    assert [r["tier"] for r in rows][:8] == ["important_value", "important_develop", "important_keep",
                                             "important_retain", "general_value", "general_develop",
                                             "general_keep", "general_retain"]
    assert rows[0]["label"] == "重要价值"
    assert rows[8] == {"tier": None, "label": "未评分", "label_en": "Not scored yet", "members": 3,
                       "paid_total": 921000}

    r = client.post("/api/admin/v1/audience/lifecycle/recompute", headers=tenant.admin_headers)
    assert r.status_code == 200
    with unit_of_work(client.app.state.session_factory) as s:  # type: ignore[attr-defined]
        from siyu.audience import scoring

        scoring.recompute_rfm(s, tenant.id, utcnow())
    rows = client.get("/api/admin/v1/audience/rfm", headers=tenant.admin_headers).json()
    assert len(rows) == 8 and sum(r["members"] for r in rows) == 3
    assert sum(r["paid_total"] for r in rows) == 921000
    assert next(r for r in rows if r["tier"] == "important_value")["members"] >= 1


def test_super_users_are_the_configured_top_share_and_referrals_that_bought_count(
    client: TestClient, session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    # 20 buyers, the i-th with i orders and i * 100 yuan; two identical middle buyers, one of whom
    # brought in two friends who bought.
    ids = _buyers(session_factory, tenant.id, [(400, 10 + i, i, i * 10000) for i in range(1, 19)])
    twin_plain, twin_referrer = _buyers(session_factory, tenant.id, [(400, 20, 9, 90000), (400, 20, 9, 90000)])
    friends = _buyers(session_factory, tenant.id, [(0, 0, 0, 0), (0, 0, 0, 0)])
    with unit_of_work(session_factory) as s:
        for n, friend in enumerate(friends):
            s.add(ReferralProfile(merchant_id=tenant.id, member_id=friend, code=f"F{uuid.uuid4().hex[:8]}",
                                  inviter_member_id=twin_referrer, first_paid_order_id=900_000 + n))
        from siyu.audience import scoring

        assert scoring.recompute_super_users(s, tenant.id, utcnow()) == 20

    with session_factory() as s:
        score = {m: sc for m, sc in s.execute(select(MemberStats.member_id, MemberStats.super_score)
                                              .where(MemberStats.merchant_id == tenant.id))}
    assert score[twin_referrer] > score[twin_plain]  # type: ignore[operator]

    body = client.get("/api/admin/v1/audience/super-users", headers=tenant.admin_headers).json()
    assert (body["top_percent"], body["min_score"], body["total"]) == (5.0, 95.0, 1)
    assert body["items"][0]["member_id"] == ids[-1] and body["items"][0]["paid_orders"] == 18
    assert _preview(client, tenant, {"type": "super_user"}) == 1
    assert _preview(client, tenant, {"type": "super_user", "is": False}) == 22 - 1  # friends included

    cfg = client.get("/api/admin/v1/audience/settings/lifecycle", headers=tenant.admin_headers).json()
    r = client.put("/api/admin/v1/audience/settings/lifecycle", headers=tenant.admin_headers,
                   json={**cfg, "super_user_top_percent": 10})
    assert r.status_code == 200, r.text
    assert client.get("/api/admin/v1/audience/super-users", headers=tenant.admin_headers).json()["total"] == 2
    assert _preview(client, tenant, {"type": "super_user"}) == 2

    bad = client.put("/api/admin/v1/audience/settings/lifecycle", headers=tenant.admin_headers,
                     json={**cfg, "super_user_top_percent": 0})
    assert bad.status_code == 422
    assert client.get("/api/admin/v1/audience/super-users", headers=tenant.admin_headers).json()["top_percent"] == 10


def test_repurchase_overdue_by_the_merchants_threshold_or_the_members_own_interval(
    client: TestClient, session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    by_threshold, by_own, on_time, single_recent, _never = _buyers(session_factory, tenant.id, [
        (500, 200, 2, 20000),  # last order 200 days ago > 180, but within its own 300-day interval
        (40, 15, 4, 40000),  # orders every ~8 days (25 days over 3 gaps), none for 15 days
        (100, 10, 3, 30000),  # every 45 days, last 10 days ago: on time
        (20, 20, 1, 10000),  # one order 20 days ago: no interval of its own, under the threshold
        (0, 0, 0, 0),  # never bought
    ])

    def members(basis: str) -> set[int]:
        r = client.post("/api/admin/v1/segments/preview", headers=tenant.admin_headers,
                        json={"definition": {"type": "repurchase_overdue", "basis": basis}})
        assert r.status_code == 200, r.text
        assert r.json()["count"] == len(r.json()["sample"])
        return {row["member_id"] for row in r.json()["sample"]}

    assert members("threshold") == {by_threshold}
    assert members("own_interval") == {by_own}
    assert members("either") == {by_threshold, by_own}
    assert on_time not in members("either") and single_recent not in members("either")

    bad = client.post("/api/admin/v1/segments/preview", headers=tenant.admin_headers,
                      json={"definition": {"type": "repurchase_overdue", "basis": "sometimes"}})
    assert bad.status_code == 422
