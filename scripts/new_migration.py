"""Write a new Alembic revision from the difference between the models and the history.

    .venv/bin/python scripts/new_migration.py "add coupons"

Runs against a throw-away SQLite database upgraded to head, so it needs no server.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from alembic import command

from siyu.db.engine import make_engine
from siyu.db.migrate import alembic_config, upgrade


def main(message: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        engine = make_engine(f"sqlite:///{Path(tmp) / 'gen.sqlite'}")
        upgrade(engine)
        cfg = alembic_config()
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            versions = Path(cfg.get_main_option("script_location") or "") / "versions"
            rev_id = f"{len(list(versions.glob('[0-9]*.py'))) + 1:04d}"
            script = command.revision(cfg, message=message, autogenerate=True, rev_id=rev_id)
        engine.dispose()
    for rev in script if isinstance(script, list) else [script]:
        if rev is not None:
            _tidy(Path(rev.path))


def _tidy(path: Path) -> None:
    """Autogenerate renders JSONB's ``Text()`` unqualified; qualify it and let ruff format the file."""
    path.write_text(path.read_text().replace("astext_type=Text()", "astext_type=sa.Text()"))
    ruff = Path(sys.executable).parent / "ruff"
    subprocess.run([str(ruff), "check", "--fix", "--quiet", str(path)], check=False)
    subprocess.run([str(ruff), "format", "--quiet", str(path)], check=False)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "schema change")
