"""The merchant's loyalty rules and zone as the ledger and the rest of loyalty read them.

Both are read once per session (a request or job) and cached in ``session.info``; ``service.put_rules``
writes the rules and refreshes that cache.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy.orm import Session

from siyu.kit.timeutil import local_date, start_of_local_day
from siyu.loyalty import repository as repo
from siyu.loyalty.schemas import LoyaltyRules


def get_rules(session: Session, merchant_id: int) -> LoyaltyRules:
    """The merchant's rules, read once per session (a request or job) and cached in ``session.info``."""
    cache = session.info.setdefault("loyalty_rules", {})
    rules = cache.get(merchant_id)
    if rules is None:
        row = repo.settings_row(session, merchant_id)
        rules = cache[merchant_id] = LoyaltyRules.model_validate(row.rules) if row is not None else LoyaltyRules()
    return rules  # type: ignore[no-any-return]


def merchant_tz(session: Session, merchant_id: int) -> str:
    """The merchant's zone, read once per session."""
    from siyu.tenancy import service as tenancy_service

    cache = session.info.setdefault("loyalty_tz", {})
    if merchant_id not in cache:
        cache[merchant_id] = tenancy_service.get_merchant(session, merchant_id).timezone
    return str(cache[merchant_id])


def expiry_for(rules: LoyaltyRules, tz: str, now: dt.datetime) -> dt.datetime | None:
    """When points earned ``now`` expire: never, after N days, or at the end of the next local year."""
    mode = rules.expiry.mode
    if mode == "never":
        return None
    if mode == "days":
        return now + dt.timedelta(days=rules.expiry.days)
    return start_of_local_day(dt.date(local_date(now, tz).year + 2, 1, 1), tz)
