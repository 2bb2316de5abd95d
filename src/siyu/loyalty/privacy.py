"""The loyalty part of a member's data export (``members.privacy`` discovers this module).

Exported: the loyalty summary, every points entry, check-ins, level history and cards.
Nothing is anonymised here: points entries and cards are money records and hold no personal
data beyond the member id, which ``members.privacy`` anonymises on the member row itself.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from siyu.loyalty import repository as repo
from siyu.loyalty import service
from siyu.loyalty.models import CheckIn, PointsEntry
from siyu.loyalty.schemas import CheckInOut, LevelHistoryOut, MemberCardOut, PointsEntryOut
from siyu.members.privacy import register_exporter


def export(session: Session, merchant_id: int, member_id: int) -> dict[str, Any]:
    entries = session.scalars(
        select(PointsEntry).where(PointsEntry.merchant_id == merchant_id, PointsEntry.member_id == member_id)
        .order_by(PointsEntry.id)
    )
    check_ins = session.scalars(
        select(CheckIn).where(CheckIn.merchant_id == merchant_id, CheckIn.member_id == member_id).order_by(CheckIn.day)
    )
    return {
        "summary": service.member_summary(session, merchant_id, member_id),
        "points_entries": [PointsEntryOut.model_validate(e).model_dump(mode="json") for e in entries],
        "check_ins": [CheckInOut.model_validate(c).model_dump(mode="json") for c in check_ins],
        "level_history": [LevelHistoryOut.model_validate(h).model_dump(mode="json")
                          for h in repo.level_history(session, merchant_id, member_id, limit=10000)],
        "cards": [MemberCardOut.model_validate(c).model_dump(mode="json")
                  for c in repo.cards_of_member(session, merchant_id, member_id)],
    }


register_exporter("loyalty", export)
