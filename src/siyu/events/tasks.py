"""Server-side events from other domains' happenings (order paid, refund)."""

from __future__ import annotations

import datetime as dt

from siyu.events import service
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
