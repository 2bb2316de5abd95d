"""Admin API (area ``members``): channel codes (渠道码) — create, list, read, change (``active:
false`` retires a code; codes are never deleted, their scans and registrations stay counted),
the plain QR PNG of the landing URL, the mini-program code PNG from WeChat (merchants with WeChat
configured), per-code stats. Store API: the mini-program reports a scan
of a code's scene."""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Any

from fastapi import Depends, Header, Request, Response, status

from siyu.api.deps import AppSettings, DbSession, StaffPrincipal, StoreMerchant, require
from siyu.api.idempotency import idempotent
from siyu.kit.errors import DomainError
from siyu.members import channel_codes, service
from siyu.members import repository as repo
from siyu.members.routers import admin, store
from siyu.members.schemas import (
    ChannelCodeIn,
    ChannelCodeOut,
    ChannelCodePatch,
    ChannelStatsOut,
    ScanIn,
    ScanOut,
)
from siyu.tenancy import service as tenancy_service

TAGS: list[str | Enum] = ["admin: channel codes"]

PNG_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The QR code of the code's landing URL, as a PNG image",
        "content": {"image/png": {"schema": {"type": "string", "format": "binary"}}},
    }
}


@admin.get("/channel-codes", response_model=list[ChannelCodeOut], tags=TAGS)
def list_channel_codes(session: DbSession, p: StaffPrincipal = Depends(require("members:read", "members:own"))) -> list[ChannelCodeOut]:
    return [ChannelCodeOut.model_validate(c) for c in repo.channel_codes(session, p.merchant_id)]


@admin.post("/channel-codes", response_model=ChannelCodeOut, status_code=status.HTTP_201_CREATED, tags=TAGS,
            summary="A channel code: a scene value, optionally a staff owner and tags for members it registers")
@idempotent
def create_channel_code(
    body: ChannelCodeIn, session: DbSession, p: StaffPrincipal = Depends(require("members:write"))
) -> ChannelCodeOut:
    return ChannelCodeOut.model_validate(channel_codes.create_code(session, p.merchant_id, body))


@admin.get("/channel-codes/stats", response_model=list[ChannelStatsOut], tags=TAGS,
           summary="Per code: scans, unique scanners, registrations, members with a paid order and their GMV (fen)")
def channel_code_stats(session: DbSession, p: StaffPrincipal = Depends(require("members:read", "members:own"))) -> list[ChannelStatsOut]:
    return channel_codes.stats(session, p.merchant_id)


@admin.get("/channel-codes/{code_id}", response_model=ChannelCodeOut, tags=TAGS)
def get_channel_code(code_id: int, session: DbSession, p: StaffPrincipal = Depends(require("members:read", "members:own"))) -> ChannelCodeOut:
    return ChannelCodeOut.model_validate(channel_codes.get_code(session, p.merchant_id, code_id))


@admin.patch("/channel-codes/{code_id}", response_model=ChannelCodeOut, tags=TAGS)
def update_channel_code(
    code_id: int, body: ChannelCodePatch, session: DbSession, p: StaffPrincipal = Depends(require("members:write"))
) -> ChannelCodeOut:
    return ChannelCodeOut.model_validate(channel_codes.update_code(session, p.merchant_id, code_id, body))


@admin.get("/channel-codes/{code_id}/qr.png", response_class=Response, responses=PNG_RESPONSE, tags=TAGS,
           summary="Plain QR code (PNG) of the landing URL ({base}/s/{merchant}?scene={scene} by default)")
def channel_code_qr(
    code_id: int, session: DbSession, settings: AppSettings, p: StaffPrincipal = Depends(require("members:read", "members:own"))
) -> Response:
    code = channel_codes.get_code(session, p.merchant_id, code_id)
    merchant = tenancy_service.get_merchant(session, p.merchant_id)
    url = channel_codes.landing_url(code, merchant.code, settings.public_base_url)
    return Response(content=channel_codes.qr_png(url), media_type="image/png")


# ``{scene:path}``: WeChat's scene may hold ``/`` (and the schema allows it), which the default
# converter stops at, so a code with one was unreachable. The path converter takes everything up
# to the last ``/scan``, sent as is or percent-encoded (``%2F``; ``?`` and ``#`` must be encoded).
@store.post("/channel-codes/{scene:path}/scan", response_model=ScanOut, status_code=status.HTTP_201_CREATED,
            tags=["store: channel codes"],
            summary="Record that the mini-program was opened through a channel code (unknown or retired scene: 404)",
            description="The scene as WeChat gives it (up to 32 of `0-9a-zA-Z!#$&'()*+,/:;=?@-._~`), "
                        "percent-encoded; a `/` may also be sent as is.")
def record_scan(
    scene: str, body: ScanIn, session: DbSession, merchant: StoreMerchant,
    authorization: Annotated[str | None, Header()] = None,
) -> ScanOut:
    member_id = None
    if authorization:  # a signed-in customer (StoreMerchant checked the token already)
        token = tenancy_service.authenticate(session, authorization.partition(" ")[2].strip(), kinds=("customer",))
        member_id = token.subject_id
    code = channel_codes.record_scan(session, merchant.id, scene, body.anonymous_id, member_id)
    return ScanOut(scene=code.scene, kind=code.kind, name=code.name)


@admin.get("/channel-codes/{code_id}/wxacode.png", response_class=Response, responses=PNG_RESPONSE, tags=TAGS,
           summary="Mini-program code (PNG) from WeChat's getwxacodeunlimit, opening the code's page with its scene",
           description="Merchants without WeChat AppID/AppSecret (sandbox): 409 `wechat_not_configured`; a WeChat "
                       "error: 502 `wechat_unavailable`. WeChat is called with no database transaction open.")
def channel_code_wxacode(
    code_id: int, request: Request, session: DbSession, settings: AppSettings,
    p: StaffPrincipal = Depends(require("members:read", "members:own")),
) -> Response:
    from siyu.integrations.wechat.miniprogram import MiniProgramClient

    code = channel_codes.get_code(session, p.merchant_id, code_id)
    creds = service.credentials(tenancy_service.get_merchant(session, p.merchant_id), request.app.state.secret_box)
    if creds.sandbox:
        raise DomainError("wechat_not_configured")
    assert creds.appid and creds.secret
    scene, page = code.scene, code.page
    session.commit()  # end the read transaction before calling WeChat
    try:
        with MiniProgramClient(creds.appid, creds.secret, base_url=settings.wechat_api_base) as client:
            png = client.get_unlimited_qrcode(scene, page)
    except Exception as exc:  # WeChat errors and network errors alike
        raise DomainError("wechat_unavailable") from exc
    return Response(content=png, media_type="image/png")
