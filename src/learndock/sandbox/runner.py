"""Parent side of the sandbox: start the worker, send requests, enforce timeouts."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from learndock.config import Settings
from learndock.errors import ContractError, SandboxError
from learndock.package.manifest import Manifest


@lru_cache(maxsize=1)
def _unshare_net() -> list[str]:
    """The prefix that runs a command without network access, if this OS lets us."""
    exe = shutil.which("unshare")
    if exe is None:
        return []
    for prefix in ([exe, "-n"], [exe, "-r", "-n"]):
        try:
            ok = subprocess.run([*prefix, "true"], capture_output=True, timeout=10).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            ok = False
        if ok:
            return prefix
    return []


class SandboxedRuntime:
    """A ``python``-format model running in a worker subprocess."""

    def __init__(
        self,
        root: Path,
        manifest: Manifest,
        *,
        timeout: float | None = None,
        memory_mb: int | None = None,
    ) -> None:
        settings = Settings()
        self.timeout = timeout or settings.sandbox_timeout_s
        self.memory_mb = memory_mb or settings.sandbox_memory_mb
        self.manifest = manifest
        self.workdir = Path(tempfile.mkdtemp(prefix="learndock-sandbox-"))
        self.pkg = self.workdir / "package"
        shutil.copytree(root, self.pkg, symlinks=False)
        self.io = self.workdir / "io"
        self.io.mkdir()
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.workdir),
            "TMPDIR": str(self.workdir),
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONHASHSEED": "0",
            "OMP_NUM_THREADS": "1",
            "OPENBLAS_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
            "HF_HUB_OFFLINE": "1",
            "LEARNDOCK_SANDBOX_MEMORY_MB": str(self.memory_mb),
            "LEARNDOCK_SANDBOX_CPU_S": str(int(max(self.timeout * 4, 60))),
        }
        cmd = [*_unshare_net(), sys.executable, "-I", "-m", "learndock.sandbox.worker"]
        self._lock = threading.Lock()
        self._counter = 0
        try:
            self.proc = subprocess.Popen(
                cmd,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=self.pkg,
                env=env,
                text=True,
                start_new_session=True,
            )
        except OSError as exc:
            shutil.rmtree(self.workdir, ignore_errors=True)
            raise SandboxError(f"cannot start the sandbox worker: {exc}") from None
        self._await_ready()
        entry = manifest.model
        self.methods = set(
            self._request(
                {
                    "op": "load",
                    "module": entry.module,
                    "class_name": entry.class_name,
                    "kwargs": entry.kwargs,
                }
            ).get("methods", [])
        )

    # ------------------------------------------------------------------ protocol
    #: Seconds the worker may take to start (interpreter + imports), before any package code
    #: runs; the per-call ``timeout`` only covers package code.
    startup_timeout = 120.0

    def _await_ready(self) -> None:
        line: list[str] = []
        t = threading.Thread(
            target=lambda: line.append(self.proc.stdout.readline()),  # type: ignore[union-attr]
            daemon=True,
        )
        t.start()
        t.join(self.startup_timeout)
        if t.is_alive() or not line or '"ready"' not in line[0]:
            self._kill()
            raise SandboxError(f"sandbox worker did not start: {self._stderr_tail()}")

    def _request(self, msg: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            if self.proc.poll() is not None:
                raise SandboxError(f"sandbox worker exited with code {self.proc.returncode}")
            assert self.proc.stdin is not None and self.proc.stdout is not None
            result: dict[str, Any] = {}

            def read() -> None:
                line = self.proc.stdout.readline()  # type: ignore[union-attr]
                if line:
                    try:
                        result.update(json.loads(line))
                    except json.JSONDecodeError:
                        result["error"] = f"worker sent garbage: {line[:200]!r}"

            try:
                self.proc.stdin.write(json.dumps(msg) + "\n")
                self.proc.stdin.flush()
            except (BrokenPipeError, OSError):
                self._kill()
                raise SandboxError(f"sandbox worker died: {self._stderr_tail()}") from None
            t = threading.Thread(target=read, daemon=True)
            t.start()
            t.join(self.timeout)
            if t.is_alive():
                self._kill()
                raise SandboxError(
                    f"model call {msg.get('op')}/{msg.get('method', '')} timed out after "
                    f"{self.timeout:g} s; the sandbox was stopped"
                )
            if not result:
                self._kill()
                raise SandboxError(f"sandbox worker died: {self._stderr_tail()}")
            if not result.get("ok"):
                raise SandboxError(f"model code failed: {result.get('error', 'unknown error')}")
            return result

    def _stderr_tail(self) -> str:
        try:
            if self.proc.poll() is None:
                return "(still running)"
            err = self.proc.stderr.read() if self.proc.stderr else ""
        except (OSError, ValueError):
            err = ""
        tail = (err or "").strip().splitlines()[-5:]
        return f"exit code {self.proc.returncode}; " + (" | ".join(tail) or "no output")

    def _kill(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                self.proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)

    # ------------------------------------------------------------------ runtime API
    def has(self, method: str) -> bool:
        return method in self.methods

    def call(self, method: str, *args: np.ndarray) -> Any:
        if method not in self.methods:
            raise ContractError(f"model does not support {method!r}")
        paths = []
        for a in args:
            self._counter += 1
            p = self.io / f"in{self._counter}.npy"
            arr = np.asarray(a)
            if arr.dtype == object:
                arr = arr.astype(str)
            np.save(p, arr, allow_pickle=False)
            paths.append(p.name)
        res = self._request({"op": "call", "method": method, "inputs": paths})
        for name in paths:
            (self.io / name).unlink(missing_ok=True)
        if res.get("output") is None:
            return None
        out_path = self.io / res["output"]
        try:
            return np.load(out_path, allow_pickle=False)
        except ValueError as exc:
            raise SandboxError(f"model output could not be read safely: {exc}") from None
        finally:
            out_path.unlink(missing_ok=True)

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.call("predict", X)

    def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(SandboxError):
                self._request({"op": "exit"})
            self._kill()
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __del__(self) -> None:  # best effort; close() is the real API
        try:
            if getattr(self, "proc", None) is not None and self.proc.poll() is None:
                self._kill()
            if getattr(self, "workdir", None) is not None:
                shutil.rmtree(self.workdir, ignore_errors=True)
        except Exception:  # noqa: BLE001
            pass
