"""Server-side events from other domains' happenings, stored with the behaviour events (source
``server``) so segments and funnels see them: order paid, refund, coupon claimed (or sent),
check-in, level change. Idempotent by an event id derived from the happening."""

from __future__ import annotations

import datetime as dt

from siyu.events import service
from siyu.events.catalog import without_none
from siyu.kit.events import subscribe
from siyu.kit.timeutil import utcnow
from siyu.worker.registry import JobContext


@subscribe("order.paid", "events.record_order_paid")
def record_order_paid(ctx: JobContext) -> None:
    p = ctx.payload
    paid_at = dt.datetime.fromisoformat(p["paid_at"]) if p.get("paid_at") else utcnow()
    service.record_server_event(
        ctx.session, ctx.merchant_id, p.get("member_id"), "order_paid",
        {"order_id": p["order_id"], "amount": p.get("paid_amount", 0)},
        event_id=f"srv:order_paid:{p['order_id']}", occurred_at=paid_at,
    )


@subscribe("order.refunded", "events.record_refund")
def record_refund(ctx: JobContext) -> None:
    p = ctx.payload
    service.record_server_event(
        ctx.session, ctx.merchant_id, p.get("member_id"), "refund",
        {"order_id": p["order_id"], "amount": p.get("amount", 0), "refund_id": p.get("refund_id")},
        event_id=f"srv:refund:{p.get('refund_id')}", occurred_at=utcnow(),
    )


#: coupon sources that are the member's own doing (the rest: sent by an operator, a campaign ...)
MEMBER_COUPON_SOURCES = ("claim", "code")


@subscribe("coupon.issued", "events.record_coupon_claimed")
def record_coupon_claimed(ctx: JobContext) -> None:
    p = ctx.payload
    source = str(p.get("source") or "")
    service.record_server_event(
        ctx.session, ctx.merchant_id, p.get("member_id"), "coupon_claimed",
        {"template_id": p["template_id"], "coupon_id": p["coupon_id"], "source": source},
        event_id=f"srv:coupon:{p['coupon_id']}", occurred_at=ctx.now(), by_member=source in MEMBER_COUPON_SOURCES,
    )


@subscribe("member.checked_in", "events.record_check_in")
def record_check_in(ctx: JobContext) -> None:
    p = ctx.payload
    service.record_server_event(
        ctx.session, ctx.merchant_id, p["member_id"], "check_in",
        without_none({"streak": p.get("streak"), "day": p.get("day"), "points": p.get("points")}),
        event_id=f"srv:check_in:{p['member_id']}:{p.get('day')}", occurred_at=ctx.now(),
    )


@subscribe("level.changed", "events.record_level_changed")
def record_level_changed(ctx: JobContext) -> None:
    p = ctx.payload
    service.record_server_event(
        ctx.session, ctx.merchant_id, p["member_id"], "level_changed",
        without_none({"from_level_id": p.get("from_level_id"), "to_level_id": p.get("to_level_id"),
                      "reason": p.get("reason")}),
        event_id=f"srv:level:{ctx.job_id}", occurred_at=ctx.now(), by_member=False,
    )
