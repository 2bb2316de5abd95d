"""Loyalty jobs. Each is idempotent (keys on the ledgers, per-order and per-refund rows).

- ``order.paid`` → ``loyalty.order_paid``: counters, growth, cards, points (award_on=paid), level.
- ``order.completed`` → ``loyalty.order_completed``: points when award_on=completed.
- ``order.cancelled`` → ``loyalty.order_cancelled``: points spent at checkout come back.
- ``order.refunded`` → ``loyalty.order_refunded``: proportional reversal, card revocation.
- ``review.created`` → ``loyalty.review_created``: the task ``review`` (growth per review, daily cap).
- ``loyalty.hourly`` (schedule): lots past expiry expire; ``points.expiring`` notices; paid
  cards past their term expire (level history ``card_expired`` when the level falls).
- ``loyalty.daily`` (schedule, 00:10 in the merchant's zone): yearly level retention,
  birthday coupons, pending coupon rewards.
"""

from __future__ import annotations

from siyu.kit.events import subscribe
from siyu.loyalty import points, service
from siyu.worker.registry import JobContext, job_handler


@subscribe("order.paid", "loyalty.order_paid")
def order_paid(ctx: JobContext) -> None:
    service.on_order_paid(ctx.session, ctx.merchant_id, int(ctx.payload["order_id"]), ctx.now())


@subscribe("order.completed", "loyalty.order_completed")
def order_completed(ctx: JobContext) -> None:
    service.on_order_completed(ctx.session, ctx.merchant_id, int(ctx.payload["order_id"]), ctx.now())


@subscribe("order.cancelled", "loyalty.order_cancelled")
def order_cancelled(ctx: JobContext) -> None:
    service.on_order_cancelled(ctx.session, ctx.merchant_id, int(ctx.payload["order_id"]), ctx.now())


@subscribe("order.refunded", "loyalty.order_refunded")
def order_refunded(ctx: JobContext) -> None:
    p = ctx.payload
    service.on_order_refunded(
        ctx.session, ctx.merchant_id, int(p["order_id"]), int(p["refund_id"]), int(p["amount"]),
        full=bool(p.get("full")), now=ctx.now(),
    )


@subscribe("review.created", "loyalty.review_created")
def review_created(ctx: JobContext) -> None:
    p = ctx.payload
    service.on_review_created(ctx.session, ctx.merchant_id, int(p["member_id"]), int(p["review_id"]), ctx.now())


@job_handler("loyalty.hourly")
def hourly(ctx: JobContext) -> None:
    now = ctx.now()
    points.expire_due(ctx.session, ctx.merchant_id, now)
    points.notify_expiring(ctx.session, ctx.merchant_id, now)
    service.expire_cards(ctx.session, ctx.merchant_id, now)


@job_handler("loyalty.daily")
def daily(ctx: JobContext) -> None:
    now = ctx.now()
    service.review_levels(ctx.session, ctx.merchant_id, now)
    service.birthday_coupons(ctx.session, ctx.merchant_id, now)
    service.issue_pending_rewards(ctx.session, ctx.merchant_id)
