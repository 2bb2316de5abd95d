"""The referral part of a member's data export and deletion (``members.privacy`` discovers this
module).

Export: the member's referral profile (invite code, inviter, binding), their distributor record
with the real name and phone **in clear** (it is their own data; decrypted with
``SIYU_SECRET_KEY``, None when it cannot be), account buckets, and their withdrawals with the
payee name in clear.

Deletion anonymises, it does not remove: commissions, ledger rows and withdrawals are money
records. The distributor's encrypted real name and phone and their masked copies are nulled,
as are the application notes; the payee name (ciphertext and masked copy) is nulled on every
withdrawal that is over (paid, rejected, failed). A withdrawal still on its way (requested,
approved) keeps its encrypted name until it ends — WeChat needs it to pay from 2,000 yuan — and
is counted as ``withdrawals_in_flight`` so the operator can follow up. Referral bindings stay
(they point at the anonymised member row and explain commissions).
"""

from __future__ import annotations

from typing import Any

from cryptography.exceptions import InvalidTag
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from siyu.config import get_settings
from siyu.members.privacy import register_anonymiser, register_exporter
from siyu.referral import pii
from siyu.referral import repository as repo
from siyu.referral.models import WD_APPROVED, WD_REQUESTED, Distributor, Withdrawal

_OPEN = (WD_REQUESTED, WD_APPROVED)


def _readable(fn: Any, row: Any, key: str) -> str | None:
    try:
        value: str | None = fn(row, key)
    except (InvalidTag, ValueError):  # the secret key changed since it was written
        return None
    return value


def export(session: Session, merchant_id: int, member_id: int) -> dict[str, Any]:
    key = get_settings().secret_key
    prof = repo.profile(session, merchant_id, member_id)
    dist = session.scalar(
        select(Distributor).where(Distributor.merchant_id == merchant_id, Distributor.member_id == member_id)
    )
    withdrawals = session.scalars(
        select(Withdrawal).where(Withdrawal.merchant_id == merchant_id, Withdrawal.member_id == member_id)
        .order_by(Withdrawal.id)
    )
    return {
        "profile": None if prof is None else {
            "code": prof.code, "inviter_member_id": prof.inviter_member_id,
            "bound_at": prof.bound_at.isoformat() if prof.bound_at else None, "bind_source": prof.bind_source,
        },
        "distributor": None if dist is None else {
            "id": dist.id, "status": dist.status, "level_id": dist.level_id,
            "real_name": _readable(pii.real_name_of, dist, key), "phone": _readable(pii.phone_of, dist, key),
            "note": dist.note, "applied_at": dist.applied_at.isoformat(),
            "account": {b: getattr(dist, b) for b in ("pending", "frozen", "available", "withdrawing", "withdrawn", "debt")},
        },
        "withdrawals": [
            {"id": w.id, "amount": w.amount, "status": w.status, "created_at": w.created_at.isoformat(),
             "paid_at": w.paid_at.isoformat() if w.paid_at else None,
             "payee_name": _readable(pii.payee_name_of, w, key)}
            for w in withdrawals
        ],
    }


def anonymise(session: Session, merchant_id: int, member_id: int) -> dict[str, int]:
    dist = session.execute(
        update(Distributor)
        .where(Distributor.merchant_id == merchant_id, Distributor.member_id == member_id)
        .values(real_name_enc=None, real_name_masked=None, phone_enc=None, phone_masked=None, note=None)
        .execution_options(synchronize_session="fetch")
    )
    names = session.execute(
        update(Withdrawal)
        .where(Withdrawal.merchant_id == merchant_id, Withdrawal.member_id == member_id,
               Withdrawal.status.not_in(_OPEN),
               (Withdrawal.payee_name_enc.is_not(None)) | (Withdrawal.payee_name_masked.is_not(None)))
        .values(payee_name_enc=None, payee_name_masked=None)
        .execution_options(synchronize_session="fetch")
    )
    in_flight = session.scalar(
        select(func.count()).select_from(Withdrawal).where(
            Withdrawal.merchant_id == merchant_id, Withdrawal.member_id == member_id,
            Withdrawal.status.in_(_OPEN), Withdrawal.payee_name_enc.is_not(None),
        )
    )
    return {
        "distributor_anonymised": int(dist.rowcount or 0),  # type: ignore[attr-defined]
        "payee_names_removed": int(names.rowcount or 0),  # type: ignore[attr-defined]
        "withdrawals_in_flight": int(in_flight or 0),
    }


register_exporter("referral", export)
register_anonymiser("referral", anonymise)
