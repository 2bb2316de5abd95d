"""Admin API (area ``tags``): the tags an activity gives to the members who take part
(``siyu.members.activity_tags``)."""

from __future__ import annotations

from enum import Enum
from typing import Annotated

from fastapi import Depends, Path

from siyu.api.deps import DbSession, StaffPrincipal, require
from siyu.kit.bounds import INT64_MAX
from siyu.members import activity_tags
from siyu.members.activity_tags import ActivityTagsIn, ActivityTagsOut
from siyu.members.routers import admin

TAGS: list[str | Enum] = ["admin: member tags"]
ActivityId = Annotated[int, Path(ge=1, le=INT64_MAX)]


@admin.get("/activity-tags/{kind}/{activity_id}", response_model=ActivityTagsOut, tags=TAGS,
           summary="The tags an activity gives to its participants",
           description="`kind`: coupon (a coupon template), flash_sale, group_buy, bargain (a bargain activity), "
                       "promotion. Unknown kind: 404 `activity_kind_unknown`; an activity of another merchant: 404.")
def get_activity_tags(
    kind: str, activity_id: ActivityId, session: DbSession, p: StaffPrincipal = Depends(require("tags:read"))
) -> ActivityTagsOut:
    return activity_tags.get_rules(session, p.merchant_id, kind, activity_id)


@admin.put("/activity-tags/{kind}/{activity_id}", response_model=ActivityTagsOut, tags=TAGS,
           summary="Replace the tags an activity gives to its participants",
           description="Each entry `{tag_id, on}`: `on` is `joined` (coupon: received; bargain: started) or `paid` "
                       "(an order of the activity paid; the default except for coupons). Any bad entry (tag "
                       "unknown or deleted, rule tag, moment the kind has not) refuses the whole list: 422 "
                       "`activity_tags_invalid` with one field error per entry; nothing changes. Members are "
                       "tagged from then on with source `activity:<kind>:<id>` (not retroactively).")
def put_activity_tags(
    kind: str, activity_id: ActivityId, body: ActivityTagsIn, session: DbSession,
    p: StaffPrincipal = Depends(require("tags:write")),
) -> ActivityTagsOut:
    return activity_tags.replace_rules(session, p.merchant_id, kind, activity_id, body)
