"""Fuzz the admin and store APIs with schemathesis against the app's own OpenAPI document.

    .venv/bin/python scripts/fuzz_api.py                       # both APIs, 5 minutes each
    .venv/bin/python scripts/fuzz_api.py --api store --max-time 60
    .venv/bin/python scripts/fuzz_api.py -- --max-examples 20  # anything after -- goes to `st run`

It seeds the demo store into a throw-away SQLite database (or ``SIYU_DATABASE_URL`` when set:
the fuzzer writes whatever it likes, so never point it at real data), serves the app in this
process (uvicorn on a free loopback port, worker off), logs in as the demo owner and as a demo
customer, and runs ``st run`` once per API with that login. It reports server errors, responses
that are not JSON problems where the document says so, and schema violations; each finding
comes with a ``curl`` line to reproduce it. Undocumented 4xx codes (404, 409 ...) are not
checked: every endpoint may answer them as problems.

schemathesis is not a dependency of the project: the first run installs it into the running
interpreter's environment (``pip install schemathesis``). Not part of the test suite.
"""

from __future__ import annotations

import argparse
import importlib.util
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

# writes that end the login the fuzzer runs with (a customer's own deletion revokes their token),
# or lock the demo owner out
EXCLUDE = r"(/auth/logout$|/me/delete$|/staff/\{staff_id\}$|/api-keys/\{key_id\}$)"
CHECKS = "not_a_server_error,response_schema_conformance,content_type_conformance"


def _ensure_schemathesis() -> Path:
    if importlib.util.find_spec("schemathesis") is None:
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "schemathesis"], check=True)
    return Path(sys.executable).with_name("st")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve(data_dir: Path, port: int) -> str:
    import uvicorn

    from siyu.app import create_app
    from siyu.config import Settings
    from siyu.db.engine import make_engine
    from siyu.db.migrate import upgrade
    from siyu.db.session import make_session_factory
    from siyu.demo.seed import seed_demo

    settings = Settings(data_dir=data_dir, env="development", public_base_url=f"http://127.0.0.1:{port}")
    engine = make_engine(settings.resolved_database_url())
    upgrade(engine)
    print(seed_demo(make_session_factory(engine), settings), flush=True)
    engine.dispose()
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    base = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            if httpx.get(f"{base}/healthz").status_code == 200:
                return base
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise SystemExit("the app did not start")


def _logins(base: str) -> dict[str, list[str]]:
    from siyu.demo.seed import DEMO_CODE, STAFF

    owner = next(s for s in STAFF if s[2] == "owner")
    staff = httpx.post(
        f"{base}/api/admin/v1/auth/login", json={"merchant": DEMO_CODE, "username": owner[0], "password": owner[3]}
    ).raise_for_status().json()["token"]
    customer = httpx.post(
        f"{base}/api/store/v1/auth/wechat-login", json={"code": "sandbox-fuzz"}, headers={"X-Siyu-Merchant": DEMO_CODE}
    ).raise_for_status().json()["token"]
    return {
        "admin": ["-H", f"Authorization: Bearer {staff}"],
        "store": ["-H", f"Authorization: Bearer {customer}", "-H", f"X-Siyu-Merchant: {DEMO_CODE}"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--api", choices=("admin", "store", "both"), default="both")
    parser.add_argument("--max-time", type=int, default=300, help="seconds per API")
    parser.add_argument("--workers", default="2")
    args, extra = parser.parse_known_args()
    extra = [a for a in extra if a != "--"]
    st = _ensure_schemathesis()
    with tempfile.TemporaryDirectory(prefix="siyu-fuzz-") as tmp:
        base = _serve(Path(tmp), _free_port())
        logins = _logins(base)
        failed = 0
        # the store first: the admin run writes merchant settings (real WeChat credentials, ...)
        for api in ("store", "admin") if args.api == "both" else (args.api,):
            cmd = [
                str(st), "run", f"{base}/openapi.json", *logins[api],
                "--include-path-regex", f"^/api/{api}/", "--exclude-path-regex", EXCLUDE,
                "--checks", CHECKS, "--max-time", str(args.max_time), "-w", args.workers,
                "--request-timeout", "30", *extra,
            ]  # fmt: skip
            print(f"\n== {api} API ==", flush=True)
            failed |= subprocess.run(cmd, cwd=tmp).returncode  # its .schemathesis/ cache too
        return failed


if __name__ == "__main__":
    sys.exit(main())
