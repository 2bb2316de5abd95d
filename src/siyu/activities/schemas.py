"""The stacking settings every single-SKU activity states (flash sales, group buys, bargains):
may its lines take coupons, points deduction and order promotions, and do they ship free.

Defaults follow the usual practice: an activity price takes nothing else. A module's create,
update and answer models take these as a base (``StackingIn``, ``StackingUpdate``,
``StackingOut``), so the four settings and their descriptions are written once; an activity's
buy body takes ``CouponChoiceIn`` for the coupons a customer picks.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from siyu.kit.bounds import RefId


class StackingIn(BaseModel):
    allows_coupons: bool = Field(default=False, description="may its lines take coupons")
    allows_points: bool = Field(default=False, description="may its lines take points deduction")
    allows_order_promotions: bool = Field(
        default=False,
        description="may its lines count toward and take spend-and-save / spend-and-gift / add-on (满减/满赠/加价购)",
    )
    free_shipping: bool = Field(default=False, description="its lines ship free")


class StackingUpdate(BaseModel):
    allows_coupons: bool | None = Field(default=None, description="before the start only")
    allows_points: bool | None = Field(default=None, description="before the start only")
    allows_order_promotions: bool | None = Field(default=None, description="before the start only")
    free_shipping: bool | None = Field(default=None, description="before the start only")


class StackingOut(BaseModel):
    allows_coupons: bool
    allows_points: bool
    allows_order_promotions: bool
    free_shipping: bool


class CouponChoiceIn(BaseModel):
    coupon_ids: list[RefId] | None = Field(
        default=None,
        description="as in checkout: omitted lets the pricing pick the member's best coupons, [] uses none, ids use "
                    "those (refused with the coupon's reason when one does not apply). A coupon applies to the "
                    "activity's line only when the activity allows_coupons",
    )
