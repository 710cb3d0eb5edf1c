"""Parent side of the sandbox: start the jailed worker, send requests, enforce limits.

:class:`SandboxedRuntime` copies the package (``.py`` sources and data; no ``__pycache__``, no
symlinks), picks the Python environment (the dock's own, or one built from wheels for the
manifest's ``requirements.pip``), and starts ``python -I -B -m learndock.sandbox.worker`` in
the jail (:mod:`learndock.sandbox.jail`). Where the jail cannot be built it refuses, unless the
operator opted out (``Settings.jail == "none"`` / ``LEARNDOCK_JAIL=none``): then the worker runs
with rlimits and, where the OS allows, a private network namespace only, and every run logs a
warning. ``isolation`` says which isolation is in force.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import shutil
import stat
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
from learndock.sandbox import envs, jail
from learndock.sandbox.protocol import (
    MAX_LINE,
    OUTPUT_NAME,
    ProtocolError,
    parse_reply,
    sanitize,
)

log = logging.getLogger("learndock.sandbox")

#: Bytes of the worker's stderr kept for error messages.
STDERR_TAIL = 4096
#: Longest text label an output array may hold (characters).
MAX_LABEL_CHARS = 256


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


def refusal_message(support: jail.JailSupport) -> str:
    return (
        "python-format models need the jail, which this host cannot build "
        f"({support.explain()}): install bubblewrap (apt-get install bubblewrap) and run the "
        "dock where it may create cgroups, or set LEARNDOCK_JAIL=none to opt out (unsafe: "
        "package code then runs with rlimits only)"
    )


def _copy_package(src: Path, dst: Path) -> None:
    """Copy the package for the jail: regular files and directories only, readable by the
    jail's uid, never writable by it; ``__pycache__`` directories are left out."""
    src = Path(src)
    for dirpath, dirnames, filenames in os.walk(src, followlinks=False):
        rel = Path(dirpath).relative_to(src)
        (dst / rel).mkdir(mode=0o755, exist_ok=True)
        for d in list(dirnames):
            p = Path(dirpath) / d
            if d == "__pycache__":
                dirnames.remove(d)
            elif p.is_symlink():
                raise SandboxError(f"the package holds a symbolic link ({rel / d}); refused")
        for f in filenames:
            p = Path(dirpath) / f
            st = p.lstat()
            if stat.S_ISLNK(st.st_mode):
                raise SandboxError(f"the package holds a symbolic link ({rel / f}); refused")
            if not stat.S_ISREG(st.st_mode):
                raise SandboxError(f"the package holds {rel / f}, which is not a regular file; "
                                   "refused")
            shutil.copyfile(p, dst / rel / f, follow_symlinks=False)
            os.chmod(dst / rel / f, 0o444)
    for dirpath, _, _ in os.walk(dst):
        os.chmod(dirpath, 0o555)


def _rmtree(path: Path) -> None:
    """Remove a run's directory (the package copy is read-only: make it writable first)."""
    for dirpath, _, _ in os.walk(path):
        with contextlib.suppress(OSError):
            os.chmod(dirpath, 0o700)
    shutil.rmtree(path, ignore_errors=True)


class SandboxedRuntime:
    """A ``python``-format model running in a jailed worker process."""

    #: Seconds the worker may take to start (interpreter + imports), before any package code
    #: runs; the per-call ``timeout`` only covers package code.
    startup_timeout = 120.0

    def __init__(
        self,
        root: Path,
        manifest: Manifest,
        *,
        timeout: float | None = None,
        memory_mb: int | None = None,
        pids_max: int | None = None,
        settings: Settings | None = None,
    ) -> None:
        settings = settings or Settings()
        self.timeout = timeout or settings.sandbox_timeout_s
        self.memory_mb = memory_mb or settings.sandbox_memory_mb
        self.pids_max = pids_max or settings.sandbox_pids_max
        self.manifest = manifest
        self.mode = settings.jail
        self.methods: set[str] = set()
        self.proc: subprocess.Popen | None = None
        self.jail: jail.Jail | None = None
        self._stderr = bytearray()
        self._lines: queue.Queue[bytes | None | Exception] = queue.Queue()
        self._lock = threading.Lock()
        self._counter = 0
        self._closed = False
        self._oom_seen = 0
        self._scratch_fd: int | None = None
        #: Why loading the model failed (every call then raises it), else None.
        self.load_error: SandboxError | None = None

        support = None
        if self.mode != "none":
            support = jail.jail_support()
            if not support.available:
                raise SandboxError(refusal_message(support))
        envs.check_python(manifest.requirements.python)
        env_dir = envs.environment_for(list(manifest.requirements.pip), settings.home)

        self.workdir = Path(tempfile.mkdtemp(prefix="learndock-sandbox-"))
        try:
            self.dirs = jail.prepare_dirs(self.workdir)
            _copy_package(root, self.dirs.pkg)
            self._scratch_fd = os.open(self.dirs.scratch, os.O_RDONLY | os.O_DIRECTORY)
            python = str(envs.env_python(env_dir)) if env_dir else sys.executable
            limits = [
                "--cpu", str(int(max(self.timeout * 4, 60))),
                "--fsize-mb", str(self.memory_mb),
            ]
            if support is not None:
                self.jail = jail.Jail(
                    support, self.dirs, memory_mb=self.memory_mb, pids_max=self.pids_max,
                    env_dir=env_dir, forbidden=[settings.home],
                )
                self.isolation = self.jail.describe()
                cmd = [python, "-I", "-B", "-m", "learndock.sandbox.worker", "--pkg", jail.PKG,
                       "--in", jail.IN, "--scratch", jail.SCRATCH, *limits, "--as-mb", "0"]
                self.proc = self.jail.start(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                            stderr=subprocess.PIPE)
            else:
                net = _unshare_net()
                self.isolation = (
                    "NONE (operator opt-out LEARNDOCK_JAIL=none): rlimits + "
                    + ("unshare -n only" if net else "no network isolation")
                )
                log.warning("sandbox: running package code WITHOUT the jail (%s)",
                            self.isolation)
                cmd = [*net, python, "-I", "-B", "-m", "learndock.sandbox.worker",
                       "--pkg", str(self.dirs.pkg), "--in", str(self.dirs.inputs),
                       "--scratch", str(self.dirs.scratch), *limits,
                       "--as-mb", str(self.memory_mb)]
                self.proc = subprocess.Popen(
                    cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                    cwd=self.dirs.pkg, env=self._plain_env(), start_new_session=True,
                )
        except (OSError, subprocess.SubprocessError) as exc:
            self._cleanup()
            raise SandboxError(f"cannot start the sandbox worker: {sanitize(exc)}") from None
        except BaseException:
            self._cleanup()
            raise
        threading.Thread(target=self._read_stdout, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()
        try:
            self._await_ready()
        except BaseException:
            self.close()
            raise
        entry = manifest.model
        try:
            res = self._request(
                {"op": "load", "module": entry.module, "class_name": entry.class_name,
                 "kwargs": entry.kwargs},
                "load",
            )
            self.methods = set(res["methods"])
        except SandboxError as exc:
            # The jail was built and the package's code ran in it, but loading failed: keep
            # the runtime (it says which isolation ran the code) and fail every call.
            self.load_error = exc
            self.close()
        except BaseException:
            self.close()
            raise

    def _plain_env(self) -> dict[str, str]:
        return {
            "PATH": "/usr/bin:/bin",
            "HOME": str(self.dirs.scratch),
            "TMPDIR": str(self.dirs.scratch),
            "PYTHONDONTWRITEBYTECODE": "1",
            "OMP_NUM_THREADS": "1",
            "OPENBLAS_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
            "HF_HUB_OFFLINE": "1",
        }

    # ------------------------------------------------------------------ pipes
    def _read_stdout(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        out = self.proc.stdout
        try:
            while True:
                line = out.readline(MAX_LINE + 1)
                if not line:
                    break
                if len(line) > MAX_LINE or not line.endswith(b"\n"):
                    self._lines.put(ProtocolError(f"reply longer than {MAX_LINE} bytes"))
                    return
                self._lines.put(line)
        except (OSError, ValueError):
            pass
        self._lines.put(None)

    def _read_stderr(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        err = self.proc.stderr
        with contextlib.suppress(OSError, ValueError):
            while chunk := err.read1(65536):
                self._stderr += chunk
                if len(self._stderr) > STDERR_TAIL:
                    del self._stderr[: len(self._stderr) - STDERR_TAIL]

    def _stderr_tail(self) -> str:
        if self.proc is not None and self.proc.poll() is None:
            return "(still running)"
        code = self.proc.returncode if self.proc is not None else None
        lines = bytes(self._stderr).decode("utf-8", "replace").strip().splitlines()[-5:]
        return f"exit code {code}; " + sanitize(" | ".join(lines) or "no output", 500)

    # ------------------------------------------------------------------ protocol
    def _next_line(self, timeout: float) -> bytes | None:
        try:
            item = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError from None
        if isinstance(item, Exception):
            raise item
        return item

    def _limits_note(self) -> str:
        g = self.jail.group if self.jail is not None else None
        if g is None:
            return ""
        notes = []
        if g.oom_kills() > 0:
            notes.append(f"the jail's memory limit ({self.memory_mb} MB) was reached and the "
                         f"kernel killed {g.oom_kills()} process(es)")
        if g.pids_limit_hits() > 0:
            notes.append(f"the jail's process limit ({self.pids_max}) refused "
                         f"{g.pids_limit_hits()} fork(s)")
        return "; ".join(notes)

    def _fail(self, message: str) -> SandboxError:
        """Stop the jail and build the error (with what the cgroup saw)."""
        note = self._limits_note()
        self._kill()
        return SandboxError(f"{message}{'; ' + note if note else ''}")

    def _await_ready(self) -> None:
        try:
            line = self._next_line(self.startup_timeout)
            if line is None:
                raise self._fail(f"sandbox worker did not start: {self._wait_tail()}")
            parse_reply(line, "ready")
        except TimeoutError:
            raise self._fail(f"sandbox worker did not start within {self.startup_timeout:g} s")\
                from None
        except ProtocolError as exc:
            raise self._fail(f"sandbox worker broke the protocol: {exc}") from None

    def _wait_tail(self) -> str:
        if self.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=5)
        return self._stderr_tail()

    def _request(self, msg: dict[str, Any], expect: str) -> dict[str, Any]:
        with self._lock:
            if self.proc is None or self.proc.poll() is not None or self._closed:
                code = self.proc.returncode if self.proc is not None else None
                raise SandboxError(f"sandbox worker exited with code {code}")
            assert self.proc.stdin is not None
            try:
                self.proc.stdin.write((json.dumps(msg) + "\n").encode())
                self.proc.stdin.flush()
            except (BrokenPipeError, OSError):
                raise self._fail(f"sandbox worker died: {self._wait_tail()}") from None
            try:
                line = self._next_line(self.timeout)
            except TimeoutError:
                raise self._fail(
                    f"model call {msg.get('op')}/{msg.get('method', '')} timed out after "
                    f"{self.timeout:g} s; the sandbox was stopped"
                ) from None
            except ProtocolError as exc:
                raise self._fail(f"sandbox worker broke the protocol: {exc}") from None
            if line is None:
                raise self._fail(f"sandbox worker died: {self._wait_tail()}")
            try:
                res = parse_reply(line, expect)
            except ProtocolError as exc:
                raise self._fail(f"sandbox worker broke the protocol: {exc}") from None
            if self._new_oom():
                raise self._fail(f"model call {msg.get('op')}/{msg.get('method', '')} failed")
            if not res["ok"]:
                raise SandboxError(f"model code failed: {res['error']}")
            return res

    def _new_oom(self) -> bool:
        g = self.jail.group if self.jail is not None else None
        if g is None:
            return False
        n = g.oom_kills()
        seen, self._oom_seen = self._oom_seen, n
        return n > seen

    def _kill(self) -> None:
        if self.jail is not None:
            self.jail.kill()
        elif self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, 9)
            except (ProcessLookupError, PermissionError):
                self.proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=5)

    # ------------------------------------------------------------------ data files
    def _write_input(self, arr: np.ndarray) -> str:
        self._counter += 1
        name = f"in{self._counter}.npy"
        path = self.dirs.inputs / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        with os.fdopen(fd, "wb") as f:
            np.save(f, arr, allow_pickle=False)
        return name

    def _read_output(self) -> np.ndarray:
        """Read ``OUTPUT_NAME`` from the scratch dir: the dock's own fixed name, opened
        relative to the scratch directory without following links; regular files only, at most
        the memory limit in bytes, ``.npy`` format only (no pickles, no ``.npz``)."""
        assert self._scratch_fd is not None
        try:
            fd = os.open(OUTPUT_NAME, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK,
                         dir_fd=self._scratch_fd)
        except FileNotFoundError:
            raise self._fail("sandbox worker reported an output but wrote none") from None
        except OSError as exc:
            raise self._fail(f"model output is not a regular file ({sanitize(exc, 100)})")\
                from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise self._fail("model output is not a regular file")
            if st.st_size > self.memory_mb * 1024 * 1024:
                raise self._fail(f"model output is larger than {self.memory_mb} MB")
            with os.fdopen(os.dup(fd), "rb") as f:
                try:
                    arr = np.lib.format.read_array(f, allow_pickle=False)
                except (ValueError, OSError, EOFError) as exc:
                    raise SandboxError(
                        f"model output could not be read safely: {sanitize(exc, 200)}"
                    ) from None
        finally:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(OUTPUT_NAME, dir_fd=self._scratch_fd)
        if arr.dtype.kind not in "biufU" or (
            arr.dtype.kind == "U" and arr.dtype.itemsize > 4 * MAX_LABEL_CHARS
        ):
            raise SandboxError(f"model output has an unsupported dtype {sanitize(arr.dtype, 40)}")
        return arr

    # ------------------------------------------------------------------ runtime API
    def has(self, method: str) -> bool:
        return method in self.methods

    def call(self, method: str, *args: np.ndarray) -> Any:
        if self.load_error is not None:
            raise SandboxError(str(self.load_error))
        if method not in self.methods:
            raise ContractError(f"model does not support {method!r}")
        names = []
        try:
            for a in args:
                arr = np.asarray(a)
                if arr.dtype == object:
                    arr = arr.astype(str)
                names.append(self._write_input(arr))
            if self._scratch_fd is not None:
                with contextlib.suppress(OSError):
                    os.unlink(OUTPUT_NAME, dir_fd=self._scratch_fd)
            res = self._request({"op": "call", "method": method, "inputs": names}, "call")
            return self._read_output() if res["output"] else None
        finally:
            for name in names:
                with contextlib.suppress(OSError):
                    (self.dirs.inputs / name).unlink()

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.call("predict", X)

    def close(self) -> None:
        if self._closed:
            return
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(SandboxError):
                old, self.timeout = self.timeout, min(self.timeout, 5.0)
                try:
                    self._request({"op": "exit"}, "exit")
                finally:
                    self.timeout = old
        self._closed = True
        self._cleanup()

    def _cleanup(self) -> None:
        self._closed = True
        if self.jail is not None:
            self.jail.destroy()
        else:
            self._kill()
        if self.proc is not None:
            for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        stream.close()
        if self._scratch_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._scratch_fd)
            self._scratch_fd = None
        if getattr(self, "workdir", None) is not None:
            _rmtree(self.workdir)

    def __del__(self) -> None:  # best effort; close() is the real API
        with contextlib.suppress(Exception):
            if not self._closed:
                self._cleanup()
