"""Member identity and login.

WeChat login: the mini-program's ``wx.login`` code is exchanged for openid/unionid through
``jscode2session``. The remote call happens outside any database transaction (the endpoint
resolves credentials first, calls WeChat, then writes). A member is found by openid, then by
unionid (the same person arriving through another app of the merchant), else created.

Sandbox login (demo only): a merchant with no WeChat app secret configured accepts codes of the
form ``sandbox-<name>`` and maps them to openid ``sandbox-<name>`` so the demo store works
without WeChat. A merchant with a secret never accepts sandbox codes.

Identity merge
--------------
The same person may arrive by several doors: openid of one app, unionid shared by the
merchant's apps, a phone number bound later. When a login brings a unionid, or a phone binding
brings a phone, that another *active* member of the merchant already carries, the two members
are merged (``merge_members``): the **older** member (earlier ``registered_at``, then lower id)
is kept and the newer one is marked ``status="merged"`` with ``merged_into`` pointing at it. A
``MemberMerge`` row records the merge and what was moved.

Moved to the kept member (safe: no money, no uniqueness tied to history):
tags (and their log), member records (renumbered after the kept member's versions), addresses,
behaviour events and anonymous-id links, channel scans, consents (the most recent decision per
channel wins), customer login tokens; empty profile fields of the kept member are filled from
the merged one, and its staff owner is taken when the kept member has none (and that staff member
is still active).

Referral (``siyu.referral.service.merge_members``): invitees, binding history, rewards,
withdrawals and the distributor account move to the kept member; one binding remains (a locked
one wins, else the merchant's binding rule; never a self-invite or a ring); the dropped
member's invite code keeps working for the kept member; two distributor accounts are folded
into one (ledger, commissions, withdrawals and buckets together).

Loyalty (``siyu.loyalty.merge.merge_members``): the person's whole standing moves. Points go
through the append-only ledger (a ``merge_out`` entry on the dropped account, a ``merge_in`` on
the kept one, keys ``merge:<drop_id>:out|in``), lot by lot with their expiry dates, so the
dropped account ends at 0 and the expiry job still expires them on time; points earned/spent
totals follow (earned points count for the kept member's level). Growth moves by ``merge_out``
/ ``merge_in`` growth entries, paid spend and paid orders are added. The kept member takes the
highest of the two levels and the level the combined figures reach (history reason
``merge``); active paid cards and pending coupon rewards move. Check-ins are not combined: the
kept member's streak stands. An order placed before the merge and paid, cancelled or refunded
after it counts for the kept member (its points, growth and counters, and their reversal).

Coupons (``siyu.coupons.merge.merge_members``): unused coupons move to the kept member's wallet;
locked ones move too, still held by the dropped member's pending order (paid: used; cancelled:
back as unused in the kept member's wallet); used/expired/voided stay as history. Per-template
claim counters are added up so the per-member limit holds for the person.

Both are idempotent (ledger keys; emptied rows and zeroed counters), so a retried merge moves
nothing twice; what moved is recorded in the ``MemberMerge`` row.

Not moved (they stay under the merged member id, which the ``MemberMerge`` row links):
orders, order lines, payments, refunds, after-sales, the points/growth ledger history written
before the merge, used/expired/voided coupons, check-ins, cart items, member statistics and
segment memberships (recomputed).
The merged row keeps its openid (unique per merchant) so a later login with it is redirected
to the kept member; its unionid and phone move to the kept member.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from siyu.integrations.wechat.errors import WechatApiError
from siyu.integrations.wechat.miniprogram import MiniProgramClient
from siyu.kit.crypto import SecretBox
from siyu.kit.errors import DomainError, not_found, register_messages
from siyu.kit.outbox import enqueue
from siyu.kit.timeutil import utcnow
from siyu.members import repository as repo
from siyu.members.models import MEMBER_ACTIVE, MEMBER_MERGED, Member, MemberMerge
from siyu.tenancy.models import Merchant
from siyu.tenancy.service import open_merchant_secret

register_messages(
    {
        "wechat_code_invalid": (
            400,
            "微信登录凭证无效或已使用，请重新调用 wx.login",
            "The wx.login code is invalid or already used; call wx.login again",
        ),
        "wechat_unavailable": (502, "微信服务暂时不可用，请稍后重试", "WeChat is unavailable, please retry"),
        "wechat_not_configured": (
            409,
            "商户尚未配置小程序 AppID/AppSecret",
            "The merchant has not configured its mini-program AppID/AppSecret",
        ),
        "member_disabled": (403, "该会员账号已停用", "This member account is disabled"),
    }
)

SANDBOX_PREFIX = "sandbox-"


@dataclass(frozen=True)
class WechatIdentity:
    openid: str
    unionid: str | None


@dataclass(frozen=True)
class MiniProgramCredentials:
    appid: str | None
    secret: str | None

    @property
    def sandbox(self) -> bool:
        return not (self.appid and self.secret)


def credentials(merchant: Merchant, box: SecretBox) -> MiniProgramCredentials:
    secret = open_merchant_secret(box, merchant, "wechat_app_secret_enc")
    return MiniProgramCredentials(appid=merchant.wechat_appid, secret=secret)


def resolve_identity(creds: MiniProgramCredentials, code: str, *, base_url: str) -> WechatIdentity:
    """Exchange a login code. Call this with no database transaction open."""
    if creds.sandbox:
        if not code.startswith(SANDBOX_PREFIX) or len(code) <= len(SANDBOX_PREFIX):
            raise DomainError("wechat_code_invalid")
        return WechatIdentity(openid=code, unionid=None)
    assert creds.appid and creds.secret
    client = MiniProgramClient(creds.appid, creds.secret, base_url=base_url)
    try:
        result = client.code_to_session(code)
    except WechatApiError as exc:
        if str(exc.errcode) in ("40029", "40163", "40226"):
            raise DomainError("wechat_code_invalid") from exc
        raise DomainError("wechat_unavailable") from exc
    except Exception as exc:  # network errors
        raise DomainError("wechat_unavailable") from exc
    return WechatIdentity(openid=result.openid, unionid=result.unionid)


def login_or_register(
    session: Session,
    merchant_id: int,
    identity: WechatIdentity,
    *,
    channel: str | None = None,
    nickname: str | None = None,
    avatar_url: str | None = None,
) -> tuple[Member, bool]:
    """Find or create the member for a WeChat identity; returns (member, created).

    A member merged into another is followed to the kept member. A unionid that another active
    member already carries merges the two (see the module docs). A new member whose ``channel``
    is the scene of a channel code is attributed to it (staff owner, tags).
    """
    member = repo.by_openid(session, merchant_id, identity.openid)
    if member is not None:
        member = follow_merged(session, member)
    if member is None and identity.unionid:
        member = repo.active_by_unionid(session, merchant_id, identity.unionid)
    created = False
    if member is None:
        member = Member(
            merchant_id=merchant_id,
            openid=identity.openid,
            unionid=identity.unionid,
            registration_channel=channel,
            nickname=nickname,
            avatar_url=avatar_url,
            registered_at=utcnow(),
        )
        session.add(member)
        try:
            with session.begin_nested():
                session.flush()
            created = True
        except IntegrityError:
            # Two first logins raced: the other one created the member.
            found = repo.by_openid(session, merchant_id, identity.openid)
            if found is None:
                raise
            member = follow_merged(session, found)
    if member.status != MEMBER_ACTIVE:
        raise DomainError("member_disabled")
    if identity.unionid:
        if not member.unionid:
            member.unionid = identity.unionid
        other = repo.active_by_unionid(session, merchant_id, identity.unionid, exclude_id=member.id)
        if other is not None:
            member = merge_members(session, merchant_id, member, other, reason="unionid")
    if nickname and not member.nickname:
        member.nickname = nickname
    if avatar_url and not member.avatar_url:
        member.avatar_url = avatar_url
    member.last_login_at = utcnow()
    if created and channel:
        from siyu.members import channel_codes

        channel_codes.attribute_registration(session, merchant_id, member, channel)
    if created:
        from siyu.kit.events import emit

        emit(session, merchant_id, "member.registered", {"member_id": member.id, "channel": channel},
             key=f"member:{member.id}")
    return member, created


def follow_merged(session: Session, member: Member) -> Member:
    """The member a merged member was folded into (following a chain of merges)."""
    seen = 0
    while member.status == MEMBER_MERGED and member.merged_into is not None and seen < 10:
        nxt = repo.by_id(session, member.merchant_id, member.merged_into)
        if nxt is None:
            break
        member, seen = nxt, seen + 1
    return member


_PROFILE_FILL = (
    "nickname", "avatar_url", "gender", "birthday", "province", "city", "occupation", "income_band",
    "registration_channel",
)


def merge_members(session: Session, merchant_id: int, a: Member, b: Member, *, reason: str) -> Member:
    """Fold the newer of ``a`` and ``b`` into the older one; returns the kept member."""
    keep, drop = sorted((a, b), key=lambda m: (m.registered_at, m.id))
    moved: dict[str, Any] = {}
    session.flush()
    moved.update(repo.move_member_rows(session, merchant_id, drop.id, keep.id))
    from siyu.referral import service as referral

    moved.update(referral.merge_members(session, merchant_id, drop.id, keep.id))
    from siyu.coupons import merge as coupons_merge
    from siyu.loyalty import merge as loyalty_merge

    moved.update(loyalty_merge.merge_members(session, merchant_id, drop.id, keep.id))
    moved.update(coupons_merge.merge_members(session, merchant_id, drop.id, keep.id))
    for name in _PROFILE_FILL:
        if getattr(keep, name) in (None, "") and getattr(drop, name) not in (None, ""):
            setattr(keep, name, getattr(drop, name))
    if not keep.interests and drop.interests:
        keep.interests = list(drop.interests)
    if drop.custom_fields:
        keep.custom_fields = {**drop.custom_fields, **(keep.custom_fields or {})}
    unionid, phone = drop.unionid, drop.phone
    drop.unionid, drop.phone = None, None
    session.flush()
    if unionid and not keep.unionid:
        keep.unionid = unionid
    if phone and not keep.phone:
        keep.phone = phone
    if keep.staff_id is None and drop.staff_id is not None and _staff_active(session, merchant_id, drop.staff_id):
        from siyu.members import staff_owner

        staff_owner.set_owner(session, merchant_id, keep, drop.staff_id, reason="merge")
        moved["staff_owner"] = drop.staff_id
    drop.status = MEMBER_MERGED
    drop.merged_into = keep.id
    drop.merged_at = utcnow()
    session.add(MemberMerge(merchant_id=merchant_id, kept_member_id=keep.id, merged_member_id=drop.id,
                            reason=reason, moved=moved, at=utcnow()))
    session.flush()
    enqueue(session, merchant_id, "members.reevaluate_member", {"member_id": keep.id})
    from siyu.members import profile

    profile.note_completion(session, merchant_id, keep)
    return keep


def _staff_active(session: Session, merchant_id: int, staff_id: int) -> bool:
    """A merge hands the kept member only to a staff member who still works here (one who left
    keeps no new customers, as for channel codes and operators)."""
    from sqlalchemy import select

    from siyu.tenancy.models import Staff

    return bool(session.scalar(select(Staff.active).where(Staff.merchant_id == merchant_id, Staff.id == staff_id)))


def resolve_phone(creds: MiniProgramCredentials, code: str, *, base_url: str) -> str:
    """Exchange a getPhoneNumber code for the phone number (no transaction open)."""
    if creds.sandbox:
        if not code.startswith(SANDBOX_PREFIX):
            raise DomainError("wechat_code_invalid")
        digits = "".join(ch for ch in code if ch.isdigit())
        return ("138" + digits.rjust(8, "0"))[-11:]
    assert creds.appid and creds.secret
    client = MiniProgramClient(creds.appid, creds.secret, base_url=base_url)
    try:
        return client.get_phone_number(code).pure_phone_number
    except WechatApiError as exc:
        if str(exc.errcode) in ("40029", "40163"):
            raise DomainError("wechat_code_invalid") from exc
        raise DomainError("wechat_unavailable") from exc
    except Exception as exc:
        raise DomainError("wechat_unavailable") from exc


def get_member(session: Session, merchant_id: int, member_id: int) -> Member:
    member = repo.by_id(session, merchant_id, member_id)
    if member is None:
        raise not_found("会员", "Member")
    return member


def bind_phone(session: Session, merchant_id: int, member_id: int, phone: str) -> Member:
    """Set the member's phone. Another active member with the same phone is merged (the older
    one is kept and returned)."""
    member = follow_merged(session, get_member(session, merchant_id, member_id))
    if member.status != MEMBER_ACTIVE:
        raise DomainError("member_disabled")
    member.phone = phone
    other = repo.active_by_phone(session, merchant_id, phone, exclude_id=member.id)
    if other is not None:
        member = merge_members(session, merchant_id, member, other, reason="phone")
    from siyu.members import profile

    session.flush()
    profile.note_completion(session, merchant_id, member)
    return member


def merges_of(session: Session, merchant_id: int, member_id: int) -> list[MemberMerge]:
    get_member(session, merchant_id, member_id)
    return repo.merges_of(session, merchant_id, member_id)
