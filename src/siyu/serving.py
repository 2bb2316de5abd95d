"""Several API processes on one port, each with its own listening socket (``SO_REUSEPORT``).

``uvicorn --workers N`` shares ONE listening socket between its processes, and asyncio
accepts every pending connection in a loop when woken: the process that wakes first takes a
whole burst of new keep-alive connections. Measured with 32 clients on 2 processes: 27 and 5
connections, so one process (one core) served most of the load while the other idled, and
the checkout's p99 was that process's queue.

Here every process binds its own socket to the same address with ``SO_REUSEPORT``, and the
kernel spreads new connections over the sockets by a hash of the connection. The supervisor
restarts a process that dies and stops them all on SIGINT/SIGTERM. Where ``SO_REUSEPORT`` is
missing (not Linux/BSD), it falls back to uvicorn's own workers.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import socket
import time
from multiprocessing.process import BaseProcess
from typing import Any

log = logging.getLogger(__name__)

APP = "siyu.asgi:app"
RESTART_PAUSE_S = 1.0


def reuse_port_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` that other processes of this user may bind too."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _serve_one(host: str, port: int, options: dict[str, Any]) -> None:
    """One API process: its own socket, uvicorn's server on it."""
    import uvicorn

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor decides; it sends SIGTERM
    sock = reuse_port_socket(host, port)
    server = uvicorn.Server(uvicorn.Config(APP, **options))
    server.run(sockets=[sock])


def serve(host: str, port: int, workers: int, **options: Any) -> None:
    """Run ``workers`` API processes on ``host:port`` until SIGINT/SIGTERM."""
    import uvicorn

    if workers <= 1 or not hasattr(socket, "SO_REUSEPORT") or port == 0:
        uvicorn.run(APP, host=host, port=port, workers=workers, **options)
        return
    reuse_port_socket(host, port).close()  # fail here, in the foreground, if the port is taken
    ctx = multiprocessing.get_context("spawn")  # a clean interpreter: nothing of ours is forked
    stopping = False

    def start() -> BaseProcess:
        process = ctx.Process(target=_serve_one, args=(host, port, options), name="siyu-api", daemon=False)
        process.start()
        return process

    def stop(signum: int, _frame: Any) -> None:
        nonlocal stopping
        stopping = True

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    processes = [start() for _ in range(workers)]
    try:
        while not stopping:
            time.sleep(0.2)
            for i, process in enumerate(processes):
                if not process.is_alive() and not stopping:
                    log.warning("API process %s exited with %s; starting another", process.pid, process.exitcode)
                    time.sleep(RESTART_PAUSE_S)
                    processes[i] = start()
    finally:
        for process in processes:
            if process.is_alive():
                process.terminate()  # SIGTERM: uvicorn finishes the requests in flight
        for process in processes:
            process.join(timeout=30)
            if process.is_alive():
                process.kill()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
