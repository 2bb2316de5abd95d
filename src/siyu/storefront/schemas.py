"""Request and response bodies of the storefront (home page) endpoints."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

from siyu.catalog.schemas import ProductCard
from siyu.kit.bounds import RefId, SortKey

SlotKind = Literal["banner", "ad_slot", "category_nav", "bottom_nav", "account_section", "notice"]
TargetType = Literal["product", "category", "page", "url", "none"]
Title = Annotated[str, StringConstraints(strip_whitespace=True, max_length=64)]
ImageUrl = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500)]
TargetValue = Annotated[str, StringConstraints(strip_whitespace=True, max_length=500)]


TARGET_RULE = (
    "by target_type (422 at target_value otherwise): none: empty (target_not_allowed); any other type needs one "
    "(target_required); product/category: the digits of an id (invalid_target) of this merchant's product or "
    "category (target_not_found); url: starts with http:// or https:// (invalid_url); page: a mini-program path "
    "without spaces (invalid_page), such as /pages/x/index"
)
ENDS_RULE = "shown until (exclusive); with a time zone; after starts_at (else 422 ends_before_start)"


class SlotIn(BaseModel):
    kind: SlotKind
    title: Title = ""
    image_url: ImageUrl | None = None
    target_type: TargetType = "none"
    target_value: TargetValue | None = Field(
        default=None,
        description=f"what the slot opens, {TARGET_RULE}",
    )
    sort: SortKey = 0
    starts_at: AwareDatetime | None = Field(default=None, description="shown from (inclusive); with a time zone")
    ends_at: AwareDatetime | None = Field(default=None, description=ENDS_RULE)
    enabled: bool = True


class SlotUpdate(BaseModel):
    """Only the fields sent change; ``starts_at``/``ends_at``/``image_url`` accept null to clear;
    a null ``kind``/``title``/``target_type``/``sort``/``enabled`` is 422 ``null_not_allowed``."""

    model_config = ConfigDict(json_schema_extra={"description": (
        "Only the fields sent change; starts_at, ends_at, image_url and target_value accept null to clear, a null "
        "kind, title, target_type, sort or enabled is 422 null_not_allowed. A new target_type without a "
        "target_value drops the old value (and needs one unless none)."
    )})

    kind: SlotKind | None = None
    title: Title | None = None
    image_url: ImageUrl | None = None
    target_type: TargetType | None = None
    target_value: TargetValue | None = Field(default=None, description=f"checked against the target_type after the change, {TARGET_RULE}")
    sort: SortKey | None = None
    starts_at: AwareDatetime | None = None
    ends_at: AwareDatetime | None = Field(default=None, description=f"{ENDS_RULE}, also the stored starts_at")
    enabled: bool | None = None


class SlotOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    kind: str
    title: str
    image_url: str | None
    target_type: str
    target_value: str | None
    sort: int
    starts_at: dt.datetime | None
    ends_at: dt.datetime | None
    enabled: bool
    created_at: dt.datetime
    updated_at: dt.datetime


class ReorderIn(BaseModel):
    ids: list[RefId] = Field(min_length=1, max_length=500, description="ids of this merchant's slots (else 404) in their new order (sort = position), each once "
        "(else 422 duplicate_ids)")


class CategoryRef(BaseModel):
    id: int
    name: str


class HomeItem(BaseModel):
    id: int
    title: str
    image_url: str | None
    target_type: str
    target_value: str | None
    sort: int
    product: ProductCard | None = Field(default=None, description="snapshot when the target is a product")
    category: CategoryRef | None = Field(default=None, description="when the target is a category")


class HomeOut(BaseModel):
    """The live home page: enabled slots within their schedule, by kind, ordered by sort."""

    banner: list[HomeItem] = Field(default_factory=list)
    ad_slot: list[HomeItem] = Field(default_factory=list)
    category_nav: list[HomeItem] = Field(default_factory=list)
    bottom_nav: list[HomeItem] = Field(default_factory=list)
    account_section: list[HomeItem] = Field(default_factory=list)
    notice: list[HomeItem] = Field(default_factory=list)
    generated_at: dt.datetime
