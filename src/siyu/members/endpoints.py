"""Store API: WeChat login, phone binding, profile. Admin API: member list, detail, profile, the
member 360 view (``GET /members/{id}/360``: a separate route, so the detail stays cheap),
custom field definitions (``/member-fields``) and a member's merges.

The members domain's other routes live in modules by subject, all on the routers of
``siyu.members.routers`` (imported below so route discovery, which reads this module's
``admin`` and ``store``, mounts them too): ``tags_endpoints``, ``records_endpoints``,
``owners_endpoints``, ``channel_endpoints``, ``privacy_endpoints``."""

from __future__ import annotations

import datetime as dt
from typing import Any

from fastapi import Depends, Request, Response, status

from siyu.api.deps import AppSettings, Customer, DbSession, StaffPrincipal, require
from siyu.api.idempotency import idempotent
from siyu.db.session import unit_of_work
from siyu.kit.errors import DomainError
from siyu.kit.pagination import Page, PageParams, apply_sort, page_params, paginate
from siyu.kit.timeutil import utcnow
from siyu.members import (  # noqa: F401  (the routes of these modules are on admin / store)
    activity_tags_endpoints,
    channel_endpoints,
    owners_endpoints,
    privacy_endpoints,
    profile,
    records_endpoints,
    service,
    tags_endpoints,
)
from siyu.members import repository as repo
from siyu.members.models import Member
from siyu.members.routers import admin, store
from siyu.members.schemas import (
    CustomerTokenOut,
    CustomFieldDefIn,
    CustomFieldDefOut,
    MemberAdminOut,
    MemberMergeOut,
    MemberOut,
    PhoneBindIn,
    ProfileOut,
    ProfilePatch,
    WechatLoginIn,
)
from siyu.tenancy import service as tenancy_service

__all__ = ["admin", "store"]


def _credentials(request: Request, merchant_code: str | None) -> tuple[int, service.MiniProgramCredentials]:
    """Read the merchant's mini-program credentials in a short transaction of its own."""
    if not merchant_code:
        raise DomainError("merchant_required")
    with unit_of_work(request.app.state.session_factory) as s:
        merchant = tenancy_service.get_merchant_by_code(s, merchant_code)
        return merchant.id, service.credentials(merchant, request.app.state.secret_box)


@store.post("/auth/wechat-login", response_model=CustomerTokenOut, summary="Log in with the wx.login code")
def wechat_login(body: WechatLoginIn, request: Request, session: DbSession, settings: AppSettings) -> CustomerTokenOut:
    merchant_id, creds = _credentials(request, request.headers.get("x-siyu-merchant"))
    identity = service.resolve_identity(creds, body.code, base_url=settings.wechat_api_base)
    member, created = service.login_or_register(
        session, merchant_id, identity, channel=body.channel, nickname=body.nickname, avatar_url=body.avatar_url
    )
    if body.inviter and created:
        from siyu.referral import service as referral_service

        referral_service.bind_on_login(session, merchant_id, member.id, body.inviter)
    if body.anonymous_id is not None:
        from siyu.events import service as events_service

        events_service.link_anonymous(session, merchant_id, body.anonymous_id, member.id, now=utcnow())
    token, row = tenancy_service.issue_customer_token(
        session, merchant_id, member.id, dt.timedelta(days=settings.customer_token_ttl_days)
    )
    return CustomerTokenOut(token=token, expires_at=row.expires_at, member_id=member.id, is_new=created)


@store.post("/me/phone", response_model=MemberOut, summary="Bind the phone number from getPhoneNumber")
def bind_phone(body: PhoneBindIn, request: Request, customer: Customer, session: DbSession, settings: AppSettings) -> MemberOut:
    merchant = tenancy_service.get_merchant(session, customer.merchant_id)
    creds = service.credentials(merchant, request.app.state.secret_box)
    session.commit()  # end the read transaction before calling WeChat
    phone = service.resolve_phone(creds, body.code, base_url=settings.wechat_api_base)
    return MemberOut.model_validate(service.bind_phone(session, customer.merchant_id, customer.member_id, phone))


@store.get("/me", response_model=MemberOut)
def me(customer: Customer, session: DbSession) -> MemberOut:
    return MemberOut.model_validate(service.get_member(session, customer.merchant_id, customer.member_id))


@admin.get("/members", response_model=Page[MemberAdminOut])
def list_members(
    session: DbSession,
    q: str | None = None,
    phone: str | None = None,
    params: PageParams = Depends(page_params),
    p: StaffPrincipal = Depends(require("members:read")),
) -> Page[MemberAdminOut]:
    stmt = repo.search(session, p.merchant_id, q, phone)
    stmt = apply_sort(
        stmt, params.sort, {"id": Member.id, "registered_at": Member.registered_at}, Member.id.desc()
    )
    rows, total = paginate(session, stmt, params)
    return Page(
        items=[MemberAdminOut.model_validate(m) for m in rows], total=total, page=params.page,
        page_size=params.page_size,
    )


@admin.get("/members/{member_id}", response_model=MemberAdminOut)
def get_member(member_id: int, session: DbSession, p: StaffPrincipal = Depends(require("members:read"))) -> MemberAdminOut:
    return MemberAdminOut.model_validate(service.get_member(session, p.merchant_id, member_id))


@store.get("/me/profile", response_model=ProfileOut)
def my_profile(customer: Customer, session: DbSession) -> ProfileOut:
    return profile.get_profile(session, customer.merchant_id, customer.member_id)


@store.patch("/me/profile", response_model=ProfileOut,
             summary="Change my profile (a complete profile earns the loyalty task complete_profile once)")
def patch_my_profile(body: ProfilePatch, customer: Customer, session: DbSession) -> ProfileOut:
    return profile.patch_profile(session, customer.merchant_id, customer.member_id, body)


@admin.get("/members/{member_id}/profile", response_model=ProfileOut)
def get_member_profile(
    member_id: int, session: DbSession, p: StaffPrincipal = Depends(require("members:read"))
) -> ProfileOut:
    return profile.get_profile(session, p.merchant_id, member_id)


@admin.patch("/members/{member_id}/profile", response_model=ProfileOut)
def patch_member_profile(
    member_id: int, body: ProfilePatch, session: DbSession, p: StaffPrincipal = Depends(require("members:write"))
) -> ProfileOut:
    return profile.patch_profile(session, p.merchant_id, member_id, body)


@admin.get("/members/{member_id}/360", response_model=dict[str, Any],
           summary="Member 360: profile, stats, loyalty, coupons, recent orders, tags, staff owner, latest records, "
                   "consent, merges (sections of modules not installed are left out)")
def member_360(member_id: int, session: DbSession, p: StaffPrincipal = Depends(require("members:read"))) -> dict[str, Any]:
    return profile.member_360(session, p.merchant_id, member_id)


@admin.get("/members/{member_id}/merges", response_model=list[MemberMergeOut],
           summary="Merges the member took part in, kept or merged (identity merges by unionid or phone)")
def member_merges(member_id: int, session: DbSession, p: StaffPrincipal = Depends(require("members:read"))) -> list[MemberMergeOut]:
    return [MemberMergeOut.model_validate(m) for m in service.merges_of(session, p.merchant_id, member_id)]


# -- custom field definitions --------------------------------------------------------------------------------


@admin.get("/member-fields", response_model=list[CustomFieldDefOut], summary="Custom profile field definitions")
def list_member_fields(session: DbSession, p: StaffPrincipal = Depends(require("members:read"))) -> list[CustomFieldDefOut]:
    return [CustomFieldDefOut.model_validate(profile.field_def_out(d)) for d in profile.list_field_defs(session, p.merchant_id)]


@admin.post("/member-fields", response_model=CustomFieldDefOut, status_code=status.HTTP_201_CREATED,
            summary="Define a custom profile field (values are checked by type on every profile write)")
@idempotent
def create_member_field(
    body: CustomFieldDefIn, session: DbSession, p: StaffPrincipal = Depends(require("members:write"))
) -> CustomFieldDefOut:
    return CustomFieldDefOut.model_validate(profile.field_def_out(profile.create_field_def(session, p.merchant_id, body)))


@admin.put("/member-fields/{def_id}", response_model=CustomFieldDefOut, summary="Replace a definition (the key cannot change)")
def update_member_field(
    def_id: int, body: CustomFieldDefIn, session: DbSession, p: StaffPrincipal = Depends(require("members:write"))
) -> CustomFieldDefOut:
    return CustomFieldDefOut.model_validate(profile.field_def_out(profile.update_field_def(session, p.merchant_id, def_id, body)))


@admin.delete("/member-fields/{def_id}", status_code=status.HTTP_204_NO_CONTENT,
              summary="Delete a definition (members' stored values are kept)")
def delete_member_field(def_id: int, session: DbSession, p: StaffPrincipal = Depends(require("members:write"))) -> Response:
    profile.delete_field_def(session, p.merchant_id, def_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
