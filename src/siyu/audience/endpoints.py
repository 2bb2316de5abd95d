"""Admin API: lifecycle distribution and history, RFM tiers, predictions, super users, member
statistics, audience settings (lifecycle thresholds, repurchase-overdue days, super-user share)."""

from __future__ import annotations

import csv
import datetime as dt
import io
import time
from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Header, Query, Request, status
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field
from sqlalchemy import select

from siyu.api.deps import DbSession, StaffPrincipal, require
from siyu.api.idempotency import idempotent
from siyu.audience import repository as repo
from siyu.audience import segments, service
from siyu.audience.models import SegmentChange
from siyu.audience.schemas import (
    LifecycleConfig,
    MemberStatsOut,
    PredictionsOut,
    RfmTierCount,
    StageCount,
    SuperUsersOut,
)
from siyu.kit.i18n import pick_language
from siyu.kit.pagination import Page, PageParams, page_params, paginate
from siyu.kit.timeutil import utcnow

admin = APIRouter(tags=["admin: audience"])


class StageDayOut(BaseModel):
    day: dt.date
    stage: str
    members: int


class TransitionOut(BaseModel):
    from_stage: str | None
    to_stage: str
    at: dt.datetime


class RecomputeOut(BaseModel):
    changed: int
    distribution: list[StageCount]


@admin.get("/audience/lifecycle", response_model=list[StageCount], summary="Members per lifecycle stage")
def lifecycle(session: DbSession, p: StaffPrincipal = Depends(require("audience:read"))) -> list[StageCount]:
    return service.stage_distribution(session, p.merchant_id)


@admin.get("/audience/lifecycle/history", response_model=list[StageDayOut])
def lifecycle_history(
    session: DbSession,
    days: int = Query(30, ge=1, le=3660, description="how many days back (at most ten years)"),
    p: StaffPrincipal = Depends(require("audience:read")),
) -> list[StageDayOut]:
    since = (utcnow() - dt.timedelta(days=days)).date()
    return [StageDayOut(day=r.day, stage=r.stage, members=r.members) for r in repo.stage_history(session, p.merchant_id, since)]


@admin.post("/audience/lifecycle/recompute", response_model=RecomputeOut, summary="Re-evaluate every member now")
def recompute(session: DbSession, p: StaffPrincipal = Depends(require("audience:write"))) -> RecomputeOut:
    changed = service.recompute_lifecycle(session, p.merchant_id)
    return RecomputeOut(changed=changed, distribution=service.stage_distribution(session, p.merchant_id))


@admin.get("/audience/rfm", response_model=list[RfmTierCount],
           summary="Buyers per RFM tier (the eight classic tiers), with their net paid total")
def rfm_distribution(session: DbSession, p: StaffPrincipal = Depends(require("audience:read"))) -> list[RfmTierCount]:
    return service.rfm_distribution(session, p.merchant_id)


@admin.get("/audience/predictions", response_model=PredictionsOut,
           summary="The latest BG/NBD + Gamma-Gamma fit and the members' predicted totals (refreshed nightly)")
def predictions(session: DbSession, p: StaffPrincipal = Depends(require("audience:read"))) -> PredictionsOut:
    return service.predictions(session, p.merchant_id)


@admin.post("/audience/predictions/refresh", response_model=PredictionsOut,
            summary="Refit the models on the merchant's history now and rewrite each member's predictions")
def refresh_predictions(session: DbSession, p: StaffPrincipal = Depends(require("audience:write"))) -> PredictionsOut:
    return service.refresh_predictions(session, p.merchant_id)


@admin.get("/audience/super-users", response_model=SuperUsersOut,
           summary="The members in the merchant's top share by super-user score, best first")
def super_users(
    session: DbSession,
    limit: int = Query(50, ge=1, le=1000, description="how many to list (the total counts them all)"),
    p: StaffPrincipal = Depends(require("audience:read")),
) -> SuperUsersOut:
    return service.super_users(session, p.merchant_id, limit=limit)


@admin.get("/audience/settings/lifecycle", response_model=LifecycleConfig)
def get_config(session: DbSession, p: StaffPrincipal = Depends(require("audience:read"))) -> LifecycleConfig:
    return service.lifecycle_config(session, p.merchant_id)


@admin.put("/audience/settings/lifecycle", response_model=LifecycleConfig)
def put_config(
    body: LifecycleConfig, session: DbSession, p: StaffPrincipal = Depends(require("audience:write"))
) -> LifecycleConfig:
    return service.set_lifecycle_config(session, p.merchant_id, body)


@admin.get("/members/{member_id}/stats", response_model=MemberStatsOut, summary="A member's purchase and activity statistics")
def member_stats(member_id: int, session: DbSession, p: StaffPrincipal = Depends(require("members:read"))) -> MemberStatsOut:
    row = service.member_stats(session, p.merchant_id, member_id)
    return MemberStatsOut.model_validate(row)


@admin.get("/members/{member_id}/lifecycle", response_model=list[TransitionOut])
def member_transitions(
    member_id: int, session: DbSession, p: StaffPrincipal = Depends(require("members:read"))
) -> list[TransitionOut]:
    return [
        TransitionOut(from_stage=t.from_stage, to_stage=t.to_stage, at=t.at)
        for t in repo.transitions_for(session, p.merchant_id, member_id)
    ]


# -- segments ----------------------------------------------------------------------------------



class DefinitionWarning(BaseModel):
    """A part of a valid definition that probably does not do what was meant (today: an event
    name neither registered nor received yet, ``segment_event_unseen``)."""

    path: str
    code: str
    message: str = Field(description="in the request's language (Accept-Language, zh-CN by default)")


def _warnings(accept_language: str | None, found: list[Any]) -> list[DefinitionWarning]:
    lang = pick_language(accept_language)
    return [DefinitionWarning(path=f.path, code=f.code, message=f.text(lang)) for f in found]


class PreviewOut(BaseModel):
    count: int
    sample: list[dict[str, Any]]
    took_ms: float
    warnings: list[DefinitionWarning] = Field(default_factory=list)


class SegmentIn(BaseModel):
    name: str = Field(min_length=1, max_length=80)
    description: str | None = Field(default=None, max_length=400)
    definition: dict[str, Any]


class SegmentOut(BaseModel):
    id: int
    name: str
    description: str | None
    definition: dict[str, Any]
    member_count: int
    computed_at: dt.datetime | None
    warnings: list[DefinitionWarning] = Field(
        default_factory=list, description="on create and update only: see the preview's warnings")


class RecomputeSegmentOut(BaseModel):
    entered: int
    left: int
    members: int


class ChangeOut(BaseModel):
    member_id: int
    change: str
    at: dt.datetime


def _out(seg: Any) -> SegmentOut:
    return SegmentOut(id=seg.id, name=seg.name, description=seg.description, definition=seg.definition,
                      member_count=seg.member_count, computed_at=seg.computed_at)


@admin.post("/segments/preview", response_model=PreviewOut, summary="Count and sample the members matching a definition")
def preview_segment(
    request: Request, session: DbSession, definition: dict[str, Any] = Body(..., embed=True),
    p: StaffPrincipal = Depends(require("audience:read")),
) -> PreviewOut:
    """A tag that is not the store's is a 422 (``segment_invalid``, the field's path and code
    ``segment_unknown_tag``); an event name neither registered nor received yet only warns."""
    parsed = segments.parse_definition(definition)
    warnings = segments.check_references(session, p.merchant_id, parsed)
    started = time.perf_counter()
    result = segments.preview(session, p.merchant_id, parsed)
    return PreviewOut(count=result.count, sample=result.sample, took_ms=round((time.perf_counter() - started) * 1000, 1),
                      warnings=_warnings(request.headers.get("accept-language"), warnings))


@admin.get("/segments", response_model=list[SegmentOut])
def list_segments(session: DbSession, p: StaffPrincipal = Depends(require("audience:read"))) -> list[SegmentOut]:
    return [_out(s) for s in segments.list_segments(session, p.merchant_id)]


@admin.post("/segments", response_model=SegmentOut, status_code=status.HTTP_201_CREATED)
@idempotent
def create_segment(
    body: SegmentIn, session: DbSession, p: StaffPrincipal = Depends(require("audience:write")),
    accept_language: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> SegmentOut:
    parsed = segments.parse_definition(body.definition)
    warnings = segments.check_references(session, p.merchant_id, parsed)
    seg = segments.save_segment(session, p.merchant_id, name=body.name, description=body.description, definition=parsed)
    return _out(seg).model_copy(update={"warnings": _warnings(accept_language, warnings)})


@admin.get("/segments/{segment_id}", response_model=SegmentOut)
def get_segment(segment_id: int, session: DbSession, p: StaffPrincipal = Depends(require("audience:read"))) -> SegmentOut:
    return _out(segments.get_segment(session, p.merchant_id, segment_id))


@admin.put("/segments/{segment_id}", response_model=SegmentOut)
def update_segment(
    segment_id: int, body: SegmentIn, session: DbSession, p: StaffPrincipal = Depends(require("audience:write")),
    accept_language: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> SegmentOut:
    parsed = segments.parse_definition(body.definition)
    warnings = segments.check_references(session, p.merchant_id, parsed)
    seg = segments.save_segment(session, p.merchant_id, name=body.name, description=body.description,
                                definition=parsed, segment_id=segment_id)
    return _out(seg).model_copy(update={"warnings": _warnings(accept_language, warnings)})


@admin.delete("/segments/{segment_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_segment(segment_id: int, session: DbSession, p: StaffPrincipal = Depends(require("audience:write"))) -> None:
    segments.delete_segment(session, p.merchant_id, segment_id)


@admin.post("/segments/{segment_id}/recompute", response_model=RecomputeSegmentOut)
def recompute_segment(
    segment_id: int, session: DbSession, p: StaffPrincipal = Depends(require("audience:write"))
) -> RecomputeSegmentOut:
    r = segments.recompute(session, p.merchant_id, segment_id)
    return RecomputeSegmentOut(entered=r.entered, left=r.left, members=r.members)


@admin.get("/segments/{segment_id}/changes", response_model=Page[ChangeOut])
def segment_changes(
    segment_id: int, session: DbSession, params: PageParams = Depends(page_params),
    p: StaffPrincipal = Depends(require("audience:read")),
) -> Page[ChangeOut]:
    segments.get_segment(session, p.merchant_id, segment_id)
    stmt = select(SegmentChange).where(
        SegmentChange.merchant_id == p.merchant_id, SegmentChange.segment_id == segment_id
    ).order_by(SegmentChange.id.desc())
    rows, total = paginate(session, stmt, params)
    return Page(items=[ChangeOut(member_id=r.member_id, change=r.change, at=r.at) for r in rows], total=total,
                page=params.page, page_size=params.page_size)


@admin.get(
    "/segments/{segment_id}/export.csv",
    summary="The segment's members as CSV",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/csv": {"schema": {"type": "string"}}}, "description": "UTF-8 CSV with a header row"}},
)
def export_segment(
    segment_id: int, request: Request, session: DbSession, p: StaffPrincipal = Depends(require("audience:read"))
) -> StreamingResponse:
    """Streams the rows from a read transaction of its own: the request's transaction ends
    before the response is sent, the stream after it."""
    segments.get_segment(session, p.merchant_id, segment_id)  # a 404 before anything streams
    factory = request.app.state.session_factory
    header = ["member_id", "nickname", "phone", "gender", "province", "city", "lifecycle_stage", "paid_orders",
              "paid_total_fen", "last_order_at", "entered_at"]

    def rows() -> Iterator[str]:
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(header)
        with factory() as read:
            for row in segments.export_rows(read, p.merchant_id, segment_id):
                writer.writerow(["" if v is None else (v.isoformat() if isinstance(v, dt.datetime) else v) for v in row])
                if buf.tell() > 64_000:
                    yield buf.getvalue()
                    buf.seek(0)
                    buf.truncate()
        yield buf.getvalue()

    return StreamingResponse(rows(), media_type="text/csv; charset=utf-8",
                             headers={"Content-Disposition": f'attachment; filename="segment-{segment_id}.csv"'})
