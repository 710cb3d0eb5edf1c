"""Builders for hostile ``python``-format packages that attack the jail.

Each package is a 5-feature regressor whose module runs ``ATTACKS`` (at import) and whose
``predict`` runs ``PREDICT`` before returning zeros. Every attempt is recorded with
``attempt(name, fn)`` into ``$HOME/results.json`` -- in the jail ``$HOME`` is the private
scratch dir, which the test reads from the host side (``runtime.dirs.scratch``) -- so a test
sees both what failed and, as a control, what worked.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

from helpers import write_python_package
from learndock.package.manifest import Manifest
from learndock.sandbox import SandboxedRuntime
from learndock.spec import RKMETableSpec

PRELUDE = textwrap.dedent(
    """
    import json
    import os
    import socket
    import sys
    import time

    import numpy as np

    RESULTS = {}


    def attempt(name, fn):
        try:
            RESULTS[name] = ["ok", repr(fn())[:2000]]
        except BaseException as exc:  # noqa: BLE001
            RESULTS[name] = ["failed", f"{type(exc).__name__}: {exc}"[:300]]
        home = os.environ.get("HOME", "/scratch")
        with open(os.path.join(home, "results.json"), "w") as f:
            json.dump(RESULTS, f)


    def write(path, text):
        with open(path, "w") as f:
            f.write(text)
        return "written"


    def read(path):
        with open(path) as f:
            return f.read()


    def connect_unix(path):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(3)
        s.connect(path)
        return "connected"


    def connect_tcp(host, port):
        s = socket.create_connection((host, port), timeout=3)
        s.close()
        return "connected"


    def protocol_out():
        \"\"\"The worker's reply stream, found the way hostile code would (its frames).\"\"\"
        f = sys._getframe()
        while f is not None:
            if "proto" in f.f_locals:
                return f.f_locals["proto"]
            f = f.f_back
        raise RuntimeError("protocol stream not found")
    """
)


def source(attacks: str = "", predict: str = "") -> str:
    body = textwrap.dedent(attacks).strip("\n")
    pred = textwrap.indent(textwrap.dedent(predict).strip("\n"), " " * 8) if predict else ""
    return (
        PRELUDE
        + "\n\n# ---- attacks at import\n"
        + (body + "\n" if body else "")
        + "\n\nclass Model:\n    def predict(self, X):\n        X = np.asarray(X)\n"
        + (pred + "\n" if pred else "")
        + "        return np.zeros(len(X))\n"
    )


def hostile_package(directory: Path, spec: RKMETableSpec, attacks: str = "",
                    predict: str = "", **kw: Any) -> Path:
    return write_python_package(
        directory, spec, source=source(attacks, predict), task="Regression",
        name=kw.pop("name", "hostile"), **kw,
    )


def open_runtime(pkg: Path, **kw: Any) -> SandboxedRuntime:
    return SandboxedRuntime(pkg, Manifest.load(pkg), **{"timeout": 30, **kw})


def results(rt: SandboxedRuntime) -> dict[str, list[str]]:
    path = rt.dirs.scratch / "results.json"
    return json.loads(path.read_text()) if path.exists() else {}


def processes_with(marker: str) -> list[int]:
    """Host pids whose command line contains ``marker`` (zombies excluded)."""
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (d / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker in cmd and state != "Z" and int(d.name) != os.getpid():
            pids.append(int(d.name))
    return pids


def wait_until_gone(marker: str, seconds: float = 10.0) -> list[int]:
    deadline = time.monotonic() + seconds
    while (left := processes_with(marker)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def sleeper_source(marker: str) -> str:
    """Code that forks a child which leaves the session (setsid) and sleeps, its command line
    carrying ``marker`` (``sleep <marker>``) so the host can find it."""
    return textwrap.dedent(
        f"""
        pid = os.fork()
        if pid == 0:
            os.setsid()
            if os.fork() == 0:
                os.execv("/usr/bin/sleep", ["sleep", "{marker}"])
            os._exit(0)
        os.waitpid(pid, 0)
        """
    )


def spawn_parent(code: str) -> subprocess.Popen:
    """A Python process standing in for the dock (for kill -9 tests)."""
    tests = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": tests}
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


# ---------------------------------------------------------------------- fixtures
import pytest  # noqa: E402

from learndock.sandbox import jail_support  # noqa: E402


@pytest.fixture
def dock_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A dock home for the test (LEARNDOCK_HOME), with the jail required."""
    home = tmp_path / "home"
    (home / "blobs").mkdir(parents=True)
    monkeypatch.setenv("LEARNDOCK_HOME", str(home))
    monkeypatch.delenv("LEARNDOCK_JAIL", raising=False)
    support = jail_support()
    if not support.available:  # the project's machines can build it: a missing jail fails
        pytest.fail(f"the jail is not available on this host: {support.explain()}")
    return home
