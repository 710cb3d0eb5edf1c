"""A real dock server on loopback for the ``tests/test_server_*.py`` modules.

:class:`LiveServer` runs ``uvicorn`` (the dock's ASGI app from ``create_app``) in a thread of
the test process on a free port of 127.0.0.1, with its home under the test's tmp dir (SQLite,
unless a PostgreSQL URL is given), and stops it at teardown. Tests talk to it only over HTTP:
``learndock.client.Client`` and raw ``httpx``. Also: account helpers and package builders.

Holds no test assertions of its own (only ``wait_for`` raises on a timeout).
"""

from __future__ import annotations

import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from learndock.client import Client
from learndock.package import pack
from learndock.server import ServerSettings, create_app

#: Cheap argon2id parameters for tests (the algorithm is the same; the cost is not).
FAST_ARGON2 = {"argon2_time_cost": 1, "argon2_memory_kib": 1024, "argon2_parallelism": 1}
PASSWORD = "correct horse battery"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LiveServer:
    def __init__(self, home: Path, **settings: Any) -> None:
        kw = {**FAST_ARGON2, "home": home, "host": "127.0.0.1", "port": free_port(),
              "poll_s": 0.2, "upload_per_min": 6000, "upload_burst": 1000,
              "login_per_min": 6000, "login_burst": 1000,
              "search_per_min": 60000, "search_burst": 10000,
              # the tests upload the same fixture packages many times
              "duplicates": "allow", **settings}
        self.settings = ServerSettings(**kw)
        self.app = create_app(self.settings)
        self.dock = self.app.state.dock
        self.url = f"http://127.0.0.1:{self.settings.port}"
        self.api = self.url + "/api/v1"
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.settings.port,
                                log_level="warning", lifespan="on", access_log=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="uvicorn", daemon=True)

    def start(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the dock server did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=60)

    def __enter__(self) -> LiveServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ helpers
    def client(self, token: str | None = None, **kw: Any) -> Client:
        kw.setdefault("home", self.settings.resolved_home / "client")
        kw.setdefault("progress", False)
        kw.setdefault("retries", 1)
        kw.setdefault("backoff", 0.05)
        return Client(self.url, token, **kw)

    def http(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.api, headers=headers, timeout=60)

    def account(self, admin: bool = False) -> tuple[Client, str]:
        """A fresh account logged in: (client with its token, e-mail)."""
        email = f"u{uuid.uuid4().hex[:10]}@example.org"
        if admin:
            self.dock.accounts.create_user(email, PASSWORD, "admin")
        else:
            self.client().register(email, PASSWORD)
        c = self.client()
        c.login(email, PASSWORD)
        return c, email


def wait_for(fn: Any, timeout: float = 120.0, poll: float = 0.1) -> Any:
    """Call ``fn`` until it returns something truthy (returned), or raise on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        out = fn()
        if out:
            return out
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met within {timeout} s")
        time.sleep(poll)


def zip_dir(directory: Path) -> Path:
    out = directory.parent / f"{directory.name}-{uuid.uuid4().hex[:6]}.zip"
    pack(directory, out)
    return out


def error_of(resp: httpx.Response) -> dict[str, Any]:
    """The typed error body of a response (``{}`` if it has none)."""
    try:
        body = resp.json()
    except ValueError:
        return {}
    return body.get("error", {}) if isinstance(body, dict) else {}
