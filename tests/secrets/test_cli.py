"""``siyu secrets rotate``: counts per column, exit 0 when everything is on the current key
(saying the previous key can go), exit 1 listing what no configured key opens; ``--merchant``."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from siyu.cli import app
from siyu.config import get_settings
from siyu.kit.crypto import declare_previous_keys
from tests.secrets.test_rotation import CLEAR, SEALED_PER_MERCHANT, read_all, seed

Factory = sessionmaker[Session]


def run(monkeypatch: pytest.MonkeyPatch, url: str, secret: str, previous: str | None, *args: str):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("SIYU_DATABASE_URL", url)
    monkeypatch.setenv("SIYU_SECRET_KEY", secret)
    if previous is None:
        monkeypatch.delenv("SIYU_SECRET_KEY_PREVIOUS", raising=False)
    else:
        monkeypatch.setenv("SIYU_SECRET_KEY_PREVIOUS", previous)
    get_settings.cache_clear()
    return CliRunner().invoke(app, ["secrets", "rotate", *args])


def test_the_command_rotates_reports_and_refuses_to_bless_unreadable_values(
    monkeypatch: pytest.MonkeyPatch, fresh_url: str, fresh_engine: Engine, fresh_factory: Factory
) -> None:
    old, new, lost = (f"{n}-{uuid.uuid4().hex}" for n in ("old", "new", "lost"))
    a, b = seed(fresh_factory, old), seed(fresh_factory, old)

    without = run(monkeypatch, fresh_url, new, None)
    assert without.exit_code == 1, without.output
    assert "unreadable: merchants.wechat_app_secret_enc" in without.output
    assert "keep SIYU_SECRET_KEY_PREVIOUS" in without.output

    only_a = run(monkeypatch, fresh_url, new, old, "--merchant", a.code, "--batch-size", "2")
    assert only_a.exit_code == 0, only_a.output
    assert f"merchant(s) {a.code}" in only_a.output
    assert _total(only_a.output) == [SEALED_PER_MERCHANT, 0, 0, 0]
    assert "can be removed" not in only_a.output  # one merchant is not everyone

    every = run(monkeypatch, fresh_url, new, f"spare,{old}")
    assert every.exit_code == 0, every.output
    assert "distributors.real_name_enc" in every.output and "idempotent_requests.response_enc" in every.output
    assert _total(every.output) == [SEALED_PER_MERCHANT, SEALED_PER_MERCHANT, 0, 0]
    assert "SIYU_SECRET_KEY_PREVIOUS can be removed" in every.output

    again = run(monkeypatch, fresh_url, new, None)  # the previous key removed
    assert again.exit_code == 0, again.output
    assert _total(again.output) == [0, 2 * SEALED_PER_MERCHANT, 0, 0]
    declare_previous_keys(new, [])
    assert read_all(fresh_factory, a, new) == CLEAR and read_all(fresh_factory, b, new) == CLEAR

    unknown = run(monkeypatch, fresh_url, lost, None, "--merchant", "no-such-merchant")
    assert unknown.exit_code == 2 and "no merchant with code" in unknown.output


def _total(output: str) -> list[int]:
    line = next(ln for ln in output.splitlines() if ln.strip().startswith("total"))
    return [int(x) for x in line.split()[1:]]
