"""Audience jobs: member statistics from order events, the daily lifecycle recompute."""

from __future__ import annotations

import datetime as dt

from siyu.audience import segments, service
from siyu.kit.events import subscribe
from siyu.kit.timeutil import local_date, utcnow
from siyu.tenancy import service as tenancy_service
from siyu.worker.registry import JobContext, job_handler, recurring


@subscribe("order.paid", "audience.on_order_paid")
def on_order_paid(ctx: JobContext) -> None:
    p = ctx.payload
    paid_at = dt.datetime.fromisoformat(p["paid_at"]) if p.get("paid_at") else utcnow()
    member_id = int(p["member_id"])
    service.record_payment(ctx.session, ctx.merchant_id, member_id, int(p.get("paid_amount", 0)), paid_at)
    segments.reevaluate_member(ctx.session, ctx.merchant_id, member_id)


@subscribe("order.refunded", "audience.on_order_refunded")
def on_order_refunded(ctx: JobContext) -> None:
    p = ctx.payload
    service.record_refund(
        ctx.session, ctx.merchant_id, int(p["member_id"]), int(p.get("amount", 0)), full=bool(p.get("full"))
    )


@job_handler(service.ACTIVITY_JOB)
def apply_event_activity(ctx: JobContext) -> None:
    """Counters and last visit from one batch of ingested events (enqueued by ``record_activity``)."""
    service.apply_activity_batch(ctx.session, ctx.merchant_id, ctx.payload)


@recurring("audience.daily_recompute", "5 0 * * *",
           "lifecycle stages, the day's stage counts, RFM, super users and saved segments, after local midnight")
def daily_recompute(ctx: JobContext) -> None:
    merchant = tenancy_service.get_merchant(ctx.session, ctx.merchant_id)
    now = ctx.now()
    service.daily_recompute(ctx.session, ctx.merchant_id, now=now, day=local_date(now, merchant.timezone))


@recurring("audience.refresh_predictions", "30 2 * * *",
           "BG/NBD + Gamma-Gamma refit and each member's P(alive), expected purchases and value, nightly")
def refresh_predictions(ctx: JobContext) -> None:
    service.refresh_predictions(ctx.session, ctx.merchant_id, now=ctx.now())


@job_handler(service.SEGMENT_RECOMPUTE_JOB)
def recompute_segment(ctx: JobContext) -> None:
    """One saved segment after the nightly scores (a segment deleted meanwhile is skipped)."""
    from siyu.audience.models import Segment

    segment_id = int(ctx.payload["segment_id"])
    seg = ctx.session.get(Segment, segment_id)
    if seg is None or seg.merchant_id != ctx.merchant_id:
        return
    at = dt.datetime.fromisoformat(ctx.payload["at"]) if ctx.payload.get("at") else ctx.now()
    segments.recompute(ctx.session, ctx.merchant_id, segment_id, now=at)
