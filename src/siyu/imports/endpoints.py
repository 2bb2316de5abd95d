"""Admin API: import members and historical orders from CSV text (dry run first)."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from siyu.api.deps import DbSession, StaffPrincipal, require
from siyu.imports import service
from siyu.imports.schemas import MEMBER_COLUMNS, ORDER_COLUMNS, ImportReport

admin = APIRouter(tags=["admin: import"])


class ImportIn(BaseModel):
    members_csv: str | None = Field(default=None, description="CSV with header: " + ",".join(MEMBER_COLUMNS))
    orders_csv: str | None = Field(default=None, description="CSV with header: " + ",".join(ORDER_COLUMNS))
    dry_run: bool = Field(default=True, description="validate and report only")


@admin.post(
    "/imports",
    response_model=ImportReport,
    summary="Import members and historical orders (CSV); all or nothing",
    description="Send with dry_run=true to see every bad row; a real run with any bad row answers 422 "
    "`import_has_errors` with each row's error and imports nothing. Re-running skips what was imported.",
)
def run_import(body: ImportIn, session: DbSession, p: StaffPrincipal = Depends(require("members:write"))) -> ImportReport:
    return service.run_import(
        session, p.merchant_id, members_csv=body.members_csv, orders_csv=body.orders_csv, dry_run=body.dry_run
    )
