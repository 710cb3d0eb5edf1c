"""Does the market's kernel choice find the width that identifies learnwares best? (issue #15)

    python -m benchmarks.kernel_width                  # ~5 min on 2 cores
    python -m benchmarks.kernel_width --users 30       # quicker

The class-subset market of ``benchmarks.identification`` (scikit-learn digits as 64-column
tables; 30 learnwares trained on 4 of the 10 classes; 60 users holding 3-6 classes, a class set
no learnware has), but every developer fits the spec with ``RKMETableSpec.fit``'s **defaults**
(``scale="auto"`` from their own rows), as the README's developer example does. The market is
built with automatic kernel revision on (``kernel_revision="auto"``: self-retrieval of split
reduced sets at 8 and 16 specs, :mod:`learndock.market.kernels`).

Then the island is re-scored under every kernel the criterion considers (the chosen kernel's
scale and the pooled scale, each with gamma x 2^-3 .. 2^3), plus the first developer's kernel
(what the island would keep with revision off) and the reference engine's default (gamma 0.1 on
raw features). For each kernel:

* **criterion**: the self-retrieval accuracy and margin the market computes from the
  developers' reduced sets alone (no user data, no labels);
* **identification**: each user fits a spec under that kernel, searches (top 10), and the
  ranking is scored against the learnwares' real error rates on the user's rows: hit@1 / hit@5
  (within 0.01 of the oracle's error) and mean regret, with bootstrap 95% intervals.

If the criterion is a good one, the kernel it prefers is near the best identification row.
Results: ``benchmarks/results/kernel_width/{report.md,results.json,kernel_width.png}``.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import describe_machine, machine_info
from benchmarks.identification import digits_scenario, summarise
from benchmarks.scenarios.common import markdown_table, results_dir, single_thread, write_json


def candidate_kernels(chosen: Any, first: Any, point_sets: list[tuple[np.ndarray, np.ndarray]]
                      ) -> list[tuple[str, str, float, Any]]:
    """(label, base, gamma multiplier, kernel) for every kernel compared."""
    from learndock.market.kernels import GAMMA_STEPS, pooled_scale
    from learndock.spec import GaussianKernel

    d = chosen.dimension
    out: list[tuple[str, str, float, Any]] = []
    for base, scale, g0 in (("chosen scale", chosen.scale, chosen.gamma),
                            ("pooled scale", pooled_scale(point_sets), 1.0 / d)):
        for step in GAMMA_STEPS:
            out.append((f"{base}, gamma x {step:g}", base, step, GaussianKernel(g0 * step, scale)))
    out.append(("first developer's kernel (revision off)", "first", 1.0, first))
    out.append(("reference default (gamma 0.1, raw features)", "reference", 1.0,
                GaussianKernel(0.1, np.ones(d))))
    return out


def evaluate_kernel(sc: Any, island: str, kernel: Any, loss: np.ndarray, index: dict[str, int],
                    seed: int, top_k: int) -> dict[str, Any]:
    from learndock.spec import RKMETableSpec

    sc.market.revise_kernel(island, kernel)
    picks: list[list[int]] = []
    for X, _ in sc.users:
        spec = RKMETableSpec.fit(X, 50, kernel=kernel, random_state=seed, progress=False)
        res = sc.market.search(sc.query, spec=spec, top_k=top_k)
        ranking = [index[m.learnware_id] for m in res.single]
        picks.append(ranking + [i for i in range(loss.shape[1]) if i not in ranking])
    return summarise(loss, {"spec": picks}, False, 0.01)["spec"]


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharex=True)
    for base, marker in (("chosen scale", "o-"), ("pooled scale", "s--")):
        rs = [r for r in rows if r["base"] == base]
        x = [np.log2(r["gamma_step"]) for r in rs]
        axes[0].plot(x, [r["criterion_accuracy"] for r in rs], marker, label=base)
        axes[1].plot(x, [r["hit5"] for r in rs], marker, label=f"{base}: hit@5")
        axes[1].plot(x, [r["hit1"] for r in rs], marker, alpha=0.5, label=f"{base}: hit@1")
    axes[0].set_ylabel("self-retrieval accuracy (developers' specs only)")
    axes[1].set_ylabel("users' hit rate (real error rates)")
    for ax in axes:
        ax.set_xlabel("log2(gamma / base gamma)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("kernel width: the market's criterion vs identification (digits class subsets)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--learnwares", type=int, default=30)
    ap.add_argument("--users", type=int, default=60)
    ap.add_argument("--top-k", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    with single_thread():
        return run(args)


def run(args: argparse.Namespace) -> int:
    from learndock.market.kernels import _halves, first_kernel, score_kernel

    out = args.out or results_dir("kernel_width")
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="learndock-kw-") as tmp:
        sc = digits_scenario(Path(tmp) / "market", args.learnwares, args.users, args.seed,
                             developer_kernel="own", kernel_revision="auto")
        (island_info,) = [i for i in sc.market.islands() if i.n_learnwares]
        island = island_info.key
        ik = sc.market.island_kernel(island)
        chosen, history = ik.kernel, ik.history
        point_sets = [(s.z, s.beta) for s in sc.specs]
        first = first_kernel(sc.specs[0])
        halves_a, halves_b = _halves(point_sets, np.random.default_rng(0))
        index = {lid: i for i, lid in enumerate(sc.ids)}
        lws = [sc.market.load(i) for i in sc.ids]
        loss = np.array([[np.mean(lw.predict(X) != y) for lw in lws] for X, y in sc.users])
        for lw in lws:
            lw.close()
        rows = []
        for label, base, step, kern in candidate_kernels(chosen, first, point_sets):
            crit = score_kernel(kern, halves_a, halves_b, seed=0)
            r = evaluate_kernel(sc, island, kern, loss, index, args.seed, args.top_k)
            rows.append({"kernel": label, "base": base, "gamma_step": step,
                         "gamma": kern.gamma, "is_chosen": kern == chosen,
                         "criterion_accuracy": crit.accuracy, "criterion_margin": crit.margin,
                         **{k: r[k] for k in ("hit1", "hit1_ci", "hit5", "hit5_ci", "regret",
                                              "regret_ci", "loss")}})
            print(f"{label:48s} crit {crit.accuracy:.2f} / {crit.margin:.3f}  hit@1 "
                  f"{r['hit1']:.2f} hit@5 {r['hit5']:.2f} regret {r['regret']:.3f}", flush=True)
        sc.market.close()
    best5 = max(rows, key=lambda r: (r["hit5"], r["hit1"]))
    chosen_row = next(r for r in rows if r["is_chosen"])
    table = markdown_table(
        ["kernel", "gamma", "criterion: self-retrieval (margin)", "hit@1 [95% CI]",
         "hit@5 [95% CI]", "mean regret [95% CI]"],
        [[("**" + r["kernel"] + " (the market's choice)**") if r["is_chosen"] else r["kernel"],
          f"{r['gamma']:.4g}", f"{r['criterion_accuracy']:.2f} ({r['criterion_margin']:.3f})",
          f"{r['hit1']:.2f} [{r['hit1_ci'][0]:.2f}, {r['hit1_ci'][1]:.2f}]",
          f"{r['hit5']:.2f} [{r['hit5_ci'][0]:.2f}, {r['hit5_ci'][1]:.2f}]",
          f"{r['regret']:.3f} [{r['regret_ci'][0]:.3f}, {r['regret_ci'][1]:.3f}]"]
         for r in rows])
    report = (f"# Kernel width on the class-subset market\n\n{describe_machine()}\n\n"
              f"{args.learnwares} learnwares (developers' default kernels), {args.users} users; "
              f"kernel history: " + "; ".join(f"v{h['version']}: {h['reason']}" for h in history)
              + f"\n\n{table}\n\nBest hit@5: {best5['kernel']} ({best5['hit5']:.2f}); the "
              f"market's choice: {chosen_row['hit5']:.2f}.\n")
    (out / "report.md").write_text(report)
    write_json(out / "results.json", {"machine": machine_info(), "args": vars(args) | {
        "out": str(out)}, "history": history, "rows": rows})
    plot(rows, out / "kernel_width.png")
    print(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
