"""``learndock serve`` as an operator runs it: a subprocess on loopback that prints its URL and
how to create the first admin, serves at once, and (``--demo``) builds the demo market in the
background, browsable and searchable without an account. Plus ``learndock worker --once``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from learndock.cli.server_cmd import app as server_cli
from learndock.market import Market
from server_helpers import free_port, wait_for

pytestmark = pytest.mark.integration

SERVE = "from learndock.cli.server_cmd import app; app()"


def _serve(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    child_env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1",
                 "LEARNDOCK_SERVER_ARGON2_MEMORY_KIB": "1024", **(env or {})}
    return subprocess.Popen([sys.executable, "-c", SERVE, "serve", *args], env=child_env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _stop(proc: subprocess.Popen) -> str:
    proc.send_signal(signal.SIGINT)
    try:
        out, _ = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    return out


def _up(url: str) -> dict | None:
    try:
        r = httpx.get(f"{url}/api/v1/health", timeout=5)
    except httpx.TransportError:
        return None
    return r.json() if r.status_code == 200 else None


def test_serve_prints_its_url_and_the_first_admin_hint(tmp_path: Path,
                                                       skops_clf_zip: Path) -> None:
    port = free_port()
    home = tmp_path / "home"
    proc = _serve("--home", str(home), "--port", str(port), "--workers", "1",
                  "--log-level", "warning")
    try:
        url = f"http://127.0.0.1:{port}"
        health = wait_for(lambda: _up(url) if proc.poll() is None else {"dead": True},
                          timeout=60)
        assert "dead" not in health and health["status"] == "ok"
        key = home / "secret.key"
        assert key.stat().st_mode & 0o777 == 0o600
        # The operator makes the first admin, as the banner says; it logs in over HTTP.
        r = CliRunner().invoke(server_cli, ["users", "create", "root@example.org", "--admin",
                                            "--password-stdin", "--home", str(home), "--json"],
                               input="a long admin password\n")
        assert r.exit_code == 0, r.output
        login = httpx.post(f"{url}/api/v1/auth/login", json={"email": "root@example.org",
                                                              "password": "a long admin password"})
        assert login.status_code == 200 and login.json()["user"]["role"] == "admin"
    finally:
        out = _stop(proc)
    assert f"learndock dock at {url}" in out
    assert "learndock users create you@example.org --admin" in out
    assert key.read_text().strip() not in out  # the key is never printed


def test_worker_once_runs_the_queued_jobs(tmp_path: Path, skops_clf_zip: Path) -> None:
    home = tmp_path / "home"
    with Market(home) as m:
        sub = m.submit(skops_clf_zip, owner="someone")
    r = CliRunner().invoke(server_cli, ["worker", "--once", "--home", str(home), "--json"])
    assert r.exit_code == 0, r.output
    done = json.loads(r.output)["processed"]
    assert done == [{"learnware_id": sub.learnware_id, "version": 1, "status": "accepted"}]
    with Market(home) as m:
        assert m.get(sub.learnware_id).current_version == 1


def test_serve_demo_is_browsable_at_once_and_builds_in_the_background(tmp_path: Path) -> None:
    port = free_port()
    home = tmp_path / "demo-home"
    t0 = time.monotonic()
    proc = _serve("--demo", "--quick", "--home", str(home), "--port", str(port),
                  "--log-level", "warning")
    url = f"http://127.0.0.1:{port}"
    try:
        first = wait_for(lambda: _up(url) if proc.poll() is None else {"dead": True},
                         timeout=60)
        assert "dead" not in first and first["demo"]["state"] in ("pending", "building")
        served_after = time.monotonic() - t0
        # Digits come first: searchable without an account while the rest is built.
        wait_for(lambda: (_up(url) or {}).get("demo", {}).get("parts", {}).get("digits")
                 == "ready", timeout=240, poll=0.5)
        hits = httpx.post(f"{url}/api/v1/search",
                          json={"query": {"text": "handwritten digits"}}).json()
        assert len(hits["single"]) == 10
        listing = httpx.get(f"{url}/api/v1/learnwares", params={"q": "digits"}).json()
        assert listing["total"] == 10 and listing["items"][0]["owner"] == "demo"
        lid = hits["single"][0]["learnware_id"]
        dl = httpx.get(f"{url}/api/v1/learnwares/{lid}/download")
        assert dl.status_code == 200 and dl.headers["x-learndock-sha256"]
    finally:
        out = _stop(proc)
    assert served_after < 60
    assert "demo market: building in the background" in out
