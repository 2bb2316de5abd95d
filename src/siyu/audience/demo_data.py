"""Demo data for customer data: the demo customers' statistics, lifecycle stages, RFM tiers,
predictions and super-user scores computed from their seeded orders, and three saved segments."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from siyu.audience import repository as repo
from siyu.audience import scoring, segments, service
from siyu.audience.definitions import SegmentDefinition
from siyu.kit.timeutil import utcnow
from siyu.members.models import Member
from siyu.tenancy import service as tenancy_service

SEGMENTS = [
    ("杭州沉默会员", "杭州的会员，最近一次购买在 91–180 天前：激活", {
        "type": "and", "nodes": [
            {"type": "attribute", "field": "city", "op": "eq", "value": "杭州市"},
            {"type": "stage", "in": ["silent"]},
        ]}),
    ("高价值活跃会员", "累计实付 ¥1000 以上、仍在活跃期：绑定", {
        "type": "and", "nodes": [
            {"type": "attribute", "field": "paid_total", "op": "gte", "value": 100000},
            {"type": "stage", "in": ["active"]},
        ]}),
    ("预流失与流失", "超过 270 天未购买：召回", {"type": "stage", "in": ["pre_churn", "churned"]}),
]


def seed(session: Session, merchant_id: int) -> None:
    now = utcnow()
    member_ids = list(session.scalars(select(Member.id).where(Member.merchant_id == merchant_id)))
    repo.backfill_rows(session, merchant_id)
    repo.rebuild_stats(session, merchant_id, member_ids)
    repo.rebuild_activity(session, merchant_id)
    service.recompute_lifecycle(session, merchant_id, now=now)
    scoring.recompute_rfm(session, merchant_id, now)
    scoring.recompute_super_users(session, merchant_id, now)
    timezone = tenancy_service.get_merchant(session, merchant_id).timezone
    scoring.refresh_predictions(session, merchant_id, now=now, timezone=timezone)  # skips, with its reason, on thin history
    existing = {s.name for s in segments.list_segments(session, merchant_id)}
    for name, description, root in SEGMENTS:
        if name not in existing:
            segments.save_segment(session, merchant_id, name=name, description=description,
                                  definition=SegmentDefinition.model_validate({"root": root}))
