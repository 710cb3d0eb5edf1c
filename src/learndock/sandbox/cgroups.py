"""Control groups for the jail: one group per run bounds memory and process count of the whole
process tree (forks, ``setsid`` children and threads included) and lets the dock kill all of it.

Both hierarchies are supported and detected, never assumed:

- cgroup v2 (unified): ``memory.max``, ``memory.swap.max``, ``pids.max``, killed with
  ``cgroup.kill`` where the kernel has it; used when a ``cgroup2`` mount offers the ``memory``
  and ``pids`` controllers;
- cgroup v1: a group under the ``memory`` hierarchy (``memory.limit_in_bytes`` and, where
  swap accounting exists, ``memory.memsw.limit_in_bytes``) and one under ``pids``
  (``pids.max``).

Groups are created below the dock's own group (so the dock's own limits still hold) in a
``learndock`` folder, named ``<dock pid>-<random>``; groups left behind by a dock that died
are removed the next time a group is made.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

PARENT_NAME = "learndock"


@dataclass(frozen=True)
class Mount:
    point: Path
    root: str  # the mount's root inside its hierarchy (4th field of mountinfo)
    fstype: str
    options: frozenset[str]


def parse_mountinfo(text: str) -> list[Mount]:
    mounts = []
    for line in text.splitlines():
        pre, sep, post = line.partition(" - ")
        if not sep:
            continue
        f = pre.split()
        p = post.split()
        if len(f) < 5 or len(p) < 3:
            continue
        point = f[4].replace("\\040", " ")
        mounts.append(Mount(Path(point), f[3], p[0], frozenset(p[2].split(","))))
    return mounts


def parse_proc_cgroup(text: str) -> dict[str, str]:
    """``{controller: path}`` from ``/proc/self/cgroup``; the v2 entry is keyed ``""``."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":
            out[""] = path
        for c in controllers.split(","):
            if c:
                out[c] = path
    return out


def _own_dir(mount: Mount, path: str) -> Path:
    """The directory of the group at ``path`` (as /proc/self/cgroup says) inside ``mount``."""
    root = mount.root.rstrip("/")
    if root and path.startswith(root):
        path = path[len(root) :]
    return mount.point / path.lstrip("/")


def _write(path: Path, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def _read_pids(procs: Path) -> list[int]:
    try:
        return [int(x) for x in procs.read_text().split()]
    except (OSError, ValueError):
        return []


def _stat_value(path: Path, key: str) -> int:
    """A counter from a flat keyed file (``memory.events``, ``memory.oom_control``, ...)."""
    try:
        for line in path.read_text().splitlines():
            k, _, v = line.partition(" ")
            if k == key:
                return int(v)
    except (OSError, ValueError):
        pass
    return 0


@dataclass
class RunGroup:
    """The groups one jailed run lives in (one directory on v2, two on v1)."""

    version: int
    memory_dir: Path
    pids_dir: Path
    memory_bytes: int
    pids_max: int
    dirs: list[Path] = field(default_factory=list)

    @property
    def procs_files(self) -> list[bytes]:
        """Where a process writes ``0`` to join (in the launcher, before ``exec``)."""
        return [os.fsencode(d / "cgroup.procs") for d in self.dirs]

    def pids(self) -> list[int]:
        seen: list[int] = []
        for d in self.dirs:
            for p in _read_pids(d / "cgroup.procs"):
                if p not in seen:
                    seen.append(p)
        return seen

    def oom_kills(self) -> int:
        if self.version == 2:
            return _stat_value(self.memory_dir / "memory.events", "oom_kill")
        return _stat_value(self.memory_dir / "memory.oom_control", "oom_kill")

    def pids_limit_hits(self) -> int:
        return _stat_value(self.pids_dir / "pids.events", "max")

    def kill(self, wait: float = 5.0) -> bool:
        """SIGKILL every process of the group until none is left; True when it is empty."""
        kill_file = self.memory_dir / "cgroup.kill"
        if self.version == 2 and kill_file.exists():
            with contextlib.suppress(OSError):
                _write(kill_file, "1")
        deadline = time.monotonic() + wait
        while True:
            pids = self.pids()
            if not pids:
                return True
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)

    def remove(self, wait: float = 5.0) -> bool:
        """Kill what is left, then remove the directories (True when all are gone)."""
        self.kill(wait)
        deadline = time.monotonic() + wait
        for d in self.dirs:
            while d.exists():
                try:
                    d.rmdir()
                except FileNotFoundError:
                    break
                except OSError:  # EBUSY while the last processes are reaped
                    if time.monotonic() > deadline:
                        return False
                    self.kill(0.1)
                    time.sleep(0.02)
        return True


@dataclass(frozen=True)
class Cgroups:
    """How this host bounds a process tree: where to make groups and which files to write."""

    version: int
    memory_parent: Path  # the "learndock" folder in the memory (v2: unified) hierarchy
    pids_parent: Path

    def describe(self, memory_mb: int, pids_max: int) -> str:
        return f"cgroup v{self.version} memory {memory_mb} MB / pids {pids_max}"

    def _sweep(self) -> None:
        """Remove groups of docks that are gone (their processes were already killed by the
        jail's parent-death signal; any stragglers are killed here)."""
        for parent in {self.memory_parent, self.pids_parent}:
            try:
                entries = list(parent.iterdir())
            except OSError:
                continue
            for d in entries:
                owner, _, _ = d.name.partition("-")
                if not d.is_dir() or not owner.isdigit() or _alive(int(owner)):
                    continue
                stale = RunGroup(self.version, d, d, 0, 0, [d])
                stale.remove(wait=1.0)

    def create(self, memory_bytes: int, pids_max: int) -> RunGroup:
        """Make the groups of one run, with its limits written, ready for a process to join."""
        self._sweep()
        name = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        mem_dir = self.memory_parent / name
        pids_dir = self.pids_parent / name
        group = RunGroup(self.version, mem_dir, pids_dir, memory_bytes, pids_max)
        try:
            for d in dict.fromkeys([mem_dir, pids_dir]):
                d.mkdir()
                group.dirs.append(d)
            if self.version == 2:
                _write(mem_dir / "memory.max", str(memory_bytes))
                if (mem_dir / "memory.swap.max").exists():
                    _write(mem_dir / "memory.swap.max", "0")
            else:
                _write(mem_dir / "memory.limit_in_bytes", str(memory_bytes))
                if (mem_dir / "memory.memsw.limit_in_bytes").exists():
                    _write(mem_dir / "memory.memsw.limit_in_bytes", str(memory_bytes))
            _write(pids_dir / "pids.max", str(pids_max))
        except OSError:
            group.remove(wait=1.0)
            raise
        return group


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _prepare_v2(base: Path) -> Path:
    """``base/learndock`` with the memory and pids controllers enabled for its children."""
    _write(base / "cgroup.subtree_control", "+memory +pids")
    parent = base / PARENT_NAME
    parent.mkdir(exist_ok=True)
    _write(parent / "cgroup.subtree_control", "+memory +pids")
    return parent


def _probe(cg: Cgroups) -> None:
    group = cg.create(64 * 1024 * 1024, 8)
    if not group.remove(wait=1.0):
        raise OSError("could not remove a probe group")


def detect(
    mountinfo: str | None = None, proc_cgroup: str | None = None
) -> tuple[Cgroups | None, str]:
    """Find a usable hierarchy: (Cgroups, description) or (None, why not)."""
    try:
        mountinfo = mountinfo if mountinfo is not None else Path(
            "/proc/self/mountinfo"
        ).read_text()
        proc_cgroup = proc_cgroup if proc_cgroup is not None else Path(
            "/proc/self/cgroup"
        ).read_text()
    except OSError as exc:
        return None, f"cannot read the process's cgroups: {exc}"
    mounts = parse_mountinfo(mountinfo)
    own = parse_proc_cgroup(proc_cgroup)
    reasons: list[str] = []

    for m in mounts:
        if m.fstype != "cgroup2":
            continue
        try:
            controllers = set((m.point / "cgroup.controllers").read_text().split())
        except OSError:
            continue
        if not {"memory", "pids"} <= controllers:
            reasons.append(f"cgroup v2 at {m.point} lacks the memory/pids controllers")
            continue
        candidates = [_own_dir(m, own.get("", "/")), m.point]
        for base in dict.fromkeys(candidates):
            try:
                parent = _prepare_v2(base)
                cg = Cgroups(2, parent, parent)
                _probe(cg)
                return cg, f"cgroup v2 at {parent}"
            except OSError as exc:
                reasons.append(f"cgroup v2 at {base}: {exc.strerror or exc}")

    v1 = {}
    for ctrl in ("memory", "pids"):
        for m in mounts:
            if m.fstype == "cgroup" and ctrl in m.options:
                v1[ctrl] = _own_dir(m, own.get(ctrl, "/")) / PARENT_NAME
                break
    if len(v1) == 2:
        try:
            for p in v1.values():
                p.mkdir(exist_ok=True)
            cg = Cgroups(1, v1["memory"], v1["pids"])
            _probe(cg)
            return cg, f"cgroup v1 at {v1['memory']} and {v1['pids']}"
        except OSError as exc:
            reasons.append(f"cgroup v1: {exc.strerror or exc}")
    elif not reasons:
        reasons.append("no cgroup hierarchy offers the memory and pids controllers")
    return None, "; ".join(reasons)
