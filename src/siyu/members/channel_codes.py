"""Channel codes (渠道码): one QR code per entry (a flyer, a store counter, a community group,
the official account, a staff member), whose scene value records who came in through it.

- Scans: the mini-program reports ``POST /api/store/v1/channel-codes/{scene}/scan`` with its
  anonymous id when it is opened with a scene (percent-encoded; the route takes a ``/`` in it).
- Scene: what WeChat's ``getwxacodeunlimit`` accepts, at most 32 of ``0-9a-zA-Z`` and
  ``!#$&'()*+,/:;=?@-._~`` (``ChannelCodeIn``: anything else is a 422 at ``scene``).
- Registrations: ``wechat-login`` carries ``channel``; when it is the scene of an active code and
  the member is new, the member's ``registration_channel`` is the scene, the code's staff
  becomes the owner (if the member has none) and the code's tags are applied
  (source ``channel_code:<id>``).
- Images: ``qr.png`` is a plain QR code (``qrcode`` library) of the code's ``landing_url``
  (``{scene}`` and ``{merchant}`` replaced), by default
  ``<public_base_url>/s/{merchant}?scene={scene}``; ``wxacode.png`` is the mini-program code
  from WeChat's ``getwxacodeunlimit`` for merchants with WeChat configured (sandbox merchants:
  409 ``wechat_not_configured``). The WeChat call is made with no transaction open.
- Stats per code: scans, unique scanners, registrations, members with a paid order
  ("first orders") and their GMV (paid minus refunded, fen).
"""

from __future__ import annotations

import io
from typing import Any
from urllib.parse import quote

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from siyu.kit.errors import DomainError, not_found, register_messages
from siyu.kit.timeutil import utcnow
from siyu.members import repository as repo
from siyu.members.models import ChannelCode, ChannelScan, Member
from siyu.members.schemas import ChannelCodeIn, ChannelCodePatch, ChannelStatsOut

register_messages(
    {
        "channel_scene_taken": (409, "场景值 {scene} 已被其他渠道码使用", "Scene {scene} is used by another channel code"),
        "channel_qr_too_long": (
            422, "落地页地址过长（{length} 字节），二维码最多容纳 {max} 字节，请缩短 landing_url",
            "The landing URL is too long for a QR code ({length} bytes, at most {max}): shorten landing_url",
        ),
    }
)

DEFAULT_LANDING = "{base}/s/{merchant}?scene={scene}"
QR_MAX_BYTES = 2331  # byte mode, version 40, error correction M


def get_code(session: Session, merchant_id: int, code_id: int) -> ChannelCode:
    code = repo.channel_code(session, merchant_id, code_id)
    if code is None:
        raise not_found("渠道码", "Channel code")
    return code


def _check_refs(session: Session, merchant_id: int, staff_id: int | None, tag_ids: list[int] | None) -> None:
    if staff_id is not None:
        from siyu.tenancy import service as tenancy_service

        tenancy_service.get_staff(session, merchant_id, staff_id)
    if tag_ids and repo.existing_tag_ids(session, merchant_id, set(tag_ids)) != set(tag_ids):
        raise not_found("标签", "Tag")


def create_code(session: Session, merchant_id: int, data: ChannelCodeIn) -> ChannelCode:
    _check_refs(session, merchant_id, data.staff_id, data.tag_ids)
    if repo.channel_code_by_scene(session, merchant_id, data.scene):
        raise DomainError("channel_scene_taken", scene=data.scene)
    code = ChannelCode(merchant_id=merchant_id, **data.model_dump())
    session.add(code)
    try:
        with session.begin_nested():
            session.flush()
    except IntegrityError as exc:
        raise DomainError("channel_scene_taken", scene=data.scene) from exc
    return code


def update_code(session: Session, merchant_id: int, code_id: int, data: ChannelCodePatch) -> ChannelCode:
    code = get_code(session, merchant_id, code_id)
    fields = data.model_dump(exclude_unset=True)
    _check_refs(session, merchant_id, fields.get("staff_id"), fields.get("tag_ids"))
    for key, value in fields.items():
        if key in ("name", "active", "tag_ids") and value is None:
            continue
        setattr(code, key, value)
    return code


def record_scan(session: Session, merchant_id: int, scene: str, anonymous_id: str | None, member_id: int | None) -> ChannelCode:
    code = repo.channel_code_by_scene(session, merchant_id, scene)
    if code is None or not code.active:
        raise not_found("渠道码", "Channel code")
    session.add(ChannelScan(merchant_id=merchant_id, channel_code_id=code.id, anonymous_id=anonymous_id,
                            member_id=member_id, scanned_at=utcnow()))
    return code


def attribute_registration(session: Session, merchant_id: int, member: Member, scene: str) -> ChannelCode | None:
    """A new member arrived with ``scene``: record the channel, bind the staff, apply the tags."""
    from siyu.members import staff_owner, tags

    code = repo.channel_code_by_scene(session, merchant_id, scene)
    if code is None or not code.active:
        return None
    member.registration_channel = code.scene
    if code.staff_id is not None:
        staff_owner.bind_from_channel(session, merchant_id, member, code.staff_id)
    for tag_id in code.tag_ids or []:
        if repo.tag(session, merchant_id, int(tag_id)) is not None:
            tags.add_tag(session, merchant_id, member.id, int(tag_id), source=f"channel_code:{code.id}")
    return code


def landing_url(code: ChannelCode, merchant_code: str, base_url: str) -> str:
    """The URL the plain QR code encodes. The scene is percent-encoded: WeChat's scene characters
    include ``&``, ``=``, ``?``, ``#``, ``+`` and ``/``, which would otherwise end or change the
    query (``?scene=a&b`` reads as ``a``); letters, digits and ``-._~`` stay as they are."""
    template = code.landing_url or DEFAULT_LANDING
    return (
        template.replace("{base}", base_url.rstrip("/")).replace("{merchant}", merchant_code)
        .replace("{scene}", quote(code.scene, safe=""))
    )


def qr_png(text: str, *, box_size: int = 10, border: int = 2) -> bytes:
    """A QR code of ``text`` as PNG (error correction M).

    qrcode 8.2's Reed-Solomon step fails (``ValueError: glog(0)``, python-qrcode #330, fixed on
    its main branch, not released) on a data block of zero bytes, which its digit segments make
    of a run of zeros (a scene like ``2026000000…``; found by fuzzing the admin API). In byte
    mode every other byte holds the high half of a character, non-zero for printable text, so
    the code is then made again with the text as bytes (a little larger). A text beyond a QR
    code's capacity is refused ``channel_qr_too_long`` (a 500 before)."""
    import qrcode.util

    length = len(text.encode())
    if length > QR_MAX_BYTES:
        raise DomainError("channel_qr_too_long", length=length, max=QR_MAX_BYTES)

    try:
        image = _qr_image(text, box_size, border)
    except ValueError:  # glog(0), or mixed segments' headers past version 40: plain bytes fit
        image = _qr_image(qrcode.util.QRData(text.encode(), mode=qrcode.util.MODE_8BIT_BYTE), box_size, border)
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def _qr_image(data: Any, box_size: int, border: int) -> Any:
    import qrcode

    qr = qrcode.QRCode(error_correction=qrcode.constants.ERROR_CORRECT_M, box_size=box_size, border=border)
    qr.add_data(data)
    qr.make(fit=True)
    return qr.make_image(fill_color="black", back_color="white")


def stats(session: Session, merchant_id: int) -> list[ChannelStatsOut]:
    figures = repo.channel_stats(session, merchant_id)
    out = []
    for code in repo.channel_codes(session, merchant_id):
        f = figures.get(code.scene, {})
        out.append(ChannelStatsOut(
            channel_code_id=code.id, scene=code.scene, name=code.name, kind=code.kind,
            scans=f.get("scans", 0), unique_scanners=f.get("unique_scanners", 0), registrations=f.get("registrations", 0),
            first_orders=f.get("first_orders", 0), gmv=f.get("gmv", 0),
        ))
    return out
