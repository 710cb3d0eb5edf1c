"""The jail: bubblewrap + a per-run cgroup + seccomp, for every run of uploaded code.

What a jailed worker sees and may do:

- its own mount namespace holding only ``/usr`` (and the ``/bin``, ``/lib*`` links), the
  Python installation(s) the worker needs and the learndock package source -- all read-only --,
  the package copy at ``/pkg`` (read-only), the dock's inputs at ``/in`` (read-only), a private
  ``/scratch`` (the only host-backed writable place), small private tmpfs ``/tmp`` and
  ``/dev/shm``, a fresh ``/proc`` and a minimal ``/dev``. No ``/etc``, no ``/var/run``, no dock
  home, no host ``/tmp``: no host file or Unix socket is reachable;
- private pid, network (loopback only), IPC, UTS and cgroup namespaces;
- a dedicated unprivileged uid (65534 on the host when the dock runs as root; bwrap sets up
  the namespaces, then ``setpriv`` drops to that uid with no capabilities, an empty bounding
  set and no-new-privileges), no environment variables from the host;
- seccomp: no sockets, io_uring or new namespaces (see :mod:`learndock.sandbox.seccomp`);
- one cgroup per run bounding memory and process count of the whole tree. The launcher joins
  the group *before* ``exec`` of bwrap, so every process of the jail is in it; the dock kills
  the whole group on timeout or close, and ``PR_SET_PDEATHSIG`` (launcher) plus
  ``--die-with-parent`` (bwrap) take the jail down when the dock dies.

:func:`jail_support` says (cached) whether this host can build the jail and why not.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from learndock.sandbox import cgroups as _cg
from learndock.sandbox import seccomp as _seccomp

#: The uid (and gid) jailed code runs as: "nobody".
JAIL_UID = 65534
_PR_SET_PDEATHSIG = 1

# Mount points inside the jail.
PKG, IN, SCRATCH = "/pkg", "/in", "/scratch"
TMPFS_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class JailSupport:
    """Whether the jail can be built on this host; ``reasons`` say why not."""

    available: bool
    reasons: tuple[str, ...] = ()
    bwrap: str | None = None
    bwrap_version: str = ""
    setpriv: str | None = None
    cgroups: _cg.Cgroups | None = None
    seccomp_program: bytes | None = field(default=None, repr=False)
    seccomp_note: str = "seccomp: unavailable"

    def explain(self) -> str:
        return "; ".join(self.reasons) or "the jail is available"


def _bwrap_version(exe: str) -> str:
    try:
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.stdout.strip().replace("bubblewrap ", "")


@lru_cache(maxsize=1)
def jail_support() -> JailSupport:
    """Detect (once per process) bubblewrap, setpriv, cgroups and seccomp, and try a jail."""
    reasons: list[str] = []
    bwrap = shutil.which("bwrap") or ("/usr/bin/bwrap" if os.path.exists("/usr/bin/bwrap")
                                      else None)
    if bwrap is None:
        reasons.append("bubblewrap (bwrap) is not installed")
    setpriv = None
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv") or (
            "/usr/bin/setpriv" if os.path.exists("/usr/bin/setpriv") else None
        )
        if setpriv is None:
            reasons.append("setpriv (util-linux) is not installed")
    cg, why = _cg.detect()
    if cg is None:
        reasons.append(f"no usable cgroup for memory and process limits ({why})")
    program, note = _seccomp.compile_filter()
    support = JailSupport(
        available=not reasons,
        reasons=tuple(reasons),
        bwrap=bwrap,
        bwrap_version=_bwrap_version(bwrap) if bwrap else "",
        setpriv=setpriv,
        cgroups=cg,
        seccomp_program=program,
        seccomp_note=note,
    )
    if not support.available:
        return support
    err = _trial(support)
    if err:
        return JailSupport(False, (f"a trial jail failed: {err}",), bwrap,
                           support.bwrap_version, setpriv, cg, program, note)
    return support


def _trial(support: JailSupport) -> str | None:
    """Run ``true`` in a full jail; None when it worked, else the error."""
    work = Path(tempfile.mkdtemp(prefix="learndock-jailprobe-"))
    try:
        dirs = prepare_dirs(work)
        dirs.pkg.mkdir(mode=0o555)
        jail = Jail(support, dirs, memory_mb=128, pids_max=16)
        try:
            proc = jail.start(["/usr/bin/true"], stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            try:
                _, err = proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                return "timed out"
            if proc.returncode != 0:
                return (err or b"").decode(errors="replace").strip()[-300:] or (
                    f"exit code {proc.returncode}"
                )
            return None
        finally:
            jail.destroy()
    except (OSError, subprocess.SubprocessError) as exc:
        return str(exc)
    finally:
        shutil.rmtree(work, ignore_errors=True)


@dataclass(frozen=True)
class RunDirs:
    """The host side of one run: the package copy, the dock's inputs and the scratch dir."""

    work: Path
    pkg: Path
    inputs: Path
    scratch: Path


def prepare_dirs(work: Path) -> RunDirs:
    """Create ``pkg`` (filled by the caller), ``in`` and ``scratch`` under ``work`` with the
    ownership the jail needs: everything root-owned and world-readable except ``scratch``,
    which belongs to the jail's uid."""
    dirs = RunDirs(work, work / "package", work / "in", work / "scratch")
    dirs.inputs.mkdir(mode=0o755)
    dirs.scratch.mkdir(mode=0o700)
    if os.geteuid() == 0:
        os.chown(dirs.scratch, JAIL_UID, JAIL_UID)
    return dirs


def _python_binds(extra: list[Path]) -> list[Path]:
    """Host directories the worker's interpreter needs, read-only at the same path."""
    import learndock

    cands = [
        Path(sys.base_prefix),
        Path(sys.prefix),
        Path(os.path.realpath(sys.executable)).parent.parent,
        Path(learndock.__file__).resolve().parent,
        *extra,
    ]
    out: list[Path] = []
    for c in sorted({Path(os.path.realpath(c)) for c in cands}, key=lambda p: len(p.parts)):
        if c == Path("/"):
            raise OSError("refusing to bind the host's root directory into the jail")
        if c.is_relative_to("/usr") or any(c.is_relative_to(o) for o in out):
            continue
        out.append(c)
    return out


def _libc_prctl():
    libc = ctypes.CDLL(None, use_errno=True)
    prctl = libc.prctl
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong,
                      ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    return prctl


class Jail:
    """One jailed run: its cgroup, its bwrap command line, its launch and its teardown."""

    def __init__(
        self,
        support: JailSupport,
        dirs: RunDirs,
        *,
        memory_mb: int,
        pids_max: int,
        env_dir: Path | None = None,
        forbidden: list[Path] | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        if not support.available or support.cgroups is None or support.bwrap is None:
            raise OSError(support.explain())
        self.support = support
        self.dirs = dirs
        self.memory_mb = memory_mb
        self.pids_max = pids_max
        self.env_dir = env_dir
        self.binds = _python_binds([env_dir] if env_dir else [])
        for f in forbidden or []:
            f = Path(os.path.realpath(f))
            for b in self.binds:
                if f.is_relative_to(b) and not (env_dir and b == Path(os.path.realpath(env_dir))):
                    raise OSError(f"refusing to bind {b} into the jail: it holds {f}")
        self.extra_env = extra_env or {}
        self.group: _cg.RunGroup | None = None
        self.proc: subprocess.Popen | None = None

    @property
    def as_root(self) -> bool:
        return os.geteuid() == 0

    def describe(self) -> str:
        uid = (f"uid {JAIL_UID}" if self.as_root
               else f"uid {JAIL_UID} in a user namespace (host uid {os.geteuid()})")
        assert self.support.cgroups is not None
        return (
            f"bubblewrap {self.support.bwrap_version}: {uid}, no capabilities, private "
            "mount/pid/net/ipc/uts/cgroup namespaces (package and environment read-only, "
            f"only /scratch writable, no host sockets), "
            f"{self.support.cgroups.describe(self.memory_mb, self.pids_max)}, "
            f"{self.support.seccomp_note}"
        )

    def argv(self, cmd: list[str], seccomp_fd: int | None) -> list[str]:
        s = self.support
        assert s.bwrap is not None
        a = [s.bwrap, "--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts",
             "--unshare-cgroup-try", "--die-with-parent", "--new-session", "--clearenv"]
        if not self.as_root:
            a += ["--unshare-user", "--uid", str(JAIL_UID), "--gid", str(JAIL_UID)]
        a += ["--ro-bind", "/usr", "/usr"]
        for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
            if os.path.islink(top):
                a += ["--symlink", os.readlink(top), top]
            elif os.path.isdir(top):
                a += ["--ro-bind", top, top]
        # A private /tmp first: binds below it (an environment under a home in /tmp) go on top.
        a += ["--perms", "1777", "--size", str(TMPFS_BYTES), "--tmpfs", "/tmp"]
        # bwrap makes missing parents of a mount point mode 0700 (root's): the jail's uid must
        # be able to walk to the binds, so their parents are made 0755 first.
        parents = sorted({str(p) for b in self.binds for p in b.parents if p != Path("/")},
                         key=len)
        for p in parents:
            a += ["--perms", "0755", "--dir", p]
        for b in self.binds:
            a += ["--ro-bind", str(b), str(b)]
        a += ["--ro-bind", str(self.dirs.pkg), PKG, "--ro-bind", str(self.dirs.inputs), IN,
              "--bind", str(self.dirs.scratch), SCRATCH,
              "--proc", "/proc", "--dev", "/dev"]
        a += ["--perms", "1777", "--size", str(TMPFS_BYTES), "--tmpfs", "/dev/shm"]
        a += ["--chdir", PKG]
        env = {
            "PATH": "/usr/bin:/bin",
            "HOME": SCRATCH,
            "TMPDIR": SCRATCH,
            "LANG": "C.UTF-8",
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONPYCACHEPREFIX": f"{SCRATCH}/pycache",
            "OMP_NUM_THREADS": "1",
            "OPENBLAS_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
            "HF_HUB_OFFLINE": "1",
            **self.extra_env,
        }
        for k, v in env.items():
            a += ["--setenv", k, v]
        if seccomp_fd is not None:
            a += ["--seccomp", str(seccomp_fd)]
        if self.as_root:
            assert s.setpriv is not None
            a += ["--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID",
                  "--cap-add", "CAP_SETPCAP", "--", s.setpriv,
                  "--reuid", str(JAIL_UID), "--regid", str(JAIL_UID), "--clear-groups",
                  "--inh-caps", "-all", "--bounding-set", "-all", "--pdeathsig", "KILL"]
        a += ["--", *cmd]
        return a

    def start(self, cmd: list[str], **popen_kw) -> subprocess.Popen:
        """Create the run's cgroup and start ``cmd`` in the jail (launcher joins the cgroup,
        sets its parent-death signal and a new session before ``exec`` of bwrap)."""
        assert self.support.cgroups is not None
        self.group = self.support.cgroups.create(self.memory_mb * 1024 * 1024, self.pids_max)
        procs = self.group.procs_files
        prctl = _libc_prctl()
        parent = os.getpid()

        def launcher() -> None:  # runs in the child between fork and exec: syscalls only
            for path in procs:
                fd = os.open(path, os.O_WRONLY)
                try:
                    os.write(fd, b"0")
                finally:
                    os.close(fd)
            prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
            if os.getppid() != parent:
                os._exit(1)

        sfd = (_seccomp.program_fd(self.support.seccomp_program)
               if self.support.seccomp_program else None)
        try:
            self.proc = subprocess.Popen(
                self.argv(cmd, sfd),
                preexec_fn=launcher,
                start_new_session=True,
                pass_fds=(sfd,) if sfd is not None else (),
                env={"PATH": "/usr/bin:/bin"},
                cwd="/",
                **popen_kw,
            )
        except BaseException:
            self.destroy()
            raise
        finally:
            if sfd is not None:
                os.close(sfd)
        return self.proc

    def kill(self) -> None:
        """Kill every process of the run: the whole cgroup and the launcher's session."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        if self.group is not None:
            self.group.kill()
        if self.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=5)

    def destroy(self) -> None:
        self.kill()
        if self.group is not None:
            self.group.remove()
