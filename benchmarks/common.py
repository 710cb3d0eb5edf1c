"""Helpers shared by the benchmarks: the machine description and measured subprocesses."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import resource
import subprocess
import sys
import threading
import time
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
    wall_seconds: float
    peak_rss_bytes: int | None  # the child's own peak RSS (from wait4), None if unknown
    stdout: str
    stderr: str

    @property
    def timed_out(self) -> bool:
        return self.returncode is None


def run_measured(
    cmd: list[str], timeout: float | None = None, env: dict[str, str] | None = None
) -> ProcResult:
    """Run ``cmd`` and measure its wall time (process start to exit) and peak RSS.

    The child is reaped with ``os.wait4`` in a helper thread, which yields the resource usage
    of that one process (``RUSAGE_CHILDREN`` would mix all children). On timeout the child is
    killed and ``returncode`` is None.
    """
    import tempfile

    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env)
        result: dict[str, Any] = {}

        def reap() -> None:
            _, status, usage = os.wait4(proc.pid, 0)
            result["wall"] = time.perf_counter() - t0
            result["status"] = status
            result["usage"] = usage

        thread = threading.Thread(target=reap, daemon=True)
        thread.start()
        thread.join(timeout)
        timed_out = thread.is_alive()
        if timed_out:
            proc.kill()
            thread.join()
        proc.returncode = 0  # reaped by wait4 above; stop Popen from waiting on it again
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode(errors="replace")
        stderr = err.read().decode(errors="replace")
    usage = result.get("usage")
    # ru_maxrss is KiB on Linux, bytes on macOS
    unit = 1 if sys.platform == "darwin" else 1024
    return ProcResult(
        returncode=None if timed_out else os.waitstatus_to_exitcode(result["status"]),
        wall_seconds=result["wall"],
        peak_rss_bytes=None if usage is None else int(usage.ru_maxrss) * unit,
        stdout=stdout,
        stderr=stderr,
    )


def self_peak_rss_bytes() -> int:
    """Peak RSS of the current process so far."""
    unit = 1 if sys.platform == "darwin" else 1024
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * unit
