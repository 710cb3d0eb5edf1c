"""Drive the reference engine (PyPI ``learnware`` 0.4.0.post1) from our benchmarks.

The reference lives in its own venv, ``.venv-ref`` at the repo root (git-ignored),
so its dependency tree (transformers, trl, peft, lm_eval, datasets, ...) never
touches ours. This module runs in OUR venv; it calls ``reference_worker.py`` under
the reference interpreter via subprocess and exchanges data through .npy/.npz
files only (no pickle).

Install (Python 3.11, CPU only; worked as-is, no --no-deps needed):

    python3 -m venv .venv-ref
    .venv-ref/bin/pip install torch==2.13.0
    .venv-ref/bin/pip install learnware==0.4.0.post1 fast_pytorch_kmeans==0.2.0.1 \
        torch-optimizer lightgbm "torch==2.13.0"

Install torch first and keep it pinned in the second command: an unpinned torch
would pull multi-GB CUDA wheels. (Here pip finds the CPU wheel
``torch-2.13.0+cpu`` on local disk; elsewhere add the PyTorch CPU index.) geatpy
is only required by learnware on Python < 3.11. The venv is ~1.9 GB.

Gotchas: importing ``learnware`` creates ``~/.learnware/{database,cache,stdout}``
and reads ``~/.learnware/config.json`` if present; the worker therefore sets
HOME to ``$LEARNWARE_REFERENCE_HOME`` (default ``.venv-ref/learnware-home``) and
HF_HUB_OFFLINE/TRANSFORMERS_OFFLINE=1 before importing it. Importing learnware
also calls ``setup_seed(0)``; ``generate_rkme_table_spec`` casts X to float32 and
silently shrinks K if ``K * d > 1_310_720``, and uses K = 2n/3 when K >= n.

Set ``LEARNDOCK_REFERENCE_PYTHON`` to use a reference interpreter elsewhere.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

try:
    from benchmarks.common import ProcResult, run_measured
except ImportError:  # run as a script: benchmarks/ itself is on sys.path
    from common import ProcResult, run_measured  # type: ignore[no-redef]

REPO_ROOT = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).resolve().with_name("reference_worker.py")

_INSTALL_COMMANDS = [
    "python3 -m venv .venv-ref",
    ".venv-ref/bin/pip install torch==2.13.0",
    ".venv-ref/bin/pip install learnware==0.4.0.post1 fast_pytorch_kmeans==0.2.0.1"
    ' torch-optimizer lightgbm "torch==2.13.0"',
]


def reference_install_commands() -> list[str]:
    """Shell commands (run from the repo root) that build the reference venv."""
    return list(_INSTALL_COMMANDS)


@functools.cache
def _check_python(python: str) -> bool:
    """True if `import learnware` works under `python` (via the worker's env setup)."""
    try:
        r = subprocess.run(
            [python, str(WORKER), "version"], capture_output=True, text=True, timeout=300
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return r.returncode == 0


def find_reference_python() -> Path | None:
    """The reference interpreter, or None if it is missing or lacks learnware."""
    env_python = os.environ.get("LEARNDOCK_REFERENCE_PYTHON")
    candidate = Path(env_python) if env_python else REPO_ROOT / ".venv-ref" / "bin" / "python"
    if not candidate.exists():
        return None
    return candidate if _check_python(str(candidate)) else None


def _run_worker(python: Path, args: list[str], timeout: float) -> ProcResult:
    """Run the worker; raises ``subprocess.TimeoutExpired`` or ``RuntimeError`` on failure."""
    cmd = [str(python), str(WORKER), *args]
    r = run_measured(cmd, timeout=timeout)
    if r.timed_out:
        raise subprocess.TimeoutExpired(cmd, timeout, output=r.stdout, stderr=r.stderr)
    if r.returncode != 0:
        raise RuntimeError(
            f"reference worker failed ({r.returncode}): {' '.join(args[:1])}\n{r.stderr[-4000:]}"
        )
    return r


def reference_table_spec(
    X: np.ndarray, k: int, gamma: float, seed: int = 0, timeout: float = 3600
) -> dict | None:
    """Reference RKME table spec of X, or None if the reference is not installed.

    Keys: ``z``, ``beta``, ``gamma``, ``seconds``, ``cpu_seconds``, ``wall_seconds``,
    ``process_cpu_seconds``, ``peak_rss_bytes``.
    ``seconds`` is the wall-clock time of the ``generate_rkme_table_spec`` call
    alone (measured inside the worker, CPU, cuda_idx=-1), excluding process start
    and imports; ``cpu_seconds`` the CPU time (all threads) of that call.
    ``wall_seconds`` is the end-to-end time of the worker process, measured from
    outside: interpreter start, ``import learnware`` (and torch), loading X from
    .npy, the call, and writing the result; ``process_cpu_seconds`` its CPU time.
    ``peak_rss_bytes`` is the worker process's peak resident memory. Thread
    counts follow the environment (``OMP_NUM_THREADS`` etc.) that this process has. Raises ``subprocess.TimeoutExpired``
    after ``timeout`` seconds and ``RuntimeError`` if the worker fails.
    """
    python = find_reference_python()
    if python is None:
        return None
    with tempfile.TemporaryDirectory(prefix="learndock-ref-") as tmp:
        x_path, out_path = Path(tmp) / "x.npy", Path(tmp) / "out.npz"
        np.save(x_path, np.ascontiguousarray(X), allow_pickle=False)
        proc = _run_worker(
            python,
            [
                "table-spec",
                "--x",
                str(x_path),
                "--out",
                str(out_path),
                "--k",
                str(k),
                "--gamma",
                repr(float(gamma)),
                "--seed",
                str(seed),
            ],
            timeout,
        )
        with np.load(out_path, allow_pickle=False) as f:
            return {
                "z": f["z"],
                "beta": f["beta"],
                "gamma": float(f["gamma"]),
                "seconds": float(f["seconds"]),
                "cpu_seconds": float(f["cpu_seconds"]) if "cpu_seconds" in f else None,
                "wall_seconds": proc.wall_seconds,
                "process_cpu_seconds": proc.cpu_seconds,
                "peak_rss_bytes": proc.peak_rss_bytes,
            }


if __name__ == "__main__":  # quick manual check
    print(find_reference_python(), file=sys.stderr)
    out = reference_table_spec(np.random.default_rng(0).normal(size=(500, 8)), 100, 0.1)
    print(None if out is None else {k: getattr(v, "shape", v) for k, v in out.items()})
