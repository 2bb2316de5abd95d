"""Shipping fees from freight templates (see ``FreightTemplate`` for the rule format).

How a fee is computed for a set of priced lines and a destination province:

1. Lines that ship free (``product.free_shipping``, a stage's ``flags["free_shipping"]``) are
   left out, and so are virtual lines (``flags["virtual"]``, a membership card: nothing to
   ship); so is everything when ``ctx.free_shipping`` is set (a free-shipping coupon). A mixed
   order pays the freight of its physical lines only.
2. Each remaining line uses its product's ``freight_template_id``, or the merchant's default
   template; a line with neither costs nothing.
3. Lines are grouped by template. For each group: a province in ``unreachable_regions`` is
   409 ``region_not_deliverable``; the first rule listing the province applies, else the
   ``"*"`` rule, else the province is not deliverable either. When the group's goods amount
   after discounts reaches ``free_threshold`` the group ships free. Units are pieces
   (``count``) or grams (``weight``: ``weight_g x quantity``); the fee is ``first_fee`` for up
   to ``first_units`` plus ``extra_fee`` for each started block of ``extra_units`` beyond.
4. The order's freight is the sum of the groups' fees.

Without a province (a preview before the customer has an address) the ``"*"`` rule is used
for an estimate, and no region is refused; the submit always has an address when a line ships.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from siyu.kit.errors import DomainError, catalogue, register_messages
from siyu.orders import repository as repo
from siyu.orders.models import FreightTemplate
from siyu.orders.pricing import PricedLine

_MESSAGES = {
    "region_not_deliverable": (409, "商品暂不支持配送至{province}", "Items cannot be delivered to {province}"),
}
register_messages({k: v for k, v in _MESSAGES.items() if k not in catalogue()})

WILDCARD = "*"
VIRTUAL = "virtual"  # the PricedLine flag ``orders.checkout.virtual_flags`` sets on virtual products


@dataclass(frozen=True)
class FreightResult:
    amount: int
    details: list[dict[str, Any]]


def _rule_for(template: FreightTemplate, province: str | None) -> dict[str, Any] | None:
    if province is not None:
        for rule in template.rules:
            if province in (rule.get("regions") or []):
                return rule
    for rule in template.rules:
        if WILDCARD in (rule.get("regions") or []):
            return rule
    return None


def template_fee(template: FreightTemplate, lines: Sequence[PricedLine], province: str | None) -> int:
    """The fee of one template for its lines (raises ``region_not_deliverable``)."""
    if province is not None and province in (template.unreachable_regions or []):
        raise DomainError("region_not_deliverable", province=province)
    rule = _rule_for(template, province)
    if rule is None:
        if province is None:
            return 0
        raise DomainError("region_not_deliverable", province=province)
    if template.free_threshold is not None and sum(line.amount for line in lines) >= template.free_threshold:
        return 0
    if template.mode == "weight":
        units = sum(line.weight_g * line.quantity for line in lines)
    else:
        units = sum(line.quantity for line in lines)
    if units <= 0:
        return 0
    first_units = max(1, int(rule.get("first_units", 1)))
    first_fee = int(rule.get("first_fee", 0))
    extra_units = max(1, int(rule.get("extra_units", 1)))
    extra_fee = int(rule.get("extra_fee", 0))
    extra_blocks = -(-max(0, units - first_units) // extra_units)  # ceiling division
    return first_fee + extra_blocks * extra_fee


def compute(
    session: Session,
    merchant_id: int,
    lines: Sequence[PricedLine],
    province: str | None,
    *,
    free_shipping: bool = False,
) -> FreightResult:
    if free_shipping:
        return FreightResult(0, [{"reason": "free_shipping"}])
    chargeable = [
        ln for ln in lines
        if not ln.free_shipping and not ln.flags.get("free_shipping") and not ln.flags.get(VIRTUAL)
    ]
    if not chargeable:
        return FreightResult(0, [])
    templates = repo.freight_templates_by_ids(
        session, merchant_id, [ln.freight_template_id for ln in chargeable if ln.freight_template_id is not None]
    )
    default = None
    groups: dict[int, list[PricedLine]] = {}
    for line in chargeable:
        template = templates.get(line.freight_template_id) if line.freight_template_id is not None else None
        if template is None:  # no template, or one that was deleted: the merchant's default
            if default is None:
                default = repo.default_freight_template(session, merchant_id)
            template = default
        if template is None:
            continue
        templates[template.id] = template
        groups.setdefault(template.id, []).append(line)
    total = 0
    details = []
    for template_id in sorted(groups):
        fee = template_fee(templates[template_id], groups[template_id], province)
        total += fee
        details.append({"template_id": template_id, "amount": fee, "sku_ids": [ln.sku_id for ln in groups[template_id]]})
    return FreightResult(total, details)
