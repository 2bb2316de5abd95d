"""Domain events fanned out through the outbox.

A module that cares about another's events subscribes in its ``tasks.py``::

    @subscribe("order.paid", "loyalty.award_order_points")
    def award(ctx: JobContext) -> None: ...   # ctx.payload is the event payload

``emit(session, merchant_id, "order.paid", {...}, key="order:42")`` enqueues one job per
subscriber in the caller's transaction, deduplicated by ``key`` so a retried emit is a no-op.
Events emitted: see ``EVENTS`` (each domain adds its own names there by convention).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy.orm import Session

from siyu.kit.outbox import enqueue
from siyu.worker.registry import Handler, import_all_tasks, job_handler

_SUBSCRIBERS: dict[str, list[str]] = {}
_loaded = False

EVENTS = {
    "order.submitted": "an order was created (payload: order_id, member_id, payable_amount)",
    "order.paid": "payment recorded (order_id, member_id, paid_amount, paid_at)",
    "order.cancelled": "an unpaid order was cancelled (order_id, member_id, reason)",
    "order.shipped": "order_id, member_id",
    "order.completed": "order_id, member_id",
    "order.refunded": "a refund succeeded (order_id, member_id, refund_id, amount, freight_amount, lines, full)",
    "order.refund_failed": "the payment provider refused a refund for good (order_id, member_id, refund_id, aftersale_id, "
    "amount, reason)",
    "aftersale.requested": "a customer asked for an after-sale (aftersale_id, order_id, member_id, kind, status, refund_amount)",
    "aftersale.completed": "an after-sale was completed (aftersale_id, order_id, member_id, kind, status, refund_amount)",
    "review.created": "a customer reviewed a bought product (review_id, member_id, product_id, rating)",
    "member.profile_completed": "a member filled in every profile field the task asks for (member_id)",
    "segment.changed": "a saved segment gained or lost members (segment_id, entered, left, at); one per recompute. "
    "Per member: the behaviour events segment_entered / segment_left (properties segment_id) in the events table",
    "member.stage_changed": "lifecycle stages moved (at, changed, member_id; after a payment also from_stage, to_stage; "
    "member_id null for the daily recompute, whose moves are the lifecycle_transitions rows at `at`). Per member: the "
    "behaviour event stage_changed (properties from, to) in the events table",
    "member.registered": "a new member registered (member_id, channel)",
    "coupon.issued": "a coupon entered a wallet (coupon_id, template_id, member_id, source)",
    "coupon.expiring": "a coupon expires soon; once per coupon (coupon_id, member_id, template_id, valid_until)",
    "group_buy.team_opened": "a leader's payment opened a group-buy team (team_id, group_buy_id, member_id, order_id, expires_at)",
    "group_buy.succeeded": "every seat paid, or virtual success (team_id, group_buy_id, virtual, order_ids, member_ids)",
    "group_buy.failed": "a team timed out; paid members refunded (team_id, group_buy_id, reason, refunded_order_ids, member_ids)",
    "bargain.started": "a member started a bargain (bargain_id, activity_id, member_id, start_price, floor_price)",
    "bargain.helped": "a friend cut a bargain (bargain_id, member_id, helper_member_id, cut, current_price, helped_count)",
    "bargain.floor_reached": "the last help reached the floor price (bargain_id, member_id, floor_price)",
    "points.earned": "points added to a member (member_id, entry_id, points, reason, ref, balance)",
    "points.spent": "points taken from a member (member_id, entry_id, points, reason, ref, balance)",
    "points.expiring": "a points lot expires soon; once per lot (member_id, lot_id, points, expires_at)",
    "level.changed": "a member moved on the level ladder (member_id, from_level_id, to_level_id, reason)",
    "member.checked_in": "a daily check-in (member_id, day, streak, points)",
    "referral.bound": "a member was bound to an inviter (member_id, inviter_member_id, previous_inviter_id, source)",
    "referral.rewarded": "an invitee's first paid order rewarded both sides (invitee_member_id, inviter_member_id, order_id, rewards)",
    "commission.settled": "a commission left the after-sales window (commission_id, distributor_id, order_id, amount)",
    "withdrawal.paid": "a distributor's withdrawal was paid out (withdrawal_id, distributor_id, member_id, amount, reference)",
    "withdrawal.failed": "a payout failed or was cancelled; the amount is available again (withdrawal_id, distributor_id, "
    "member_id, amount, detail)",
    "withdrawal.paid_after_failure": "a payout failed here was paid by the provider after all: recorded paid, the amount "
    "taken back from available and any rest kept as debt (withdrawal_id, distributor_id, member_id, amount, reference, "
    "from_available, debt)",
}


def subscribe(event: str, job_kind: str) -> Callable[[Handler], Handler]:
    def _register(fn: Handler) -> Handler:
        job_handler(job_kind)(fn)
        subs = _SUBSCRIBERS.setdefault(event, [])
        if job_kind not in subs:
            subs.append(job_kind)
        return fn

    return _register


def subscribers(event: str) -> list[str]:
    global _loaded
    if not _loaded:
        import_all_tasks()
        _loaded = True
    return list(_SUBSCRIBERS.get(event, []))


def emit(session: Session, merchant_id: int, event: str, payload: dict[str, Any], *, key: str) -> None:
    for kind in subscribers(event):
        enqueue(session, merchant_id, kind, {"event": event, **payload}, dedupe_key=f"{event}:{key}:{kind}")
