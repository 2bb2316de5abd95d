"""Defects found walking the demo store on 2026-12-05 (merchant and customers over HTTP), each
pinned by a test that failed before its fix."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from tests.done_when.conftest import ADMIN, Demo, new_item


def _template(**fields: Any) -> dict[str, Any]:
    return {"name": "走查 范围券", "kind": "fixed", "amount": 1000, "validity_mode": "relative", "valid_days": 30,
            "channels": ["claim"], "per_member_limit": 1, "total_quantity": 100, **fields}


def test_a_coupon_template_scoped_to_unknown_products_or_categories_is_refused_and_nothing_is_stored(
    client: TestClient, demo: Demo
) -> None:
    """Validated on write: a spend-and-save scoped to a product id the merchant does not have is
    404 not_found; a coupon template with the same scope was stored (a coupon no cart could use)."""
    product, _ = new_item(client, demo, "走查 范围券 镜框", [10000])
    before = client.get(f"{ADMIN}/coupon-templates", params={"page_size": 100}, headers=demo.operator).json()["total"]
    for fields, resource in (
        ({"scope": "products", "scope_ids": [product, 987654321]}, ("商品", "Product")),
        ({"scope": "categories", "scope_ids": [987654321]}, ("分类", "Category")),
        ({"scope": "all", "excluded_product_ids": [987654321]}, ("商品", "Product")),
    ):
        r = client.post(f"{ADMIN}/coupon-templates", json=_template(**fields), headers=demo.operator)
        assert r.status_code == 404 and r.json()["code"] == "not_found", r.text
        assert r.json()["message"] == f"{resource[0]}不存在"
        en = client.post(f"{ADMIN}/coupon-templates", json=_template(**fields),
                         headers={**demo.operator, "Accept-Language": "en"})
        assert en.status_code == 404 and resource[1] in en.json()["message"], en.text
    after = client.get(f"{ADMIN}/coupon-templates", params={"page_size": 100}, headers=demo.operator).json()["total"]
    assert after == before

    # an update naming an unknown product is refused too, and leaves the template as it was
    r = client.post(f"{ADMIN}/coupon-templates", json=_template(scope="products", scope_ids=[product]),
                    headers=demo.operator)
    assert r.status_code == 201, r.text
    tid = r.json()["id"]
    r = client.patch(f"{ADMIN}/coupon-templates/{tid}", json={"scope_ids": [product, 987654321]},
                     headers=demo.operator)
    assert r.status_code == 404 and r.json()["code"] == "not_found", r.text
    assert client.get(f"{ADMIN}/coupon-templates/{tid}", headers=demo.operator).json()["scope_ids"] == [product]
