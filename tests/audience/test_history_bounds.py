"""The stage-history chart's ``days`` is bounded: a huge value was a 500 (date arithmetic
overflow, found fuzzing); the segment CSV export is documented as text/csv, not JSON."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from tests.conftest import Tenant, staff_headers

HISTORY = "/api/admin/v1/audience/lifecycle/history"


def test_days_out_of_range_is_a_field_error_and_a_year_answers(
    client: TestClient, session_factory: sessionmaker[Session], tenant: Tenant
) -> None:
    h = staff_headers(session_factory, tenant, "owner")
    for days in (0, 3661, 9223372036854775806):
        r = client.get(HISTORY, params={"days": days}, headers=h)
        assert r.status_code == 422, (days, r.text)
        assert [f["path"] for f in r.json()["fields"]] == ["query.days"]
    r = client.get(HISTORY, params={"days": 365}, headers=h)
    assert r.status_code == 200 and isinstance(r.json(), list), r.text


def test_the_csv_export_is_documented_as_csv(client: TestClient) -> None:
    op = client.get("/openapi.json").json()["paths"]["/api/admin/v1/segments/{segment_id}/export.csv"]["get"]
    assert list(op["responses"]["200"]["content"]) == ["text/csv"]
