"""Builders for promotion tests: promotions through the admin API or the service, customers with
an address, checkout preview/submit over HTTP."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from siyu.db.session import unit_of_work
from siyu.kit.timeutil import utcnow
from siyu.promotions import service
from siyu.promotions.schemas import PromotionIn
from tests.conftest import Tenant, customer_login

ADMIN = "/api/admin/v1"
STORE = "/api/store/v1"


def window(start_days: float = -1, end_days: float = 30) -> dict[str, str]:
    now = utcnow()
    return {
        "starts_at": (now + dt.timedelta(days=start_days)).isoformat(),
        "ends_at": (now + dt.timedelta(days=end_days)).isoformat(),
    }


def promotion_body(kind: str, rules: dict[str, Any], **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"name": f"{kind} {uuid.uuid4().hex[:6]}", "kind": kind, "rules": rules, **window()}
    body.update(extra)
    return body


def create_promotion(
    client: TestClient, tenant: Tenant, kind: str, rules: dict[str, Any], *, activate: bool = True, **extra: Any
) -> dict[str, Any]:
    r = client.post(f"{ADMIN}/promotions", json=promotion_body(kind, rules, **extra), headers=tenant.admin_headers)
    assert r.status_code == 201, r.text
    if activate:
        r = client.post(f"{ADMIN}/promotions/{r.json()['id']}/activate", headers=tenant.admin_headers)
        assert r.status_code == 200, r.text
    return dict(r.json())


def make_promotion(
    factory: sessionmaker[Session], merchant_id: int, kind: str, rules: dict[str, Any], *, activate: bool = True,
    **extra: Any,
) -> int:
    """The same through the service (no HTTP), for concurrency tests and benchmarks."""
    with unit_of_work(factory) as s:
        promo = service.create(s, merchant_id, PromotionIn.model_validate(promotion_body(kind, rules, **extra)),
                               actor=("system", None))
        if activate:
            service.activate(s, merchant_id, promo.id, actor=("system", None))
        return promo.id


def shopper(client: TestClient, tenant: Tenant) -> dict[str, str]:
    """A logged-in customer with a default address; returns the auth headers."""
    headers = customer_login(client, tenant)
    body = {"name": "张三", "phone": "13800000000", "province": "浙江省", "city": "杭州市", "detail": "西湖路 1 号",
            "is_default": True}
    r = client.post(f"{STORE}/addresses", json=body, headers=headers)
    assert r.status_code == 201, r.text
    return headers


def preview(client: TestClient, headers: dict[str, str], items: list[tuple[int, int]], **extra: Any) -> Any:
    body = {"items": [{"sku_id": s, "quantity": q} for s, q in items], **extra}
    return client.post(f"{STORE}/checkout/preview", json=body, headers=headers)


def submit(client: TestClient, headers: dict[str, str], items: list[tuple[int, int]], **extra: Any) -> Any:
    body = {"items": [{"sku_id": s, "quantity": q} for s, q in items], **extra}
    return client.post(f"{STORE}/checkout/submit", json=body, headers={**headers, "Idempotency-Key": uuid.uuid4().hex})


def entries(out: dict[str, Any], stage: str) -> list[dict[str, Any]]:
    return [row for row in out["breakdown"] if row["stage"] == stage]
