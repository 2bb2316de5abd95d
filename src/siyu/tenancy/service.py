"""Merchants, staff accounts, logins, tokens and API keys."""

from __future__ import annotations

import datetime as dt
import functools
import json
import logging
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerifyMismatchError
from cryptography.exceptions import InvalidTag
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from siyu.kit.crypto import SecretBox, bind, new_token, token_digest
from siyu.kit.errors import DomainError, not_found, register_messages
from siyu.kit.sealed_columns import columns_of
from siyu.kit.timeutil import utcnow
from siyu.tenancy import repository as repo
from siyu.tenancy import token_cache
from siyu.tenancy.models import AuthToken, Merchant, Staff
from siyu.tenancy.permissions import Role
from siyu.tenancy.schemas import MerchantUpdate

log = logging.getLogger(__name__)

register_messages(
    {
        "merchant_credentials_unreadable": (
            503,
            "商户的支付/小程序密钥无法解密：SIYU_SECRET_KEY 是否已更换？请把旧密钥配置到 SIYU_SECRET_KEY_PREVIOUS 后运行 siyu secrets rotate",
            "The merchant's stored credentials cannot be decrypted: was SIYU_SECRET_KEY changed? Put the old key in "
            "SIYU_SECRET_KEY_PREVIOUS and run `siyu secrets rotate`",
        ),
        "merchant_required": (
            400,
            "请在 X-Siyu-Merchant 请求头中指明商户",
            "Name the store's merchant in the X-Siyu-Merchant header",
        ),
        "merchant_code_taken": (409, "商户编码 {merchant_code} 已被使用", "Merchant code {merchant_code} is already taken"),
        "username_taken": (409, "用户名 {username} 已存在", "Username {username} already exists"),
        "staff_inactive": (403, "该员工账号已停用", "This staff account is disabled"),
        "invalid_timezone": (422, "未知的时区 {tz}", "Unknown time zone {tz}"),
        "cannot_demote_last_owner": (
            409,
            "不能停用或降级最后一位店主",
            "The last owner cannot be disabled or demoted",
        ),
    }
)

_hasher = PasswordHasher()


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerifyMismatchError, InvalidHashError):
        return False


@functools.cache
def _known_timezones() -> frozenset[str]:
    return frozenset(available_timezones())


def _check_timezone(tz: str) -> None:
    """An IANA zone name: ``ZoneInfo`` alone takes ``posixrules`` and fails on ``""`` and ``Asia``
    with errors of its own (``ValueError``, ``IsADirectoryError``), so the name is looked up."""
    if tz not in _known_timezones():
        raise DomainError("invalid_timezone", tz=tz)
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
        raise DomainError("invalid_timezone", tz=tz) from exc


# -- merchants ---------------------------------------------------------------------------------


def create_merchant(session: Session, *, code: str, name: str, timezone: str = "Asia/Shanghai") -> Merchant:
    _check_timezone(timezone)
    if repo.merchant_by_code(session, code):
        raise DomainError("merchant_code_taken", merchant_code=code)
    merchant = Merchant(code=code, name=name, timezone=timezone)
    session.add(merchant)
    try:
        with session.begin_nested():
            session.flush()
    except IntegrityError as exc:
        raise DomainError("merchant_code_taken", merchant_code=code) from exc
    return merchant


def get_merchant(session: Session, merchant_id: int) -> Merchant:
    merchant = repo.merchant_by_id(session, merchant_id)
    if merchant is None:
        raise not_found("商户", "Merchant")
    return merchant


def get_merchant_by_code(session: Session, code: str) -> Merchant:
    merchant = repo.merchant_by_code(session, code)
    if merchant is None or merchant.status != "active":
        raise not_found("商户", "Merchant")
    return merchant


def update_merchant(session: Session, box: SecretBox, merchant_id: int, data: MerchantUpdate) -> Merchant:
    merchant = get_merchant(session, merchant_id)
    fields = data.model_dump(exclude_unset=True)
    if fields.get("timezone") is not None:  # "" too: it was stored unchecked, and every local date failed
        _check_timezone(fields["timezone"])
    plain = ("name", "timezone", "wechat_appid", "pay_provider", "pay_mchid", "pay_serial_no", "pay_fee_bp")
    for key in plain:
        if key in fields and fields[key] is not None:
            setattr(merchant, key, fields[key])
    secrets_map = {
        "wechat_app_secret": "wechat_app_secret_enc",
        "pay_private_key_pem": "pay_private_key_enc",
        "pay_apiv3_key": "pay_apiv3_key_enc",
    }
    # bound to this merchant and column (``v2``); the readers go through ``open_merchant_secret``,
    # which still opens values written unbound (``v1``) before the binding
    for key, column in secrets_map.items():
        if fields.get(key):
            seal_merchant_secret(box, merchant, column, fields[key])
    if fields.get("pay_platform_keys"):
        seal_merchant_secret(box, merchant, "pay_platform_keys_enc", json.dumps(fields["pay_platform_keys"]))
    return merchant


# the registry (kit.sealed_columns) lists them, so ``siyu secrets rotate`` re-seals them too
MERCHANT_SECRET_COLUMNS = columns_of("merchants")


def merchant_secret_aad(merchant_id: int, column: str) -> str:
    """The associated data of a merchant credential: ``merchants.<column>|m=<id>|id=<id>``."""
    if column not in MERCHANT_SECRET_COLUMNS:
        raise ValueError(f"not a merchant secret column: {column}")
    return bind("merchants", column, merchant_id, merchant_id)


def seal_merchant_secret(box: SecretBox, merchant: Merchant, column: str, value: str) -> None:
    """Store ``value`` in ``column`` encrypted and bound to this merchant and column (``v2``)."""
    setattr(merchant, column, box.encrypt(value, aad=merchant_secret_aad(merchant.id, column)))


def open_merchant_secret(box: SecretBox, merchant: Merchant, column: str) -> str | None:
    """The credential in ``column`` in clear (None when unset): a ``v2`` value only in its own
    merchant and column, a legacy ``v1`` value as before.
    A value no configured secret opens (the secret changed without ``SIYU_SECRET_KEY_PREVIOUS``)
    is ``merchant_credentials_unreadable`` (503, logged), not a 500 deep inside a payment."""
    token = getattr(merchant, column)
    if not token:
        return None
    try:
        return box.decrypt(token, aad=merchant_secret_aad(merchant.id, column))
    except (InvalidTag, ValueError) as exc:
        log.error("merchant %s: %s cannot be decrypted with the configured secret keys", merchant.id, column)
        raise DomainError("merchant_credentials_unreadable") from exc


# -- staff -------------------------------------------------------------------------------------


def create_staff(
    session: Session,
    merchant_id: int,
    *,
    username: str,
    password: str,
    role: Role | str,
    display_name: str | None = None,
    phone: str | None = None,
) -> Staff:
    if repo.staff_by_username(session, merchant_id, username):
        raise DomainError("username_taken", username=username)
    staff = Staff(
        merchant_id=merchant_id,
        username=username,
        display_name=display_name or username,
        role=Role(role).value,
        password_hash=hash_password(password),
        phone=phone,
    )
    session.add(staff)
    try:
        with session.begin_nested():
            session.flush()
    except IntegrityError as exc:
        raise DomainError("username_taken", username=username) from exc
    return staff


def get_staff(session: Session, merchant_id: int, staff_id: int) -> Staff:
    staff = repo.staff_by_id(session, merchant_id, staff_id)
    if staff is None:
        raise not_found("员工", "Staff member")
    return staff


def update_staff(
    session: Session,
    merchant_id: int,
    staff_id: int,
    *,
    display_name: str | None = None,
    role: Role | None = None,
    active: bool | None = None,
    password: str | None = None,
) -> Staff:
    staff = get_staff(session, merchant_id, staff_id)
    demoting = (role is not None and role != Role.OWNER) or active is False
    if staff.role == Role.OWNER and demoting:
        owners = [s for s in repo.list_staff(session, merchant_id) if s.role == Role.OWNER and s.active]
        if len(owners) <= 1:
            raise DomainError("cannot_demote_last_owner")
    if display_name is not None:
        staff.display_name = display_name
    if role is not None:
        staff.role = role.value
    if password is not None:
        staff.password_hash = hash_password(password)
    if active is not None:
        staff.active = active
        if not active:
            staff.left_at = utcnow()
            repo.revoke_subject_tokens(session, merchant_id, "staff", staff.id, utcnow())
    return staff


# -- tokens ------------------------------------------------------------------------------------


def _issue(
    session: Session,
    merchant_id: int,
    kind: str,
    *,
    subject_id: int | None,
    role: str | None,
    ttl: dt.timedelta | None,
    name: str | None = None,
    created_by: int | None = None,
) -> tuple[str, AuthToken]:
    prefix = {"staff": "st", "customer": "ct", "api_key": "sk"}[kind]
    plaintext = new_token(prefix)
    now = utcnow()
    token = AuthToken(
        merchant_id=merchant_id,
        token_hash=token_digest(plaintext),
        kind=kind,
        subject_id=subject_id,
        role=role,
        name=name,
        expires_at=now + ttl if ttl else None,
        created_at=now,
        created_by=created_by,
    )
    session.add(token)
    session.flush()
    return plaintext, token


def login_staff(
    session: Session, *, merchant_code: str, username: str, password: str, ttl: dt.timedelta
) -> tuple[str, AuthToken]:
    merchant = repo.merchant_by_code(session, merchant_code)
    staff = repo.staff_by_username(session, merchant.id, username) if merchant else None
    if staff is None or not verify_password(staff.password_hash, password):
        raise DomainError("invalid_credentials")
    if not staff.active:
        raise DomainError("staff_inactive")
    return _issue(session, staff.merchant_id, "staff", subject_id=staff.id, role=staff.role, ttl=ttl)


def issue_customer_token(session: Session, merchant_id: int, member_id: int, ttl: dt.timedelta) -> tuple[str, AuthToken]:
    return _issue(session, merchant_id, "customer", subject_id=member_id, role=None, ttl=ttl)


def create_api_key(
    session: Session, merchant_id: int, *, name: str, role: Role, created_by: int | None
) -> tuple[str, AuthToken]:
    return _issue(
        session, merchant_id, "api_key", subject_id=None, role=role.value, ttl=None, name=name,
        created_by=created_by,
    )


def revoke_api_key(session: Session, merchant_id: int, key_id: int) -> None:
    token = repo.token_by_id(session, merchant_id, key_id)
    if token is None or token.kind != "api_key":
        raise not_found("API 密钥", "API key")
    token.revoked_at = token.revoked_at or utcnow()


def revoke(session: Session, token_id: int) -> None:
    token = session.get(AuthToken, token_id)
    if token is not None and token.revoked_at is None:
        token.revoked_at = utcnow()


def authenticate_cached(
    session: Session, plaintext: str, *, kinds: tuple[str, ...]
) -> token_cache.CachedToken | None:
    """``authenticate`` from the per-process cache only: the cached token's columns (``id``,
    ``merchant_id``, ``kind``, ``subject_id``, ``role``, ...), or None when the token is not cached
    (the caller then authenticates where it may read the database). Never touches the database."""
    digest = token_digest(plaintext)
    cached = token_cache.get(session, digest)
    if cached is None:
        return None
    if cached.kind not in kinds or (cached.expires_at is not None and cached.expires_at <= utcnow()):
        raise DomainError("invalid_token")
    return cached


def authenticate(session: Session, plaintext: str, *, kinds: tuple[str, ...]) -> AuthToken:
    """The valid token of ``kinds`` for ``plaintext``, else ``invalid_token``.

    A token seen valid in the last ``token_cache.TTL_SECONDS`` comes from the per-process cache
    with no database read (see ``token_cache`` for the revocation bound); the result is then a
    detached ``AuthToken``: read it, never add it to a session.
    """
    digest = token_digest(plaintext)
    hit = authenticate_cached(session, plaintext, kinds=kinds)
    if hit is not None:
        return hit.as_token(digest)
    generation = token_cache.generation()
    found = repo.token_with_merchant(session, digest)
    token = found[0] if found is not None else None
    if found is not None and found[1] is not None:
        # The request goes on to use its merchant (time zone, settings): keep the row loaded with
        # the token referenced for the session's life, so ``get_merchant`` (``session.get``) finds
        # it in the identity map instead of a second round trip.
        session.info.setdefault("siyu.tenancy.merchants", {})[found[1].id] = found[1]
    if token is None or token.revoked_at is not None:
        raise DomainError("invalid_token")
    if token.expires_at is not None and token.expires_at <= utcnow():
        raise DomainError("invalid_token")
    if token.kind == "staff":
        assert token.subject_id is not None
        staff = repo.staff_by_id(session, token.merchant_id, token.subject_id)
        if staff is None or not staff.active:
            raise DomainError("invalid_token")
    token_cache.put(session, digest, token, generation)
    if token.kind not in kinds:
        raise DomainError("invalid_token")
    return token
