"""Member jobs: rule tags and tag templates (daily, and after a member changes); the loyalty
task ``complete_profile`` when a profile becomes complete. Activity tags subscribe in
``siyu.members.activity_tags`` (imported here so the worker registers them)."""

from __future__ import annotations

from siyu.kit.events import subscribe
from siyu.members import activity_tags, profile, tags  # noqa: F401  (activity_tags: its event handlers)
from siyu.worker.registry import JobContext, job_handler


@job_handler(tags.SCHEDULE_KIND)
def daily_tag_rules(ctx: JobContext) -> None:
    tags.evaluate_all(ctx.session, ctx.merchant_id)


@job_handler("members.reevaluate_member")
def reevaluate_member(ctx: JobContext) -> None:
    tags.reevaluate_member(ctx.session, ctx.merchant_id, int(ctx.payload["member_id"]))


@subscribe("order.paid", "members.tags_on_order_paid")
def on_order_paid(ctx: JobContext) -> None:
    member_id = ctx.payload.get("member_id")
    if member_id is not None:
        tags.reevaluate_member(ctx.session, ctx.merchant_id, int(member_id))


@subscribe("member.profile_completed", "members.complete_profile_task")
def complete_profile_task(ctx: JobContext) -> None:
    profile.complete_profile_task(ctx.session, ctx.merchant_id, int(ctx.payload["member_id"]))
