"""The seeded demo store (``siyu.demo.seed``), once per database dialect, with its staff logged in
through the admin API exactly as the README's walk does."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from siyu.config import Settings
from siyu.demo.seed import DEMO_CODE, seed_demo
from siyu.worker.runner import Worker

STORE = "/api/store/v1"
ADMIN = "/api/admin/v1"
DEMO_CUSTOMERS = 24  # the seed's default is 300; a smaller history keeps the seed to a second or two


@dataclass
class Demo:
    merchant_id: int
    code: str
    owner: dict[str, str]
    operator: dict[str, str]
    finance: dict[str, str]
    staff_ids: dict[str, int]  # username -> staff id (the two shopping guides 导购)

    @property
    def store(self) -> dict[str, str]:
        return {"X-Siyu-Merchant": self.code}


def staff_login(client: TestClient, username: str, password: str) -> dict[str, str]:
    r = client.post(f"{ADMIN}/auth/login", json={"merchant": DEMO_CODE, "username": username, "password": password})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['token']}"}


@pytest.fixture(scope="session")
def demo_seeded(session_factory: sessionmaker[Session], settings: Settings) -> None:
    seed_demo(session_factory, settings, customers=DEMO_CUSTOMERS)


@pytest.fixture
def demo(demo_seeded: None, client: TestClient) -> Demo:
    owner = staff_login(client, "owner", "demo-owner-123")
    me = client.get(f"{ADMIN}/me", headers=owner)
    assert me.status_code == 200, me.text
    staff = client.get(f"{ADMIN}/staff", headers=owner)
    assert staff.status_code == 200, staff.text
    rows = staff.json()["items"] if isinstance(staff.json(), dict) else staff.json()
    return Demo(
        merchant_id=int(me.json()["merchant_id"]),
        code=DEMO_CODE,
        owner=owner,
        operator=staff_login(client, "operator", "demo-operator-123"),
        finance=staff_login(client, "finance", "demo-finance-123"),
        staff_ids={row["username"]: int(row["id"]) for row in rows},
    )


def drain(session_factory: sessionmaker[Session], settings: Settings, demo: Demo, now: Any = None) -> int:
    """Run the worker's due jobs of the demo merchant (at ``now``, to move time for timers)."""
    return Worker(session_factory, settings, merchant_id=demo.merchant_id).drain(now=now)


def key() -> dict[str, str]:
    return {"Idempotency-Key": uuid.uuid4().hex}


# -- the walk's steps, each an HTTP call a merchant or a customer makes -------------------------


def login(client: TestClient, demo: Demo, name: str, **extra: Any) -> tuple[int, dict[str, str], dict[str, Any]]:
    """A customer through the sandbox WeChat login: ``(member_id, headers, body)``."""
    r = client.post(f"{STORE}/auth/wechat-login", json={"code": f"sandbox-{name}", **extra}, headers=demo.store)
    assert r.status_code == 200, r.text
    return int(r.json()["member_id"]), {"Authorization": f"Bearer {r.json()['token']}"}, dict(r.json())


def new_product(client: TestClient, demo: Demo, title: str, prices: list[int], *, stock: int = 50,
                free_shipping: bool = True, **fields: Any) -> list[int]:
    """The merchant lists a product (one SKU per price) and puts it on sale; returns the SKU ids."""
    return new_item(client, demo, title, prices, stock=stock, free_shipping=free_shipping, **fields)[1]


def new_item(client: TestClient, demo: Demo, title: str, prices: list[int], *, stock: int = 50,
             free_shipping: bool = True, **fields: Any) -> tuple[int, list[int]]:
    """``new_product`` that also answers the product id: ``(product_id, sku_ids)``."""
    tag = uuid.uuid4().hex[:8]
    body = {
        "title": f"{title} {tag}", "free_shipping": free_shipping, "spec_names": ["款式"] if len(prices) > 1 else [],
        "skus": [
            {"sku_code": f"W-{tag}-{i}", "specs": {"款式": f"s{i}"} if len(prices) > 1 else {},
             "list_price": price + 5000, "sale_price": price, "stock": stock}
            for i, price in enumerate(prices)
        ],
        **fields,
    }
    r = client.post(f"{ADMIN}/products", json=body, headers=demo.operator)
    assert r.status_code == 201, r.text
    product = r.json()
    r = client.post(f"{ADMIN}/products/{product['id']}/status", json={"status": "on_sale"}, headers=demo.operator)
    assert r.status_code == 200, r.text
    return int(product["id"]), [int(s["id"]) for s in product["skus"]]


def stop_running_promotions(client: TestClient, demo: Demo) -> None:
    """The merchant ends the demo's store-wide campaigns before running its own, so each order's
    price comes only from the rules the walk configures."""
    r = client.get(f"{ADMIN}/promotions", params={"page_size": 100}, headers=demo.operator)
    assert r.status_code == 200, r.text
    for promo in r.json()["items"]:
        if promo["status"] == "active":
            s = client.post(f"{ADMIN}/promotions/{promo['id']}/stop", headers=demo.operator)
            assert s.status_code == 200, s.text


def add_address(client: TestClient, headers: dict[str, str]) -> int:
    body = {"name": "张三", "phone": "13800000000", "province": "浙江省", "city": "杭州市", "detail": "西湖路 1 号"}
    r = client.post(f"{STORE}/addresses", json=body, headers=headers)
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


def submit(client: TestClient, headers: dict[str, str], items: list[tuple[int, int]], **body: Any) -> dict[str, Any]:
    r = client.post(f"{STORE}/checkout/submit",
                    json={"items": [{"sku_id": s, "quantity": q} for s, q in items], **body},
                    headers={**headers, **key()})
    assert r.status_code == 201, r.text
    return dict(r.json())


def preview(client: TestClient, headers: dict[str, str], items: list[tuple[int, int]], **body: Any) -> dict[str, Any]:
    r = client.post(f"{STORE}/checkout/preview",
                    json={"items": [{"sku_id": s, "quantity": q} for s, q in items], **body}, headers=headers)
    assert r.status_code == 200, r.text
    return dict(r.json())


def pay(client: TestClient, headers: dict[str, str], order_id: int) -> dict[str, Any]:
    """Pay through the sandbox provider, then read the order back."""
    r = client.post(f"{STORE}/orders/{order_id}/pay", headers=headers)
    assert r.status_code == 200, r.text
    r = client.post(r.json()["params"]["complete_url"], headers=headers)
    assert r.status_code == 200, r.text
    r = client.get(f"{STORE}/orders/{order_id}", headers=headers)
    assert r.status_code == 200, r.text
    return dict(r.json())


def ship_and_complete(client: TestClient, demo: Demo, order_id: int) -> dict[str, Any]:
    r = client.post(f"{ADMIN}/orders/{order_id}/ship", json={"carrier": "SF", "tracking_no": "SF1001"},
                    headers=demo.operator)
    assert r.status_code == 200, r.text
    r = client.post(f"{ADMIN}/orders/{order_id}/complete", headers=demo.operator)
    assert r.status_code == 200, r.text
    return dict(r.json())
