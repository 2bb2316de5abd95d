"""Review jobs.

- ``review.created`` → ``reviews.first_review_task``: the member's first review completes the
  loyalty task ``first_review`` (once per member: the ref is the first review's id).
"""

from __future__ import annotations

from siyu.kit.events import subscribe
from siyu.reviews import service
from siyu.worker.registry import JobContext


@subscribe("review.created", "reviews.first_review_task")
def first_review_task(ctx: JobContext) -> None:
    service.complete_first_review_task(ctx.session, ctx.merchant_id, int(ctx.payload["member_id"]))
