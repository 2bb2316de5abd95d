"""After-sales jobs: follow refund results (``order.refunded`` / ``order.refund_failed``); auto-complete
a shipped exchange."""

from __future__ import annotations

from siyu.aftersales import repository as repo
from siyu.aftersales import service
from siyu.aftersales.models import EXCHANGE_SHIPPED
from siyu.kit.events import EVENTS, subscribe
from siyu.worker.registry import JobContext, job_handler

EVENTS.setdefault(
    "aftersale.requested", "a customer opened an after-sale (aftersale_id, order_id, member_id, kind, status)"
)
EVENTS.setdefault(
    "aftersale.completed",
    "an after-sale finished: refunded or exchanged (aftersale_id, order_id, member_id, ...)",
)


@subscribe("order.refunded", "aftersales.on_refunded")
def on_refunded(ctx: JobContext) -> None:
    """Move the after-sale waiting for this refund to ``completed`` (a no-op for other refunds)."""
    service.on_refunded(ctx.session, ctx.merchant_id, ctx.payload)


@subscribe("order.refund_failed", "aftersales.on_refund_failed")
def on_refund_failed(ctx: JobContext) -> None:
    """The provider refused the refund: the after-sale goes back to wait for a retry."""
    service.on_refund_failed(ctx.session, ctx.merchant_id, ctx.payload)


@job_handler("aftersales.auto_complete_exchange")
def auto_complete_exchange(ctx: JobContext) -> None:
    """The replacement has been out for the auto-complete period: treat it as received."""
    aftersale = repo.get(ctx.session, ctx.merchant_id, int(ctx.payload["aftersale_id"]))
    if aftersale is None or aftersale.status != EXCHANGE_SHIPPED:
        return  # confirmed or completed already
    service.complete_exchange(ctx.session, ctx.merchant_id, aftersale.id, actor=("system", None))
