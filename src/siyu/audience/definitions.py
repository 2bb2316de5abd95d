"""Segment definitions: a typed JSON boolean tree of conditions, validated on write.

Example — "silent members in Hangzhou who viewed frames twice in the last 30 days and did not
order"::

    {"type": "and", "nodes": [
        {"type": "stage", "in": ["silent"]},
        {"type": "attribute", "field": "city", "op": "eq", "value": "杭州市"},
        {"type": "behavior", "event": "product_view", "op": "gte", "count": 2, "within_days": 30,
         "where": [{"property": "category_id", "op": "eq", "value": 1}]},
        {"type": "not", "node": {"type": "purchase", "within_days": 30}}
    ]}
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from siyu.audience.models import STAGES
from siyu.kit.validation_messages import register_field_messages

# the definition's own field codes, with their zh-CN and English text (a 422's field messages)
register_field_messages({
    "segment_unknown_field": ("未知字段 {field}；可用字段：{known}", "unknown field {field}; known: {known}"),
    "segment_days_needed": ("{op} 需要日期字段和不小于 0 的天数", "{op} needs a date field and a number of days >= 0"),
    "segment_list_needed": ("{op} 需要非空列表", "{op} needs a non-empty list"),
    "segment_between_pair": ("between 需要 [下限, 上限] 两个值", "between needs [low, high]"),
    "segment_contains_text": ("contains 只能用于文本字段", "contains works on text fields"),
    "segment_value_needed": ("{op} 需要 value", "{op} needs a value"),
    "segment_date_invalid": ("应为 ISO 8601 日期时间（如 2026-01-01T00:00:00+08:00）",
                             "Must be an ISO 8601 date-time (e.g. 2026-01-01T00:00:00+08:00)"),
    "segment_unknown_stage": ("未知的生命周期阶段 {bad}；可用：{stages}", "unknown stage(s) {bad}; stages: {stages}"),
    "segment_window_needed": ("需要 within_days 或 since", "give within_days or since"),
})


def _refuse(code: str, **ctx: Any) -> PydanticCustomError:
    """A definition refused with its field ``code`` (text in ``register_field_messages`` above)."""
    return PydanticCustomError(code, code, ctx)

MEMBER_FIELDS = {
    "gender": "str",
    "province": "str",
    "city": "str",
    "registration_channel": "str",
    "registered_at": "datetime",
    "phone": "str",
    "nickname": "str",
    "staff_id": "int",
    "status": "str",
}
STATS_FIELDS = {
    "paid_orders": "int",
    "paid_total": "int",
    "refunded_total": "int",
    "first_order_at": "datetime",
    "second_order_at": "datetime",
    "last_order_at": "datetime",
    "last_visit_at": "datetime",
    "product_views": "int",
    "cart_adds": "int",
    "favorites": "int",
    "shares": "int",
    "rfm_r": "int",
    "rfm_f": "int",
    "rfm_m": "int",
    "rfm_tier": "str",
    "p_alive": "float",
    "expected_purchases_90d": "float",
    "predicted_clv": "int",
    "clv_percentile": "float",
    "super_score": "float",
}
FIELDS = {**MEMBER_FIELDS, **STATS_FIELDS}

AttrOp = Literal[
    "eq", "ne", "in", "not_in", "contains", "gt", "gte", "lt", "lte", "between", "is_set", "is_not_set",
    "within_last_days", "before_days_ago",
]


class _Node(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class AttributeNode(_Node):
    type: Literal["attribute"]
    field: str
    op: AttrOp
    value: Any = None

    @model_validator(mode="after")
    def _check(self) -> AttributeNode:
        kind = FIELDS.get(self.field)
        if kind is None:
            raise _refuse("segment_unknown_field", field=self.field, known=", ".join(sorted(FIELDS)))
        op, v = self.op, self.value
        if op in ("is_set", "is_not_set"):
            return self
        if op in ("within_last_days", "before_days_ago"):
            if kind != "datetime" or not isinstance(v, int) or v < 0:
                raise _refuse("segment_days_needed", op=op)
            return self
        if op in ("in", "not_in"):
            if not isinstance(v, list) or not v:
                raise _refuse("segment_list_needed", op=op)
            return self
        if op == "between":
            if not isinstance(v, list) or len(v) != 2:
                raise _refuse("segment_between_pair")
            return self
        if op == "contains" and kind != "str":
            raise _refuse("segment_contains_text")
        if v is None:
            raise _refuse("segment_value_needed", op=op)
        if kind == "datetime" and isinstance(v, str):
            try:
                dt.datetime.fromisoformat(v)
            except ValueError:
                raise _refuse("segment_date_invalid") from None
        return self


class StageNode(_Node):
    type: Literal["stage"]
    in_: list[str] = Field(alias="in", min_length=1)

    @model_validator(mode="after")
    def _check(self) -> StageNode:
        bad = [s for s in self.in_ if s not in STAGES]
        if bad:
            raise _refuse("segment_unknown_stage", bad=", ".join(bad), stages=", ".join(STAGES))
        return self


class PropertyFilter(_Node):
    property: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    op: Literal["eq", "ne", "in", "gt", "gte", "lt", "lte"]
    value: Any


class BehaviorNode(_Node):
    """Did event E at least / at most / exactly N times within the last D days (or between dates)."""

    type: Literal["behavior"]
    event: str = Field(min_length=1, max_length=64)
    op: Literal["gte", "lte", "eq"] = "gte"
    count: int = Field(default=1, ge=0, le=100_000)
    within_days: int | None = Field(default=None, ge=1, le=3650)
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    where: list[PropertyFilter] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check(self) -> BehaviorNode:
        if self.within_days is None and self.since is None:
            raise _refuse("segment_window_needed")
        return self


class PurchaseNode(_Node):
    """Paid orders in a window, optionally of given products/categories, with count/amount floors."""

    type: Literal["purchase"]
    within_days: int | None = Field(default=None, ge=1, le=3650)
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    product_ids: list[int] = Field(default_factory=list)
    category_ids: list[int] = Field(default_factory=list)
    min_orders: int = Field(default=1, ge=1)
    min_amount: int | None = Field(default=None, ge=0, description="fen, summed over the matching lines")


class SequenceNode(_Node):
    """Did ``first`` in the window and then did NOT do ``then_not`` within ``within_hours`` of it."""

    type: Literal["sequence"]
    first: str = Field(min_length=1, max_length=64)
    then_not: str = Field(min_length=1, max_length=64)
    within_hours: int = Field(ge=1, le=24 * 90)
    window_days: int = Field(default=30, ge=1, le=3650)


class RandomBucketNode(_Node):
    """A stable x% of members (hash of member id and salt): holdouts and A/B tests."""

    type: Literal["random_bucket"]
    percent: int = Field(ge=0, le=100)
    salt: int = Field(default=0, ge=0, le=1_000_000)


class TagNode(_Node):
    """Carries (``has``: any of) or does not carry (``has_not``: none of) the member tags."""

    type: Literal["tag"]
    op: Literal["has", "has_not"] = "has"
    tag_ids: list[int] = Field(min_length=1, max_length=100)


class SuperUserNode(_Node):
    """In the merchant's top ``super_user_top_percent`` by super-user score (``is``: false for
    everyone else, buyers or not). The score is a percentile (0..100) among the buyers, so the
    top 5 % are the members scoring at least 95."""

    type: Literal["super_user"]
    is_: bool = Field(default=True, alias="is")


class RepurchaseOverdueNode(_Node):
    """A buyer due back and not seen: the last paid order is older than the merchant's
    ``repurchase_overdue_days`` (``threshold``), or older than the member's own typical interval
    between paid orders, (last - first) / (orders - 1), for members with two or more
    (``own_interval``); ``either`` (the default) is true when one of them is."""

    type: Literal["repurchase_overdue"]
    basis: Literal["either", "threshold", "own_interval"] = "either"


class CustomFieldNode(_Node):
    """A merchant-defined custom field of the member (``members.custom_fields``, keyed by the
    field's ``key``): compared as the value's JSON type (a number compares as a number; a date
    field holds ``YYYY-MM-DD`` text, which orders as dates). An unknown key is refused on
    preview and save (``segment_unknown_custom_field``)."""

    type: Literal["custom_field"]
    key: str = Field(min_length=1, max_length=40)
    op: Literal["eq", "ne", "in", "gt", "gte", "lt", "lte", "is_set", "is_not_set"]
    value: Any = None

    @model_validator(mode="after")
    def _check(self) -> CustomFieldNode:
        if self.op in ("is_set", "is_not_set"):
            return self
        if self.op == "in" and (not isinstance(self.value, list) or not self.value):
            raise _refuse("segment_list_needed", op=self.op)
        if self.value is None:
            raise _refuse("segment_value_needed", op=self.op)
        return self


class RecordNode(_Node):
    """Has a member record of the type ``record_type`` (its key) whose latest version matches
    every ``where`` filter on the record's data (none: any record of the type). ``has``: false
    for the members without such a record."""

    type: Literal["record"]
    record_type: str = Field(min_length=1, max_length=40)
    where: list[PropertyFilter] = Field(default_factory=list, max_length=20)
    has: bool = True


class ConsentNode(_Node):
    """Has granted (``granted``: true, the default) or not granted (no consent recorded, or
    revoked) marketing on ``channel`` (the channels of ``members.schemas.CONSENT_CHANNELS``)."""

    type: Literal["consent"]
    channel: Literal["subscribe_message", "sms", "email", "wecom", "official_account"]
    granted: bool = True


class LevelNode(_Node):
    """The member's level (loyalty): the one whose benefits apply, i.e. the higher-ranked of the
    level earned by the rules and an active paid card's level. ``in``: is one of
    ``level_ids``; ``at_least``: ranks at or above the lowest-ranked of them; ``none``: holds
    no level (``level_ids`` empty). Unknown level ids are refused on preview and save."""

    type: Literal["level"]
    op: Literal["in", "at_least", "none"] = "in"
    level_ids: list[int] = Field(default_factory=list, max_length=50)

    @model_validator(mode="after")
    def _check(self) -> LevelNode:
        if self.op != "none" and not self.level_ids:
            raise _refuse("segment_list_needed", op=self.op)
        return self


class AndNode(_Node):
    type: Literal["and"]
    nodes: list[Node] = Field(min_length=1, max_length=50)


class OrNode(_Node):
    type: Literal["or"]
    nodes: list[Node] = Field(min_length=1, max_length=50)


class NotNode(_Node):
    type: Literal["not"]
    node: Node


Node = Annotated[
    AndNode | OrNode | NotNode | AttributeNode | StageNode | BehaviorNode | PurchaseNode | SequenceNode | RandomBucketNode
    | TagNode | SuperUserNode | RepurchaseOverdueNode | CustomFieldNode | RecordNode | ConsentNode
    | LevelNode,
    Field(discriminator="type"),
]


class SegmentDefinition(BaseModel):
    model_config = ConfigDict(extra="forbid")
    root: Node


for _model in (AndNode, OrNode, NotNode, SegmentDefinition):
    _model.model_rebuild()
