"""The jail around python-format models: detection, refusal where it cannot be built, the
operator's opt-out, the isolation line in check reports, cgroups, the protocol's parser and the
per-package Python environments. (Attacks against the jail: tests/hostile/test_jail_*.py.)"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import time

import numpy as np
import pytest

from helpers import write_python_package
from learndock.errors import SandboxError
from learndock.package import check_package
from learndock.package.manifest import Manifest
from learndock.sandbox import SandboxedRuntime, cgroups, envs, jail
from learndock.sandbox.protocol import MAX_LINE, ProtocolError, parse_reply, sanitize

MODEL = """
import numpy as np


class Model:
    def predict(self, X):
        return np.asarray(X, dtype=float).sum(axis=1)
"""

MISSING = jail.JailSupport(False, ("bubblewrap (bwrap) is not installed",))


@pytest.fixture
def home(tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("LEARNDOCK_HOME", str(home))
    monkeypatch.delenv("LEARNDOCK_JAIL", raising=False)
    return home


@pytest.fixture
def pkg(tmp_path, gauss_spec):
    return write_python_package(tmp_path / "pkg", gauss_spec, source=MODEL, task="Regression")


@pytest.fixture
def no_jail(monkeypatch):
    """This host cannot build the jail (as if bubblewrap were missing)."""
    monkeypatch.setattr(jail, "jail_support", lambda: MISSING)


# ---------------------------------------------------------------------- detection and report


def test_this_host_builds_the_jail():
    support = jail.jail_support()
    assert support.available, support.explain()
    assert support.cgroups is not None and support.bwrap
    assert support.seccomp_program and len(support.seccomp_program) % 8 == 0


def test_detection_names_what_is_missing(monkeypatch):
    monkeypatch.setattr(jail.shutil, "which", lambda name: None)
    monkeypatch.setattr(jail.os.path, "exists", lambda p: False)
    monkeypatch.setattr(jail._cg, "detect", lambda: (None, "no cgroup here"))
    support = jail.jail_support.__wrapped__()
    assert not support.available
    assert "bubblewrap (bwrap) is not installed" in support.explain()
    assert "no usable cgroup for memory and process limits (no cgroup here)" in support.explain()


def test_check_report_says_which_isolation_ran(home, pkg):
    report = check_package(pkg, sandbox=True)
    assert report.ok, report.text()
    items = {i.name: i for i in report.items}
    iso = items["isolation"].message
    assert iso.startswith(f"bubblewrap {jail.jail_support().bwrap_version}: uid 65534")
    assert "private mount/pid/net/ipc/uts/cgroup namespaces" in iso
    assert "memory 4096 MB / pids 64" in iso and "cgroup v" in iso
    assert "seccomp: sockets, io_uring and new namespaces denied" in iso
    assert "[ok] isolation: bubblewrap" in report.text()
    # not for data-only formats (nothing of the package runs)
    assert "isolation" not in {i.name for i in check_package(pkg, sandbox=False).items}


def test_limits_come_from_settings(home, pkg, monkeypatch):
    monkeypatch.setenv("LEARNDOCK_SANDBOX_MEMORY_MB", "700")
    monkeypatch.setenv("LEARNDOCK_SANDBOX_PIDS_MAX", "40")
    rt = SandboxedRuntime(pkg, Manifest.load(pkg))
    try:
        assert "memory 700 MB / pids 40" in rt.isolation
        g = rt.jail.group
        limit = (g.memory_dir / ("memory.max" if g.version == 2 else "memory.limit_in_bytes"))
        assert int(limit.read_text()) == 700 * 1024 * 1024
        assert (g.pids_dir / "pids.max").read_text().strip() == "40"
        assert rt.proc.pid in g.pids()  # the launcher joined the group before exec
        assert rt.predict(np.ones((2, 5))).tolist() == [5.0, 5.0]
    finally:
        rt.close()
    assert not any(d.exists() for d in g.dirs)


# ---------------------------------------------------------------------- refusal and opt-out


def test_python_models_are_refused_without_the_jail(home, pkg, no_jail):
    with pytest.raises(SandboxError) as exc:
        SandboxedRuntime(pkg, Manifest.load(pkg))
    msg = str(exc.value)
    assert "python-format models need the jail" in msg
    assert "bubblewrap (bwrap) is not installed" in msg
    assert "LEARNDOCK_JAIL=none" in msg
    report = check_package(pkg, sandbox=True)
    assert not report.ok
    runs = {i.name: i for i in report.items}["model runs"]
    assert not runs.ok and "python-format models need the jail" in runs.message
    assert "isolation" not in {i.name for i in report.items}


@pytest.mark.parametrize("mode", ["auto", "bwrap"])
def test_refusal_holds_for_every_jail_mode(home, pkg, no_jail, monkeypatch, mode):
    monkeypatch.setenv("LEARNDOCK_JAIL", mode)
    with pytest.raises(SandboxError, match="need the jail"):
        SandboxedRuntime(pkg, Manifest.load(pkg))


def test_operator_opt_out_runs_unjailed_and_is_logged_every_check(home, pkg, no_jail,
                                                                  monkeypatch, caplog):
    monkeypatch.setenv("LEARNDOCK_JAIL", "none")
    with caplog.at_level(logging.WARNING, logger="learndock.sandbox"):
        reports = [check_package(pkg, sandbox=True) for _ in range(2)]
    for report in reports:
        assert report.ok, report.text()
        iso = {i.name: i for i in report.items}["isolation"].message
        assert iso.startswith("NONE (operator opt-out LEARNDOCK_JAIL=none): rlimits")
    warnings = [r for r in caplog.records if "WITHOUT the jail" in r.getMessage()]
    assert len(warnings) == 2


# ---------------------------------------------------------------------- protocol parser


@pytest.mark.parametrize(
    ("line", "expect", "error"),
    [
        (b'{"ok": true, "output": "x.npy"}', "call", "must be a bool"),
        (b'{"ok": true, "output": true, "extra": 1}', "call", "unexpected keys"),
        (b'{"ok": true, "ok": true, "output": true}', "call", "duplicate key"),
        (b'{"ok": 1, "output": true}', "call", "boolean 'ok'"),
        (b'{"ok": true, "methods": ["predict", "__del__"]}', "load", "outside the protocol"),
        (b'{"ok": true, "methods": "predict"}', "load", "must be a list"),
        (b'{"ok": false, "error": "x", "output": true}', "call", "malformed error reply"),
        (b'{"ok": true, "ready": false}', "ready", "not say it is ready"),
        (b'{"ok": true, "output": Infinity}', "call", "non-standard JSON"),
        (b"[1, 2]", "call", "not an object"),
        (b"\xff\xfe", "call", "not JSON"),
        (b"{" + b" " * MAX_LINE + b"}", "call", "longer than"),
    ],
)
def test_reply_parser_is_strict(line, expect, error):
    with pytest.raises(ProtocolError, match=error):
        parse_reply(line, expect)


def test_reply_parser_accepts_the_protocol_and_sanitises_errors():
    assert parse_reply(b'{"ok": true, "output": false}\n', "call") == {"ok": True,
                                                                       "output": False}
    assert parse_reply(b'{"ok": true, "methods": ["predict", "predict"]}', "load")[
        "methods"] == ["predict"]
    err = parse_reply(json.dumps({"ok": False, "error": "a\nb\x1b[0m" + "x" * 900}).encode(),
                      "call")["error"]
    assert err.startswith("a b [0m") and len(err) <= 500 and err.isprintable()
    assert sanitize("\u202eevil\u200b") == "evil"


# ---------------------------------------------------------------------- cgroups


def test_cgroup_mount_parsing():
    mountinfo = (
        "30 25 0:26 / /sys/fs/cgroup/unified rw,nosuid shared:10 - cgroup2 cgroup2 rw\n"
        "31 25 0:27 / /sys/fs/cgroup/memory rw shared:11 - cgroup cgroup rw,memory\n"
        "32 25 0:28 / /sys/fs/cgroup/pids rw shared:12 - cgroup cgroup rw,pids\n"
        "33 25 0:29 /sub /mnt/x\\040y rw - ext4 /dev/vda rw\n"
    )
    mounts = cgroups.parse_mountinfo(mountinfo)
    assert [(str(m.point), m.fstype) for m in mounts] == [
        ("/sys/fs/cgroup/unified", "cgroup2"), ("/sys/fs/cgroup/memory", "cgroup"),
        ("/sys/fs/cgroup/pids", "cgroup"), ("/mnt/x y", "ext4"),
    ]
    assert "memory" in mounts[1].options
    own = cgroups.parse_proc_cgroup("8:pids:/\n4:memory:/jobs/7\n0::/user.slice\n")
    assert own == {"pids": "/", "memory": "/jobs/7", "": "/user.slice"}
    assert cgroups._own_dir(mounts[1], own["memory"]) == cgroups.Path(
        "/sys/fs/cgroup/memory/jobs/7")


@pytest.mark.parametrize("version", [1, 2])
def test_cgroup_limits_written_and_group_killed(tmp_path, version):
    """Against a fake hierarchy (plain files): the right files get the limits, and kill()
    kills every pid listed in cgroup.procs (here a real process)."""
    mem, pids = tmp_path / "memory" / "learndock", tmp_path / "pids" / "learndock"
    if version == 2:
        pids = mem
    mem.mkdir(parents=True)
    pids.mkdir(parents=True, exist_ok=True)
    cg = cgroups.Cgroups(version, mem, pids)
    group = cg.create(300 * 1024 * 1024, 12)
    if version == 2:
        assert (group.memory_dir / "memory.max").read_text() == str(300 * 1024 * 1024)
    else:
        assert (group.memory_dir / "memory.limit_in_bytes").read_text() == str(300 * 2**20)
    assert (group.pids_dir / "pids.max").read_text() == "12"
    assert cg.describe(300, 12) == f"cgroup v{version} memory 300 MB / pids 12"
    victim = subprocess.Popen(["sleep", "60"])
    (group.pids_dir / "cgroup.procs").write_text(f"{victim.pid}\n")
    (group.memory_dir / ("memory.events" if version == 2 else "memory.oom_control")).write_text(
        "oom 1\noom_kill 3\n")
    assert group.oom_kills() == 3
    t0 = time.monotonic()
    group.kill(wait=0.5)  # the fake cgroup.procs never empties: returns after the wait
    assert victim.wait(5) == -9 and time.monotonic() - t0 < 5


def test_stale_groups_of_dead_docks_are_swept(tmp_path):
    parent = tmp_path / "learndock"
    parent.mkdir()
    dead = subprocess.Popen(["true"])
    dead.wait()
    (parent / f"{dead.pid}-abc").mkdir()
    (parent / f"{os.getpid()}-live").mkdir()
    group = cgroups.Cgroups(2, parent, parent).create(2**26, 4)
    names = {p.name for p in parent.iterdir()}
    assert f"{dead.pid}-abc" not in names and f"{os.getpid()}-live" in names
    assert group.dirs[0].name in names


# ---------------------------------------------------------------------- environments


@pytest.mark.parametrize(
    ("line", "error"),
    [
        ("-r other.txt", "pip options"),
        ("--index-url https://evil.example/simple", "pip options"),
        ("https://evil.example/x.whl", "URLs and paths"),
        ("./local_pkg", "URLs and paths"),
        ("/abs/path.whl", "URLs and paths"),
        ("git+https://github.com/x/y", "URLs and paths"),
        ("evil @ https://x.example/evil.whl", "URLs and paths"),
        ("evil @ file:///tmp/evil.whl", "URLs and paths"),
        ("numpy >= ", "not a name with version"),
        ("x" * 300, "longer than"),
    ],
)
def test_requirements_must_be_names_with_specifiers(line, error):
    with pytest.raises(SandboxError, match=error):
        envs.parse_requirements([line])


def test_requirements_the_dock_has_need_no_environment(tmp_path):
    reqs = envs.parse_requirements(["numpy>=1.20", "scikit-learn", 'tomli>=1; python_version<"3"',
                                    ""])
    assert [r.name for r in reqs] == ["numpy", "scikit-learn", "tomli"]
    assert envs.satisfied_by_dock(reqs)
    assert envs.environment_for(["numpy>=1.20", "scikit-learn"], tmp_path) is None
    assert not (tmp_path / "envs").exists()
    assert not envs.satisfied_by_dock(envs.parse_requirements(["numpy<1.0"]))
    assert not envs.satisfied_by_dock(envs.parse_requirements(["surely-not-installed-pkg"]))
    key = envs.requirements_key(envs.parse_requirements(["b==1", "a>=2"]))
    assert key == envs.requirements_key(envs.parse_requirements(["a>=2", "b==1"]))


def test_python_version_requirement_is_checked(home, tmp_path, gauss_spec):
    pkg = write_python_package(tmp_path / "old", gauss_spec, source=MODEL, task="Regression")
    text = (pkg / "learnware.yaml").read_text()
    assert "python: '>=3.10'" in text
    (pkg / "learnware.yaml").write_text(text.replace("python: '>=3.10'", "python: <3.0"))
    with pytest.raises(SandboxError, match="needs Python <3.0"):
        SandboxedRuntime(pkg, Manifest.load(pkg))


SIX_MODEL = """
import numpy as np
import six


class Model:
    def predict(self, X):
        assert six.PY3
        return np.full(len(X), float(six.__version__.split(".")[1]))
"""


def _dock_six() -> str | None:
    import importlib.metadata

    try:
        return importlib.metadata.version("six")
    except importlib.metadata.PackageNotFoundError:
        return None


def test_environment_built_from_wheels_and_run_only_in_the_jail(home, tmp_path, gauss_spec):
    """One real build from the local package index: ``six`` at a version the dock's own
    environment does not have (absent there, or another release), so an environment is built."""
    before = _dock_six()
    wanted = "1.15.0" if before != "1.15.0" else "1.16.0"
    req = f"six=={wanted}"
    pkg = write_python_package(tmp_path / "pkg", gauss_spec, source=SIX_MODEL, task="Regression")
    text = (pkg / "learnware.yaml").read_text()
    (pkg / "learnware.yaml").write_text(text.replace("pip: []", f"pip:\n  - {req}"))
    manifest = Manifest.load(pkg)
    assert manifest.requirements.pip == [req]
    t0 = time.monotonic()
    rt = SandboxedRuntime(pkg, manifest)
    built = time.monotonic() - t0
    try:  # the jailed model sees the environment's six, not the dock's
        minor = float(wanted.split(".")[1])
        assert rt.predict(np.ones((2, 5))).tolist() == [minor, minor]
        env = home / "envs" / envs.requirements_key(envs.parse_requirements([req]))
        assert env.is_dir() and (env / ".learndock-env.json").is_file()
        assert rt.jail.env_dir == env and env in rt.jail.binds
    finally:
        rt.close()
    t0 = time.monotonic()
    SandboxedRuntime(pkg, manifest).close()  # cached: no second build
    assert time.monotonic() - t0 < built
    assert _dock_six() == before  # the dock's own environment is untouched
