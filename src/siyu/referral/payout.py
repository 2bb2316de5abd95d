"""Payout providers: how an approved withdrawal becomes money in the distributor's hands.

A provider is looked up by name (``ReferralSettings.payout_provider``). ``manual`` sends
nothing: finance transfers the money outside the system and marks the withdrawal paid with a
reference. An automatic provider (e.g. WeChat Pay's transfer to balance, 商家转账) implements
``send``; it is called by the ``referral.payout`` job after the approval committed, never inside
a request's transaction, with the withdrawal id as its idempotency key (``out_batch_no``), and
returns ``paid`` with the provider's reference, or ``processing`` to be asked again later.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class PayoutRequest:
    merchant_id: int
    withdrawal_id: int
    member_id: int
    amount: int  # fen
    idempotency_key: str


@dataclass(frozen=True)
class PayoutResult:
    status: str  # paid | processing | failed
    reference: str | None = None
    detail: str | None = None


class PayoutProvider(Protocol):
    name: str
    automatic: bool

    def send(self, request: PayoutRequest) -> PayoutResult: ...


class ManualProvider:
    """Finance pays by hand and records the reference (``POST .../mark-paid``)."""

    name = "manual"
    automatic = False

    def send(self, request: PayoutRequest) -> PayoutResult:
        raise NotImplementedError("manual payouts are marked paid by hand")


_PROVIDERS: dict[str, PayoutProvider] = {"manual": ManualProvider()}


def register(provider: PayoutProvider) -> None:
    _PROVIDERS[provider.name] = provider


def get(name: str) -> PayoutProvider | None:
    return _PROVIDERS.get(name)


def names() -> list[str]:
    return sorted(_PROVIDERS)
