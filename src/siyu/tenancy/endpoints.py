"""Admin API: login, the current principal, staff accounts, API keys and merchant settings."""

from __future__ import annotations

import datetime as dt

from fastapi import APIRouter, Depends, Request, status

from siyu.api.deps import AppSettings, DbSession, Staff, StaffPrincipal, require
from siyu.api.idempotency import idempotent
from siyu.tenancy import repository as repo
from siyu.tenancy import service
from siyu.tenancy.models import Merchant
from siyu.tenancy.permissions import ROLE_PERMISSIONS, Role
from siyu.tenancy.schemas import (
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyOut,
    LoginIn,
    MeOut,
    MerchantOut,
    MerchantUpdate,
    StaffCreate,
    StaffOut,
    StaffUpdate,
    TokenOut,
)

admin = APIRouter(tags=["admin: account & staff"])


def merchant_out(merchant: Merchant) -> MerchantOut:
    out = MerchantOut.model_validate(merchant)
    out.has_wechat_secret = merchant.wechat_app_secret_enc is not None
    out.has_pay_keys = merchant.pay_private_key_enc is not None and merchant.pay_apiv3_key_enc is not None
    return out


@admin.post("/auth/login", response_model=TokenOut, summary="Staff login (returns a bearer token)")
def login(body: LoginIn, session: DbSession, settings: AppSettings) -> TokenOut:
    plaintext, token = service.login_staff(
        session,
        merchant_code=body.merchant,
        username=body.username,
        password=body.password,
        ttl=dt.timedelta(hours=settings.staff_token_ttl_hours),
    )
    return TokenOut(token=plaintext, expires_at=token.expires_at)


@admin.post("/auth/logout", status_code=status.HTTP_204_NO_CONTENT, summary="Revoke the current token")
def logout(principal: Staff, session: DbSession) -> None:
    service.revoke(session, principal.token_id)


@admin.get("/me", response_model=MeOut)
def me(principal: Staff, session: DbSession) -> MeOut:
    merchant = service.get_merchant(session, principal.merchant_id)
    staff = service.get_staff(session, principal.merchant_id, principal.staff_id) if principal.staff_id else None
    return MeOut(
        merchant_id=merchant.id,
        merchant_code=merchant.code,
        merchant_name=merchant.name,
        staff=StaffOut.model_validate(staff) if staff else None,
        role=principal.role,
        permissions=sorted(ROLE_PERMISSIONS[Role(principal.role)]),
    )


@admin.get("/merchant", response_model=MerchantOut)
def get_merchant(session: DbSession, p: StaffPrincipal = Depends(require("merchant:read"))) -> MerchantOut:
    return merchant_out(service.get_merchant(session, p.merchant_id))


@admin.patch("/merchant", response_model=MerchantOut, summary="Update settings and write-only credentials")
def patch_merchant(
    body: MerchantUpdate, request: Request, session: DbSession, p: StaffPrincipal = Depends(require("merchant:write"))
) -> MerchantOut:
    merchant = service.update_merchant(session, request.app.state.secret_box, p.merchant_id, body)
    return merchant_out(merchant)


@admin.get("/staff", response_model=list[StaffOut])
def list_staff(session: DbSession, p: StaffPrincipal = Depends(require("staff:read"))) -> list[StaffOut]:
    return [StaffOut.model_validate(s) for s in repo.list_staff(session, p.merchant_id)]


@admin.post("/staff", response_model=StaffOut, status_code=status.HTTP_201_CREATED)
@idempotent
def create_staff(body: StaffCreate, session: DbSession, p: StaffPrincipal = Depends(require("staff:write"))) -> StaffOut:
    staff = service.create_staff(
        session,
        p.merchant_id,
        username=body.username,
        password=body.password,
        role=body.role,
        display_name=body.display_name,
        phone=body.phone,
    )
    return StaffOut.model_validate(staff)


@admin.patch("/staff/{staff_id}", response_model=StaffOut)
def update_staff(
    staff_id: int, body: StaffUpdate, session: DbSession, p: StaffPrincipal = Depends(require("staff:write"))
) -> StaffOut:
    staff = service.update_staff(session, p.merchant_id, staff_id, **body.model_dump(exclude_unset=True))
    return StaffOut.model_validate(staff)


@admin.get("/api-keys", response_model=list[ApiKeyOut])
def list_api_keys(session: DbSession, p: StaffPrincipal = Depends(require("merchant:write"))) -> list[ApiKeyOut]:
    return [ApiKeyOut.model_validate(k) for k in repo.api_keys(session, p.merchant_id)]


@admin.post("/api-keys", response_model=ApiKeyCreated, status_code=status.HTTP_201_CREATED)
@idempotent
def create_api_key(
    body: ApiKeyCreate, session: DbSession, p: StaffPrincipal = Depends(require("merchant:write"))
) -> ApiKeyCreated:
    plaintext, token = service.create_api_key(
        session, p.merchant_id, name=body.name, role=body.role, created_by=p.staff_id
    )
    return ApiKeyCreated(id=token.id, name=token.name, role=token.role, created_at=token.created_at, key=plaintext)


@admin.delete("/api-keys/{key_id}", status_code=status.HTTP_204_NO_CONTENT)
def revoke_api_key(key_id: int, session: DbSession, p: StaffPrincipal = Depends(require("merchant:write"))) -> None:
    service.revoke_api_key(session, p.merchant_id, key_id)
