"""Every admin create a console may retry takes an ``Idempotency-Key``: the first request creates
(201), an exact retry answers 200 with ``Idempotent-Replayed: true`` and the same body and writes
nothing, the same key with another request is 409 ``idempotency_key_reused``; without the header
the same request sent twice is two requests, as it always was."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from tests.api_idempotency.cases import ADMIN, CASES, count, keyed, keys
from tests.conftest import Tenant

Factory = sessionmaker[Session]


@pytest.mark.parametrize("name", list(CASES))
def test_a_keyed_create_replays_its_first_answer_and_refuses_another_request(
    name: str, client: TestClient, session_factory: Factory, tenant: Tenant
) -> None:
    case = CASES[name](client, session_factory, tenant)
    headers = keyed(tenant.admin_headers, f"{name}-1")
    before = count(session_factory, case.model, tenant.id)

    first = client.post(case.url, json=case.body, headers=headers)
    assert first.status_code == 201, first.text
    assert "Idempotent-Replayed" not in first.headers
    created = count(session_factory, case.model, tenant.id)
    assert created > before
    (stored,) = keys(session_factory, tenant.id)
    assert (stored.key, stored.status_code) == (f"{name}-1", 201)

    again = client.post(case.url, json=case.body, headers=headers)
    assert again.status_code == 200, again.text
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert again.content == first.content  # the very same body, byte for byte
    assert count(session_factory, case.model, tenant.id) == created
    assert len(keys(session_factory, tenant.id)) == 1

    reused = client.post(case.url, json=case.other(), headers=headers)
    assert reused.status_code == 409, reused.text
    assert reused.json()["code"] == "idempotency_key_reused"
    assert "Idempotent-Replayed" not in reused.headers
    assert count(session_factory, case.model, tenant.id) == created
    assert len(keys(session_factory, tenant.id)) == 1

    # another key is another request
    other = client.post(case.url, json=case.other(), headers=keyed(tenant.admin_headers, f"{name}-2"))
    assert other.status_code == 201, other.text
    assert other.content != first.content
    assert len(keys(session_factory, tenant.id)) == 2


@pytest.mark.parametrize("name", list(CASES))
def test_without_the_header_a_repeated_create_is_a_new_request_as_before(
    name: str, client: TestClient, session_factory: Factory, tenant: Tenant
) -> None:
    case = CASES[name](client, session_factory, tenant)
    before = count(session_factory, case.model, tenant.id)
    first = client.post(case.url, json=case.body, headers=tenant.admin_headers)
    assert first.status_code == 201, first.text
    once = count(session_factory, case.model, tenant.id)
    second = client.post(case.url, json=case.body, headers=tenant.admin_headers)
    assert "Idempotent-Replayed" not in second.headers
    if case.duplicate is None:
        assert second.status_code == 201, second.text
        assert second.content != first.content
        assert count(session_factory, case.model, tenant.id) - once == once - before  # created twice
    else:  # the domain's own refusal of a duplicate, unchanged
        assert second.json()["code"] == case.duplicate, second.text
        assert count(session_factory, case.model, tenant.id) == once
    assert keys(session_factory, tenant.id) == []


def test_the_openapi_document_describes_the_header_on_every_covered_route(client: TestClient) -> None:
    """Every admin POST that creates (answers 201) takes the key; the rest are named with why."""
    spec = client.get("/openapi.json").json()
    covered = {path for path, item in spec["paths"].items()
               if any(p["name"] == "Idempotency-Key" and "idempotency_key_reused" in p.get("description", "")
                      for p in item.get("post", {}).get("parameters", []))}
    creates = {path for path, item in spec["paths"].items()
               if path.startswith(ADMIN) and "201" in item.get("post", {}).get("responses", {})}
    keyed_otherwise = {
        f"{ADMIN}/orders/{{order_id}}/refunds",  # its own Idempotency-Key, unique per refund (payments)
        f"{ADMIN}/loyalty/members/{{member_id}}/points/adjust",  # its own key, unique per points entry
    }
    assert covered == creates - keyed_otherwise
    for path in (
        "/categories", "/products", "/products/{product_id}/skus", "/coupon-templates",
        "/coupon-templates/{template_id}/codes", "/flash-sales", "/flash-sales/{sale_id}/items", "/promotions",
        "/group-buys", "/bargain-activities", "/freight-templates", "/loyalty/levels", "/loyalty/cards",
        "/referral/levels", "/referral/commission-rules", "/home-slots", "/staff", "/api-keys", "/segments",
        "/member-fields", "/record-types", "/tag-groups", "/tags", "/tag-templates", "/channel-codes",
    ):
        assert f"{ADMIN}{path}" in covered
    header = next(p for p in spec["paths"][f"{ADMIN}/categories"]["post"]["parameters"] if p["name"] == "Idempotency-Key")
    assert header["in"] == "header" and not header.get("required", False)
    assert (header["schema"]["minLength"], header["schema"]["maxLength"]) == (1, 120)  # as the service enforces
