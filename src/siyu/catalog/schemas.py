"""Request and response bodies of the catalog endpoints (admin and store).

Prices are integer fen (分). Shape rules a schema can express (lengths, ``>= 0``) live here;
rules across fields (SKU specs keys equal the product's ``spec_names``, ``sale_price <=
list_price``, unique SKU codes) are checked by the service, which reports every offending field
path at once (``body.skus.1.specs``).
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from siyu.kit.bounds import RefId, SortKey

SpecName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=32)]
SpecValue = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]
SkuCode = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]
ImageUrl = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500)]
Fen = Annotated[int, Field(ge=0, le=1_000_000_000, description="fen (分)")]

ProductStatus = Literal["draft", "on_sale", "off_shelf"]  # PRODUCT_DRAFT, PRODUCT_ON_SALE, PRODUCT_OFF_SHELF

MAX_SKUS = 200
MAX_SPEC_NAMES = 5
MAX_IMAGES = 20


def _omittable(**constraints: Any) -> Any:
    """A PATCH field that may be left out (unchanged) but not sent as ``null``: its type has no
    ``None``, so Pydantic refuses a null (``string_type``, ``bool_type`` ...) and the OpenAPI
    document does not offer one."""
    return Field(default=None, **constraints)


# -- categories ----------------------------------------------------------------------------------


PARENT_RULE = (
    "a category of this merchant (else 404), never the category itself or one of its descendants "
    "(else 422 category_cycle)"
)


class CategoryIn(BaseModel):
    name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]
    parent_id: RefId | None = Field(default=None, description=f"null for a top-level category; otherwise {PARENT_RULE}")
    image_url: ImageUrl | None = None
    sort: SortKey = 0
    visible: bool = True


class CategoryUpdate(BaseModel):
    """Only the fields sent change; ``parent_id: null`` moves the category to the top level."""

    name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)] | None = None
    parent_id: RefId | None = Field(default=None, description=f"null: top level; otherwise {PARENT_RULE}")
    image_url: ImageUrl | None = None
    sort: SortKey | None = None
    visible: bool | None = None


class CategoryOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    parent_id: int | None
    name: str
    image_url: str | None
    sort: int
    visible: bool
    created_at: dt.datetime
    updated_at: dt.datetime


class CategoryNode(CategoryOut):
    children: list[CategoryNode] = Field(default_factory=list)


class StoreCategoryNode(BaseModel):
    id: int
    name: str
    image_url: str | None
    children: list[StoreCategoryNode] = Field(default_factory=list)


# -- SKUs ----------------------------------------------------------------------------------------


SKU_RULES = (
    "specs has exactly the product's spec_names as keys (else 422 specs_mismatch at specs); sale_price is at "
    "most list_price (else 422 sale_above_list at sale_price); an active SKU's specs differ from every other "
    "active SKU's of the product (else 422 duplicate_specs at specs); sku_code is not another SKU's of this "
    "merchant (else 409 sku_code_taken)."
)


class SkuIn(BaseModel):
    """A SKU of a product: ``SKU_RULES`` (the model's description in the OpenAPI document)."""

    model_config = ConfigDict(json_schema_extra={"description": SKU_RULES})

    sku_code: SkuCode = Field(description="unique per merchant")
    specs: dict[SpecName, SpecValue] = Field(
        default_factory=dict, description="one value per spec name of the product, e.g. {'颜色': '黑'}"
    )
    list_price: Fen = Field(description="原价 (fen)")
    sale_price: Fen = Field(description="sale price (fen), at most list_price")
    cost_price: Fen = 0
    weight_g: int = Field(default=0, ge=0, le=1_000_000)
    stock: int = Field(default=0, ge=0, le=100_000_000)
    image_url: ImageUrl | None = None
    active: bool = True


class SkuUpdate(BaseModel):
    """Stock is not changed here: use the stock adjustment endpoint (audited). Unknown fields are refused."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"description": (
            "Only the fields sent change; stock is not changed here (use the stock adjustment endpoint, audited) and "
            "unknown fields are refused. Only image_url may be null (clears it); another null is 422 "
            "null_not_allowed. The SKU after the change follows the rules of a new one: " + SKU_RULES + " The last "
            "active SKU of a product on sale cannot be deactivated (409 product_needs_active_sku)."
        )},
    )

    sku_code: SkuCode | None = None
    specs: dict[SpecName, SpecValue] | None = None
    list_price: Fen | None = None
    sale_price: Fen | None = None
    cost_price: Fen | None = None
    weight_g: int | None = Field(default=None, ge=0, le=1_000_000)
    image_url: ImageUrl | None = None
    active: bool | None = None


class StockAdjustIn(BaseModel):
    """Stock never goes below 0: a negative ``quantity`` with ``mode: set`` is 422 ``negative_stock``,
    a ``delta`` that would take the stock below 0 is 409 ``stock_would_go_negative``."""

    mode: Literal["set", "delta"] = Field(description="set: stock becomes quantity; delta: stock += quantity")
    quantity: int = Field(
        ge=-100_000_000, le=100_000_000,
        description="set: the new stock, 0 or more (else 422 negative_stock); delta: the change, the stock after it "
        "0 or more (else 409 stock_would_go_negative)",
    )
    reason: str | None = Field(default=None, max_length=200)


class SkuOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    product_id: int
    sku_code: str
    specs: dict[str, Any]
    list_price: int
    sale_price: int
    cost_price: int
    weight_g: int
    stock: int
    image_url: str | None
    active: bool
    created_at: dt.datetime
    updated_at: dt.datetime


# -- products ------------------------------------------------------------------------------------


class ProductFields(BaseModel):
    title: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=120)]
    subtitle: Annotated[str, StringConstraints(max_length=200)] | None = None
    description: Annotated[str, StringConstraints(max_length=20000)] | None = None
    images: list[ImageUrl] = Field(default_factory=list, max_length=MAX_IMAGES)
    category_id: RefId | None = None
    kind: Literal["physical", "virtual"] = Field(
        default="physical", description="virtual: nothing to ship (no address, no freight; completes on payment)"
    )
    free_shipping: bool = False
    bonus_points: int = Field(default=0, ge=0, le=1_000_000)
    coupons_allowed: bool = True
    freight_template_id: RefId | None = None
    sort: SortKey = 0


class ProductCreate(ProductFields):
    """A product with all its SKUs, created in one transaction (all or nothing). Starts as draft."""

    model_config = ConfigDict(json_schema_extra={"description": (
        "A product with all its SKUs, created in one transaction (all or nothing); starts as draft. The category and "
        "freight template are this merchant's (else 404). spec_names are distinct (else 422 duplicate_spec_name); "
        "the SKUs' sku_codes are distinct (else 422 duplicate_sku_code at skus.N.sku_code) and each SKU follows the "
        "SKU rules: " + SKU_RULES
    )})

    spec_names: list[SpecName] = Field(
        default_factory=list, max_length=MAX_SPEC_NAMES, description="distinct (else 422 duplicate_spec_name)"
    )
    skus: list[SkuIn] = Field(min_length=1, max_length=MAX_SKUS)


class ProductUpdate(BaseModel):
    """Only the fields sent change. ``spec_names`` is fixed once SKUs use it and ``status`` has its own
    endpoint, so they (and any unknown field) are refused here rather than silently ignored. Only
    ``subtitle``, ``description``, ``category_id`` and ``freight_template_id`` may be ``null``
    (clears them); the category and freight template must exist (404)."""

    model_config = ConfigDict(extra="forbid")

    title: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=120)] = _omittable()
    subtitle: Annotated[str, StringConstraints(max_length=200)] | None = None
    description: Annotated[str, StringConstraints(max_length=20000)] | None = None
    images: list[ImageUrl] = _omittable(max_length=MAX_IMAGES)
    category_id: RefId | None = None
    kind: Literal["physical", "virtual"] = _omittable()
    free_shipping: bool = _omittable()
    bonus_points: int = _omittable(ge=0, le=1_000_000)
    coupons_allowed: bool = _omittable()
    freight_template_id: RefId | None = None
    sort: SortKey = _omittable()


class ProductStatusIn(BaseModel):
    status: Literal["on_sale", "off_shelf"]


class ProductOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    category_id: int | None
    title: str
    subtitle: str | None
    description: str | None
    images: list[str]
    spec_names: list[str]
    status: str
    kind: str
    free_shipping: bool
    bonus_points: int
    coupons_allowed: bool
    freight_template_id: int | None
    sort: int
    sales_count: int
    created_at: dt.datetime
    updated_at: dt.datetime


class ProductDetailOut(ProductOut):
    skus: list[SkuOut]


class ProductListItem(BaseModel):
    id: int
    title: str
    subtitle: str | None
    status: str
    category_id: int | None
    image: str | None = Field(description="first image")
    min_sale_price: int | None = Field(description="lowest sale price of the active SKUs")
    max_sale_price: int | None
    total_stock: int = Field(description="stock of the active SKUs")
    active_sku_count: int
    sales_count: int
    sort: int
    created_at: dt.datetime
    updated_at: dt.datetime


# -- store ---------------------------------------------------------------------------------------


class ProductCard(BaseModel):
    """What a product list (or a home slot) shows of a product on sale."""

    id: int
    title: str
    subtitle: str | None
    image: str | None
    min_sale_price: int
    min_list_price: int
    sold_out: bool
    sales_count: int


class StoreSkuOut(BaseModel):
    id: int
    specs: dict[str, Any]
    sale_price: int
    list_price: int
    image_url: str | None
    in_stock: bool
    stock: int


class StoreProductOut(BaseModel):
    id: int
    category_id: int | None
    title: str
    subtitle: str | None
    description: str | None
    images: list[str]
    spec_names: list[str]
    kind: str
    free_shipping: bool
    bonus_points: int
    coupons_allowed: bool
    min_sale_price: int
    min_list_price: int
    sold_out: bool
    sales_count: int
    skus: list[StoreSkuOut]
