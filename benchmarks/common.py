"""Helpers shared by the benchmarks: the machine description and measured subprocesses."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _ram_bytes() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def machine_info() -> dict[str, Any]:
    """Where a benchmark ran: CPU, cores, RAM, OS, Python/numpy versions and the date (UTC)."""
    import numpy as np

    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = os.cpu_count()
    ram = _ram_bytes()
    return {
        "cpu_model": _cpu_model(),
        "logical_cores": os.cpu_count(),
        "usable_cores": usable,
        "ram_gib": None if ram is None else round(ram / 2**30, 1),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "numpy": np.__version__,
        "date_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def describe_machine(info: dict[str, Any] | None = None) -> str:
    """One line for a report, e.g. ``AMD EPYC, 2 cores, 23.4 GiB RAM, Linux ..., Python ...``."""
    m = info or machine_info()
    cores = f"{m['usable_cores']} cores"
    if m["logical_cores"] != m["usable_cores"]:
        cores += f" (of {m['logical_cores']})"
    return (
        f"{m['cpu_model']}, {cores}, {m['ram_gib']} GiB RAM, {m['os']}, "
        f"Python {m['python']}, numpy {m['numpy']}, {m['date_utc']}"
    )


@dataclass
class ProcResult:
    """Outcome of :func:`run_measured`."""

    returncode: int | None  # None: killed on timeout
    wall_seconds: float | None
    cpu_seconds: float | None  # user + system CPU time of the child (all its threads)
    peak_rss_bytes: int | None  # the child's own peak RSS, None if unknown
    stdout: str
    stderr: str

    @property
    def timed_out(self) -> bool:
        return self.returncode is None


# Runs in a small intermediate interpreter (stdlib only). Why not measure the child directly:
# on Linux a child's ru_maxrss starts at its *parent's* RSS (fork/vfork copies the address
# space and exec records its high-water mark), so a child of a benchmark process holding
# gigabytes of data would report the benchmark's own peak. The grandchild forked from this
# small launcher starts from the launcher's ~10 MiB instead.
_LAUNCHER = r"""
import json, os, subprocess, sys, time
report, cmd = sys.argv[1], sys.argv[2:]
t0 = time.perf_counter()
proc = subprocess.Popen(cmd)
_, status, ru = os.wait4(proc.pid, 0)
wall = time.perf_counter() - t0
proc.returncode = os.waitstatus_to_exitcode(status)
unit = 1 if sys.platform == "darwin" else 1024
with open(report, "w") as f:
    json.dump({"exit": proc.returncode, "wall": wall, "cpu": ru.ru_utime + ru.ru_stime,
               "maxrss": ru.ru_maxrss * unit}, f)
"""


def run_measured(
    cmd: list[str], timeout: float | None = None, env: dict[str, str] | None = None
) -> ProcResult:
    """Run ``cmd`` and measure its wall time (process start to exit), CPU time and peak RSS.

    The command runs under a tiny launcher (see ``_LAUNCHER``) that times it and reaps it with
    ``os.wait4``; the launcher's own start-up is not included. On timeout the whole process
    group is killed and ``returncode`` is None.
    """
    import json
    import signal
    import tempfile

    with (
        tempfile.TemporaryFile() as out,
        tempfile.TemporaryFile() as err,
        tempfile.TemporaryDirectory(prefix="learndock-run-") as tmp,
    ):
        report = Path(tmp) / "report.json"
        launcher = [sys.executable, "-I", "-c", _LAUNCHER, str(report)]
        proc = subprocess.Popen(
            [*launcher, *cmd], stdout=out, stderr=err, env=env, start_new_session=True
        )
        try:
            proc.wait(timeout)
            timed_out = False
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            timed_out = True
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode(errors="replace")
        stderr = err.read().decode(errors="replace")
        info = json.loads(report.read_text()) if report.exists() else {}
    if timed_out:
        return ProcResult(None, None, None, None, stdout, stderr)
    return ProcResult(
        returncode=info.get("exit", proc.returncode),
        wall_seconds=info.get("wall"),
        cpu_seconds=info.get("cpu"),
        peak_rss_bytes=info.get("maxrss"),
        stdout=stdout,
        stderr=stderr,
    )
