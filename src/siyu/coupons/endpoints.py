"""Admin API (area ``promotions``): coupon templates, bulk issue, redeem codes, issued coupons,
stats. Store API: claimable templates, claim, redeem a code, my wallet."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Response, status

from siyu.activities.routes import mark_replayed
from siyu.api.deps import Customer, DbSession, StaffPrincipal, require
from siyu.api.idempotency import idempotent
from siyu.coupons import repository as repo
from siyu.coupons import service
from siyu.coupons.models import CouponTemplate, MemberCoupon
from siyu.coupons.schemas import (
    ClaimableOut,
    CodesIn,
    CodesOut,
    CouponOut,
    CouponStatus,
    IssueIn,
    IssueOut,
    Kind,
    RedeemIn,
    TemplateIn,
    TemplateOut,
    TemplateStatsOut,
    TemplateStatus,
    TemplateUpdate,
    WalletCouponOut,
)
from siyu.kit.pagination import Page, PageParams, apply_sort, page_params, paginate
from siyu.kit.timeutil import utcnow

admin = APIRouter(tags=["admin: coupons"])
store = APIRouter(tags=["store: coupons"])


# -- admin ----------------------------------------------------------------------------------------------


@admin.get("/coupon-templates", response_model=Page[TemplateOut])
def list_templates(
    session: DbSession,
    template_status: TemplateStatus | None = Query(None, alias="status"),
    kind: Kind | None = None,
    params: PageParams = Depends(page_params),
    p: StaffPrincipal = Depends(require("promotions:read")),
) -> Page[TemplateOut]:
    stmt = repo.search_templates(p.merchant_id, template_status, kind)
    sortable: dict[str, Any] = {"id": CouponTemplate.id, "created_at": CouponTemplate.created_at,
                                "issued": CouponTemplate.issued}
    rows, total = paginate(session, apply_sort(stmt, params.sort, sortable, CouponTemplate.id.desc()), params)
    return Page(items=[service.template_out(t) for t in rows], total=total, page=params.page,
                page_size=params.page_size)


@admin.post("/coupon-templates", response_model=TemplateOut, status_code=status.HTTP_201_CREATED,
            summary="Create a coupon template (validated: kind rules, scope, validity, limits, channels)")
@idempotent
def create_template(
    body: TemplateIn, session: DbSession, p: StaffPrincipal = Depends(require("promotions:write"))
) -> TemplateOut:
    return service.template_out(service.create_template(session, p.merchant_id, body, actor=p.actor))


@admin.get("/coupon-templates/{template_id}", response_model=TemplateOut)
def get_template(
    template_id: int, session: DbSession, p: StaffPrincipal = Depends(require("promotions:read"))
) -> TemplateOut:
    return service.template_out(service.get_template(session, p.merchant_id, template_id))


@admin.patch("/coupon-templates/{template_id}", response_model=TemplateOut,
             summary="Change a template; its discount rules are frozen once a coupon was issued")
def update_template(
    template_id: int, body: TemplateUpdate, session: DbSession,
    p: StaffPrincipal = Depends(require("promotions:write")),
) -> TemplateOut:
    return service.template_out(service.update_template(session, p.merchant_id, template_id, body, actor=p.actor))


@admin.delete("/coupon-templates/{template_id}", status_code=status.HTTP_204_NO_CONTENT,
              summary="Delete a template nothing was issued from (else stop it)")
def delete_template(
    template_id: int, session: DbSession, p: StaffPrincipal = Depends(require("promotions:write"))
) -> None:
    service.delete_template(session, p.merchant_id, template_id, actor=p.actor)


@admin.post("/coupon-templates/{template_id}/issue", response_model=IssueOut,
            summary="Issue to members matching member ids / province / city / gender / tag (idempotent per batch_key)")
def issue(
    template_id: int, body: IssueIn, session: DbSession, p: StaffPrincipal = Depends(require("promotions:write"))
) -> IssueOut:
    return service.bulk_issue(session, p.merchant_id, template_id, body, actor=p.actor)


@admin.post("/coupon-templates/{template_id}/codes", response_model=CodesOut, status_code=status.HTTP_201_CREATED,
            summary="Generate one-time redeem codes")
@idempotent
def generate_codes(
    template_id: int, body: CodesIn, session: DbSession, p: StaffPrincipal = Depends(require("promotions:write"))
) -> CodesOut:
    codes = service.generate_codes(session, p.merchant_id, template_id, body.count, actor=p.actor)
    return CodesOut(template_id=template_id, codes=codes)


@admin.get("/coupon-templates/{template_id}/stats", response_model=TemplateStatsOut,
           summary="Issued, claimed, used, discount given and GMV of the orders that used it")
def template_stats(
    template_id: int, session: DbSession, p: StaffPrincipal = Depends(require("promotions:read"))
) -> TemplateStatsOut:
    return service.stats(session, p.merchant_id, template_id)


@admin.get("/coupons", response_model=Page[CouponOut], summary="Issued coupons")
def list_coupons(
    session: DbSession,
    template_id: int | None = None,
    member_id: int | None = None,
    coupon_status: CouponStatus | None = Query(None, alias="status"),
    params: PageParams = Depends(page_params),
    p: StaffPrincipal = Depends(require("promotions:read")),
) -> Page[CouponOut]:
    stmt = repo.wallet_query(p.merchant_id, member_id, coupon_status, template_id)
    sortable: dict[str, Any] = {"id": MemberCoupon.id, "created_at": MemberCoupon.created_at,
                                "valid_until": MemberCoupon.valid_until}
    rows, total = paginate(session, apply_sort(stmt, params.sort, sortable, MemberCoupon.id.desc()), params)
    return Page(items=[CouponOut.model_validate(c) for c in rows], total=total, page=params.page,
                page_size=params.page_size)


@admin.post("/coupons/{coupon_id}/void", response_model=CouponOut, summary="Void an unused coupon")
def void_coupon(
    coupon_id: int, session: DbSession, p: StaffPrincipal = Depends(require("promotions:write"))
) -> CouponOut:
    return CouponOut.model_validate(service.void(session, p.merchant_id, coupon_id, actor=p.actor))


# -- store ----------------------------------------------------------------------------------------------


@store.get("/coupons/claimable", response_model=list[ClaimableOut],
           summary="Templates I can claim now (领券中心), with what is left and whether I still may")
def claimable(customer: Customer, session: DbSession) -> list[ClaimableOut]:
    return service.claimable(session, customer.merchant_id, customer.member_id)


@store.post("/coupons/templates/{template_id}/claim", response_model=WalletCouponOut,
            status_code=status.HTTP_201_CREATED,
            summary="Claim a coupon (with an Idempotency-Key a retry returns the same coupon with 200)")
def claim(
    template_id: int, customer: Customer, session: DbSession, response: Response,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> WalletCouponOut:
    coupon, created = service.claim(session, customer.merchant_id, customer.member_id, template_id,
                                    idempotency_key=idempotency_key)
    mark_replayed(response, created)
    return service.wallet_out(session, customer.merchant_id, [coupon])[0]


@store.post("/coupons/redeem", response_model=WalletCouponOut, status_code=status.HTTP_201_CREATED,
            summary="Redeem a one-time code for a coupon (redeeming it again returns the same coupon with 200)")
def redeem(body: RedeemIn, customer: Customer, session: DbSession, response: Response) -> WalletCouponOut:
    coupon, created = service.redeem(session, customer.merchant_id, customer.member_id, body.code)
    mark_replayed(response, created)
    return service.wallet_out(session, customer.merchant_id, [coupon])[0]


@store.get("/coupons/mine", response_model=Page[WalletCouponOut], summary="My coupons, by state")
def my_coupons(
    customer: Customer,
    session: DbSession,
    coupon_status: CouponStatus | None = Query(None, alias="status"),
    params: PageParams = Depends(page_params),
) -> Page[WalletCouponOut]:
    stmt = repo.wallet_query(customer.merchant_id, customer.member_id, coupon_status, now=utcnow())
    rows, total = paginate(session, stmt.order_by(MemberCoupon.valid_until, MemberCoupon.id), params)
    return Page(items=service.wallet_out(session, customer.merchant_id, rows), total=total, page=params.page,
                page_size=params.page_size)
