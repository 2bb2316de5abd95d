"""Referral and distribution jobs.

- ``order.paid`` → ``referral.order_paid``: lock the buyer's binding; on a referred first paid
  order create the rewards (once per invitee); accrue the commissions (once per order and tier).
- ``order.completed`` → ``referral.order_completed``: pending → frozen, ``referral.settle``
  scheduled at the end of the after-sales window.
- ``referral.settle`` (at ``settle_at``): frozen → settled (available balance).
- ``order.refunded`` → ``referral.order_refunded``: commissions reversed in proportion (once per
  refund); a full refund of a rewarded first order within the window revokes the rewards.
- ``referral.retry_rewards`` (hourly, every merchant): grant rewards left pending (loyalty /
  coupons were unavailable).
- ``referral.payout``: an automatic payout provider pays an approved withdrawal (reads commit
  first; nothing is sent inside a transaction); a payout still in flight is asked about by
  ``referral.payout_query`` (5 minutes, then less and less often), or moved by the provider's
  notification (``POST /api/pay/wechat/transfer-notify/{merchant}``). A cancellation finance asked
  for (``cancel_payout``: ``CANCELING``) starts its own series of polls (payload ``chain: "c"``)
  that sees ``CANCELLED`` and returns the amount.
- ``referral.payout_late_check``: a bill that may come after the withdrawal failed (a send that
  outlived its lease and reached WeChat after a cancel or fail-payout found no bill): looked up
  by ``out_bill_no`` — cancelled if not final, recorded paid after failure (with a debt) if the
  payee took it (``service.check_late_bill``; ``withdrawal:<id>:late:n<k>`` after such a
  ``NOT_FOUND``, ``late:f<k>`` once a bill is known or a send's answer was lost).

Each is idempotent: a job run twice finds nothing left to do.
"""

from __future__ import annotations

from siyu.kit.events import subscribe
from siyu.referral import service
from siyu.worker.registry import JobContext, job_handler, recurring


@subscribe("order.paid", "referral.order_paid")
def order_paid(ctx: JobContext) -> None:
    service.on_order_paid(ctx.session, ctx.merchant_id, int(ctx.payload["order_id"]), ctx.settings)


@subscribe("order.completed", "referral.order_completed")
def order_completed(ctx: JobContext) -> None:
    service.freeze_for_order(ctx.session, ctx.merchant_id, int(ctx.payload["order_id"]), ctx.settings)


@job_handler("referral.settle")
def settle(ctx: JobContext) -> None:
    service.settle(ctx.session, ctx.merchant_id, int(ctx.payload["commission_id"]), ctx.now())


@subscribe("order.refunded", "referral.order_refunded")
def order_refunded(ctx: JobContext) -> None:
    p = ctx.payload
    order_id = int(p["order_id"])
    service.reverse_for_refund(
        ctx.session, ctx.merchant_id, order_id, int(p["refund_id"]), amount=int(p.get("amount", 0)),
        lines=p.get("lines") or None, full=bool(p.get("full")),
    )
    if p.get("full"):
        service.revoke_rewards_for_refund(ctx.session, ctx.merchant_id, order_id, ctx.settings, now=ctx.now())


@recurring("referral.retry_rewards", "17 * * * *", "grant the referral rewards left pending, hourly")
def retry_rewards(ctx: JobContext) -> None:
    service.retry_pending_rewards(ctx.session, ctx.merchant_id)


@job_handler("referral.payout")
def run_payout(ctx: JobContext) -> None:
    service.run_payout(ctx.session, ctx.merchant_id, int(ctx.payload["withdrawal_id"]), ctx.settings, now=ctx.now())


@job_handler("referral.payout_query")
def payout_query(ctx: JobContext) -> None:
    service.query_payout(
        ctx.session, ctx.merchant_id, int(ctx.payload["withdrawal_id"]), int(ctx.payload.get("poll", 0)), ctx.settings,
        chain=str(ctx.payload.get("chain", "")), now=ctx.now(),
    )


@job_handler("referral.payout_late_check")
def payout_late_check(ctx: JobContext) -> None:
    service.check_late_bill(
        ctx.session, ctx.merchant_id, int(ctx.payload["withdrawal_id"]), str(ctx.payload.get("series", "n")),
        int(ctx.payload.get("step", 0)), ctx.settings, now=ctx.now(),
    )
