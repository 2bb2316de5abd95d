"""The ``siyu`` command: demo, serve, worker, db upgrade, merchant and staff management, secrets rotate."""

from __future__ import annotations

import logging
import sys
import time
from typing import Annotated

import typer

from siyu.config import Settings, get_settings

app = typer.Typer(help="Siyu (私域): an open WeChat mini-program store and private-domain platform.", no_args_is_help=True)
db_app = typer.Typer(help="Database commands.")
merchant_app = typer.Typer(help="Merchants (tenants).")
staff_app = typer.Typer(help="Staff accounts.")
secrets_app = typer.Typer(help="Secrets at rest (SIYU_SECRET_KEY).")
app.add_typer(db_app, name="db")
app.add_typer(merchant_app, name="merchant")
app.add_typer(staff_app, name="staff")
app.add_typer(secrets_app, name="secrets")


def _setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)


def _engine(settings: Settings):  # type: ignore[no-untyped-def]
    from siyu.db.engine import make_engine

    return make_engine(settings.resolved_database_url())


def _factory(settings: Settings):  # type: ignore[no-untyped-def]
    from siyu.db.session import make_session_factory

    return make_session_factory(_engine(settings))


@db_app.command("upgrade")
def db_upgrade(revision: str = "head") -> None:
    """Apply migrations up to REVISION (default: head)."""
    from siyu.db.migrate import upgrade

    settings = get_settings()
    upgrade(_engine(settings), revision)
    typer.echo(f"database at {revision}: {settings.resolved_database_url().split('@')[-1]}")


@merchant_app.command("create")
def merchant_create(
    code: Annotated[str, typer.Option(help="short unique code, e.g. my-optical")],
    name: Annotated[str, typer.Option(help="display name")],
    timezone: str = "Asia/Shanghai",
) -> None:
    """Create a merchant."""
    from siyu.db.session import unit_of_work
    from siyu.tenancy import service

    with unit_of_work(_factory(get_settings())) as session:
        merchant = service.create_merchant(session, code=code, name=name, timezone=timezone)
        session.flush()
        from siyu.worker.schedules import ensure_merchant_schedules

        ensure_merchant_schedules(session, [merchant.id])  # its nightly recomputes, at once
        typer.echo(f"merchant {merchant.code} id={merchant.id}")


@staff_app.command("create")
def staff_create(
    merchant: Annotated[str, typer.Option(help="merchant code")],
    username: Annotated[str, typer.Option()],
    role: Annotated[str, typer.Option(help="owner | operator | finance | staff")] = "owner",
    password: Annotated[str, typer.Option(prompt=True, hide_input=True, confirmation_prompt=True)] = "",
    display_name: str | None = None,
) -> None:
    """Create a staff account for a merchant."""
    from siyu.db.session import unit_of_work
    from siyu.tenancy import service

    with unit_of_work(_factory(get_settings())) as session:
        m = service.get_merchant_by_code(session, merchant)
        staff = service.create_staff(
            session, m.id, username=username, password=password, role=role, display_name=display_name
        )
        session.flush()
        typer.echo(f"staff {staff.username} ({staff.role}) id={staff.id} for {m.code}")


@secrets_app.command("rotate")
def secrets_rotate(
    merchant: Annotated[
        list[str] | None, typer.Option(help="merchant code (repeat for several); default: every merchant")
    ] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="rows per transaction")] = 500,
) -> None:
    """Re-seal every stored secret with the current SIYU_SECRET_KEY (values that open only with a
    key in SIYU_SECRET_KEY_PREVIOUS, and legacy unbound ones). Idempotent and resumable: run it
    again after an interruption. Once a run over every merchant reports 0 unreadable and 0 raced,
    SIYU_SECRET_KEY_PREVIOUS can be removed. Exits 1 when some value opens with no configured key."""
    from siyu.db.session import unit_of_work
    from siyu.tenancy import repository as tenancy_repo
    from siyu.tenancy.rotation import rotate

    settings = get_settings()
    merchant_ids: list[int] | None = None
    if merchant:
        merchant_ids = []
        with unit_of_work(_factory(settings)) as session:
            for code in merchant:
                m = tenancy_repo.merchant_by_code(session, code)
                if m is None:
                    typer.echo(f"no merchant with code {code!r}", err=True)
                    raise typer.Exit(2)
                merchant_ids.append(m.id)
    engine = _engine(settings)
    try:
        report = rotate(
            engine, settings.secret_key, settings.secret_key_previous, merchant_ids=merchant_ids, batch_size=batch_size
        )
    finally:
        engine.dispose()
    scope = "every merchant" if merchant_ids is None else "merchant(s) " + ", ".join(merchant or [])
    typer.echo(f"secrets rotate ({scope}; {len(settings.secret_key_previous)} previous key(s) configured)")
    typer.echo(f"  {'column':<36} {'resealed':>9} {'current':>9} {'unreadable':>10} {'raced':>6}")
    for c in report.columns:
        typer.echo(f"  {c.column.name:<36} {c.resealed:>9} {c.current:>9} {c.unreadable:>10} {c.raced:>6}")
    typer.echo(
        f"  {'total':<36} {report.total('resealed'):>9} {report.total('current'):>9} "
        f"{report.total('unreadable'):>10} {report.total('raced'):>6}"
    )
    if report.total("raced"):
        typer.echo("some values changed while being resealed: run the command again to check them", err=True)
    if report.total("unreadable"):
        for place in report.unreadable_places:
            typer.echo(f"  unreadable: {place.column} id={place.row_id} merchant={place.merchant_id}", err=True)
        typer.echo(
            "some values open with no configured key: keep SIYU_SECRET_KEY_PREVIOUS (add the key they were "
            "sealed with) and run again; a merchant's credentials that stay unreadable must be entered again",
            err=True,
        )
        raise typer.Exit(1)
    if merchant_ids is None and not report.total("raced"):
        typer.echo("every stored secret is sealed with the current key: SIYU_SECRET_KEY_PREVIOUS can be removed")


@app.command("import")
def import_csv(
    merchant: Annotated[str, typer.Option(help="merchant code")],
    members: Annotated[str | None, typer.Option(help="members CSV file")] = None,
    orders: Annotated[str | None, typer.Option(help="orders CSV file")] = None,
    dry_run: Annotated[bool, typer.Option(help="validate and report only")] = False,
) -> None:
    """Import members and historical orders from CSV files (all or nothing)."""
    from pathlib import Path

    from siyu.db.session import unit_of_work
    from siyu.imports import service as imports
    from siyu.kit.errors import DomainError
    from siyu.tenancy import service

    members_csv = Path(members).read_text(encoding="utf-8") if members else None
    orders_csv = Path(orders).read_text(encoding="utf-8") if orders else None
    try:
        with unit_of_work(_factory(get_settings())) as session:
            m = service.get_merchant_by_code(session, merchant)
            report = imports.run_import(session, m.id, members_csv=members_csv, orders_csv=orders_csv, dry_run=dry_run)
    except DomainError as exc:
        typer.echo(exc.message("en"), err=True)
        for f in exc.fields[:50]:
            typer.echo(f"  {f.path}: {f.code} {f.message}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(report.model_dump_json(indent=2))


@app.command()
def serve(
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: Annotated[int, typer.Option(help="API processes")] = 1,
    with_worker: Annotated[bool, typer.Option(help="also run the job worker in this process")] = False,
) -> None:
    """Serve the API (production: several processes, PostgreSQL, and separate `siyu worker`s)."""
    import uvicorn

    _setup_logging()
    if workers > 1:
        from siyu import serving

        serving.serve(host, port, workers, log_level="warning", access_log=False)
        return
    from siyu.app import create_app

    uvicorn.run(create_app(worker_in_process=with_worker), host=host, port=port, log_level="warning", access_log=False)


@app.command()
def worker(
    once: Annotated[bool, typer.Option(help="run what is due, then exit")] = False,
) -> None:
    """Run the job worker (outbox jobs, schedules, timers). Run several against PostgreSQL."""
    from siyu.kit import redisconn
    from siyu.worker.runner import Worker

    _setup_logging()
    settings = get_settings()
    redis_client = redisconn.connect(settings.redis_url)
    w = Worker(_factory(settings), settings, redis=redis_client)
    if redis_client is not None and not once:
        from siyu.kit.cache_bus import CacheBus

        CacheBus(redis_client).start()  # the worker's own token or item changes reach the API processes
    if not once:
        from siyu.kit.gc_tuning import freeze_startup_objects

        freeze_startup_objects()  # every handler is imported by now
    if once:
        added = w.ensure_schedules()
        if added:
            typer.echo(f"added {added} recurring schedules")
        typer.echo(f"ran {w.drain()} jobs")
        return
    typer.echo(f"worker {w.worker_id} polling every {settings.worker_poll_seconds}s")
    while True:
        if w.poll() == 0:
            time.sleep(settings.worker_poll_seconds)


@app.command()
def demo(
    host: str = "127.0.0.1",
    port: int = 8000,
    reset: Annotated[bool, typer.Option(help="delete the demo database first")] = False,
    seed_only: Annotated[bool, typer.Option(help="create and seed the database, then exit")] = False,
) -> None:
    """Create a local SQLite store with demo data, then serve the API, docs and worker in one process."""
    import uvicorn

    from siyu.app import create_app
    from siyu.db.migrate import upgrade
    from siyu.demo.seed import DEMO_LOGINS, seed_demo

    _setup_logging()
    settings = get_settings()
    if not settings.database_url:
        db_file = settings.data_dir / "siyu.sqlite"
        if reset:
            for suffix in ("", "-wal", "-shm"):
                db_file.with_name(db_file.name + suffix).unlink(missing_ok=True)
    engine = _engine(settings)
    upgrade(engine)
    from siyu.db.session import make_session_factory

    summary = seed_demo(make_session_factory(engine), settings)
    engine.dispose()
    typer.echo(summary)
    if seed_only:
        return
    base = f"http://{host}:{port}"
    typer.echo(f"\n  Siyu demo store is running\n  API docs : {base}/docs\n  OpenAPI  : {base}/openapi.json\n  Health   : {base}/healthz\n")
    for line in DEMO_LOGINS:
        typer.echo(f"  {line}")
    settings.public_base_url = base
    uvicorn.run(create_app(settings, worker_in_process=True), host=host, port=port, log_level="warning", access_log=False)


if __name__ == "__main__":
    app()
