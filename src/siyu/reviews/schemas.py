"""Review payloads."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator
from pydantic_core import PydanticCustomError

from siyu.kit.bounds import RefId
from siyu.kit.validation_messages import register_field_messages

register_field_messages({"image_url_not_http": ("图片地址应以 http:// 或 https:// 开头", "Image URLs must be http(s) URLs")})

ImageUrl = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500)]
ReviewStatus = Literal["visible", "hidden"]

MAX_IMAGES = 9


class ReviewIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    order_line_id: RefId
    rating: int = Field(ge=1, le=5)
    content: str = Field(default="", max_length=1000)
    images: list[ImageUrl] = Field(default_factory=list, max_length=MAX_IMAGES)

    @field_validator("content")
    @classmethod
    def _strip(cls, value: str) -> str:
        return value.strip()

    @field_validator("images")
    @classmethod
    def _urls(cls, value: list[str]) -> list[str]:
        for url in value:
            if not url.startswith(("https://", "http://")):
                raise PydanticCustomError("image_url_not_http", "Image URLs must be http(s) URLs")
        return value


class ReplyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reply: str = Field(min_length=1, max_length=500)


class _ReviewFields(BaseModel):
    """What every view of a review shows."""

    model_config = ConfigDict(from_attributes=True)
    id: int
    product_id: int
    sku_id: int
    spec_text: str
    rating: int
    content: str
    images: list[str]
    reply: str | None
    replied_at: dt.datetime | None
    created_at: dt.datetime


class PublicReviewOut(_ReviewFields):
    """A review as the product page shows it to anyone: the reviewer only as a masked nickname."""

    reviewer: str  # ``张**丰``; never the member id


class ReviewOut(_ReviewFields):
    """A review with its author (the author's own list and the admin API)."""

    member_id: int


class MyReviewOut(ReviewOut):
    order_id: int
    order_line_id: int
    status: ReviewStatus


class AdminReviewOut(MyReviewOut):
    replied_by: int | None
    moderated_at: dt.datetime | None
    moderated_by: int | None
    updated_at: dt.datetime


class RatingSummary(BaseModel):
    count: int
    average_rating: float | None  # over visible reviews, two decimals; None without reviews
    counts: dict[str, int]  # "1".."5" -> visible reviews with that rating


class ProductReviewsOut(BaseModel):
    product_id: int
    summary: RatingSummary
    items: list[PublicReviewOut]
    total: int
    page: int
    page_size: int
