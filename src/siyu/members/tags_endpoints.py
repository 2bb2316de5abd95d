"""Admin API (area ``tags``): tag groups, tags, tag templates; a member's tags and tag log;
bulk tagging by CSV and by segment definition."""

from __future__ import annotations

from enum import Enum

from fastapi import Depends, Response, status

from siyu.api.deps import DbSession, StaffPrincipal, require
from siyu.api.idempotency import idempotent
from siyu.members import repository as repo
from siyu.members import service, tags
from siyu.members.routers import admin
from siyu.members.schemas import (
    BulkCsvIn,
    BulkSegmentIn,
    BulkTagOut,
    MemberTagOut,
    TagGroupIn,
    TagGroupOut,
    TagIdsIn,
    TagIn,
    TagLogOut,
    TagOut,
    TagPatch,
    TagTemplateIn,
    TagTemplateOut,
)

TAGS: list[str | Enum] = ["admin: member tags"]


def _tag_out(tag: object, count: int | None = None) -> TagOut:
    out = TagOut.model_validate(tag)
    out.member_count = count
    return out


# -- groups ------------------------------------------------------------------------------------------------


@admin.get("/tag-groups", response_model=list[TagGroupOut], tags=TAGS)
def list_tag_groups(session: DbSession, p: StaffPrincipal = Depends(require("tags:read"))) -> list[TagGroupOut]:
    return [TagGroupOut.model_validate(g) for g in repo.tag_groups(session, p.merchant_id)]


@admin.post("/tag-groups", response_model=TagGroupOut, status_code=status.HTTP_201_CREATED, tags=TAGS)
@idempotent
def create_tag_group(body: TagGroupIn, session: DbSession, p: StaffPrincipal = Depends(require("tags:write"))) -> TagGroupOut:
    return TagGroupOut.model_validate(tags.create_group(session, p.merchant_id, body))


@admin.put("/tag-groups/{group_id}", response_model=TagGroupOut, tags=TAGS)
def update_tag_group(
    group_id: int, body: TagGroupIn, session: DbSession, p: StaffPrincipal = Depends(require("tags:write"))
) -> TagGroupOut:
    return TagGroupOut.model_validate(tags.update_group(session, p.merchant_id, group_id, body))


@admin.delete("/tag-groups/{group_id}", status_code=status.HTTP_204_NO_CONTENT, tags=TAGS,
              summary="Delete an empty tag group (409 tag_group_not_empty otherwise)")
def delete_tag_group(group_id: int, session: DbSession, p: StaffPrincipal = Depends(require("tags:write"))) -> Response:
    tags.delete_group(session, p.merchant_id, group_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# -- tags ----------------------------------------------------------------------------------------------------


@admin.get("/tags", response_model=list[TagOut], tags=TAGS, summary="Tags with their member counts")
def list_tags(
    session: DbSession, group_id: int | None = None, p: StaffPrincipal = Depends(require("tags:read"))
) -> list[TagOut]:
    return [_tag_out(t, n) for t, n in tags.list_tags(session, p.merchant_id, group_id)]


@admin.post("/tags", response_model=TagOut, status_code=status.HTTP_201_CREATED, tags=TAGS,
            summary="Create a tag (with a segment definition as `rule`: a rule tag, evaluated at once)")
@idempotent
def create_tag(body: TagIn, session: DbSession, p: StaffPrincipal = Depends(require("tags:write"))) -> TagOut:
    return _tag_out(tags.create_tag(session, p.merchant_id, body))


@admin.get("/tags/{tag_id}", response_model=TagOut, tags=TAGS)
def get_tag(tag_id: int, session: DbSession, p: StaffPrincipal = Depends(require("tags:read"))) -> TagOut:
    tag = tags.get_tag(session, p.merchant_id, tag_id)
    return _tag_out(tag, len(repo.tagged_member_ids(session, p.merchant_id, tag.id)))


@admin.patch("/tags/{tag_id}", response_model=TagOut, tags=TAGS)
def update_tag(tag_id: int, body: TagPatch, session: DbSession, p: StaffPrincipal = Depends(require("tags:write"))) -> TagOut:
    return _tag_out(tags.update_tag(session, p.merchant_id, tag_id, body))


@admin.delete("/tags/{tag_id}", status_code=status.HTTP_204_NO_CONTENT, tags=TAGS,
              summary="Delete a tag and its memberships (each removal is logged)")
def delete_tag(tag_id: int, session: DbSession, p: StaffPrincipal = Depends(require("tags:write"))) -> Response:
    tags.delete_tag(session, p.merchant_id, tag_id, actor=p.actor)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@admin.post("/tags/{tag_id}/bulk-csv", response_model=BulkTagOut, tags=TAGS,
            summary="Add or remove the tag for the members of a CSV (member_id or phone column)",
            description="`dry_run` reports per-row errors and changes nothing. A real run with any bad row is "
                        "refused as a whole (422 `bulk_tag_rows_invalid`, one field error `csv.rows[N]` per row) "
                        "and changes nothing. Rule tags cannot be set in bulk (409 `tag_is_rule`).")
def bulk_tag_csv(
    tag_id: int, body: BulkCsvIn, session: DbSession, p: StaffPrincipal = Depends(require("tags:write"))
) -> BulkTagOut:
    return tags.bulk_csv(session, p.merchant_id, tag_id, body, p.actor)


@admin.post("/tags/{tag_id}/bulk-segment", response_model=BulkTagOut, tags=TAGS,
            summary="Add the tag to every active member matching a segment definition")
def bulk_tag_segment(
    tag_id: int, body: BulkSegmentIn, session: DbSession, p: StaffPrincipal = Depends(require("tags:write"))
) -> BulkTagOut:
    return tags.bulk_segment(session, p.merchant_id, tag_id, body, p.actor)


# -- templates -------------------------------------------------------------------------------------------------


@admin.get("/tag-templates", response_model=list[TagTemplateOut], tags=TAGS)
def list_tag_templates(session: DbSession, p: StaffPrincipal = Depends(require("tags:read"))) -> list[TagTemplateOut]:
    return [TagTemplateOut.model_validate(t) for t in repo.tag_templates(session, p.merchant_id)]


@admin.post("/tag-templates", response_model=TagTemplateOut, status_code=status.HTTP_201_CREATED, tags=TAGS,
            summary="A month-offset tag template (bought in month M -> tag named for month M + offset)")
@idempotent
def create_tag_template(
    body: TagTemplateIn, session: DbSession, p: StaffPrincipal = Depends(require("tags:write"))
) -> TagTemplateOut:
    return TagTemplateOut.model_validate(tags.create_template(session, p.merchant_id, body))


@admin.post("/tag-templates/{template_id}/run", response_model=dict[str, int], tags=TAGS,
            summary="Apply the template to the purchases of its lookback window now; {added: n}")
def run_tag_template(
    template_id: int, session: DbSession, p: StaffPrincipal = Depends(require("tags:write"))
) -> dict[str, int]:
    tpl = tags.get_template(session, p.merchant_id, template_id)
    return {"added": tags.run_template(session, p.merchant_id, tpl)}


# -- one member --------------------------------------------------------------------------------------------------


@admin.get("/members/{member_id}/tags", response_model=list[MemberTagOut], tags=TAGS)
def member_tags(member_id: int, session: DbSession, p: StaffPrincipal = Depends(require("tags:read"))) -> list[MemberTagOut]:
    service.get_member(session, p.merchant_id, member_id)
    return tags.member_tag_list(session, p.merchant_id, member_id)


@admin.post("/members/{member_id}/tags", response_model=list[MemberTagOut], tags=TAGS,
            summary="Tag a member by hand (every id checked first; rule tags: 409 tag_is_rule); the member's tags")
def add_member_tags(
    member_id: int, body: TagIdsIn, session: DbSession, p: StaffPrincipal = Depends(require("tags:write"))
) -> list[MemberTagOut]:
    tags.manual_tag(session, p.merchant_id, member_id, body.tag_ids, p.actor)
    return tags.member_tag_list(session, p.merchant_id, member_id)


@admin.delete("/members/{member_id}/tags/{tag_id}", status_code=status.HTTP_204_NO_CONTENT, tags=TAGS)
def remove_member_tag(
    member_id: int, tag_id: int, session: DbSession, p: StaffPrincipal = Depends(require("tags:write"))
) -> Response:
    tags.manual_untag(session, p.merchant_id, member_id, tag_id, p.actor)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@admin.get("/members/{member_id}/tag-log", response_model=list[TagLogOut], tags=TAGS,
           summary="Every tag added to or removed from the member, oldest first")
def member_tag_log(member_id: int, session: DbSession, p: StaffPrincipal = Depends(require("tags:read"))) -> list[TagLogOut]:
    service.get_member(session, p.merchant_id, member_id)
    return [TagLogOut.model_validate(x) for x in repo.tag_log(session, p.merchant_id, member_id)]
