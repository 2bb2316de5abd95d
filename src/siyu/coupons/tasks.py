"""Coupon jobs.

- ``order.paid`` → ``coupons.order_paid``: the order's locked coupons become used; next-order
  coupons (channel ``after_payment``) are issued, once per order and template.
- ``order.cancelled`` → ``coupons.order_cancelled``: locked coupons back to the wallet
  (``expired`` if past their validity).
- ``order.refunded`` (``full``) → ``coupons.order_refunded``: used coupons back likewise.
- ``member.registered`` → ``coupons.member_registered``: registration coupons.
- ``coupons.bulk_issue``: an operator's issue to a large audience, 500 members per job (each
  job enqueues the next chunk; keys make a re-run issue nothing twice).
- ``coupons.expire`` (schedule every 30 minutes per merchant, created with the first active
  template): unused coupons past validity → expired; ``coupon.expiring`` once per coupon
  ``expiry_reminder_days`` before it expires.

Each is idempotent: conditional updates move a coupon once, issues carry unique keys.
"""

from __future__ import annotations

from siyu.coupons import service
from siyu.kit.events import subscribe
from siyu.worker.registry import JobContext, job_handler


@subscribe("order.paid", "coupons.order_paid")
def order_paid(ctx: JobContext) -> None:
    order_id = int(ctx.payload["order_id"])
    paid = int(ctx.payload.get("paid_amount") or 0)
    now = ctx.now()
    service.on_order_paid(ctx.session, ctx.merchant_id, order_id, paid, now)
    member_id = ctx.payload.get("member_id")
    if member_id is not None:
        service.issue_after_payment(ctx.session, ctx.merchant_id, int(member_id), order_id, paid, now)


@subscribe("order.cancelled", "coupons.order_cancelled")
def order_cancelled(ctx: JobContext) -> None:
    service.on_order_cancelled(ctx.session, ctx.merchant_id, int(ctx.payload["order_id"]), ctx.now())


@subscribe("order.refunded", "coupons.order_refunded")
def order_refunded(ctx: JobContext) -> None:
    if ctx.payload.get("full"):
        service.on_order_refunded(ctx.session, ctx.merchant_id, int(ctx.payload["order_id"]), ctx.now())


@subscribe("member.registered", "coupons.member_registered")
def member_registered(ctx: JobContext) -> None:
    service.issue_on_registration(ctx.session, ctx.merchant_id, int(ctx.payload["member_id"]), ctx.now())


@job_handler("coupons.bulk_issue")
def bulk_issue(ctx: JobContext) -> None:
    service.bulk_issue_chunk(ctx.session, ctx.merchant_id, ctx.payload, ctx.now())


@job_handler("coupons.expire")
def expire(ctx: JobContext) -> None:
    service.expire_and_remind(ctx.session, ctx.merchant_id, ctx.now())
