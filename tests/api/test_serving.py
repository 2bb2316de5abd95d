"""``siyu serve --workers N``: N API processes, each with its OWN listening socket on the port
(``SO_REUSEPORT``, so the kernel spreads connections; uvicorn's workers share one socket and
one process took 27 of 32 connections), a dead process replaced, all stopped by SIGTERM.

Runs the real command in a subprocess on SQLite (nothing here depends on the database).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.skipif(
    sys.platform != "linux" or not hasattr(socket, "SO_REUSEPORT"),
    reason="SO_REUSEPORT and /proc are Linux's; elsewhere `siyu serve` falls back to uvicorn's workers",
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _api_processes(supervisor: int) -> list[int]:
    """The supervisor's children that run an API process (not multiprocessing's resource tracker)."""
    try:
        children = Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text().split()
    except FileNotFoundError:
        return []
    found = []
    for pid in map(int, children):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
        except FileNotFoundError:
            continue
        if b"spawn_main" in cmdline:
            found.append(pid)
    return found


def _listening_socket_inodes(port: int) -> set[str]:
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, state, inode = fields[1], fields[3], fields[9]
        if state == "0A" and int(local.split(":")[1], 16) == port:  # 0A: LISTEN
            inodes.add(inode)
    return inodes


def _socket_inodes_of(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def _wait(condition: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_each_process_listens_on_its_own_socket_and_a_dead_one_is_replaced(tmp_path: Path) -> None:
    port = _free_port()
    env = {**os.environ, "SIYU_DATA_DIR": str(tmp_path), "SIYU_DATABASE_URL": "", "SIYU_REDIS_URL": "",
           "SIYU_ENV": "test"}
    supervisor = subprocess.Popen(
        [sys.executable, "-c", "from siyu.cli import app; app()", "serve", "--port", str(port), "--workers", "2"],
        env=env,
    )
    try:
        _wait(lambda: len(_api_processes(supervisor.pid)) == 2 and _healthy(port), 180, "two API processes")
        first = _api_processes(supervisor.pid)
        _wait(lambda: len(_listening_socket_inodes(port)) == 2, 60, "two listening sockets")
        listening = _listening_socket_inodes(port)
        assert [len(_socket_inodes_of(pid) & listening) for pid in first] == [1, 1]  # one each, not shared

        os.kill(first[0], signal.SIGKILL)
        _wait(lambda: len(_api_processes(supervisor.pid)) == 2 and first[0] not in _api_processes(supervisor.pid),
              180, "a replacement process")
        _wait(lambda: len(_listening_socket_inodes(port)) == 2 and _healthy(port), 180, "the replacement listening")

        supervisor.send_signal(signal.SIGTERM)
        assert supervisor.wait(timeout=60) == 0
        assert not _listening_socket_inodes(port)
    finally:
        if supervisor.poll() is None:
            supervisor.kill()
            supervisor.wait()


def test_a_started_app_freezes_its_start_up_objects_out_of_the_collectors_reach(tmp_path: Path) -> None:
    """``gc.freeze`` after start-up (a full collection over ~300k objects paused every request of
    the process for ~120 ms: the checkout p99). Not in the test environment, where it would keep
    every earlier test's garbage: so this runs a real app in a subprocess."""
    script = (
        "import gc\n"
        "from fastapi.testclient import TestClient\n"
        "from siyu.app import create_app\n"
        "before = gc.get_freeze_count()\n"
        "with TestClient(create_app()) as c:\n"
        "    assert c.get('/healthz').status_code == 200\n"
        "    print(before, gc.get_freeze_count())\n"
    )
    env = {**os.environ, "SIYU_DATA_DIR": str(tmp_path), "SIYU_DATABASE_URL": "", "SIYU_REDIS_URL": "",
           "SIYU_ENV": "production"}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    before, after = map(int, out.stdout.split())
    assert before == 0 and after > 100_000


def test_the_worker_freezes_its_start_up_objects_once_its_handlers_are_imported(tmp_path: Path) -> None:
    """``siyu worker`` (the polling loop, not ``--once``) freezes what start-up loaded, like the
    API processes: the loop's first sleep stops it here and prints the frozen count."""
    script = (
        "import gc, sys, time\n"
        "from typer.testing import CliRunner\n"
        "from siyu.cli import app\n"
        "before = gc.get_freeze_count()\n"
        "def stop(_seconds):\n"
        "    print(before, gc.get_freeze_count(), file=sys.__stdout__, flush=True)\n"
        "    raise SystemExit(0)\n"
        "time.sleep = stop\n"
        "runner = CliRunner()\n"
        "runner.invoke(app, ['db', 'upgrade'])\n"
        "result = runner.invoke(app, ['worker'])\n"
        "print(result.output, end='')\n"
    )
    env = {**os.environ, "SIYU_DATA_DIR": str(tmp_path), "SIYU_DATABASE_URL": "", "SIYU_REDIS_URL": "",
           "SIYU_ENV": "production"}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    before, after = map(int, out.stdout.split()[:2])
    assert before == 0 and after > 50_000
    assert "polling every" in out.stdout
