"""A checkout's ``options`` takes only the keys the pricing stages registered: a misspelt key
(``frist_order``) is a 422 ``checkout_unknown_option`` at ``options.<key>`` in zh-CN and
English, on preview and submit, and no order is written; the OpenAPI document lists the keys."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from tests.conftest import Tenant, customer_login
from tests.factories.orders import make_sku, sku_stock

STORE = "/api/store/v1"
KEYS = ("add_on", "bargain", "first_order", "flash_sale", "group_buy", "points_mall")


def _post(client: TestClient, url: str, body: dict[str, Any], headers: dict[str, str], lang: str) -> Any:
    return client.post(url, json=body, headers={**headers, "Accept-Language": lang, "Idempotency-Key": uuid.uuid4().hex})


def test_an_unknown_option_is_refused_and_nothing_is_ordered(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session]
) -> None:
    headers = customer_login(client, tenant)
    sku = make_sku(session_factory, tenant.id, price=1000, stock=5)
    body = {"items": [{"sku_id": sku, "quantity": 1}],
            "options": {"frist_order": {"promotion_id": 1}, "flash_sale": {"item_id": 1}, "Group_buy": {}}}
    for url in (f"{STORE}/checkout/preview", f"{STORE}/checkout/submit"):
        zh = _post(client, url, body, headers, "zh-CN")
        en = _post(client, url, body, headers, "en")
        assert zh.status_code == en.status_code == 422, (zh.text, en.text)
        assert zh.json()["code"] == en.json()["code"] == "validation_error"
        # every unknown key, each at its own path; the known one (flash_sale) is not blamed
        assert [(f["path"], f["code"]) for f in en.json()["fields"]] == [
            ("options.frist_order", "checkout_unknown_option"), ("options.Group_buy", "checkout_unknown_option"),
        ]
        en_message = en.json()["fields"][0]["message"]
        zh_message = zh.json()["fields"][0]["message"]
        assert en_message == "unknown checkout option 'frist_order'; known: " + ", ".join(KEYS)
        assert zh_message == "不支持的下单参数 'frist_order'，可用的有：" + ", ".join(KEYS)
    orders = client.get(f"{STORE}/orders", headers=headers)
    assert orders.status_code == 200 and orders.json()["items"] == []
    assert sku_stock(session_factory, sku) == 5


def test_known_options_reach_their_stage(client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session]) -> None:
    """A registered key is not refused here: its own stage reads it (and here refuses its value)."""
    headers = customer_login(client, tenant)
    sku = make_sku(session_factory, tenant.id, price=1000, stock=5)
    body = {"items": [{"sku_id": sku, "quantity": 1}], "options": {"first_order": {}}}
    response = _post(client, f"{STORE}/checkout/preview", body, headers, "en")
    assert response.status_code == 422, response.text
    assert [f["path"] for f in response.json()["fields"]] == ["options.first_order.promotion_id"]
    plain = _post(client, f"{STORE}/checkout/preview", {**body, "options": {}}, headers, "en")
    assert plain.status_code == 200, plain.text


def test_the_openapi_document_lists_the_option_keys(client: TestClient) -> None:
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    description = schemas["CheckoutIn"]["properties"]["options"]["description"]
    assert "checkout_unknown_option" in description
    for key in KEYS:
        assert f"`{key}`:" in description, key
