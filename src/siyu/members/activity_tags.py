"""Tags a member gets by taking part in an activity (活动参与标签).

A merchant sets, per activity, the tags to give to the members who take part
(``PUT /api/admin/v1/activity-tags/{kind}/{activity_id}``, which replaces the activity's list).
One rule is (activity kind, activity id, tag, moment):

============== ============================ ============================================== =========
kind           activity id                  ``joined`` (took part)                         default
============== ============================ ============================================== =========
``coupon``     a coupon template            a coupon of it entered the wallet (claimed,    joined
                                            given by an operator, from a code...)
``flash_sale`` a flash sale                 —                                              paid
``group_buy``  a group buy                  —                                              paid
``bargain``    a bargain activity           the member started a bargain                   paid
``promotion``  any promotion (limited-time, —                                              paid
               first-order, spend-and-save,
               spend-and-gift, add-on)
============== ============================ ============================================== =========

``paid`` (every kind): an order of the member that took part in the activity was paid — the
flash-sale / group-buy / bargain price, a promotion's discount or gift (its usage row), a coupon
of the template spent on it. A member who opened a team or submitted a flash-sale order and never
paid is not a participant; a cancelled order never tags. A paid order refunded later keeps the tag
(the member did take part).

The activity domains know nothing of this: the handlers below react to the events they already
emit (``coupon.issued``, ``bargain.started``, ``order.paid``) and read the paid order's pricing
breakdown (``orders.pricing`` codes such as ``flash_sale:12``) and promotion usage rows. Tagging
goes through ``tags.add_tag`` with source ``activity:<kind>:<id>``: idempotent (a retried job or a
second order tags once, with one log line) and the member's saved segments see the change as for
any tag. A rule whose tag was deleted later (tags are deleted outright) or has since become a rule
tag is skipped; the admin list leaves such rules out.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from siyu.kit.bounds import RefId
from siyu.kit.errors import DomainError, FieldError, not_found, register_messages
from siyu.kit.events import subscribe
from siyu.members import repository as repo
from siyu.members.models import ActivityTagRule, Tag
from siyu.worker.registry import JobContext

log = logging.getLogger(__name__)

JOINED = "joined"
PAID = "paid"
Moment = Literal["joined", "paid"]


@dataclass(frozen=True)
class Kind:
    moments: tuple[str, ...]
    default: str
    zh: str
    en: str


KINDS: dict[str, Kind] = {
    "coupon": Kind((JOINED, PAID), JOINED, "优惠券", "Coupon template"),
    "flash_sale": Kind((PAID,), PAID, "秒杀活动", "Flash sale"),
    "group_buy": Kind((PAID,), PAID, "拼团活动", "Group buy"),
    "bargain": Kind((JOINED, PAID), PAID, "砍价活动", "Bargain activity"),
    "promotion": Kind((PAID,), PAID, "促销活动", "Promotion"),
}

#: pricing codes of the promotions domain (``<promotion kind>:<promotion id>``)
_PROMOTION_CODES = ("limited_discount", "first_order", "spend_save", "spend_gift", "add_on")

register_messages(
    {
        "activity_kind_unknown": (
            404, "活动类型 {kind} 不存在（可选：coupon、flash_sale、group_buy、bargain、promotion）",
            "Unknown activity kind {kind} (one of coupon, flash_sale, group_buy, bargain, promotion)",
        ),
        "activity_tags_invalid": (
            422, "有 {count} 个标签设置无效，未做任何更改", "{count} tag setting(s) are invalid; nothing was changed",
        ),
    }
)


class ActivityTagIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tag_id: RefId
    on: Moment | None = Field(
        default=None,
        description="joined (coupon: received; bargain: started) or paid (an order of the activity paid); "
        "default: joined for coupon templates, paid otherwise",
    )


class ActivityTagsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tags: list[ActivityTagIn] = Field(max_length=50, description="the whole list; [] removes every rule")


class ActivityTagOut(BaseModel):
    tag_id: int
    name: str
    group_id: int
    on: str


class ActivityTagsOut(BaseModel):
    activity_kind: str
    activity_id: int
    tags: list[ActivityTagOut]


# -- queries ---------------------------------------------------------------------------------------------


def _activity_model(kind: str) -> Any:
    from siyu.bargains.models import BargainActivity
    from siyu.coupons.models import CouponTemplate
    from siyu.flash_sales.models import FlashSale
    from siyu.group_buys.models import GroupBuy
    from siyu.promotions.models import Promotion

    return {"coupon": CouponTemplate, "flash_sale": FlashSale, "group_buy": GroupBuy, "bargain": BargainActivity,
            "promotion": Promotion}[kind]


def _activity_exists(session: Session, merchant_id: int, kind: str, activity_id: int) -> bool:
    model = _activity_model(kind)
    return session.scalar(select(model.id).where(model.merchant_id == merchant_id, model.id == activity_id)) is not None


def _rules(session: Session, merchant_id: int, kind: str, activity_id: int, moment: str | None = None) -> list[ActivityTagRule]:
    stmt = select(ActivityTagRule).where(
        ActivityTagRule.merchant_id == merchant_id, ActivityTagRule.activity_kind == kind,
        ActivityTagRule.activity_id == activity_id,
    )
    if moment is not None:
        stmt = stmt.where(ActivityTagRule.moment == moment)
    return list(session.scalars(stmt.order_by(ActivityTagRule.id)))


def _tags(session: Session, merchant_id: int, tag_ids: set[int]) -> dict[int, Tag]:
    if not tag_ids:
        return {}
    return {t.id: t for t in session.scalars(select(Tag).where(Tag.merchant_id == merchant_id, Tag.id.in_(tag_ids)))}


# -- configuration ----------------------------------------------------------------------------------------


def _kind(session: Session, merchant_id: int, kind: str, activity_id: int) -> Kind:
    spec = KINDS.get(kind)
    if spec is None:
        raise DomainError("activity_kind_unknown", kind=kind)
    if not _activity_exists(session, merchant_id, kind, activity_id):
        raise not_found(spec.zh, spec.en)
    return spec


def get_rules(session: Session, merchant_id: int, kind: str, activity_id: int) -> ActivityTagsOut:
    """The activity's tags; rules whose tag is gone are left out. Unknown kind or activity → 404."""
    _kind(session, merchant_id, kind, activity_id)
    rules = _rules(session, merchant_id, kind, activity_id)
    tags = _tags(session, merchant_id, {r.tag_id for r in rules})
    return ActivityTagsOut(
        activity_kind=kind, activity_id=activity_id,
        tags=[ActivityTagOut(tag_id=r.tag_id, name=tags[r.tag_id].name, group_id=tags[r.tag_id].group_id, on=r.moment)
              for r in rules if r.tag_id in tags],
    )


def replace_rules(session: Session, merchant_id: int, kind: str, activity_id: int, body: ActivityTagsIn) -> ActivityTagsOut:
    """Replace the activity's tag list. Every entry is checked first: a tag of another merchant or
    deleted (``tag_not_found``), a rule tag (``tag_is_rule``: its rule would take it off again) or a
    moment the kind has not (``activity_tag_moment_unsupported``) refuses the whole list with 422
    ``activity_tags_invalid`` (one field error per entry) and changes nothing."""
    spec = _kind(session, merchant_id, kind, activity_id)
    tags = _tags(session, merchant_id, {e.tag_id for e in body.tags})
    errors: list[FieldError] = []
    wanted: dict[tuple[int, str], None] = {}
    for i, entry in enumerate(body.tags):
        moment = entry.on or spec.default
        tag = tags.get(entry.tag_id)
        if tag is None:
            errors.append(FieldError(f"tags.{i}.tag_id", "tag_not_found", f"no tag {entry.tag_id}",
                                     f"标签 {entry.tag_id} 不存在"))
        elif tag.rule is not None:
            errors.append(FieldError(f"tags.{i}.tag_id", "tag_is_rule",
                                     f"tag {entry.tag_id} is a rule tag, maintained by its rule",
                                     f"标签 {entry.tag_id} 是规则标签，由规则自动维护"))
        if moment not in spec.moments:
            errors.append(FieldError(f"tags.{i}.on", "activity_tag_moment_unsupported",
                                     f"a {kind} tag is given on {' or '.join(spec.moments)}",
                                     f"{spec.zh}标签只能在 {' 或 '.join(spec.moments)} 时打上"))
        wanted[(entry.tag_id, moment)] = None
    if errors:
        raise DomainError("activity_tags_invalid", count=len(errors), fields=errors)
    have = {(r.tag_id, r.moment): r for r in _rules(session, merchant_id, kind, activity_id)}
    gone = [r.id for key, r in have.items() if key not in wanted]
    if gone:
        session.execute(delete(ActivityTagRule).where(ActivityTagRule.merchant_id == merchant_id,
                                                      ActivityTagRule.id.in_(gone)))
    for tag_id, moment in wanted:
        if (tag_id, moment) not in have:
            session.add(ActivityTagRule(merchant_id=merchant_id, activity_kind=kind, activity_id=activity_id,
                                        tag_id=tag_id, moment=moment))
    session.flush()
    return get_rules(session, merchant_id, kind, activity_id)


# -- tagging -------------------------------------------------------------------------------------------------


def tag_participant(session: Session, merchant_id: int, member_id: int, kind: str, activity_id: int, moment: str) -> int:
    """Give the member the activity's tags for ``moment``; returns how many were new. Idempotent."""
    from siyu.members.tags import add_tag

    rules = _rules(session, merchant_id, kind, activity_id, moment)
    if not rules or repo.by_id(session, merchant_id, member_id) is None:
        return 0
    tags = _tags(session, merchant_id, {r.tag_id for r in rules})
    added = 0
    for rule in rules:
        tag = tags.get(rule.tag_id)
        if tag is None or tag.rule is not None:
            log.info("activity tag rule %s skipped: tag %s is gone or is a rule tag", rule.id, rule.tag_id)
            continue
        if add_tag(session, merchant_id, member_id, tag.id, source=f"activity:{kind}:{activity_id}"):
            added += 1
    return added


def order_activities(session: Session, merchant_id: int, order_id: int) -> tuple[int | None, list[tuple[str, int]]]:
    """``(member_id, [(kind, activity id)...])`` of a paid order (nothing for an order never paid)."""
    from siyu.bargains.models import Bargain
    from siyu.orders.models import Order
    from siyu.promotions.models import PromotionUsage

    order = session.scalar(select(Order).where(Order.merchant_id == merchant_id, Order.id == order_id))
    if order is None or order.paid_at is None:
        return None, []
    found: dict[tuple[str, int], None] = {}
    bargain_ids: list[int] = []
    for row in order.pricing or []:
        prefix, _, raw = str(row.get("code") or "").partition(":")
        if not raw.isdigit():
            continue
        details = row.get("details") or {}
        if prefix in ("flash_sale", "group_buy"):
            found[(prefix, int(raw))] = None
        elif prefix in _PROMOTION_CODES:
            found[("promotion", int(raw))] = None
        elif prefix == "bargain":
            bargain_ids.append(int(raw))
        elif prefix == "coupon" and isinstance(details.get("template_id"), int):
            found[("coupon", int(details["template_id"]))] = None
    if bargain_ids:
        for activity_id in session.scalars(select(Bargain.activity_id).where(
                Bargain.merchant_id == merchant_id, Bargain.id.in_(bargain_ids))):
            found[("bargain", int(activity_id))] = None
    for promotion_id in session.scalars(select(PromotionUsage.promotion_id).where(
            PromotionUsage.merchant_id == merchant_id, PromotionUsage.order_id == order_id).order_by(PromotionUsage.id)):
        found[("promotion", int(promotion_id))] = None
    return order.member_id, list(found)


def _has_rules(session: Session, merchant_id: int, moment: str) -> bool:
    """Whether the merchant tags any activity's participants at ``moment`` (most merchants don't:
    then a paid order costs this one query, not reading its pricing and usages)."""
    return session.scalar(select(ActivityTagRule.id).where(
        ActivityTagRule.merchant_id == merchant_id, ActivityTagRule.moment == moment).limit(1)) is not None


def tag_order_participants(session: Session, merchant_id: int, order_id: int) -> int:
    if not _has_rules(session, merchant_id, PAID):
        return 0
    member_id, activities = order_activities(session, merchant_id, order_id)
    if member_id is None:
        return 0
    return sum(tag_participant(session, merchant_id, member_id, kind, aid, PAID) for kind, aid in activities)


# -- event handlers (imported by ``siyu.members.tasks``) ---------------------------------------------------------


@subscribe("order.paid", "members.activity_tags_on_order_paid")
def on_order_paid(ctx: JobContext) -> None:
    tag_order_participants(ctx.session, ctx.merchant_id, int(ctx.payload["order_id"]))


@subscribe("coupon.issued", "members.activity_tags_on_coupon_issued")
def on_coupon_issued(ctx: JobContext) -> None:
    tag_participant(ctx.session, ctx.merchant_id, int(ctx.payload["member_id"]), "coupon",
                    int(ctx.payload["template_id"]), JOINED)


@subscribe("bargain.started", "members.activity_tags_on_bargain_started")
def on_bargain_started(ctx: JobContext) -> None:
    tag_participant(ctx.session, ctx.merchant_id, int(ctx.payload["member_id"]), "bargain",
                    int(ctx.payload["activity_id"]), JOINED)
