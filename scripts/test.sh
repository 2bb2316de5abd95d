#!/usr/bin/env bash
# Installs Siyu with its development tools into .venv and runs lint, type check and the whole
# test suite (every database test on SQLite and on PostgreSQL; Redis where a feature uses it).
# With CI=true, PostgreSQL and Redis are mandatory: started here if not running, failure if not.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip >/dev/null
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[dev]"

if [ "${CI:-}" = "true" ]; then
  bash scripts/services.sh
fi

echo "== ruff"
.venv/bin/ruff check src tests bench
echo "== mypy"
.venv/bin/mypy
echo "== pytest"
.venv/bin/pytest -p no:cacheprovider "$@"
