"""Member statistics kept up to date incrementally, and lifecycle stages.

- ``record_payment`` / ``record_refund`` run from the ``order.paid`` / ``order.refunded`` events
  (see tasks.py) and update the member's row with single atomic UPDATEs, then re-evaluate that
  member's stage at once (a payment makes a sleeping member active the moment it is recorded).
- Behaviour events update last visit and counters through the events module's hook.
- ``recompute_lifecycle`` re-evaluates every member of a merchant with two set-based statements
  (transitions INSERT ... SELECT, then UPDATE), run daily at the merchant's midnight.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from typing import Any

from sqlalchemy.orm import Session

from siyu.audience import repository as repo
from siyu.audience.models import STAGE_LABELS, STAGES, AudienceSettings, MemberStats
from siyu.audience.schemas import LifecycleConfig, StageCount
from siyu.events import hooks
from siyu.kit.errors import not_found
from siyu.kit.timeutil import utcnow


def lifecycle_config(session: Session, merchant_id: int) -> LifecycleConfig:
    row = repo.settings_row(session, merchant_id)
    return LifecycleConfig.model_validate(row.lifecycle if row else {})


def set_lifecycle_config(session: Session, merchant_id: int, cfg: LifecycleConfig) -> LifecycleConfig:
    row = repo.settings_row(session, merchant_id)
    if row is None:
        row = AudienceSettings(merchant_id=merchant_id)
        session.add(row)
    row.lifecycle = cfg.model_dump()
    row.updated_at = utcnow()
    return cfg


def record_payment(session: Session, merchant_id: int, member_id: int, amount: int, paid_at: dt.datetime) -> None:
    now = utcnow()
    repo.ensure_rows(session, merchant_id, {member_id})
    repo.apply_payment(session, merchant_id, member_id, amount, paid_at, now)
    repo.recompute_stages(session, merchant_id, lifecycle_config(session, merchant_id), now, member_id=member_id)


def record_refund(session: Session, merchant_id: int, member_id: int, amount: int, *, full: bool) -> None:
    repo.ensure_rows(session, merchant_id, {member_id})
    repo.apply_refund(session, merchant_id, member_id, amount, full, utcnow())


@hooks.on_events
def record_activity(session: Session, merchant_id: int, rows: list[dict[str, Any]]) -> None:
    per_member: dict[int, tuple[dt.datetime, Counter[str]]] = {}
    for row in rows:
        member_id = row.get("member_id")
        if member_id is None:
            continue
        last, counts = per_member.get(member_id, (row["occurred_at"], Counter()))
        counts[row["name"]] += 1
        per_member[member_id] = (max(last, row["occurred_at"]), counts)
    if not per_member:
        return
    # Missing stats rows first (inserted in member order), then the update, which locks the rows
    # in member order too: two concurrent batches never wait for each other in a cycle.
    repo.ensure_rows(session, merchant_id, set(per_member))
    if len(rows) == 1:
        last, counts = next(iter(per_member.values()))
        repo.apply_activity(session, merchant_id, next(iter(per_member)), last, dict(counts))
        return
    # a batch: one set-based UPDATE from the events just stored
    repo.apply_activity_of_events(session, merchant_id, [r["event_id"] for r in rows if r.get("member_id") is not None])


def recompute_lifecycle(session: Session, merchant_id: int, *, now: dt.datetime | None = None) -> int:
    now = now or utcnow()
    repo.backfill_rows(session, merchant_id)
    changed = repo.recompute_stages(session, merchant_id, lifecycle_config(session, merchant_id), now)
    return changed


def stage_distribution(session: Session, merchant_id: int) -> list[StageCount]:
    counts = repo.stage_counts(session, merchant_id)
    return [StageCount(stage=s, label=STAGE_LABELS[s], members=counts.get(s, 0)) for s in STAGES]


def member_stats(session: Session, merchant_id: int, member_id: int) -> MemberStats:
    row = repo.stats_row(session, merchant_id, member_id)
    if row is None:
        raise not_found("会员统计", "Member statistics")
    return row
