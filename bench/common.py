"""Shared helpers for the benchmarks: a fresh PostgreSQL database, a server process, RSS, percentiles."""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent


def fresh_pg_database(name: str) -> str:
    """Drop and create database ``name`` on the server of SIYU_BENCH_PG_URL; returns its URL."""
    base = os.environ.get("SIYU_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    admin_url = make_url(base).set(drivername="postgresql+psycopg", database="postgres")
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return admin_url.set(database=name).render_as_string(hide_password=False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(
    env: dict[str, str], *, workers: int, port: int, wait_s: float = 300, healthcheck_s: int = 120,
    server: str = "siyu",
) -> subprocess.Popen[bytes]:
    """``workers`` API processes on 127.0.0.1:``port``, once /healthz answers: ``siyu serve``
    (``server="siyu"``, what production runs) or ``uvicorn siyu.asgi:app --workers``.

    The waits are long on purpose: on a busy shared machine importing the app in two processes
    at once took more than a minute, and uvicorn's supervisor killed workers that missed its
    default 5 s health check in the middle of the load."""
    if server == "siyu":  # what production runs: `siyu serve`, one SO_REUSEPORT socket per process
        cmd = [sys.executable, "-c", "from siyu.cli import app; app()", "serve", "--host", "127.0.0.1",
               "--port", str(port), "--workers", str(workers)]
    else:  # uvicorn's own workers: one shared listening socket
        cmd = [sys.executable, "-m", "uvicorn", "siyu.asgi:app", "--host", "127.0.0.1", "--port", str(port),
               "--workers", str(workers), "--log-level", "warning", "--no-access-log",
               "--timeout-worker-healthcheck", str(healthcheck_s)]
    proc = subprocess.Popen(cmd, env={**os.environ, **env}, cwd=ROOT)
    deadline = time.time() + wait_s
    while time.time() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise RuntimeError("server did not start")


def process_tree_rss_mb(pid: int) -> dict[int, float]:
    """RSS in MB of ``pid`` and its children (uvicorn's master and its workers)."""
    out: dict[int, float] = {}
    pids = [pid]
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        pids += [int(c) for c in children]
    except OSError:
        pass
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    out[p] = int(line.split()[1]) / 1024
        except OSError:
            continue
    return out


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


def summary(latencies_ms: list[float]) -> str:
    if not latencies_ms:
        return "no samples"
    return (
        f"p50 {percentile(latencies_ms, 50):.1f} ms, p99 {percentile(latencies_ms, 99):.1f} ms, "
        f"mean {statistics.fmean(latencies_ms):.1f} ms"
    )


def machine() -> str:
    cpus = os.cpu_count()
    mem = ""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.0f} GiB"
    except OSError:
        pass
    return f"{cpus} cores, {mem}, Python {sys.version.split()[0]}"
