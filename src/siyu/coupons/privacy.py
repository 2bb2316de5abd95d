"""Personal-data export: the member's coupons (discovered by ``siyu.members.privacy``).

Coupons hold no personal data beyond the member id, so there is no anonymiser: the rows stay
for the merchant's promotion statistics.
"""

from __future__ import annotations

from siyu.coupons import service
from siyu.members.privacy import register_exporter

register_exporter("coupons", service.export_member)
