"""RKME table spec speed: today's fit, the new fit and the reference's, side by side in one run.

    python -m benchmarks.spec_speed            # full: ~25 min on 2 shared cores
    python -m benchmarks.spec_speed --quick    # smoke: 1,500 x 17 and 10,000 x 64, 2 seeds

Engines (``K = 100`` reduced points, every engine under the SAME kernel per case):

* **today** -- learndock at commit ``BASELINE_REV`` (the fit before the v2 rewrite), extracted
  with ``git archive`` into a temporary folder and imported from there;
* **new** -- learndock from this working tree;
* **reference** -- the reference engine's ``generate_rkme_table_spec`` (``learnware``, in
  ``.venv-ref``), given ``X / scale`` and gamma and its z mapped back.

What is measured, per case (n x d):

* **call** -- the generation call alone, timed inside a worker process after a warm-up fit
  (today and new: the same worker code run against the two source trees; reference: its own
  worker), wall seconds, median over seeds 0..S-1 (x ``--repeats``);
* **MMD^2** -- ``MMD^2(X, spec)`` of each engine's spec under the case's kernel, by one evaluator
  (this tree's ``mmd2_to_data``, exact up to 20,000 rows), median over the seeds;
* **process** -- one fresh ``learndock spec table X.npy -o spec.json`` process (today and new),
  and the same from a CSV file, wall seconds and peak RSS, median of ``--repeats``.

The kernel of every case is *today's* default for the data (gamma 1/d, per-feature scale =
std rounded to a power of two), so "MMD^2 no worse than today's" compares like with like.
Data: 1,500 x 17 = the first 1,500 training rows of the Birthdays panel's first state (real
calendar + lagged-births features); n x 64 = scikit-learn digits rows resampled with
replacement + N(0, 0.5^2) noise (seeded), n = 1,797 is digits itself.
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

K = 100
#: The last commit with the old fit (k-means++ from scikit-learn, scipy L-BFGS rounds, clarabel).
BASELINE_REV = "c1f5cff"
FULL_CASES = ("birthdays-1500", "digits-1797", "digits-10000", "digits-100000",
              "digits-1000000")
QUICK_CASES = ("birthdays-1500", "digits-10000")
MAX_EXACT = 20_000
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO_ROOT / "benchmarks" / "results" / "spec_speed"
ENGINES = ("today", "new", "reference")
#: Round limits (``max_iter``) at which the new fit is also timed, up to 20,000 rows: its
#: time-vs-MMD^2 curve, to show where a time target sits against the quality target.
BUDGETS = (1, 2, 3, 4, 6)
#: Issue #15's fit-time targets (seconds) by number of rows: 1,500 x 17 and 10,000 x 64.
TIME_TARGETS = {1_500: 0.030, 10_000: 0.050}

console = Console(stderr=True, highlight=False)

#: Run in a fresh interpreter with the engine's source tree first on sys.path.
WORKER = r"""
import json, sys, time
src, x_path, kernel_json, k, seeds, out = sys.argv[1:7]
extra = json.loads(sys.argv[7]) if len(sys.argv) > 7 else {}
sys.path.insert(0, src)
import numpy as np
from learndock.spec.kernels import GaussianKernel
from learndock.spec.table import RKMETableSpec
X = np.load(x_path)
kernel = GaussianKernel.from_dict(json.loads(kernel_json))
RKMETableSpec.fit(X[:400], 20, kernel=kernel, progress=False)  # warm-up, discarded
res, arrays = [], {}
for seed in json.loads(seeds):
    t0, c0 = time.perf_counter(), time.process_time()
    spec = RKMETableSpec.fit(X, int(k), kernel=kernel, random_state=seed, progress=False,
                             **extra)
    res.append({"seed": seed, "wall": time.perf_counter() - t0, "cpu": time.process_time() - c0,
                "rounds": spec.fit_info.get("rounds"),
                "converged": spec.fit_info.get("converged"),
                "evaluations": spec.fit_info.get("evaluations")})
    arrays[f"z{len(res) - 1}"] = spec.z
    arrays[f"b{len(res) - 1}"] = spec.beta
np.savez(out, **arrays)
print(json.dumps(res))
"""

CLI = r"""
import sys
sys.path.insert(0, sys.argv.pop(1))
from learndock.cli.main import main
sys.argv[0] = "learndock"
main()
"""


# ---------------------------------------------------------------------------- data + kernel
def make_data(case: str) -> np.ndarray:
    kind, n = case.rsplit("-", 1)
    n = int(n)
    if kind == "birthdays":
        from learndock.datasets.birthdays import SPLIT_YEAR, birthdays_panel

        panel = birthdays_panel()
        d = panel[sorted(panel)[0]]
        return np.asarray(d.X[d.years < SPLIT_YEAR][:n], dtype=np.float64)
    from sklearn.datasets import load_digits

    base = load_digits().data.astype(np.float64)
    if n == base.shape[0]:
        return base
    rng = np.random.default_rng(0)
    idx = rng.integers(0, base.shape[0], size=n)
    return base[idx] + rng.normal(0.0, 0.5, size=(n, base.shape[1]))


def today_default_kernel(X: np.ndarray):
    """Today's default kernel for X: gamma 1/d, std rounded to a power of two (1 if constant)."""
    from learndock.spec import GaussianKernel

    std = X.std(axis=0)
    scale = np.where(std > 0, np.exp2(np.round(np.log2(np.where(std > 0, std, 1.0)))), 1.0)
    return GaussianKernel(1.0 / X.shape[1], scale)


def median(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return float(statistics.median(vals)) if vals else None


def baseline_src(tmp: Path) -> Path:
    """Today's source tree (``git archive BASELINE_REV src``, read-only on the repository)."""
    dest = tmp / "baseline"
    dest.mkdir()
    archive = subprocess.run(["git", "-C", str(REPO_ROOT), "archive", BASELINE_REV, "src"],
                             capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest / "src"


# ---------------------------------------------------------------------------- engines
def run_worker(src: Path, x_path: Path, kernel, seeds: list[int], tmp: Path,
               extra: dict[str, Any] | None = None
               ) -> tuple[list[dict[str, Any]], list[tuple[np.ndarray, np.ndarray]]]:
    out = tmp / "worker.npz"
    cmd = [sys.executable, "-c", WORKER, str(src), str(x_path), json.dumps(kernel.to_dict()),
           str(K), json.dumps(seeds), str(out), json.dumps(extra or {})]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=7200)
    if r.returncode != 0:
        raise RuntimeError(f"worker failed for {src}: {r.stderr[-2000:]}")
    res = json.loads(r.stdout.strip().splitlines()[-1])
    with np.load(out) as f:
        specs = [(f[f"z{i}"], f[f"b{i}"]) for i in range(len(res))]
    return res, specs


def run_cli(src: Path, data_path: Path, out_dir: Path) -> dict[str, Any]:
    out = out_dir / "spec.json"
    cmd = [sys.executable, "-c", CLI, str(src), "spec", "table", str(data_path), "-o", str(out),
           "-k", str(K), "--seed", "0", "--json"]
    r = run_measured(cmd, timeout=3600)
    if r.returncode != 0:
        raise RuntimeError(f"CLI failed ({r.returncode}): {r.stderr[-2000:]}")
    return {"wall": r.wall_seconds, "cpu": r.cpu_seconds, "peak_rss_bytes": r.peak_rss_bytes}


def run_reference(X: np.ndarray, kernel, seeds: list[int], timeout: float
                  ) -> tuple[str, list[dict[str, Any]], list[tuple[np.ndarray, np.ndarray]]]:
    from benchmarks.reference import reference_table_spec

    res, specs = [], []
    for seed in seeds:
        try:
            out = reference_table_spec(X / kernel.scale, K, kernel.gamma, seed=seed,
                                       timeout=timeout)
        except subprocess.TimeoutExpired:
            return "timeout", res, specs
        except (RuntimeError, OSError) as exc:
            console.log(f"reference failed: {str(exc)[-300:]}")
            return "failed", res, specs
        if out is None:
            return "not installed", res, specs
        z = out["z"].reshape(out["z"].shape[0], -1) * kernel.scale
        beta = np.clip(np.asarray(out["beta"], dtype=np.float64).reshape(-1), 0.0, None)
        res.append({"seed": seed, "wall": out["seconds"], "cpu": out.get("cpu_seconds"),
                    "process_wall": out.get("wall_seconds"),
                    "peak_rss_bytes": out.get("peak_rss_bytes")})
        specs.append((z, beta / beta.sum()))
    return "ok", res, specs


def mmd2_of(specs: list[tuple[np.ndarray, np.ndarray]], kernel, X: np.ndarray) -> list[float]:
    from learndock.spec import RKMETableSpec

    return [RKMETableSpec(z, b, kernel).mmd2_to_data(X, max_exact=MAX_EXACT) for z, b in specs]


# ---------------------------------------------------------------------------- one case
def bench_case(case: str, srcs: dict[str, Path], seeds: list[int], repeats: int,
               ref_seeds: list[int] | None, ref_timeout: float, tmp: Path,
               budgets: tuple[int, ...] = ()) -> dict[str, Any]:
    X = make_data(case)
    n, d = X.shape
    kernel = today_default_kernel(X)
    x_path = tmp / "x.npy"
    np.save(x_path, X, allow_pickle=False)
    load = [os.getloadavg()[0]]
    result: dict[str, Any] = {"case": case, "n": n, "d": d, "kernel_key": kernel.key(),
                              "seeds": seeds, "repeats": repeats, "engines": {}}
    runs: dict[str, list[dict[str, Any]]] = {"today": [], "new": []}
    specs: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {"today": [], "new": []}
    for r in range(repeats):  # interleaved, so that load from other jobs hits both alike
        for eng in ("today", "new"):
            res, sp = run_worker(srcs[eng], x_path, kernel, seeds, tmp)
            runs[eng] += res
            if r == 0:
                specs[eng] = sp
            console.log(f"{case} {eng} [{r + 1}/{repeats}]: call median "
                        f"{median([x['wall'] for x in res]) * 1e3:.1f} ms")
    if budgets and n <= 20_000:
        # the new fit stopped early at several round limits: its time-vs-MMD^2 curve
        result["budgets"] = []
        for b in budgets:
            res, sp = run_worker(srcs["new"], x_path, kernel, seeds, tmp, {"max_iter": b})
            mm = mmd2_of(sp, kernel, X)
            result["budgets"].append({
                "max_iter": b, "call_wall_median": median([x["wall"] for x in res]),
                "mmd2_median": median(mm),
                "evaluations_median": median([x["evaluations"] for x in res])})
            console.log(f"{case} new, max_iter {b}: {result['budgets'][-1]['call_wall_median'] * 1e3:.1f}"
                        f" ms, MMD² {result['budgets'][-1]['mmd2_median']:.5f}")
    for eng in ("today", "new"):
        mm = mmd2_of(specs[eng], kernel, X)
        result["engines"][eng] = {
            "status": "ok",
            "call_wall": [x["wall"] for x in runs[eng]],
            "call_cpu": [x["cpu"] for x in runs[eng]],
            "call_wall_median": median([x["wall"] for x in runs[eng]]),
            "call_cpu_median": median([x["cpu"] for x in runs[eng]]),
            "mmd2": mm, "mmd2_median": median(mm),
            "rounds_median": median([x["rounds"] for x in runs[eng]]),
            "evaluations_median": median([x["evaluations"] for x in runs[eng]]),
            "converged": sum(bool(x["converged"]) for x in runs[eng]),
            "fits": len(runs[eng]),
        }
    if ref_seeds:
        status, res, sp = run_reference(X, kernel, ref_seeds, ref_timeout)
        entry: dict[str, Any] = {"status": status}
        if res:
            mm = mmd2_of(sp, kernel, X)
            entry.update({
                "call_wall": [x["wall"] for x in res],
                "call_wall_median": median([x["wall"] for x in res]),
                "call_cpu_median": median([x["cpu"] for x in res]),
                "process_wall_median": median([x["process_wall"] for x in res]),
                "process_peak_rss_bytes": max((x["peak_rss_bytes"] or 0) for x in res) or None,
                "mmd2": mm, "mmd2_median": median(mm), "fits": len(res),
            })
            console.log(f"{case} reference: call median {entry['call_wall_median']:.3f} s")
        result["engines"]["reference"] = entry
    else:
        result["engines"]["reference"] = {"status": "not run at this size"}
    # whole processes: .npy always, CSV at 10,000 rows
    inputs = [("npy", x_path)]
    if n == 10_000:
        csv_path = tmp / "x.csv"
        np.savetxt(csv_path, X, delimiter=",", fmt="%.6g",
                   header=",".join(f"f{i}" for i in range(d)), comments="")
        inputs.append(("csv", csv_path))
    proc_reps = repeats if n < 100_000 else 1
    for fmt, path in inputs:
        for eng in ("today", "new"):
            ps = [run_cli(srcs[eng], path, tmp) for _ in range(proc_reps)]
            result["engines"][eng][f"process_{fmt}_wall_median"] = median([p["wall"] for p in ps])
            result["engines"][eng][f"process_{fmt}_peak_rss_bytes"] = max(
                (p["peak_rss_bytes"] or 0) for p in ps) or None
            console.log(f"{case} {eng} process ({fmt}): "
                        f"{result['engines'][eng][f'process_{fmt}_wall_median']:.2f} s")
    load.append(os.getloadavg()[0])
    result["load_avg_1min"] = load
    result["baseline_random_rows_mmd2"] = random_rows_mmd2(X, kernel)
    return result


def random_rows_mmd2(X: np.ndarray, kernel) -> float:
    from learndock.spec import RKMETableSpec

    idx = np.random.default_rng(0).choice(X.shape[0], size=K, replace=False)
    return RKMETableSpec(X[idx], np.full(K, 1.0 / K), kernel).mmd2_to_data(X, max_exact=MAX_EXACT)


# ---------------------------------------------------------------------------- reporting
def _ms(v: float | None) -> str:
    if v is None:
        return "–"
    return f"{v * 1e3:.1f} ms" if v < 1 else f"{v:.2f} s"


def _s(v: float | None) -> str:
    return "–" if v is None else f"{v:.2f} s"


def _mib(v: int | None) -> str:
    return "–" if not v else f"{v / 2**20:,.0f}"


def _mmd(e: dict[str, Any]) -> str:
    return "–" if e.get("mmd2_median") is None else f"{e['mmd2_median']:.5f}"


def markdown(results: list[dict[str, Any]]) -> str:
    L = ["| data (n x d) | call: today | call: new | call: reference | new vs today "
         "| MMD² today | MMD² new | MMD² reference | MMD² 100 random rows | new converged "
         "| rounds today / new | evaluations today / new | 1-min load (start, end) |",
         "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        t, nw, ref = (r["engines"][e] for e in ENGINES)
        speed = (f"{t['call_wall_median'] / nw['call_wall_median']:.1f}x faster"
                 if nw.get("call_wall_median") else "–")
        ref_call = _ms(ref.get("call_wall_median")) if ref.get("fits") else ref["status"]
        L.append(f"| {r['case']} ({r['n']:,} x {r['d']}) | {_ms(t['call_wall_median'])} "
                 f"| **{_ms(nw['call_wall_median'])}** | {ref_call} | {speed} | {_mmd(t)} "
                 f"| **{_mmd(nw)}** | {_mmd(ref) if ref.get('fits') else ref['status']} "
                 f"| {r['baseline_random_rows_mmd2']:.5f} | {nw['converged']}/{nw['fits']} "
                 f"| {t['rounds_median']:.0f} / {nw['rounds_median']:.0f} "
                 f"| {t.get('evaluations_median') or 0:.0f} / "
                 f"{nw.get('evaluations_median') or 0:.0f} "
                 f"| {', '.join(f'{v:.1f}' for v in r.get('load_avg_1min', []))} |")
    curves = [r for r in results if r.get("budgets")]
    for r in curves:
        L += ["", f"New fit at round limits, {r['case']} (median over the seeds; the last row "
              "is the default, stopped by its rule):", "",
              "| max_iter | call | evaluations | MMD² |", "|---:|---:|---:|---:|"]
        nw = r["engines"]["new"]
        for b in r["budgets"]:
            L.append(f"| {b['max_iter']} | {_ms(b['call_wall_median'])} "
                     f"| {b['evaluations_median']:.0f} | {b['mmd2_median']:.5f} |")
        L.append(f"| default | {_ms(nw['call_wall_median'])} "
                 f"| {nw.get('evaluations_median') or 0:.0f} | {nw['mmd2_median']:.5f} |")
    L += ["", "Whole `learndock spec table` process (wall, median; peak RSS MiB):", "",
          "| data | input | today | new | reference (its worker, .npy) | peak RSS today / new "
          "/ reference |", "|---|---|---:|---:|---:|---:|"]
    for r in results:
        t, nw, ref = (r["engines"][e] for e in ENGINES)
        for fmt in ("npy", "csv"):
            if t.get(f"process_{fmt}_wall_median") is None:
                continue
            refp = _s(ref.get("process_wall_median")) if fmt == "npy" and ref.get("fits") else "–"
            refm = _mib(ref.get("process_peak_rss_bytes")) if fmt == "npy" else "–"
            L.append(f"| {r['case']} | .{fmt} | {_s(t[f'process_{fmt}_wall_median'])} "
                     f"| **{_s(nw[f'process_{fmt}_wall_median'])}** | {refp} "
                     f"| {_mib(t[f'process_{fmt}_peak_rss_bytes'])} / "
                     f"{_mib(nw[f'process_{fmt}_peak_rss_bytes'])} / {refm} |")
    return "\n".join(L) + "\n"


def plot(results: list[dict[str, Any]], path: Path, subtitle: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in results if r["d"] == 64]
    if not rows:
        return
    curves = [r for r in results if r.get("budgets") and r["n"] in TIME_TARGETS]
    fig, axes = plt.subplots(1, 2 + len(curves), figsize=(6 * (2 + len(curves)), 4.5))
    ax_t, ax_m = axes[0], axes[1]
    for ax, r in zip(axes[2:], curves, strict=True):
        tradeoff(ax, r)
    for eng, color in zip(ENGINES, ("tab:grey", "tab:blue", "tab:red"), strict=True):
        pts = [(r["n"], r["engines"][eng].get("call_wall_median"),
                r["engines"][eng].get("mmd2_median")) for r in rows]
        pts = [p for p in pts if p[1] is not None]
        if pts:
            ax_t.plot([p[0] for p in pts], [p[1] for p in pts], "o-", color=color, label=eng)
            ax_m.plot([p[0] for p in pts], [p[2] for p in pts], "o-", color=color, label=eng)
    ax_m.plot([r["n"] for r in rows], [r["baseline_random_rows_mmd2"] for r in rows], "--",
              color="grey", label=f"{K} random rows")
    ax_t.axhline(0.05, color="tab:green", ls=":", label="target 50 ms")
    ax_t.set(xscale="log", yscale="log", xlabel="n (d = 64)", ylabel="call, wall seconds",
             title=f"RKME table fit, K = {K}")
    ax_m.set(xscale="log", yscale="log", xlabel="n (d = 64)", ylabel="MMD²(X, spec)",
             title="Spec quality, same kernel and evaluator (lower is better)")
    for ax in axes:
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(subtitle, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def tradeoff(ax: Any, r: dict[str, Any]) -> None:
    """Call time against MMD^2 at one size: the new fit stopped at several round limits (its
    default stopped by its rule), today's and the reference's default fits, and the targets."""
    nw = r["engines"]["new"]
    pts = [(b["call_wall_median"], b["mmd2_median"], f"{b['max_iter']}") for b in r["budgets"]]
    pts.append((nw["call_wall_median"], nw["mmd2_median"], "rule"))
    pts.sort()
    ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", color="tab:blue",
            label="new, round limit (max_iter) / default")
    for x, y, lab in pts:
        ax.annotate(lab, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    for eng, color in (("today", "tab:grey"), ("reference", "tab:red")):
        e = r["engines"][eng]
        if e.get("call_wall_median") is not None and e.get("mmd2_median") is not None:
            ax.plot([e["call_wall_median"]], [e["mmd2_median"]], "s", color=color, label=eng)
    t = r["engines"]["today"].get("mmd2_median")
    if t is not None:
        ax.axhline(t, color="tab:grey", ls="--", lw=0.8, label="MMD² target (today's)")
    target = TIME_TARGETS[r["n"]]
    ax.axvline(target, color="tab:green", ls=":", label=f"time target {target * 1e3:.0f} ms")
    ax.set(xscale="log", yscale="log", xlabel="call, wall seconds", ylabel="MMD²(X, spec)",
           title=f"Time vs quality, {r['n']:,} x {r['d']} (load {max(r['load_avg_1min']):.1f})")


def write_outputs(out: Path, meta: dict[str, Any], results: list[dict[str, Any]]) -> None:
    (out / "spec_speed.json").write_text(json.dumps({**meta, "results": results}, indent=1))
    md = ["# RKME table spec speed: today / new / reference", "",
          f"Command: `{meta['command']}`  ", f"Machine: {meta['machine_description']}  ",
          f"Date: {meta['date']}  ", f"Threads: {meta['threads']}", "", markdown(results)]
    (out / "spec_speed.md").write_text("\n".join(md))
    plot(results, out / "spec_speed.png",
         f"{meta['command']} | {meta['machine_description']} | {meta['date']}")


# ---------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smoke run: two cases, 2 seeds")
    p.add_argument("--cases", nargs="+", help=f"cases (default {FULL_CASES})")
    p.add_argument("--seeds", type=int, default=None, help="seeds per fit (default 5; quick 2)")
    p.add_argument("--repeats", type=int, default=None, help="interleaved repeats (default 2)")
    p.add_argument("--ref-max-n", type=int, default=100_000,
                   help="largest n the reference is run at (its 1e6 fit takes ~8 min)")
    p.add_argument("--ref-timeout", type=float, default=1200.0)
    p.add_argument("--no-reference", action="store_true")
    p.add_argument("--no-budgets", action="store_true",
                   help="skip the new fit's time-vs-MMD² curve (round limits BUDGETS)")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    cases = args.cases or (QUICK_CASES if args.quick else FULL_CASES)
    n_seeds = args.seeds or (2 if args.quick else 5)
    repeats = args.repeats or (1 if args.quick else 2)
    out = args.out or (DEFAULT_OUT / "quick" if args.quick else DEFAULT_OUT)
    out.mkdir(parents=True, exist_ok=True)
    for var in THREAD_VARS:  # both engines' workers and processes: one BLAS thread
        os.environ[var] = "1"
    from benchmarks.reference import find_reference_python

    use_ref = not args.no_reference and find_reference_python() is not None
    machine = machine_info()
    meta = {
        "command": " ".join(["python -m benchmarks.spec_speed",
                             *(shlex.quote(a) for a in (argv if argv is not None
                                                        else sys.argv[1:]))]),
        "machine": machine, "machine_description": describe_machine(machine),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "threads": "1 (OMP/OPENBLAS/MKL_NUM_THREADS=1)", "baseline_rev": BASELINE_REV,
        "k": K, "reference": "learnware in .venv-ref" if use_ref else "not run",
    }
    console.log(f"{meta['machine_description']}; reference: {meta['reference']}")
    results: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="learndock-spec-speed-") as tmp_name:
        tmp = Path(tmp_name)
        srcs = {"today": baseline_src(tmp), "new": REPO_ROOT / "src"}
        for case in cases:
            n = int(case.rsplit("-", 1)[1])
            big = n >= 100_000
            seeds = list(range(1 if big else n_seeds))
            ref_seeds = (None if not use_ref or n > args.ref_max_n
                         else list(range(1 if big else n_seeds)))
            results.append(bench_case(case, srcs, seeds, 1 if big else repeats, ref_seeds,
                                      args.ref_timeout, tmp,
                                      () if args.no_budgets else BUDGETS))
            write_outputs(out, meta, results)
    console.log(f"done in {time.perf_counter() - t0:.0f} s; wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
