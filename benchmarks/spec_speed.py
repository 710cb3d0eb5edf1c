"""RKME table spec generation: learndock vs the reference engine (``learnware`` 0.4.0.post1).

For each data size n (d = 64, K = 100) and each of two kernels this measures

* **call**: the generation call alone -- learndock's ``RKMETableSpec.fit`` in this process,
  the reference's ``generate_rkme_table_spec`` inside its worker (import excluded);
* **process**: one fresh process end to end -- interpreter start, imports, read X from .npy,
  build the spec, write it: ``learndock spec table X.npy`` for us, the reference worker for the
  reference; plus the peak RSS of each process;
* wall time (median of ``--repeats`` interleaved learndock / reference runs) and CPU time;
* MMD^2(X, spec) of both specs under the SAME evaluator (learndock's ``mmd2_to_data``), next
  to a trivial baseline (K random rows, uniform weights).

Kernels: ``reference`` = gamma 0.1 on raw features (the reference's fixed choice; both engines
fit under it); ``default`` = learndock's default (scale = ``infer_scale(X)``, gamma = 1/d). The
reference gets ``X / scale`` with gamma 1/d and its z is mapped back (``z * scale``), so both
engines optimise the same kernel.

Threads: ``--threads 1`` (default) limits BLAS/OpenMP (numpy, scipy, torch) to one thread in
both engines; ``--threads 0`` leaves the libraries' own defaults.

Run from the repo root::

    python -m benchmarks.spec_speed                # full: n = 1797, 1e4, 1e5, 1e6
    python -m benchmarks.spec_speed --quick        # smoke: n = 1797, 1e4, one repeat
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from benchmarks.common import describe_machine, machine_info, run_measured

D = 64
K = 100
SEED = 0
FULL_SIZES = (1797, 10_000, 100_000, 1_000_000)
QUICK_SIZES = (1797, 10_000)
#: From this size on a single repeat is run (each run takes long enough to be stable).
SINGLE_REPEAT_FROM = 100_000
MAX_EXACT = 20_000
KERNELS = ("reference", "default")
KERNEL_LABELS = {
    "reference": "gamma 0.1 on raw features (the reference's fixed choice)",
    "default": "learndock default: scale = infer_scale(X), gamma = 1/d",
}
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO_ROOT / "benchmarks" / "results" / "spec_speed"

console = Console(stderr=True, highlight=False)


# ---------------------------------------------------------------------------- data + kernels
def make_data(n: int) -> np.ndarray:
    """n x 64 digits-like data: sklearn digits itself for n = 1797, else digits rows resampled
    with replacement plus N(0, 0.5^2) pixel noise (seeded)."""
    from sklearn.datasets import load_digits

    base = load_digits().data.astype(np.float64)
    if n == base.shape[0]:
        return base
    rng = np.random.default_rng(0)
    idx = rng.integers(0, base.shape[0], size=n)
    return base[idx] + rng.normal(0.0, 0.5, size=(n, base.shape[1]))


def make_kernel(name: str, X: np.ndarray):
    from learndock.spec import GaussianKernel, infer_scale
    from learndock.spec.kernels import default_gamma

    d = X.shape[1]
    if name == "reference":
        return GaussianKernel(0.1, np.ones(d))
    if name == "default":
        return GaussianKernel(default_gamma(d), infer_scale(X))
    raise ValueError(name)


def median(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return float(statistics.median(vals)) if vals else None


# ---------------------------------------------------------------------------- the two engines
def fit_ours(X: np.ndarray, kernel_name: str, kernel) -> tuple[Any, float, float]:
    """Our generation call: (spec, wall seconds, CPU seconds). The ``default`` kernel is left
    to the library's defaults (and checked to equal the expected one)."""
    from learndock.spec import RKMETableSpec

    t0, c0 = time.perf_counter(), time.process_time()
    if kernel_name == "default":
        spec = RKMETableSpec.fit(X, K, random_state=SEED, progress=False)
    else:
        spec = RKMETableSpec.fit(X, K, kernel=kernel, random_state=SEED, progress=False)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    if spec.kernel != kernel:
        raise RuntimeError(f"learndock fitted kernel {spec.kernel} but {kernel} was expected")
    return spec, wall, cpu


def _cli_command() -> list[str]:
    script = Path(sys.executable).with_name("learndock")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from learndock.cli.main import main; main()"]


def run_ours_cli(x_path: Path, kernel_name: str, kernel, out_dir: Path) -> dict[str, Any]:
    """End to end: ``learndock spec table X.npy -o spec.json`` in a fresh process."""
    out = out_dir / f"ours-{kernel_name}.json"
    cmd = [*_cli_command(), "spec", "table", str(x_path), "-o", str(out), "-k", str(K)]
    cmd += ["--seed", str(SEED), "--json"]
    if kernel_name == "reference":
        cmd += ["--gamma", repr(kernel.gamma), "--scale", "none"]
    r = run_measured(cmd, timeout=3600)
    if r.returncode != 0:
        raise RuntimeError(f"learndock CLI failed ({r.returncode}): {r.stderr[-2000:]}")
    info = json.loads(r.stdout)
    if info.get("kernel") != kernel.key():
        raise RuntimeError(f"CLI used kernel {info.get('kernel')}, expected {kernel.key()}")
    return {
        "wall_seconds": r.wall_seconds,
        "cpu_seconds": r.cpu_seconds,
        "peak_rss_bytes": r.peak_rss_bytes,
    }


def run_reference(X: np.ndarray, kernel, timeout: float) -> dict[str, Any]:
    """The reference under ``kernel``: it sees X / scale and gamma, its z is mapped back."""
    from benchmarks.reference import reference_table_spec

    try:
        out = reference_table_spec(X / kernel.scale, K, kernel.gamma, seed=SEED, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"status": "timeout", "timeout_seconds": timeout}
    except (RuntimeError, OSError) as exc:
        return {"status": "failed", "error": str(exc)[-1500:]}
    if out is None:
        return {"status": "not installed"}
    out["z"] = out["z"].reshape(out["z"].shape[0], -1) * kernel.scale
    out["status"] = "ok"
    return out


def spec_from_reference(out: dict[str, Any], kernel) -> tuple[Any, dict[str, Any]]:
    """Load the reference's (z, beta) under ``kernel``; clip negative weights and renormalise."""
    from learndock.spec import RKMETableSpec

    beta = np.asarray(out["beta"], dtype=np.float64).reshape(-1)
    info = {
        "beta_min": float(beta.min()),
        "beta_sum": float(beta.sum()),
        "negative_weights": int((beta < 0).sum()),
        "k_returned": int(beta.shape[0]),
    }
    clipped = np.clip(beta, 0.0, None)
    return RKMETableSpec(out["z"], clipped / clipped.sum(), kernel), info


def random_rows_mmd2(X: np.ndarray, kernel) -> float:
    """Baseline: K random rows with uniform weights, same evaluator."""
    from learndock.spec import RKMETableSpec

    idx = np.random.default_rng(SEED).choice(X.shape[0], size=K, replace=False)
    spec = RKMETableSpec(X[idx], np.full(K, 1.0 / K), kernel)
    return spec.mmd2_to_data(X, max_exact=MAX_EXACT)


# ---------------------------------------------------------------------------- one (n, kernel)
def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    keys = ("call_wall", "call_cpu", "process_wall", "process_cpu")
    out: dict[str, Any] = {k: [r.get(k) for r in runs] for k in keys}
    out.update({f"{k}_median": median(out[k]) for k in keys})
    out["process_peak_rss_bytes"] = max((r.get("peak_rss_bytes") or 0 for r in runs), default=0)
    out["process_peak_rss_bytes"] = out["process_peak_rss_bytes"] or None
    return out


def bench_case(
    X: np.ndarray,
    x_path: Path,
    kernel_name: str,
    repeats: int,
    ref_skip: str | None,
    ref_timeout: float,
    tmp: Path,
) -> dict[str, Any]:
    """Measure one (n, kernel); ``ref_skip`` is why the reference is not run (None: run it)."""
    n = X.shape[0]
    kernel = make_kernel(kernel_name, X)
    load_before = os.getloadavg()[0]
    ours_runs: list[dict[str, Any]] = []
    ref_runs: list[dict[str, Any]] = []
    ours_spec = ref_out = None
    ref_fail: dict[str, Any] = {}
    ref_status = ref_skip or "ok"
    for r in range(repeats):
        tag = f"n={n:,} {kernel_name} [{r + 1}/{repeats}]"
        ours_spec, wall, cpu = fit_ours(X, kernel_name, kernel)
        console.log(f"{tag} learndock call {wall:.3f} s (cpu {cpu:.3f} s)")
        if ref_status == "ok":
            out = run_reference(X, kernel, ref_timeout)
            ref_status = out["status"]
            if ref_status == "ok":
                ref_out = out
                ref_runs.append(
                    {
                        "call_wall": out["seconds"],
                        "call_cpu": out.get("cpu_seconds"),
                        "process_wall": out["wall_seconds"],
                        "process_cpu": out.get("process_cpu_seconds"),
                        "peak_rss_bytes": out.get("peak_rss_bytes"),
                    }
                )
                console.log(
                    f"{tag} reference call {out['seconds']:.3f} s "
                    f"(cpu {out.get('cpu_seconds') or float('nan'):.3f} s), "
                    f"process {out['wall_seconds']:.2f} s"
                )
            else:
                ref_fail = out
                console.log(f"{tag} reference {ref_status}: {out.get('error', '')[-300:]}")
        c = run_ours_cli(x_path, kernel_name, kernel, tmp)
        console.log(f"{tag} learndock process {c['wall_seconds']:.2f} s")
        ours_runs.append(
            {
                "call_wall": wall,
                "call_cpu": cpu,
                "process_wall": c["wall_seconds"],
                "process_cpu": c["cpu_seconds"],
                "peak_rss_bytes": c["peak_rss_bytes"],
            }
        )

    console.log(f"n={n:,} {kernel_name}: evaluating MMD^2 (max_exact={MAX_EXACT:,})")
    assert ours_spec is not None
    fit_keys = ("rounds", "converged", "evaluations", "optimisation_rows", "n_points")
    ours = _summary(ours_runs)
    ours["mmd2"] = ours_spec.mmd2_to_data(X, max_exact=MAX_EXACT)
    ours["fit_info"] = {k: ours_spec.fit_info.get(k) for k in fit_keys}
    ref: dict[str, Any] = {"status": ref_status}
    if ref_runs:  # a later repeat may fail after earlier ones succeeded: keep what was measured
        ref.update(_summary(ref_runs))
        spec, beta_info = spec_from_reference(ref_out, kernel)
        ref.update(beta_info)
        ref["mmd2"] = spec.mmd2_to_data(X, max_exact=MAX_EXACT)
    if ref_fail:
        ref["detail"] = {k: v for k, v in ref_fail.items() if k != "status"}
    result: dict[str, Any] = {
        "n": n,
        "d": X.shape[1],
        "kernel": kernel_name,
        "kernel_key": kernel.key(),
        "gamma": kernel.gamma,
        "repeats": repeats,
        "load_avg_1min": [load_before, os.getloadavg()[0]],
        "baseline_random_rows_mmd2": random_rows_mmd2(X, kernel),
        "ours": ours,
        "reference": ref,
        "ratios": {},
    }
    for key in ("call_wall", "call_cpu", "process_wall", "process_cpu"):
        a, b = ref.get(f"{key}_median"), ours.get(f"{key}_median")
        if a and b:
            result["ratios"][key] = a / b
    console.log(
        f"n={n:,} {kernel_name}: MMD^2 learndock {ours['mmd2']:.3g}, reference "
        f"{ref.get('mmd2', float('nan')):.3g}, K random rows "
        f"{result['baseline_random_rows_mmd2']:.3g}; ref/ours call "
        f"{result['ratios'].get('call_wall', float('nan')):.1f}x"
    )
    return result


# ---------------------------------------------------------------------------- reporting
def _fmt_s(v: float | None) -> str:
    if v is None:
        return "–"
    return f"{v:.3f}" if v < 10 else f"{v:.1f}"


def _fmt_x(v: float | None) -> str:
    return "–" if v is None else f"{v:.1f}x"


def _fmt_mib(v: int | None) -> str:
    return "–" if not v else f"{v / 2**20:,.0f}"


def _ref_cell(ref: dict[str, Any], key: str, fmt) -> str:
    if ref.get(key) is not None:
        return fmt(ref[key])
    return ref["status"]


def markdown_tables(results: list[dict[str, Any]]) -> str:
    lines: list[str] = []
    for what, title in (
        ("call", "Generation call only (seconds; median over the repeats)"),
        ("process", "Whole process, end to end (seconds; median over the repeats)"),
    ):
        lines += [
            f"{title}:",
            "",
            "| n | kernel | repeats | learndock wall | reference wall | ref/ours wall "
            "| learndock CPU | reference CPU | ref/ours CPU | load |",
            "|---:|---|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
        for r in results:
            o, ref, q = r["ours"], r["reference"], r["ratios"]
            lines.append(
                f"| {r['n']:,} | {r['kernel']} | {r['repeats']} "
                f"| {_fmt_s(o[f'{what}_wall_median'])} "
                f"| {_ref_cell(ref, f'{what}_wall_median', _fmt_s)} "
                f"| {_fmt_x(q.get(f'{what}_wall'))} "
                f"| {_fmt_s(o[f'{what}_cpu_median'])} "
                f"| {_ref_cell(ref, f'{what}_cpu_median', _fmt_s)} "
                f"| {_fmt_x(q.get(f'{what}_cpu'))} "
                f"| {r['load_avg_1min'][0]:.1f} → {r['load_avg_1min'][1]:.1f} |"
            )
        lines.append("")
    lines += [
        "Spec quality (MMD^2(X, spec), same evaluator for both; lower is better) and memory "
        "(peak RSS of the whole process, MiB):",
        "",
        "| n | kernel | MMD² learndock | MMD² reference | MMD² K random rows | learndock rounds "
        "| reference β<0 | learndock peak RSS | reference peak RSS |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        o, ref = r["ours"], r["reference"]
        neg = ref.get("negative_weights")
        neg_cell = "–" if neg is None else (f"{neg} (min {ref['beta_min']:.2g})" if neg else "0")
        fi = o["fit_info"]
        rounds = f"{fi['rounds']}{'' if fi['converged'] else ' (not converged)'}"
        lines.append(
            f"| {r['n']:,} | {r['kernel']} | {o['mmd2']:.4g} "
            f"| {_ref_cell(ref, 'mmd2', lambda v: f'{v:.4g}')} "
            f"| {r['baseline_random_rows_mmd2']:.4g} | {rounds} | {neg_cell} "
            f"| {_fmt_mib(o['process_peak_rss_bytes'])} "
            f"| {_ref_cell(ref, 'process_peak_rss_bytes', _fmt_mib)} |"
        )
    return "\n".join(lines) + "\n"


def plot(results: list[dict[str, Any]], path: Path, subtitle: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(13, 5))
    colors = {
        ("ours", "reference"): "tab:blue",
        ("ours", "default"): "tab:cyan",
        ("reference", "reference"): "tab:red",
        ("reference", "default"): "tab:orange",
    }
    names = {"ours": "learndock", "reference": "reference"}

    def series(rows: list[dict[str, Any]], engine: str, key: str) -> list[list[float]]:
        pts = [(r["n"], r[engine].get(key)) for r in rows]
        pts = [(n, v) for n, v in pts if v is not None]
        return [[p[0] for p in pts], [p[1] for p in pts]]

    for engine in ("ours", "reference"):
        for kname in KERNELS:
            rows = [r for r in results if r["kernel"] == kname]
            color = colors[(engine, kname)]
            label = f"{names[engine]}, {kname} kernel"
            xs, ys = series(rows, engine, "call_wall_median")
            if xs:
                ax_t.plot(xs, ys, "o-", color=color, label=f"{label}: call")
            xs, ys = series(rows, engine, "process_wall_median")
            if xs:
                ax_t.plot(xs, ys, "s:", color=color, alpha=0.6, label=f"{label}: process")
            for r in rows:
                detail = r[engine].get("detail") or {}
                if r[engine].get("status") in ("timeout", "failed") and detail:
                    y = detail.get("timeout_seconds") or max(ax_t.get_ylim())
                    ax_t.plot([r["n"]], [y], "x", color=color, markersize=12, mew=2)
                    ax_t.annotate(
                        r[engine]["status"],
                        (r["n"], y),
                        color=color,
                        textcoords="offset points",
                        xytext=(4, 4),
                    )
            xs, ys = series(rows, engine, "mmd2")
            if xs:
                ax_m.plot(xs, ys, "o-", color=color, label=label)
    for kname, style in (("reference", "--"), ("default", "-.")):
        rows = [r for r in results if r["kernel"] == kname]
        ax_m.plot(
            [r["n"] for r in rows],
            [r["baseline_random_rows_mmd2"] for r in rows],
            style,
            color="grey",
            label=f"{K} random rows, {kname} kernel",
        )
    ax_t.set(
        xscale="log",
        yscale="log",
        xlabel="n (rows, d = 64)",
        ylabel="wall seconds",
        title=f"RKME table spec generation, K = {K}",
    )
    ax_m.set(
        xscale="log",
        yscale="log",
        xlabel="n (rows, d = 64)",
        ylabel="MMD²(X, spec)",
        title="Spec quality (same evaluator; lower is better)",
    )
    for ax in (ax_t, ax_m):
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(subtitle, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def reference_versions() -> dict[str, str] | None:
    from benchmarks.reference import find_reference_python

    python = find_reference_python()
    if python is None:
        return None
    code = (
        "import importlib.metadata as m, platform; "
        "print(m.version('learnware'), m.version('torch'), m.version('numpy'), "
        "platform.python_version())"
    )
    r = subprocess.run([str(python), "-c", code], capture_output=True, text=True, timeout=120)
    parts = r.stdout.split()
    if r.returncode != 0 or len(parts) != 4:
        return {"python_path": str(python)}
    keys = ("learnware", "torch", "numpy", "python")
    return {"python_path": str(python), **dict(zip(keys, parts, strict=True))}


def warm_up(use_reference: bool, tmp: Path) -> None:
    """Discarded runs so that neither engine's first timed run pays for cold caches."""
    from learndock.spec import RKMETableSpec

    X = make_data(1797)[:600]
    RKMETableSpec.fit(X, 20, progress=False)
    x_path = tmp / "warmup.npy"
    np.save(x_path, X, allow_pickle=False)
    run_ours_cli(x_path, "default", make_kernel("default", X), tmp)
    if use_reference:
        run_reference(X, make_kernel("reference", X), timeout=600)


def write_outputs(out: Path, meta: dict[str, Any], results: list[dict[str, Any]]) -> None:
    """(Re)write JSON, markdown and plot; called after every case so a long run leaves
    partial results behind."""
    payload = {**meta, "results": results}
    (out / "spec_speed.json").write_text(json.dumps(payload, indent=2) + "\n")
    threads = meta["config"]["threads"]
    md = [
        "# RKME table spec generation: learndock vs reference",
        "",
        f"Command: `{meta['command']}`  ",
        f"Machine: {meta['machine_description']}  ",
        f"Threads: {threads}  ",
        f"Reference: {meta['versions']['reference'] or 'not run'}",
        "",
        "*call* = the generation call alone (reference: `generate_rkme_table_spec`, timed inside "
        "its worker, import excluded). *process* = one fresh process end to end: interpreter "
        "start, imports, load X from .npy, build the spec, write it (learndock: `learndock spec "
        "table X.npy`; reference: its worker). CPU = user + system time of all threads. *load* = the "
        "machine's 1-minute load average before → after the case (other work on the machine "
        "inflates wall times; CPU times are less sensitive to it). Kernels: "
        + "; ".join(f"`{k}` = {v}" for k, v in KERNEL_LABELS.items())
        + ".",
        "",
        markdown_tables(results),
    ]
    (out / "spec_speed.md").write_text("\n".join(md))
    subtitle = f"{meta['command']}  |  {meta['machine_description']}  |  threads: {threads}"
    plot(results, out / "spec_speed.png", subtitle)


# ---------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="CI smoke run: n = 1797 and 10000, one repeat"
    )
    parser.add_argument("--sizes", type=int, nargs="+", help=f"row counts (default {FULL_SIZES})")
    parser.add_argument(
        "--repeats",
        type=int,
        default=None,
        help=f"repeats below n = {SINGLE_REPEAT_FROM:,} (default 3; 1 with --quick)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help=f"output folder (default {DEFAULT_OUT.relative_to(REPO_ROOT)}; with --quick its "
        "quick/ subfolder, so a CI run never overwrites the full results)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="BLAS/OpenMP threads for both engines (default 1; 0 = library defaults)",
    )
    parser.add_argument("--no-reference", action="store_true", help="skip the reference engine")
    parser.add_argument(
        "--ref-timeout",
        type=float,
        default=1200.0,
        help="seconds before a reference run is killed (default 1200)",
    )
    args = parser.parse_args(argv)

    if args.out is None:
        args.out = DEFAULT_OUT / "quick" if args.quick else DEFAULT_OUT
    sizes = tuple(args.sizes) if args.sizes else (QUICK_SIZES if args.quick else FULL_SIZES)
    repeats = args.repeats if args.repeats is not None else (1 if args.quick else 3)
    if repeats < 1:
        parser.error("--repeats must be >= 1")
    command = " ".join(
        ["python -m benchmarks.spec_speed"]
        + [shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])]
    )

    if args.threads > 0:  # subprocesses inherit the variables; this process uses threadpoolctl
        for var in THREAD_VARS:
            os.environ[var] = str(args.threads)
    from threadpoolctl import threadpool_info, threadpool_limits

    import learndock.spec  # noqa: F401 -- load scipy/sklearn's BLAS before limiting it

    limiter = threadpool_limits(args.threads) if args.threads > 0 else None
    threads = (
        f"{args.threads} (OMP/OPENBLAS/MKL_NUM_THREADS + threadpoolctl)"
        if limiter
        else "library defaults"
    )

    machine = machine_info()
    console.log(f"machine: {describe_machine(machine)}; threads: {threads}")
    ref_versions = None if args.no_reference else reference_versions()
    if args.no_reference:
        skip_all: str | None = "skipped (--no-reference)"
    elif ref_versions is None:
        skip_all = "not installed"
        console.log("reference: not installed (.venv-ref); measuring learndock only")
    else:
        skip_all = None
        console.log(f"reference: {ref_versions}")

    import scipy
    import sklearn

    import learndock

    meta = {
        "benchmark": "rkme-table-spec-generation",
        "command": command,
        "machine": machine,
        "machine_description": describe_machine(machine),
        "versions": {
            "learndock": learndock.__version__,
            "numpy": np.__version__,
            "scipy": scipy.__version__,
            "scikit-learn": sklearn.__version__,
            "reference": ref_versions,
        },
        "config": {
            "sizes": list(sizes),
            "d": D,
            "k": K,
            "seed": SEED,
            "repeats_below_100k": repeats,
            "threads": threads,
            "blas": [
                {k: i.get(k) for k in ("internal_api", "version", "num_threads", "filepath")}
                for i in threadpool_info()
            ],
            "mmd_max_exact": MAX_EXACT,
            "reference_timeout_seconds": args.ref_timeout,
            "kernels": KERNEL_LABELS,
            "data": "n=1797: sklearn load_digits().data; larger n: digits rows resampled with "
            "replacement (np.random.default_rng(0)) + N(0, 0.5^2) noise",
        },
    }

    args.out.mkdir(parents=True, exist_ok=True)
    results: list[dict[str, Any]] = []
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="learndock-spec-speed-") as tmp_name:
        tmp = Path(tmp_name)
        console.log("warm-up runs (discarded)")
        warm_up(skip_all is None, tmp)
        gave_up: set[str] = set()  # kernels whose reference run timed out at a smaller n
        for n in sizes:
            X = make_data(n)
            x_path = tmp / "x.npy"
            np.save(x_path, X, allow_pickle=False)
            reps = 1 if n >= SINGLE_REPEAT_FROM else repeats
            for kname in KERNELS:
                skip = skip_all or (
                    "skipped (timed out at a smaller n)" if kname in gave_up else None
                )
                res = bench_case(X, x_path, kname, reps, skip, args.ref_timeout, tmp)
                if res["reference"]["status"] == "timeout":
                    gave_up.add(kname)
                results.append(res)
                write_outputs(args.out, meta, results)
            del X
    if limiter is not None:
        limiter.restore_original_limits()
    console.log(f"done in {time.perf_counter() - t_start:.0f} s; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
