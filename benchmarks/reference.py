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


def run_reference_worker(python: Path, args: list[str], timeout: float = 3600,
                         worker: Path = WORKER) -> ProcResult:
    """Run a ``reference_worker.py`` subcommand (or another ``worker`` script) under the
    reference interpreter ``python``.

    BLAS, OpenMP (LightGBM) and torch get one thread, like our side of the scenarios. Returns
    the measured process (wall, CPU, peak RSS); raises ``subprocess.TimeoutExpired`` or
    ``RuntimeError`` on failure.
    """
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = "1"
    cmd = [str(python), str(worker), *args]
    r = run_measured(cmd, timeout=timeout, env=env)
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
        proc = run_reference_worker(
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


# ----------------------------------------------------------------- image and embedding specs
# (used by benchmarks/image_text_specs.py)
def reference_image_spec(
    X: np.ndarray,
    *,
    k: int = 50,
    steps: int = 100,
    sample_size: int = 5000,
    seed: int = 0,
    threads: int = 1,
    transformed: bool = False,
    timeout: float = 3600,
) -> dict | None:
    """Reference image spec (``generate_rkme_image_spec``, CPU) of images X [N, C, H, W].

    None if the reference is not installed. Keys: ``z`` (K x C x 32 x 32, standardised pixel
    space), ``beta``, ``z_init``, ``seconds`` / ``cpu_seconds`` (the call alone, including the
    resize to 32 x 32), ``pass_rows`` / ``pass_seconds`` (every random-feature pass),
    ``torch_threads``, ``torchvision`` (how its Resize import was satisfied), ``wall_seconds``,
    ``peak_rss_bytes``; with ``transformed``: ``X_transformed`` (X in z's space),
    ``channel_mean``, ``channel_std``. Defaults are the reference's own (K 50, 100 steps,
    sample_size 5000).
    """
    python = find_reference_python()
    if python is None:
        return None
    with tempfile.TemporaryDirectory(prefix="learndock-ref-img-") as tmp:
        x_path, out_path = Path(tmp) / "x.npy", Path(tmp) / "out.npz"
        tr_path = Path(tmp) / "transformed.npy"
        np.save(x_path, np.ascontiguousarray(X, dtype=np.float32), allow_pickle=False)
        args = ["image-spec", "--x", str(x_path), "--out", str(out_path), "--k", str(k),
                "--steps", str(steps), "--sample-size", str(sample_size), "--seed", str(seed),
                "--threads", str(threads)]
        if transformed:
            args += ["--transformed", str(tr_path)]
        proc = run_reference_worker(python, args, timeout=timeout)
        with np.load(out_path, allow_pickle=False) as f:
            out: dict = {key: f[key] for key in f.files}
        for key in ("seconds", "cpu_seconds"):
            out[key] = float(out[key])
        out["torch_threads"] = int(out["torch_threads"])
        out["torchvision"] = str(out["torchvision"])
        if transformed:
            out["X_transformed"] = np.load(tr_path, allow_pickle=False)
        out["wall_seconds"] = proc.wall_seconds
        out["peak_rss_bytes"] = proc.peak_rss_bytes
        return out


def reference_spec_search(
    learnware_data: list[np.ndarray],
    user_data: list[np.ndarray],
    config: dict,
    timeout: float = 3600,
) -> dict | None:
    """Reference specs of each learnware's and user's data + ``EasyStatSearcher`` rankings.

    ``config``: ``kind`` ("table": ``gamma``, ``k``; "image": ``k``, ``steps``,
    ``sample_size``, optional ``n_models``), ``max_search_num``, ``seed``, ``threads``.
    Returns the worker's JSON (see ``cmd_spec_search``) plus ``wall_seconds``; None if the
    reference is not installed.
    """
    import json

    python = find_reference_python()
    if python is None:
        return None
    with tempfile.TemporaryDirectory(prefix="learndock-ref-search-") as tmp:
        d = Path(tmp)
        cfg = {**config, "n_learnwares": len(learnware_data), "n_users": len(user_data)}
        (d / "config.json").write_text(json.dumps(cfg))
        for i, X in enumerate(learnware_data):
            np.save(d / f"lw_{i:03d}.npy", np.ascontiguousarray(X), allow_pickle=False)
        for j, X in enumerate(user_data):
            np.save(d / f"user_{j:03d}.npy", np.ascontiguousarray(X), allow_pickle=False)
        proc = run_reference_worker(python, ["spec-search", "--data", str(d), "--out",
                                             str(d / "out.json")], timeout=timeout)
        out = json.loads((d / "out.json").read_text())
        out["wall_seconds"] = proc.wall_seconds
        return out


if __name__ == "__main__":  # quick manual check
    print(find_reference_python(), file=sys.stderr)
    out = reference_table_spec(np.random.default_rng(0).normal(size=(500, 8)), 100, 0.1)
    print(None if out is None else {k: getattr(v, "shape", v) for k, v in out.items()})
