"""Integer field types that fit their columns, for request schemas.

A number a column cannot hold was a 500: SQLite cannot bind one beyond 64 bits, PostgreSQL
refuses one beyond ``BIGINT`` / ``INTEGER`` (found fuzzing, ``scripts/fuzz_api.py``). With these
types it is a field error with its path instead. Path and query parameters get the ``BIGINT``
range without asking (``api/params.py``); request bodies use these.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)

#: a reference to another row by id: ids are BIGINT identities, so 1 .. 2**63-1
RefId = Annotated[int, Field(ge=1, le=INT64_MAX)]
#: list order in a 32-bit INTEGER column; ascending, smaller first
SortKey = Annotated[int, Field(ge=-1_000_000_000, le=1_000_000_000, description="ascending: smaller first")]
