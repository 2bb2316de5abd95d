"""Marketing consent and the member's rights over their data (export, deletion).

Consent
    One row per member and channel (``subscribe_message``, ``sms``, ``email``, ``wecom``,
    ``official_account``) with the current decision, its source and timestamps; every change is
    also appended to ``member_consent_log``. ``has_consent`` is what sending modules ask.
    No row means no consent.

Export (``GET /api/store/v1/me/export``)
    A JSON document built from registered *exporters*: ``register_exporter(name, fn)`` with
    ``fn(session, merchant_id, member_id) -> JSON-able``. This module registers ``member``
    (profile, consents, tags, records, merges, ownership), ``orders`` (orders with lines,
    addresses) and ``events``. Other modules register theirs in a ``siyu.<domain>.privacy``
    module, which is imported on first use (e.g. loyalty's points ledger).

Deletion (``POST /api/store/v1/me/delete``, also for owners on the admin API)
    Anonymisation, not removal, because money records must stay auditable. Registered
    *anonymisers* run in one transaction (``register_anonymiser(name, fn)``):

    - member: nickname, avatar, gender, birthday, region, occupation, income, interests and
      custom fields nulled; openid replaced by ``deleted:<id>:<random>``, unionid and phone
      nulled; status ``deleted``; member records, tags and tag history deleted; consents
      revoked (the consent log is kept as the record of the revocation); customer tokens revoked.
    - orders: addresses deleted; each order's address snapshot reduced to province/city and
      its remark cleared. Orders, lines, payments, refunds stay (amounts, dates, products) and
      still point at the anonymised member row.
    - events: ``member_id`` detached (set null) and anonymous-id links removed; the
      properties of behaviour events hold product ids, not personal data.

    - referral (``siyu.referral.privacy``): the distributor's encrypted real name and phone and
      their masked copies nulled; payee names nulled on finished withdrawals.

    Points entries, coupons, after-sales: kept; their modules may register an anonymiser.
"""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
import secrets
from collections.abc import Callable
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

import siyu
from siyu.kit.errors import DomainError, register_messages
from siyu.kit.timeutil import utcnow
from siyu.members import repository as repo
from siyu.members.models import (
    MEMBER_DELETED,
    Member,
    MemberConsent,
    MemberConsentLog,
    MemberRecord,
    MemberTag,
    MemberTagLog,
)
from siyu.members.schemas import CONSENT_CHANNELS, ConsentOut

register_messages(
    {
        "member_already_deleted": (409, "该会员的数据已删除", "This member's data was already deleted"),
    }
)

Exporter = Callable[[Session, int, int], Any]
Anonymiser = Callable[[Session, int, int], dict[str, int] | None]
_EXPORTERS: dict[str, Exporter] = {}
_ANONYMISERS: dict[str, Anonymiser] = {}
_discovered = False


def register_exporter(name: str, fn: Exporter) -> None:
    _EXPORTERS[name] = fn


def register_anonymiser(name: str, fn: Anonymiser) -> None:
    _ANONYMISERS[name] = fn


def _discover() -> None:
    """Import every ``siyu.<domain>.privacy`` module so its registrations run."""
    global _discovered
    if _discovered:
        return
    for info in pkgutil.iter_modules(siyu.__path__):
        name = f"siyu.{info.name}.privacy"
        if info.ispkg and info.name != "members" and importlib.util.find_spec(name) is not None:
            importlib.import_module(name)
    _discovered = True


# -- consent ---------------------------------------------------------------------------------------


def list_consents(session: Session, merchant_id: int, member_id: int) -> list[ConsentOut]:
    rows = {c.channel: c for c in repo.consents(session, merchant_id, member_id)}
    out = []
    for ch in CONSENT_CHANNELS:
        c = rows.get(ch)
        if c is None:
            out.append(ConsentOut(channel=ch, granted=False, source=None, granted_at=None, revoked_at=None, updated_at=None))
        else:
            out.append(ConsentOut.model_validate(c))
    return out


def set_consents(session: Session, merchant_id: int, member_id: int, consents: dict[str, bool], *, source: str) -> list[ConsentOut]:
    from siyu.members.service import get_member

    get_member(session, merchant_id, member_id)
    now = utcnow()
    rows = {c.channel: c for c in repo.consents(session, merchant_id, member_id)}
    for channel, granted in consents.items():
        row = rows.get(channel)
        if row is None:
            row = MemberConsent(merchant_id=merchant_id, member_id=member_id, channel=channel, granted=False, source=source)
            session.add(row)
        elif row.granted == granted:
            continue
        row.granted, row.source, row.updated_at = granted, source, now
        if granted:
            row.granted_at, row.revoked_at = now, None
        else:
            row.revoked_at = now
        session.add(MemberConsentLog(merchant_id=merchant_id, member_id=member_id, channel=channel, granted=granted,
                                     source=source, at=now))
    session.flush()
    return list_consents(session, merchant_id, member_id)


def has_consent(session: Session, merchant_id: int, member_id: int, channel: str) -> bool:
    return any(c.channel == channel and c.granted for c in repo.consents(session, merchant_id, member_id))


# -- export -----------------------------------------------------------------------------------------


def _export_member(session: Session, merchant_id: int, member_id: int) -> dict[str, Any]:
    from siyu.members import profile, tags
    from siyu.members.service import get_member

    m = get_member(session, merchant_id, member_id)
    return {
        "profile": profile.get_profile(session, merchant_id, member_id).model_dump(mode="json"),
        "identity": {"openid": m.openid, "unionid": m.unionid, "phone": m.phone},
        "consents": [c.model_dump(mode="json") for c in list_consents(session, merchant_id, member_id)],
        "consent_history": [
            {"channel": c.channel, "granted": c.granted, "source": c.source, "at": c.at.isoformat()}
            for c in repo.consent_log(session, merchant_id, member_id)
        ],
        "tags": [t.model_dump(mode="json") for t in tags.member_tag_list(session, merchant_id, member_id)],
        "records": [
            {"record_type_id": r.record_type_id, "version": r.version, "data": r.data, "note": r.note,
             "created_at": r.created_at.isoformat()}
            for r in repo.all_records(session, merchant_id, member_id)
        ],
        "staff_ownership": [
            {"from_staff_id": o.from_staff_id, "to_staff_id": o.to_staff_id, "reason": o.reason, "at": o.at.isoformat()}
            for o in repo.ownership_log(session, merchant_id, member_id)
        ],
        "merges": [
            {"kept_member_id": x.kept_member_id, "merged_member_id": x.merged_member_id, "reason": x.reason,
             "at": x.at.isoformat()}
            for x in repo.merges_of(session, merchant_id, member_id)
        ],
    }


def _export_orders(session: Session, merchant_id: int, member_id: int) -> dict[str, Any]:
    from siyu.orders.models import Address, Order, OrderLine

    orders = list(
        session.scalars(select(Order).where(Order.merchant_id == merchant_id, Order.member_id == member_id).order_by(Order.id))
    )
    lines: dict[int, list[dict[str, Any]]] = {}
    if orders:
        for ln in session.scalars(
            select(OrderLine).where(OrderLine.merchant_id == merchant_id, OrderLine.order_id.in_([o.id for o in orders]))
        ):
            lines.setdefault(ln.order_id, []).append(
                {"title": ln.title, "spec": ln.spec_text, "quantity": ln.quantity, "payable_amount": ln.payable_amount,
                 "refunded_amount": ln.refunded_amount}
            )
    addresses = session.scalars(
        select(Address).where(Address.merchant_id == merchant_id, Address.member_id == member_id, Address.deleted.is_(False))
    )
    return {
        "orders": [
            {"order_no": o.order_no, "status": o.status, "payable_amount": o.payable_amount, "paid_amount": o.paid_amount,
             "refunded_amount": o.refunded_amount, "address": o.address, "remark": o.remark,
             "created_at": o.created_at.isoformat() if o.created_at else None,
             "paid_at": o.paid_at.isoformat() if o.paid_at else None, "lines": lines.get(o.id, [])}
            for o in orders
        ],
        "addresses": [
            {"name": a.name, "phone": a.phone, "province": a.province, "city": a.city, "district": a.district,
             "detail": a.detail, "postal_code": a.postal_code, "is_default": a.is_default}
            for a in addresses
        ],
    }


def _export_events(session: Session, merchant_id: int, member_id: int) -> list[dict[str, Any]]:
    from siyu.events.models import Event

    rows = session.scalars(
        select(Event).where(Event.merchant_id == merchant_id, Event.member_id == member_id)
        .order_by(Event.occurred_at).limit(10_000)
    )
    return [{"name": e.name, "occurred_at": e.occurred_at.isoformat(), "source": e.source, "properties": e.properties}
            for e in rows]


def export(session: Session, merchant_id: int, member_id: int) -> dict[str, Any]:
    """Everything about the member, one section per registered exporter."""
    from siyu.members.service import get_member

    get_member(session, merchant_id, member_id)
    _discover()
    out: dict[str, Any] = {"member_id": member_id, "exported_at": utcnow().isoformat()}
    for name, fn in _EXPORTERS.items():
        out[name] = fn(session, merchant_id, member_id)
    return out


# -- deletion ---------------------------------------------------------------------------------------


def _anonymise_member(session: Session, merchant_id: int, member_id: int) -> dict[str, int]:
    from siyu.members.service import get_member
    from siyu.tenancy.models import AuthToken

    m = get_member(session, merchant_id, member_id)
    now = utcnow()
    for name in ("unionid", "phone", "nickname", "avatar_url", "gender", "birthday", "province", "city", "occupation",
                 "income_band", "staff_bound_at"):
        setattr(m, name, None)
    m.interests, m.custom_fields = [], {}
    m.openid = f"deleted:{m.id}:{secrets.token_hex(8)}"
    m.status = MEMBER_DELETED
    m.anonymised_at = now
    rec = session.execute(delete(MemberRecord).where(MemberRecord.merchant_id == merchant_id, MemberRecord.member_id == member_id))
    tags = session.execute(delete(MemberTag).where(MemberTag.merchant_id == merchant_id, MemberTag.member_id == member_id))
    session.execute(delete(MemberTagLog).where(MemberTagLog.merchant_id == merchant_id, MemberTagLog.member_id == member_id))
    granted = [c for c in repo.consents(session, merchant_id, member_id) if c.granted]
    set_consents(session, merchant_id, member_id, {c.channel: False for c in granted}, source="deletion")
    tokens = session.execute(
        update(AuthToken)
        .where(AuthToken.merchant_id == merchant_id, AuthToken.kind == "customer", AuthToken.subject_id == member_id,
               AuthToken.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    return {"records_deleted": int(rec.rowcount or 0), "tags_removed": int(tags.rowcount or 0),  # type: ignore[attr-defined]
            "tokens_revoked": int(tokens.rowcount or 0)}  # type: ignore[attr-defined]


def _anonymise_orders(session: Session, merchant_id: int, member_id: int) -> dict[str, int]:
    from siyu.orders.models import Address, Order

    addr = session.execute(delete(Address).where(Address.merchant_id == merchant_id, Address.member_id == member_id))
    n = 0
    for o in session.scalars(select(Order).where(Order.merchant_id == merchant_id, Order.member_id == member_id)):
        snap = o.address or {}
        o.address = {k: snap[k] for k in ("province", "city") if k in snap} | {"anonymised": True}
        o.remark = None
        n += 1
    return {"addresses_deleted": int(addr.rowcount or 0), "orders_anonymised": n}  # type: ignore[attr-defined]


def _anonymise_events(session: Session, merchant_id: int, member_id: int) -> dict[str, int]:
    from siyu.events.models import AnonymousLink, Event

    ev = session.execute(
        update(Event).where(Event.merchant_id == merchant_id, Event.member_id == member_id).values(member_id=None)
    )
    session.execute(delete(AnonymousLink).where(AnonymousLink.merchant_id == merchant_id, AnonymousLink.member_id == member_id))
    return {"events_detached": int(ev.rowcount or 0)}  # type: ignore[attr-defined]


def delete_member_data(session: Session, merchant_id: int, member_id: int) -> tuple[Member, dict[str, Any]]:
    """Anonymise the member (see module docs). Runs every anonymiser in the caller's transaction."""
    from siyu.members.service import get_member

    m = get_member(session, merchant_id, member_id)
    if m.status == MEMBER_DELETED:
        raise DomainError("member_already_deleted")
    _discover()
    summary: dict[str, Any] = {}
    # member last: the others may still need the member's identity
    for name, fn in sorted(_ANONYMISERS.items(), key=lambda kv: kv[0] == "member"):
        summary[name] = fn(session, merchant_id, member_id) or {}
    session.flush()
    from siyu.kit.audit import record

    record(session, merchant_id, "member", member_id, "anonymised", to_state=MEMBER_DELETED, data=summary)
    return m, summary


register_exporter("member", _export_member)
register_exporter("orders", _export_orders)
register_exporter("events", _export_events)
register_anonymiser("member", _anonymise_member)
register_anonymiser("orders", _anonymise_orders)
register_anonymiser("events", _anonymise_events)
