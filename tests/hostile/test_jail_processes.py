"""Hostile packages against the jail's process limits: fork + setsid children left behind,
fork bombs, memory spread over several processes, and the dock killed with SIGKILL."""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import textwrap
import time
from pathlib import Path

import pytest

from hostile.jail_packages import (
    dock_home,
    hostile_package,
    open_runtime,
    processes_with,
    sleeper_source,
    spawn_parent,
    wait_until_gone,
)
from learndock.errors import SandboxError

__all__ = ["dock_home"]


def _marker() -> str:
    return f"86{random.randrange(10**4):04d}.{random.randrange(10**6):06d}"


def test_setsid_children_do_not_outlive_close(tmp_path, dock_home, gauss_spec):
    marker = _marker()
    pkg = hostile_package(tmp_path / "pkg", gauss_spec, sleeper_source(marker),
                          predict=sleeper_source(marker))
    rt = open_runtime(pkg)
    try:
        rt.predict(gauss_spec.herd(2, random_state=0))
        sleepers = processes_with(marker)
        assert len(sleepers) == 2  # control: the escaped children are running (and visible)
        group = rt.jail.group
        assert set(sleepers) <= set(group.pids())  # ... and still inside the run's cgroup
        for pid in sleepers:  # ... as the jail's unprivileged uid
            assert Path(f"/proc/{pid}").stat().st_uid == 65534
    finally:
        rt.close()
    assert wait_until_gone(marker, 5) == []
    assert not any(d.exists() for d in group.dirs)  # the run's cgroups were removed


def test_timeout_kills_the_whole_tree(tmp_path, dock_home, gauss_spec):
    marker = _marker()
    pkg = hostile_package(tmp_path / "pkg", gauss_spec,
                          predict=sleeper_source(marker) + "time.sleep(600)")
    rt = open_runtime(pkg, timeout=3)
    try:
        t0 = time.monotonic()
        with pytest.raises(SandboxError, match="timed out after 3 s"):
            rt.predict(gauss_spec.herd(2, random_state=0))
        assert time.monotonic() - t0 < 15
        assert wait_until_gone(marker, 5) == []  # killed at the timeout, not at close
        assert rt.jail.group.pids() == []
    finally:
        rt.close()


def test_fork_bomb_is_bounded_by_the_process_limit(tmp_path, dock_home, gauss_spec):
    bomb = """
    while True:
        try:
            os.fork()
        except OSError:
            time.sleep(0.2)
    """
    pkg = hostile_package(tmp_path / "pkg", gauss_spec, predict=bomb)
    rt = open_runtime(pkg, timeout=4, pids_max=24)
    try:
        group = rt.jail.group
        t0 = time.monotonic()
        with pytest.raises(SandboxError) as exc:
            rt.predict(gauss_spec.herd(2, random_state=0))
        assert time.monotonic() - t0 < 20
        msg = str(exc.value)
        assert "timed out after 4 s" in msg
        assert "process limit (24) refused" in msg  # the limit was hit and reported
        assert group.pids() == []
    finally:
        rt.close()
    assert subprocess.run(["true"]).returncode == 0  # the dock can still start processes


def test_memory_limit_holds_across_several_processes(tmp_path, dock_home, gauss_spec):
    hog = """
    pids = []
    for _ in range(3):
        pid = os.fork()
        if pid == 0:
            block = bytearray(150 * 1024 * 1024)  # zero-filled: every page is touched
            time.sleep(2)
            os._exit(0)
        pids.append(pid)
    statuses = [os.waitpid(p, 0)[1] for p in pids]
    """
    pkg = hostile_package(tmp_path / "pkg", gauss_spec, predict=hog)
    rt = open_runtime(pkg, memory_mb=256, timeout=30)
    try:
        with pytest.raises(SandboxError, match=r"memory limit \(256 MB\) was reached"):
            rt.predict(gauss_spec.herd(2, random_state=0))
        assert rt.jail.group.pids() == []
    finally:
        rt.close()


def test_jail_dies_with_a_killed_dock(tmp_path, dock_home, gauss_spec):
    marker = _marker()
    pkg = hostile_package(tmp_path / "pkg", gauss_spec, predict=sleeper_source(marker))
    code = textwrap.dedent(
        f"""
        import json, time
        from hostile.jail_packages import open_runtime
        rt = open_runtime({str(pkg)!r})
        import numpy as np
        rt.predict(np.zeros((2, 5)))
        print(json.dumps({{"pids": rt.jail.group.pids(), "work": str(rt.workdir),
                           "dirs": [str(d) for d in rt.jail.group.dirs]}}), flush=True)
        time.sleep(600)
        """
    )
    parent = spawn_parent(code)
    info: dict = {"dirs": [], "work": None}
    try:
        line = parent.stdout.readline()
        assert line, parent.stderr.read()
        info = json.loads(line)
        jailed = info["pids"]
        assert len(jailed) >= 3 and processes_with(marker)  # bwrap, worker, sleeper at least
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(10)
        assert wait_until_gone(marker, 10) == []
        deadline = time.monotonic() + 10
        while (alive := [p for p in jailed if _alive(p)]) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert alive == []
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(10)
        for d in info["dirs"]:  # the dead dock's empty groups (a later dock sweeps them too)
            with contextlib.suppress(OSError):
                os.rmdir(d)
        if info["work"]:
            shutil.rmtree(info["work"], ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"
