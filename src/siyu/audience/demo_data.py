"""Demo data for customer data: the demo customers' browsing (product views, cart adds,
favourites over the last 60 days, as events), their statistics, lifecycle stages, RFM tiers,
predictions and super-user scores computed from their seeded orders, and the saved segments an
operator starts from — among them the issue's example, "silent members in Hangzhou who viewed
frames twice in the last 30 days and did not order"."""

from __future__ import annotations

import datetime as dt
import random

from sqlalchemy import and_, select
from sqlalchemy.orm import Session

from siyu.audience import repository as repo
from siyu.audience import scoring, segments, service
from siyu.audience.definitions import SegmentDefinition
from siyu.audience.models import MemberStats
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


FRAMES = "镜架"


def _browsing(session: Session, merchant_id: int, now: dt.datetime) -> None:
    """Seeded (reproducible) events: each member views a few products over 60 days, adds some to
    the cart, favourites a few; half of the silent members in Hangzhou looked at frames at least
    twice in the last 30 days (the issue's example segment has members to find)."""
    from siyu.catalog.models import Category, Product
    from siyu.events import repository as events_repo

    rng = random.Random(20261205)
    products = session.execute(
        select(Product.id, Product.category_id, Category.name)
        .join(Category, Category.id == Product.category_id)
        .where(Product.merchant_id == merchant_id).order_by(Product.id)
    ).all()
    if not products:
        return
    frames = [p for p in products if p[2] == FRAMES] or products
    silent_hangzhou = set(session.scalars(
        select(Member.id).join(MemberStats, and_(MemberStats.merchant_id == Member.merchant_id,
                                                 MemberStats.member_id == Member.id))
        .where(Member.merchant_id == merchant_id, Member.city == "杭州市", MemberStats.lifecycle_stage == "silent")
    ))
    events: list[dict[str, object]] = []

    def add(name: str, member_id: int, days_ago: float, props: dict[str, object]) -> None:
        events.append({"event_id": f"demo-{member_id}-{len(events)}", "name": name, "member_id": member_id,
                       "source": "mini_program", "occurred_at": now - dt.timedelta(days=days_ago), "properties": props})

    for member_id in session.scalars(select(Member.id).where(Member.merchant_id == merchant_id).order_by(Member.id)):
        for _ in range(rng.randint(0, 6)):
            product_id, category_id, _name = rng.choice(products)
            days = rng.uniform(0, 60)
            add("product_view", member_id, days, {"product_id": product_id, "category_id": category_id})
            if rng.random() < 0.25:
                add("add_to_cart", member_id, max(days - 0.01, 0), {"product_id": product_id, "category_id": category_id})
            if rng.random() < 0.1:
                add("favorite", member_id, max(days - 0.02, 0), {"product_id": product_id})
        if member_id in silent_hangzhou and rng.random() < 0.5:
            for _ in range(rng.randint(2, 3)):
                product_id, category_id, _name = rng.choice(frames)
                add("product_view", member_id, rng.uniform(1, 29), {"product_id": product_id, "category_id": category_id})
    events_repo.insert_events(session, merchant_id, events, now)


def _frames_segment(session: Session, merchant_id: int) -> tuple[str, str, dict[str, object]] | None:
    from siyu.catalog.models import Category

    frames = session.scalar(select(Category.id).where(Category.merchant_id == merchant_id, Category.name == FRAMES))
    if frames is None:
        return None
    return ("杭州沉默会员·近30天看镜架≥2次未下单", "近 30 天看过镜架至少两次、没有下单的杭州沉默会员：推送镜架券", {
        "type": "and", "nodes": [
            {"type": "attribute", "field": "city", "op": "eq", "value": "杭州市"},
            {"type": "stage", "in": ["silent"]},
            {"type": "behavior", "event": "product_view", "op": "gte", "count": 2, "within_days": 30,
             "where": [{"property": "category_id", "op": "eq", "value": frames}]},
            {"type": "not", "node": {"type": "purchase", "within_days": 30}},
        ]})


def seed(session: Session, merchant_id: int) -> None:
    now = utcnow()
    member_ids = list(session.scalars(select(Member.id).where(Member.merchant_id == merchant_id)))
    repo.backfill_rows(session, merchant_id)
    repo.rebuild_stats(session, merchant_id, member_ids)
    service.recompute_lifecycle(session, merchant_id, now=now)
    _browsing(session, merchant_id, now)
    repo.rebuild_activity(session, merchant_id)
    scoring.recompute_rfm(session, merchant_id, now)
    scoring.recompute_super_users(session, merchant_id, now)
    timezone = tenancy_service.get_merchant(session, merchant_id).timezone
    scoring.refresh_predictions(session, merchant_id, now=now, timezone=timezone)  # skips, with its reason, on thin history
    existing = {s.name for s in segments.list_segments(session, merchant_id)}
    frames_segment = _frames_segment(session, merchant_id)
    for name, description, root in [*SEGMENTS, *([frames_segment] if frames_segment else [])]:
        if name not in existing:
            segments.save_segment(session, merchant_id, name=name, description=description,
                                  definition=SegmentDefinition.model_validate({"root": root}))
