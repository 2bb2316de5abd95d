"""Member request and response bodies."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from siyu.kit.bounds import RefId
from siyu.kit.errors import FieldError
from siyu.kit.validation_messages import register_field_messages

register_field_messages({
    "field_options_needed": ("选择题字段需要选项", "Choice fields need options"),
    "field_options_repeated": ("选项不能重复", "Options must be unique"),
    "field_options_not_choice": ("只有选择题字段才有选项", "Only choice fields take options"),
    "field_min_max_not_number": ("min/max 只适用于数字字段", "min/max apply to number fields"),
    "field_min_above_max": ("min 不能大于 max", "min is above max"),
    "birthday_out_of_range": ("生日应在 1900 年到今天之间", "A birthday is between 1900 and today"),
    "field_keys_repeated": ("字段 key 不能重复", "Field keys must be unique"),
    # the token is written in words: a message's braces are placeholders (and must all be filled)
    "tag_template_month_missing": (
        "tag_name_template 须包含月份占位符：花括号括起的 month", "tag_name_template must contain month in curly braces",
    ),
})


class WechatLoginIn(BaseModel):
    """Needs the ``X-Siyu-Merchant`` header. The code is checked with WeChat (400
    ``wechat_code_invalid`` when it refuses it); a merchant in sandbox mode takes only codes
    ``sandbox-<name>`` (a non-empty name)."""

    code: str = Field(
        min_length=1, max_length=128,
        description="the code from wx.login(); sandbox merchants: sandbox-<name>",
        examples=["sandbox-alice"],
    )
    channel: str | None = Field(default=None, max_length=64, description="scene value of the entry (channel code)")
    nickname: str | None = Field(default=None, max_length=64)
    avatar_url: str | None = Field(default=None, max_length=500)
    inviter: str | None = Field(
        default=None, max_length=16, description="invite code from the share link (?inviter=CODE); binds a new member"
    )
    anonymous_id: str | None = Field(
        default=None, min_length=1, max_length=64,
        description="the device id the mini-program sent with its events before login: that history becomes the "
        "member's at once (as POST /api/events/v1/identify does)",
    )


class PhoneBindIn(BaseModel):
    """The code is checked with WeChat (400 ``wechat_code_invalid`` when it refuses it); a merchant in
    sandbox mode takes only codes starting with ``sandbox-`` (its digits make the phone number)."""

    code: str = Field(
        min_length=1, max_length=128,
        description="the code from the getPhoneNumber button; sandbox merchants: sandbox-...",
        examples=["sandbox-13800000001"],
    )


class CustomerTokenOut(BaseModel):
    token: str
    token_type: str = "bearer"
    expires_at: dt.datetime | None
    member_id: int
    is_new: bool


class MemberOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    nickname: str | None
    avatar_url: str | None
    phone: str | None
    gender: str | None
    province: str | None
    city: str | None
    registered_at: dt.datetime
    registration_channel: str | None
    staff_id: int | None
    status: str


class MemberAdminOut(MemberOut):
    openid: str | None
    unionid: str | None
    last_login_at: dt.datetime | None


# -- merchant-defined fields (custom profile fields and record fields) -------------------------

FIELD_TYPES = ("text", "number", "date", "choice", "multi_choice", "bool")
FieldType = Literal["text", "number", "date", "choice", "multi_choice", "bool"]
KEY_PATTERN = r"^[a-z][a-z0-9_]{0,39}$"


class FieldDef(BaseModel):
    """One typed field: a custom profile field or a field of a record type. ``choice`` and
    ``multi_choice`` fields need ``options`` (unique); other types take none. ``min``/``max`` apply
    to ``number`` fields only, with ``min`` ≤ ``max`` (else 422 ``value_error`` on the field)."""

    model_config = ConfigDict(extra="forbid", from_attributes=True)
    key: str = Field(pattern=KEY_PATTERN)
    label: str = Field(min_length=1, max_length=64)
    type: FieldType
    options: list[str] = Field(default_factory=list, max_length=100)
    required: bool = False
    min: float | None = Field(default=None, description="number fields: lowest allowed value")
    max: float | None = Field(default=None, description="number fields: highest allowed value")
    max_length: int = Field(default=500, ge=1, le=5000, description="text fields")

    @model_validator(mode="after")
    def _check(self) -> FieldDef:
        if self.type in ("choice", "multi_choice"):
            if not self.options:
                raise PydanticCustomError("field_options_needed", "Choice fields need options")
            if len(set(self.options)) != len(self.options):
                raise PydanticCustomError("field_options_repeated", "Options must be unique")
        elif self.options:
            raise PydanticCustomError("field_options_not_choice", "Only choice fields take options")
        if (self.min is not None or self.max is not None) and self.type != "number":
            raise PydanticCustomError("field_min_max_not_number", "min/max apply to number fields")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise PydanticCustomError("field_min_above_max", "min is above max")
        return self


@dataclass(frozen=True)
class ValueProblem:
    """Why a value does not fit its field, in both languages; ``expected``: a wrong type (code
    ``<type>_expected``) rather than a value out of range (``out_of_range``)."""

    message: str
    message_zh: str
    expected: bool = False


def check_value(fd: FieldDef, value: Any) -> tuple[Any, ValueProblem | None]:
    """Coerce ``value`` to the field's type; returns (json value, the problem or None)."""
    if value is None:
        return None, None
    t = fd.type
    if t == "text":
        if not isinstance(value, str):
            return None, ValueProblem(message="expected text", message_zh="应为文本", expected=True)
        if len(value) > fd.max_length:
            return None, ValueProblem(message=f"at most {fd.max_length} characters", message_zh=f"最多 {fd.max_length} 个字符")
        return value, None
    if t == "number":
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None, ValueProblem(message="expected a number", message_zh="应为数字", expected=True)
        if fd.min is not None and value < fd.min:
            return None, ValueProblem(message=f"must be ≥ {fd.min:g}", message_zh=f"不能小于 {fd.min:g}")
        if fd.max is not None and value > fd.max:
            return None, ValueProblem(message=f"must be ≤ {fd.max:g}", message_zh=f"不能大于 {fd.max:g}")
        return value, None
    if t == "date":
        bad_date = ValueProblem(message="expected a date YYYY-MM-DD", message_zh="应为日期（YYYY-MM-DD）", expected=True)
        if not isinstance(value, str):
            return None, bad_date
        try:
            return dt.date.fromisoformat(value).isoformat(), None
        except ValueError:
            return None, bad_date
    if t == "bool":
        if not isinstance(value, bool):
            return None, ValueProblem(message="expected true or false", message_zh="应为 true 或 false", expected=True)
        return value, None
    if t == "choice":
        if not isinstance(value, str) or value not in fd.options:
            return None, ValueProblem(message=f"expected one of {fd.options}", message_zh=f"应为以下选项之一：{fd.options}", expected=True)
        return value, None
    # multi_choice
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        return None, ValueProblem(message="expected a list of options", message_zh="应为选项列表", expected=True)
    bad = [v for v in value if v not in fd.options]
    if bad:
        return None, ValueProblem(message=f"unknown option(s) {bad}; options: {fd.options}", message_zh=f"未知选项 {bad}；可选项：{fd.options}")
    return list(dict.fromkeys(value)), None


def required_error(path: str) -> FieldError:
    return FieldError(path, "required", "this field is required", "此项为必填")


def check_values(
    defs: list[FieldDef], values: dict[str, Any], *, prefix: str, check_required: bool = True
) -> tuple[dict[str, Any], list[FieldError]]:
    """Validate a dict of values against field definitions.

    Returns the cleaned values and the field errors (English and zh-CN): unknown keys, wrong
    types and (with ``check_required``) missing required fields.
    """
    by_key = {d.key: d for d in defs}
    clean: dict[str, Any] = {}
    errors: list[FieldError] = []
    for key, raw in values.items():
        fd = by_key.get(key)
        if fd is None:
            errors.append(FieldError(f"{prefix}.{key}", "unknown_field", "no such field", "没有这个字段"))
            continue
        value, problem = check_value(fd, raw)
        if problem:
            code = f"{fd.type}_expected" if problem.expected else "out_of_range"
            errors.append(FieldError(f"{prefix}.{key}", code, problem.message, problem.message_zh))
        else:
            clean[key] = value
    if check_required:
        failed = {e.path for e in errors}
        for fd in defs:
            path = f"{prefix}.{fd.key}"
            if fd.required and clean.get(fd.key) in (None, "", []) and path not in failed:
                errors.append(required_error(path))
    return clean, errors


# -- profile --------------------------------------------------------------------------------------

GENDERS = ("male", "female", "unknown")
INCOME_BANDS = ("lt_3k", "3k_5k", "5k_10k", "10k_20k", "20k_50k", "gte_50k")
AGE_BANDS = ("lt_18", "18_24", "25_34", "35_44", "45_54", "55_plus")


class CustomFieldDefIn(FieldDef):
    """A custom profile field. ``choice`` and ``multi_choice`` fields need ``options`` (unique);
    other types take none. ``min``/``max`` apply to ``number`` fields only, with ``min`` ≤ ``max``
    (else 422 on the field). ``key`` is unique in the merchant (else 409 ``custom_field_key_taken``)
    and never changes: a PUT with another key is 422 ``immutable`` at ``body.key``."""

    position: int = 0


class CustomFieldDefOut(CustomFieldDefIn):
    id: int


class ProfilePatch(BaseModel):
    """Fields a member (store) or an operator (admin) may change. Absent keys are left alone;
    ``null`` clears. ``custom_fields`` is merged key by key (``null`` clears a key); its keys and
    values must match the merchant's custom field definitions (``GET /custom-fields``), else 422
    ``custom_field_invalid`` with a field error per key. ``birthday`` lies between 1900-01-01 and
    today."""

    model_config = ConfigDict(extra="forbid")
    nickname: str | None = Field(default=None, max_length=64)
    avatar_url: str | None = Field(default=None, max_length=500)
    gender: Literal["male", "female", "unknown"] | None = None
    birthday: dt.date | None = Field(default=None, description="from 1900-01-01 to today")
    province: str | None = Field(default=None, max_length=32)
    city: str | None = Field(default=None, max_length=32)
    occupation: str | None = Field(default=None, max_length=64)
    income_band: Literal["lt_3k", "3k_5k", "5k_10k", "10k_20k", "20k_50k", "gte_50k"] | None = None
    interests: list[Annotated[str, Field(min_length=1, max_length=32)]] | None = Field(default=None, max_length=30)
    custom_fields: dict[str, Any] | None = Field(
        default=None, description="keys and values as the merchant's custom field definitions allow; null clears a key"
    )

    @field_validator("birthday")
    @classmethod
    def _not_future(cls, v: dt.date | None) -> dt.date | None:
        if v is not None and (v > dt.date.today() or v.year < 1900):
            raise PydanticCustomError("birthday_out_of_range", "A birthday is between 1900 and today")
        return v


class ProfileOut(BaseModel):
    id: int
    nickname: str | None
    avatar_url: str | None
    phone: str | None
    gender: str | None
    birthday: dt.date | None
    age_band: str | None
    province: str | None
    city: str | None
    occupation: str | None
    income_band: str | None
    interests: list[str]
    custom_fields: dict[str, Any]
    registered_at: dt.datetime
    registration_channel: str | None
    staff_id: int | None
    status: str


# -- records --------------------------------------------------------------------------------------


class RecordTypeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    key: str = Field(pattern=KEY_PATTERN)
    label: str = Field(min_length=1, max_length=64)
    description: str | None = Field(default=None, max_length=500)
    fields: list[FieldDef] = Field(min_length=1, max_length=60)

    @model_validator(mode="after")
    def _unique_keys(self) -> RecordTypeIn:
        keys = [f.key for f in self.fields]
        if len(set(keys)) != len(keys):
            raise PydanticCustomError("field_keys_repeated", "Field keys must be unique")
        return self


class RecordTypePatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    label: str | None = Field(default=None, min_length=1, max_length=64)
    description: str | None = Field(default=None, max_length=500)
    fields: list[FieldDef] | None = Field(
        default=None, min_length=1, max_length=60,
        description="replaces the fields of new versions; keys unique (else 422 duplicate_key on body.fields)",
    )
    active: bool | None = None


class RecordTypeOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    key: str
    label: str
    description: str | None
    fields: list[dict[str, Any]]
    active: bool


class RecordIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    data: dict[str, Any]
    note: str | None = Field(default=None, max_length=500)


class RecordOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    member_id: int
    record_type_id: int
    version: int
    data: dict[str, Any]
    note: str | None
    actor_type: str
    actor_id: int | None
    created_at: dt.datetime


class LatestRecordOut(RecordOut):
    record_type_key: str
    record_type_label: str


# -- consent --------------------------------------------------------------------------------------

CONSENT_CHANNELS = ("subscribe_message", "sms", "email", "wecom", "official_account")
ConsentChannel = Literal["subscribe_message", "sms", "email", "wecom", "official_account"]


class ConsentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    consents: dict[ConsentChannel, bool] = Field(min_length=1)
    source: str | None = Field(default=None, max_length=40, pattern=r"^[a-z0-9_:.-]+$")


class ConsentOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    channel: str
    granted: bool
    source: str | None
    granted_at: dt.datetime | None
    revoked_at: dt.datetime | None
    updated_at: dt.datetime | None


class DeleteIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    confirm: Literal[True] = Field(description="must be true: the deletion cannot be undone")


class DeleteOut(BaseModel):
    member_id: int
    status: str
    anonymised_at: dt.datetime
    summary: dict[str, Any]


# -- tags -----------------------------------------------------------------------------------------


class TagGroupIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=40)
    description: str | None = Field(default=None, max_length=200)


class TagGroupOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    name: str
    description: str | None


class TagIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    group_id: int
    name: str = Field(min_length=1, max_length=40)
    description: str | None = Field(default=None, max_length=200)
    rule: dict[str, Any] | None = Field(default=None, description="segment definition: makes this a rule tag")


class TagPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(default=None, min_length=1, max_length=40)
    description: str | None = Field(default=None, max_length=200)
    rule: dict[str, Any] | None = None


class TagOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    group_id: int
    name: str
    description: str | None
    rule: dict[str, Any] | None
    template_id: int | None
    rule_evaluated_at: dt.datetime | None
    member_count: int | None = None


class MemberTagOut(BaseModel):
    tag_id: int
    name: str
    group_id: int
    source: str
    tagged_at: dt.datetime


class TagLogOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    tag_id: int
    action: str
    source: str
    actor_type: str
    actor_id: int | None
    at: dt.datetime


class TagIdsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tag_ids: list[int] = Field(min_length=1, max_length=100)


class BulkCsvIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    csv: str = Field(min_length=1, max_length=5_000_000, description="header row with member_id or phone")
    dry_run: bool = False
    action: Literal["add", "remove"] = "add"


class BulkSegmentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    definition: dict[str, Any]
    dry_run: bool = False


class RowError(BaseModel):
    row: int
    code: str
    message: str


class BulkTagOut(BaseModel):
    dry_run: bool
    rows: int
    matched: int
    changed: int
    errors: list[RowError]


class TagTemplateIn(BaseModel):
    """"Bought (products/categories) in month M → tag '<prefix> M+offset'". Month in the merchant zone."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=40)
    group_id: int
    product_ids: list[int] = Field(default_factory=list, max_length=200)
    category_ids: list[int] = Field(default_factory=list, max_length=200)
    offset_months: int = Field(ge=0, le=120)
    tag_name_template: str = Field(
        min_length=1, max_length=30, description="must contain {month}, replaced by YYYY-MM of the due month"
    )
    lookback_days: int = Field(default=40, ge=1, le=3650, description="purchases the daily run looks at")
    enabled: bool = True

    @model_validator(mode="after")
    def _check(self) -> TagTemplateIn:
        if "{month}" not in self.tag_name_template:
            raise PydanticCustomError("tag_template_month_missing", "tag_name_template must contain month in curly braces")
        return self


class TagTemplateOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    name: str
    group_id: int
    config: dict[str, Any]
    enabled: bool
    evaluated_at: dt.datetime | None


# -- staff ownership ------------------------------------------------------------------------------


class StaffOwnerIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    staff_id: int | None = Field(
        description="null unbinds; otherwise a staff member of this merchant (else 404), active (else 409 "
        "staff_owner_inactive)"
    )


class HandoverIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    to_staff_id: int = Field(
        description="an active staff member of this merchant (else 404 / 409 staff_owner_inactive), not the one "
        "handing over (else 422 handover_same_staff)"
    )
    member_ids: list[int] | None = Field(
        default=None, max_length=10_000,
        description="omit for all customers; each a customer of the staff member handing over (else 422 not_owned "
        "at body.member_ids.N, nothing moves)",
    )


class HandoverOut(BaseModel):
    from_staff_id: int
    to_staff_id: int
    moved: int


class OwnershipLogOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    member_id: int
    from_staff_id: int | None
    to_staff_id: int | None
    reason: str
    actor_type: str
    actor_id: int | None
    at: dt.datetime


# -- channel codes --------------------------------------------------------------------------------

CHANNEL_KINDS = ("offline_flyer", "store_counter", "community_group", "official_account", "staff", "other")


class ChannelCodeIn(BaseModel):
    """``scene`` is unique per merchant (else 409 ``channel_scene_taken``); ``staff_id`` and
    ``tag_ids`` must name this merchant's staff member and tags (else 404)."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["offline_flyer", "store_counter", "community_group", "official_account", "staff", "other"]
    name: str = Field(min_length=1, max_length=64)
    # WeChat allows at most 32 visible characters: digits, letters and !#$&'()*+,/:;=?@-._~
    scene: str = Field(
        min_length=1, max_length=32, pattern=r"^[A-Za-z0-9!#$&'()*+,/:;=?@\-._~]+$",
        description="WeChat's wxacode scene: at most 32 of 0-9a-zA-Z!#$&'()*+,/:;=?@-._~ (unique per merchant; "
                    "the store's scan path takes it percent-encoded)",
    )
    staff_id: RefId | None = None
    tag_ids: list[RefId] = Field(default_factory=list, max_length=20)
    page: str | None = Field(default=None, max_length=128, pattern=r"^[^/].*$")
    landing_url: str | None = Field(
        default=None, max_length=1000, description="URL the plain QR code encodes; {scene} and {merchant} are replaced"
    )


class ChannelCodePatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(default=None, min_length=1, max_length=64)
    staff_id: int | None = None
    tag_ids: list[int] | None = Field(default=None, max_length=20)
    page: str | None = Field(default=None, max_length=128, pattern=r"^[^/].*$")
    landing_url: str | None = Field(default=None, max_length=1000)
    active: bool | None = None


class ChannelCodeOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    kind: str
    name: str
    scene: str
    staff_id: int | None
    tag_ids: list[int]
    page: str | None
    landing_url: str | None
    active: bool
    created_at: dt.datetime


class ScanIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    anonymous_id: str | None = Field(default=None, max_length=64)


class ScanOut(BaseModel):
    scene: str
    kind: str
    name: str


class ChannelStatsOut(BaseModel):
    channel_code_id: int
    scene: str
    name: str
    kind: str
    scans: int
    unique_scanners: int
    registrations: int
    first_orders: int
    gmv: int


class MemberMergeOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    kept_member_id: int
    merged_member_id: int
    reason: str
    moved: dict[str, Any]
    at: dt.datetime


class CustomerOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    nickname: str | None
    phone: str | None
    gender: str | None
    city: str | None
    registered_at: dt.datetime
    registration_channel: str | None
    staff_id: int | None
    staff_bound_at: dt.datetime | None
