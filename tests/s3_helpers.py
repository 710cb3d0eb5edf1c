"""A real S3-compatible server for the tests: moto's standalone server process.

Test modules load this file as a pytest plugin (``pytest_plugins = ["s3_helpers"]``). The
session-scoped ``moto_server`` fixture starts ``moto_server -H 127.0.0.1 -p PORT`` (a separate
process, not moto's in-process mock) on a free port, waits until it answers, and stops it at the
end of the session (one server per xdist worker). It skips the requesting tests, saying why, when
boto3 or moto's server are not installed (``pip install boto3 'moto[server]'``) or the server
does not come up.

``s3_env`` sets dummy AWS credentials and hides the user's AWS config files, so the store's
default credential chain is exercised without touching real accounts; ``s3_bucket`` is a fresh
bucket name per test (the server is shared).

Holds no test assertions of its own (PYTEST_DONT_REWRITE).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

HOST = "127.0.0.1"
REGION = "us-east-1"
#: Dummy credentials: moto accepts any unless authentication is switched on.
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
START_TIMEOUT_S = 30.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def moto_server_command() -> list[str] | None:
    """The ``moto_server`` next to this interpreter (the venv's), else the one on PATH."""
    local = Path(sys.executable).parent / "moto_server"
    if local.exists():
        return [str(local)]
    found = shutil.which("moto_server")
    return [found] if found else None


def _answers(endpoint: str) -> bool:
    try:
        with urllib.request.urlopen(f"{endpoint}/moto-api/data.json", timeout=1) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError):
        return False


@dataclass
class MotoServer:
    endpoint_url: str
    process: subprocess.Popen
    log: Path

    def client(self, **config: Any) -> Any:
        """A boto3 S3 client on this server (dummy credentials; ``config``: botocore Config)."""
        import boto3
        from botocore.config import Config

        return boto3.session.Session().client(
            "s3", endpoint_url=self.endpoint_url, region_name=REGION,
            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            config=Config(retries={"mode": "standard", "max_attempts": 2}, **config),
        )

    def _post(self, path: str, body: bytes = b"") -> None:
        req = urllib.request.Request(f"{self.endpoint_url}{path}", data=body, method="POST",
                                     headers={"Content-Type": "text/plain"})
        with urllib.request.urlopen(req, timeout=5) as r:
            r.read()

    @contextlib.contextmanager
    def auth_enforced(self) -> Iterator[None]:
        """Make the server check credentials (unknown access keys get ``InvalidAccessKeyId``)
        inside the block; back to accepting any afterwards. Server-wide: do not overlap."""
        self._post("/moto-api/reset-auth", b"0")
        try:
            yield
        finally:
            self._post("/moto-api/reset-auth", b"inf")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def start_moto_server(workdir: Path) -> MotoServer:
    """Start the server on a free port (three tries, in case another process takes the port);
    ``pytest.skip`` with the reason if it cannot run."""
    try:
        import boto3  # noqa: F401
    except ImportError as exc:
        pytest.skip(f"boto3 is not installed ({exc}): pip install boto3 'moto[server]'")
    cmd = moto_server_command()
    if cmd is None:
        pytest.skip("moto_server is not installed: pip install 'moto[server]'")
    env = dict(os.environ)
    env.update(CREDENTIALS)
    reason = "unknown"
    for attempt in range(3):
        port = free_port()
        endpoint = f"http://{HOST}:{port}"
        log = workdir / f"moto-{port}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [*cmd, "-H", HOST, "-p", str(port)], stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, cwd=workdir, env=env,
            )
        server = MotoServer(endpoint, proc, log)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline and proc.poll() is None:
            if _answers(endpoint):
                return server
            time.sleep(0.1)
        server.stop()
        tail = log.read_text(errors="replace")[-600:].strip()
        reason = (f"exited with {proc.returncode}" if proc.returncode not in (None, -15)
                  else f"did not answer within {START_TIMEOUT_S:.0f} s")
        reason = f"moto_server on port {port} {reason} (try {attempt + 1}/3): {tail or 'no output'}"
    pytest.skip(f"cannot start moto_server: {reason}")


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    workdir = Path(tempfile.mkdtemp(prefix="learndock-moto-"))
    server = start_moto_server(workdir)
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def s3_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Dummy credentials in the standard AWS variables; no profile or config files."""
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN",
                 "AWS_SECURITY_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture
def s3_bucket() -> str:
    """A fresh bucket name (not created: the store creates it on first use)."""
    return f"learndock-test-{uuid.uuid4().hex[:12]}"
