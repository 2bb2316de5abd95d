"""Roles and what each may do on the admin API.

Permissions are ``area:verb`` strings. Endpoints declare the one they need with
``require("orders:write")``; a role grants a set, ``*`` grants everything.

Members: ``members:export`` (a member's data as JSON) is for owners and operators,
``members:erase`` (anonymising deletion) for owners only; ``members:own`` is "my customers"
(the staff member's own customers and their orders).
"""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    OWNER = "owner"
    OPERATOR = "operator"
    FINANCE = "finance"
    STAFF = "staff"


AREAS = (
    "merchant",
    "staff",
    "catalog",
    "storefront",
    "orders",
    "payments",
    "refunds",
    "aftersales",
    "promotions",
    "members",
    "tags",
    "loyalty",
    "audience",
    "journeys",
    "analytics",
    "finance",
)

ROLE_PERMISSIONS: dict[Role, frozenset[str]] = {
    Role.OWNER: frozenset({"*"}),
    Role.OPERATOR: frozenset(
        {f"{a}:read" for a in AREAS if a not in ("finance", "staff")}
        | {
            f"{a}:write"
            for a in ("catalog", "storefront", "orders", "aftersales", "promotions", "members", "tags", "loyalty")
        }
        | {"audience:write", "journeys:write", "staff:read", "members:export", "members:own"}
    ),
    Role.FINANCE: frozenset(
        {f"{a}:read" for a in ("orders", "payments", "refunds", "aftersales", "analytics", "finance", "members", "tags")}
        | {"refunds:write", "payments:write", "finance:write"}
    ),
    # A shopping guide (导购) sees members only through "my customers" (members:own): their own
    # customers, those customers' orders and records. Orders stay readable for fulfilment.
    Role.STAFF: frozenset({"catalog:read", "orders:read", "aftersales:read", "storefront:read", "tags:read",
                          "members:own"}),
}


def role_allows(role: str, permission: str) -> bool:
    try:
        granted = ROLE_PERMISSIONS[Role(role)]
    except ValueError:
        return False
    return "*" in granted or permission in granted
