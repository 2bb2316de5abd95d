"""One registry of sealed columns (``kit.sealed_columns``): a model column holding ciphertext
(named ``*_enc`` by convention) that is not registered would be skipped by ``siyu secrets
rotate`` and lost when the previous key is removed, so this fails first."""

from __future__ import annotations

import sqlalchemy as sa

from siyu.api.routes import import_all_models
from siyu.db.base import Base
from siyu.kit.sealed_columns import SEALED_COLUMNS, columns_of, sealed_column
from siyu.tenancy import service as tenancy


def unregistered(metadata: sa.MetaData) -> list[str]:
    registered = {(c.table, c.column) for c in SEALED_COLUMNS}
    return sorted(
        f"{table.name}.{column.name}"
        for table in metadata.tables.values()
        for column in table.columns
        if column.name.endswith("_enc") and (table.name, column.name) not in registered
    )


def test_every_ciphertext_column_of_every_model_is_registered() -> None:
    import_all_models()
    assert unregistered(Base.metadata) == []


def test_every_registered_column_exists_as_text_with_its_merchant_column() -> None:
    import_all_models()
    tables = Base.metadata.tables
    for entry in SEALED_COLUMNS:
        assert entry.table in tables, entry.name
        table = tables[entry.table]
        assert entry.column in table.columns, entry.name
        assert isinstance(table.columns[entry.column].type, sa.String), entry.name  # Text is a String
        assert entry.merchant_column in table.columns and "id" in table.columns, entry.name
    assert len({c.name for c in SEALED_COLUMNS}) == len(SEALED_COLUMNS)


def test_the_check_catches_a_forgotten_column() -> None:
    metadata = sa.MetaData()
    sa.Table("vouchers", metadata, sa.Column("id", sa.Integer, primary_key=True), sa.Column("pin_enc", sa.Text))
    assert unregistered(metadata) == ["vouchers.pin_enc"]


def test_the_sealing_code_reads_the_registry() -> None:
    assert columns_of("merchants") == tenancy.MERCHANT_SECRET_COLUMNS
    assert sealed_column("distributors", "phone_enc").aad(7, 42) == "distributors.phone_enc|m=7|id=42"
