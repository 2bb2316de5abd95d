"""FastAPI dependencies: the request's unit of work and the authenticated principal.

The request boundary owns the transaction: ``db_session`` commits when the endpoint returns
and rolls back when it raises, so a failed request leaves nothing half-written.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, Request
from sqlalchemy.orm import Session

from siyu.config import Settings
from siyu.kit.errors import DomainError
from siyu.tenancy import service as tenancy_service
from siyu.tenancy.models import Merchant
from siyu.tenancy.permissions import role_allows


def db_session(request: Request) -> Iterator[Session]:
    session: Session = request.app.state.session_factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


async def settings_dep(request: Request) -> Settings:  # async: no threadpool hop for a plain read
    settings: Settings = request.app.state.settings
    return settings


DbSession = Annotated[Session, Depends(db_session)]
AppSettings = Annotated[Settings, Depends(settings_dep)]


@dataclass(frozen=True)
class StaffPrincipal:
    merchant_id: int
    staff_id: int | None  # None for an API key
    role: str
    token_id: int

    @property
    def actor(self) -> tuple[str, int | None]:
        return ("staff", self.staff_id) if self.staff_id is not None else ("api_key", self.token_id)


@dataclass(frozen=True)
class CustomerPrincipal:
    merchant_id: int
    member_id: int
    token_id: int

    @property
    def actor(self) -> tuple[str, int | None]:
        return ("customer", self.member_id)


def _bearer(authorization: str | None) -> str:
    if not authorization:
        raise DomainError("unauthenticated")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise DomainError("unauthenticated")
    return token.strip()


def current_staff(
    session: DbSession, authorization: Annotated[str | None, Header()] = None
) -> StaffPrincipal:
    token = tenancy_service.authenticate(session, _bearer(authorization), kinds=("staff", "api_key"))
    return StaffPrincipal(
        merchant_id=token.merchant_id, staff_id=token.subject_id if token.kind == "staff" else None,
        role=token.role or "staff", token_id=token.id,
    )


def require(permission: str) -> Callable[..., StaffPrincipal]:
    """Dependency factory: the caller must be staff (or an API key) whose role grants ``permission``."""

    def _dep(principal: Annotated[StaffPrincipal, Depends(current_staff)]) -> StaffPrincipal:
        if not role_allows(principal.role, permission):
            raise DomainError("forbidden")
        return principal

    _dep.__name__ = f"require_{permission.replace(':', '_')}"
    return _dep


def current_customer(
    session: DbSession, authorization: Annotated[str | None, Header()] = None
) -> CustomerPrincipal:
    token = tenancy_service.authenticate(session, _bearer(authorization), kinds=("customer",))
    assert token.subject_id is not None
    return CustomerPrincipal(merchant_id=token.merchant_id, member_id=token.subject_id, token_id=token.id)


def store_merchant(
    session: DbSession,
    x_siyu_merchant: Annotated[
        str | None, Header(description="Merchant code of the store (or send a customer token)")
    ] = None,
    authorization: Annotated[str | None, Header()] = None,
) -> Merchant:
    """The merchant whose store a public (possibly anonymous) store API call is about."""
    if authorization:
        token = tenancy_service.authenticate(session, _bearer(authorization), kinds=("customer",))
        return tenancy_service.get_merchant(session, token.merchant_id)
    if not x_siyu_merchant:
        raise DomainError("merchant_required")
    return tenancy_service.get_merchant_by_code(session, x_siyu_merchant)


Staff = Annotated[StaffPrincipal, Depends(current_staff)]
Customer = Annotated[CustomerPrincipal, Depends(current_customer)]
StoreMerchant = Annotated[Merchant, Depends(store_merchant)]
