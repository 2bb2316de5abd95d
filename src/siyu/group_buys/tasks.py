"""Group-buy jobs.

- ``group_buys.expire_team`` (at the team's ``expires_at``): success (all paid, or virtual
  success) or failure with a refund job per paid member.
- ``group_buys.refund_seat``: one paid member of a failed team refunded in full, once.
- ``group_buys.reconcile`` (every 5 minutes, per merchant, added with the first activity):
  catches up teams whose deadline job was lost.
- ``order.paid`` → ``group_buys.seat_paid``; ``order.cancelled`` → ``group_buys.seat_released``;
  ``order.refunded`` → ``group_buys.seat_refunded``.

Each is idempotent: the state moves are conditional, a job run twice finds nothing to do.
"""

from __future__ import annotations

from siyu.group_buys import service
from siyu.kit.events import subscribe
from siyu.worker.registry import JobContext, job_handler


@job_handler("group_buys.expire_team")
def expire_team(ctx: JobContext) -> None:
    service.expire_team(ctx.session, ctx.merchant_id, int(ctx.payload["team_id"]), ctx.now())


@job_handler("group_buys.refund_seat")
def refund_seat(ctx: JobContext) -> None:
    service.refund_seat(ctx.session, ctx.merchant_id, int(ctx.payload["seat_id"]), now=ctx.now())


@job_handler("group_buys.reconcile")
def reconcile(ctx: JobContext) -> None:
    service.expire_due(ctx.session, ctx.merchant_id, ctx.now())


@subscribe("order.paid", "group_buys.seat_paid")
def seat_paid(ctx: JobContext) -> None:
    service.on_order_paid(ctx.session, ctx.merchant_id, int(ctx.payload["order_id"]), now=ctx.now())


@subscribe("order.cancelled", "group_buys.seat_released")
def seat_released(ctx: JobContext) -> None:
    service.on_order_cancelled(ctx.session, ctx.merchant_id, int(ctx.payload["order_id"]), now=ctx.now())


@subscribe("order.refunded", "group_buys.seat_refunded")
def seat_refunded(ctx: JobContext) -> None:
    service.on_order_refunded(ctx.session, ctx.merchant_id, ctx.payload, now=ctx.now())
