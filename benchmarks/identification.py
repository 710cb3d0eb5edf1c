"""Identification: does the user get the learnware they should reuse? (issue #15)

For each user of a scenario: build the user's spec, search the market, then compare
* **spec top-1** -- the search's first single match (today's answer);
* **+ decision step** -- :class:`learndock.reuse.DecisionStep` re-ranks the search's top-k by
  what the models do on the user's unlabeled rows (every criterion is measured, the default is
  the row marked so);
* **multiple learnwares** -- averaging over the search mixture (mixture weights, and equal
  weights), and the decision step's label-free recommendation (top learnware alone, or the
  fewest top-ranked learnwares that know the labels of the user's rows);
* **oracle single** -- the market learnware with the lowest loss on the user's rows.

Metrics (plan-notes section 6): a pick is a hit@1 when its loss is within eps of the
oracle's (eps = 0.01 for error rates, 1% relative for RMSE); hit@5 when one of the first five
is; regret = pick's loss - oracle's. Each with a bootstrap 95% interval over users.

Scenarios: ``digits`` -- a class-subset market from scikit-learn's digits (64-column tables):
learnwares trained on 4 of the 10 classes, users holding 3-6 classes in unequal shares, a
class set no learnware has; ``birthdays`` -- the table scenario's per-state regressors
(smaller settings than ``benchmarks/scenarios/table.py``; see ``--help``); ``flights`` likewise.
Runs with one BLAS thread. ``python -m benchmarks.identification --scenario digits``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import describe_machine, machine_info
from benchmarks.scenarios.common import markdown_table, results_dir, single_thread, write_json

CRITERIA = ("auto", "agreement", "hard_agreement", "confidence", "coverage")
DEFAULT_CRITERION = "auto"


# ============================================================================ metrics
def bootstrap_ci(values: np.ndarray, n_boot: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% percentile interval of the mean, resampling users."""
    v = np.asarray(values, dtype=np.float64)
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, v.size, size=(n_boot, v.size))].mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def hits(loss: np.ndarray, pick_loss: np.ndarray, relative: bool, eps: float) -> np.ndarray:
    """1 where a pick's loss is within eps of the oracle's (``loss``: users x learnwares)."""
    best = loss.min(axis=1)
    tol = eps * np.abs(best) if relative else eps
    return (pick_loss <= best + tol + 1e-12).astype(np.float64)


def summarise(loss: np.ndarray, picks: dict[str, list[list[int]]], relative: bool,
              eps: float, extra: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
    """Per method: hit@1, hit@5 and regret of its ranking, means with bootstrap 95% CIs.

    ``picks[name][u]`` is that method's ranking for user u (learnware indices, best first);
    ``extra[name]`` gives per-user losses of methods that are not a single learnware
    (ensembles): only their loss and regret are reported.
    """
    n = loss.shape[0]
    best = loss.min(axis=1)
    out: dict[str, Any] = {}
    for name, ranks in picks.items():
        top1 = np.array([loss[u, r[0]] for u, r in enumerate(ranks)])
        top5 = np.array([loss[u, r[:5]].min() for u, r in enumerate(ranks)])
        h1, h5, reg = hits(loss, top1, relative, eps), hits(loss, top5, relative, eps), top1 - best
        out[name] = _stats(h1, h5, reg, top1)
    for name, vals in (extra or {}).items():
        # What the user reuses is "a pick" too: a hit@1 when within eps of the oracle single.
        out[name] = _stats(hits(loss, vals, relative, eps), None, vals - best, vals)
    out["_users"] = n
    return out


def _stats(h1: Any, h5: Any, reg: np.ndarray, lossv: np.ndarray) -> dict[str, Any]:
    d: dict[str, Any] = {"regret": float(reg.mean()), "regret_ci": bootstrap_ci(reg),
                         "regret_max": float(reg.max()), "loss": float(lossv.mean())}
    if h1 is not None:
        d.update(hit1=float(h1.mean()), hit1_ci=bootstrap_ci(h1))
    if h5 is not None:
        d.update(hit5=float(h5.mean()), hit5_ci=bootstrap_ci(h5))
    return d


# ============================================================================ scenarios
@dataclass
class Scenario:
    key: str
    task: str  # "classification" | "regression"
    market: Any
    ids: list[str]  # learnware id per market learnware (index order)
    users: list[tuple[np.ndarray, np.ndarray]]  # (X, y) per user
    features: list[str]
    kernel: Any
    query: dict[str, Any]
    notes: list[str]
    train_X: list[np.ndarray]  # each learnware's training rows (for the reference's specs)
    specs: list[Any] | None = None  # the developers' specs as uploaded (digits only)


def digits_scenario(home: Path, n_learnwares: int, n_users: int, seed: int, *,
                    developer_kernel: str = "market", kernel_revision: str = "auto") -> Scenario:
    """Class-subset market on digits: learnwares know 4 classes, users hold 3-6 classes.

    ``developer_kernel``: ``market`` -- each developer fits with the market's current kernel
    (``kernel_for``); ``own`` -- with ``RKMETableSpec.fit``'s defaults (``scale="auto"`` from
    their own rows), as the README's developer example does. ``kernel_revision`` is the
    market's setting (``auto`` / ``off``)."""
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from learndock.market import Market
    from learndock.package import pack, write_package
    from learndock.spec import GaussianKernel, RKMETableSpec, infer_scale

    X, y = load_digits(return_X_y=True)
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.5, stratify=y, random_state=seed)
    features = [f"pixel_{r}_{c}" for r in range(8) for c in range(8)]
    rng = np.random.default_rng([seed, 11])
    subsets: list[tuple[int, ...]] = []
    while len(subsets) < n_learnwares:
        s = tuple(sorted(rng.choice(10, 4, replace=False).tolist()))
        if s not in subsets:
            subsets.append(s)
    kernel = GaussianKernel(1.0 / X.shape[1], infer_scale(Xtr))
    market = Market(home, kernel_revision=kernel_revision)
    ids, train_X, dev_specs = [], [], []
    with tempfile.TemporaryDirectory(prefix="learndock-ident-") as tmp:
        for s in subsets:
            rows = np.flatnonzero(np.isin(ytr, s))
            # Developers differ in how much data they had: 25-100% of their classes' rows.
            keep = rng.choice(rows, max(40, int(rows.size * rng.uniform(0.25, 1.0))),
                              replace=False)
            model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=0.1))
            model.fit(Xtr[keep], ytr[keep])
            if developer_kernel == "own":
                spec = RKMETableSpec.fit(Xtr[keep], 50, random_state=seed)
            else:
                k = market.kernel_for(64, features) or kernel
                spec = RKMETableSpec.fit(Xtr[keep], 50, kernel=k, random_state=seed)
            name = "digits-" + "".join(map(str, s))
            sem = {"name": name, "description": f"digits classifier for classes {s}",
                   "data_type": "Table", "task_type": "Classification",
                   "library_type": "Scikit-learn", "scenarios": ["Education"], "license": "MIT",
                   "input": {"dimension": 64, "descriptions": dict(enumerate(features))},
                   "output": {"dimension": 4, "descriptions": {i: f"class {c}"
                                                               for i, c in enumerate(s)}}}
            d = Path(tmp) / name
            write_package(d, model, name=name, semantic=sem, spec=spec, feature_names=features)
            pack(d, Path(tmp) / f"{name}.zip")
            r = market.add(Path(tmp) / f"{name}.zip", owner="bench")
            if not r.accepted:
                raise RuntimeError(f"{name} rejected:\n{r.report.text()}")
            ids.append(r.learnware_id)
            train_X.append(Xtr[keep])
            dev_specs.append(spec)
    users = []
    shares = {3: [0.5, 0.3, 0.2], 4: [0.4, 0.3, 0.2, 0.1], 5: [0.3, 0.3, 0.2, 0.1, 0.1],
              6: [0.3, 0.3, 0.1, 0.1, 0.1, 0.1]}
    while len(users) < n_users:
        m = int(rng.integers(3, 7))
        cls = rng.choice(10, m, replace=False)
        if m == 4 and tuple(sorted(cls.tolist())) in subsets:
            continue  # no learnware has the user's class set exactly
        parts = [rng.choice(np.flatnonzero(yte == c), int(round(150 * p)), replace=False)
                 for c, p in zip(cls.tolist(), shares[m], strict=True)]
        idx = np.concatenate(parts)
        users.append((Xte[idx], yte[idx]))
    islands = [i for i in market.islands() if i.n_learnwares]
    return Scenario("digits", "classification", market, ids, users, features,
                    market.kernel_for(64, features) or kernel,
                    {"data_type": "Table", "task_type": "Classification"},
                    [f"{n_learnwares} learnwares x 4 of 10 digit classes (LogisticRegression on "
                     "25-100% of the train half's rows of their classes), "
                     f"{n_users} users x 3-6 classes in unequal shares (150 rows from the test "
                     f"half); {len(islands)} island(s)"], train_X, dev_specs)


def panel_scenario(key: str, cache: Path | None, seed: int) -> Scenario:
    """Birthdays / flights from the table scenario, at benchmark-friendly settings."""
    from benchmarks.scenarios import table as tb
    from benchmarks.scenarios.common import progress

    s = tb.Settings(quick=False, k=50, repeats=1, n_labels=(10,), birthdays_groups=None,
                    flights_groups=None, train_rows=2000, user_rows=400, model_max_iter=60,
                    seed=seed)
    panel = tb.load_birthdays(s) if key == "birthdays" else tb.load_flights(s)
    with progress() as bar:
        built = tb.build_market(panel, s, cache, bar)
    users = [(g.X_user, g.y_user) for g in panel.groups]
    note = "each group's later period is a user (400 rows max)"
    if len(users) < 30:
        # Fewer than 30 users give no quotable figure (plan-notes section 6): split each
        # group's later period into disjoint random thirds, each a user.
        users = []
        for i, g in enumerate(panel.groups):
            perm = np.random.default_rng([seed, 21, i]).permutation(g.X_user.shape[0])
            users += [(g.X_user[part], g.y_user[part]) for part in np.array_split(perm, 3)]
        note = ("each group's later period (400 rows max) is split into 3 disjoint random "
                "users")
    kernel = built.market.kernel_for(panel.dimension, panel.features)
    return Scenario(key, "regression", built.market, built.ids, users, panel.features, kernel,
                    tb.QUERY, [f"{len(panel.groups)} learnwares (one per group; 2,000 training "
                               "rows max, HistGradientBoosting 60 iterations, K = 50); " + note],
                    [g.X_train for g in panel.groups])


# ============================================================================ the reference
def run_reference(sc: Scenario, k: int, seed: int) -> dict[str, Any] | None:
    """The reference engine's spec search on the same learnwares' training rows and users
    (its RKME table spec, its default gamma 0.1, its EasyStatSearcher), or None without
    ``.venv-ref``."""
    import json

    from benchmarks.reference import find_reference_python, run_reference_worker
    from benchmarks.scenarios.common import REPO_ROOT

    python = find_reference_python()
    if python is None:
        return None
    with tempfile.TemporaryDirectory(prefix="ref-ident-") as tmp:
        arrays: dict[str, Any] = {"k": k, "gamma": 0.1, "seed": seed, "max_search_num": 5}
        for i, X in enumerate(sc.train_X):
            arrays[f"lw_X_{i}"] = np.asarray(X, dtype=np.float32)
        for j, (X, _) in enumerate(sc.users):
            arrays[f"user_X_{j}"] = np.asarray(X, dtype=np.float32)
        np.savez(Path(tmp) / "in.npz", **arrays)
        run_reference_worker(python, ["--data", str(Path(tmp) / "in.npz"), "--out",
                                      str(Path(tmp) / "out.json")],
                             worker=REPO_ROOT / "benchmarks" / "reference_rank_worker.py")
        return json.loads((Path(tmp) / "out.json").read_text())


# ============================================================================ evaluation
def _loss(est: Any, X: np.ndarray, y: np.ndarray, cls: bool) -> float:
    p = est.fit(X).predict(X)
    return float(np.mean(p != y)) if cls else float(np.sqrt(np.mean((p - y) ** 2)))


def evaluate(sc: Scenario, top_k: int, seed: int,
             ref: dict[str, Any] | None = None) -> dict[str, Any]:
    from learndock.reuse import AveragingReuser, DecisionStep, JobSelectorReuser
    from learndock.spec import RKMETableSpec

    index = {lid: i for i, lid in enumerate(sc.ids)}
    lws = [sc.market.load(i) for i in sc.ids]
    cls = sc.task == "classification"
    loss_rows: list[np.ndarray] = []
    crits = CRITERIA if cls else CRITERIA[:2]
    picks: dict[str, list[list[int]]] = {k: [] for k in ("spec", *crits, "shortlist_ens")}
    extra: dict[str, list[float]] = {"avg_mixture_weights": [], "avg_mixture_uniform": [],
                                     "avg_shortlist_uniform": [], "decision_recommended": [],
                                     "job_hard": [], "job_soft": []}
    if ref is not None:
        picks["reference"] = []
        extra["reference_mixture"] = []
    recommended_ensemble = 0
    t_decide = []
    for j, (X, y) in enumerate(sc.users):
        P = [lw.predict(X) for lw in lws]
        if cls:
            loss = np.array([np.mean(p != y) for p in P])
        else:
            loss = np.array([np.sqrt(np.mean((np.asarray(p, float) - y) ** 2)) for p in P])
        loss_rows.append(loss)
        spec = RKMETableSpec.fit(X, 50, kernel=sc.kernel, random_state=seed)
        res = sc.market.search(sc.query, spec=spec, top_k=top_k, max_mixture=5)
        ranking = [index[m.learnware_id] for m in res.single]
        rest = [i for i in range(len(lws)) if i not in ranking]
        picks["spec"].append(ranking + rest)
        short = [lws[i] for i in ranking]
        scores = [m.score for m in res.single]
        mix = res.mixture
        members = ([lws[index[i]] for i in mix.learnware_ids]
                   if mix is not None and len(mix.learnware_ids) >= 2 else None)
        mw = list(mix.weights) if members is not None else None
        for crit in crits:  # hard agreement, confidence, coverage are classification's
            t0 = time.perf_counter()
            step = DecisionStep(short, scores=scores, reference=members, reference_weights=mw,
                                criterion=crit).fit(X)
            if crit == DEFAULT_CRITERION:
                t_decide.append(time.perf_counter() - t0)
                default_step = step
            picks[crit].append([ranking[i] for i in step.order_] + rest)
        step = DecisionStep(short, scores=scores).fit(X)
        picks["shortlist_ens"].append([ranking[i] for i in step.order_] + rest)
        extra["avg_mixture_weights"].append(
            _loss(AveragingReuser(members, mw) if members else AveragingReuser(short[:1]), X, y,
                  cls))
        extra["avg_mixture_uniform"].append(
            _loss(AveragingReuser(members or short[:1]), X, y, cls))
        extra["avg_shortlist_uniform"].append(_loss(AveragingReuser(short), X, y, cls))
        for routing in ("hard", "soft"):
            job = JobSelectorReuser(members or short[:1], weights=mw, routing=routing,
                                    random_state=seed)
            extra[f"job_{routing}"].append(_loss(job, X, y, cls))
        extra["decision_recommended"].append(_loss(default_step.reuser(), X, y, cls))
        recommended_ensemble += default_step.decision_.recommendation == "ensemble"
        if ref is not None:
            ru = ref["users"][j]
            picks["reference"].append(ru["ranking"])
            ref_mix = [lws[i] for i in (ru["mixture"] or ru["ranking"][:1])]
            extra["reference_mixture"].append(_loss(AveragingReuser(ref_mix), X, y, cls))
    for lw in lws:
        lw.close()
    loss = np.vstack(loss_rows)
    relative, eps = (False, 0.01) if cls else (True, 0.01)
    summary = summarise(loss, {k: v for k, v in picks.items()}, relative, eps,
                        {k: np.array(v) for k, v in extra.items()})
    summary["oracle"] = {"loss": float(loss.min(axis=1).mean()), "regret": 0.0, "hit1": 1.0}
    summary["_decide_seconds_median"] = float(np.median(t_decide))
    summary["_recommended_ensemble_share"] = recommended_ensemble / len(sc.users)
    summary["_top_k"] = top_k
    return summary


# ============================================================================ a few labels
def evaluate_labels(sc: Scenario, top_k: int, seed: int, n_labels: tuple[int, ...],
                    repeats: int, max_users: int) -> dict[str, Any]:
    """With n labels (rest of the user's rows as test): top-1 reuse without labels (spec and
    decision step), the user's own model, FeatureAugmentReuser before (no residual, output
    columns shrunk like features) and after the change, and the decision step's validated
    choice among shortlist singles, the mixture's average and the own model."""
    from learndock.reuse import DecisionStep, FeatureAugmentReuser, own_model
    from learndock.spec import RKMETableSpec

    index = {lid: i for i, lid in enumerate(sc.ids)}
    lws = [sc.market.load(i) for i in sc.ids]
    cls = sc.task == "classification"

    def loss(y: np.ndarray, p: np.ndarray) -> float:
        return float(np.mean(p != y)) if cls else float(np.sqrt(np.mean((p - y) ** 2)))

    users = sc.users[:: max(1, len(sc.users) // max_users)][:max_users]
    keys = ("spec_top1", "decision_top1", "own", "augment_before", "augment_after",
            "augment_after_mean", "decision_labels")
    res: dict[str, dict[int, list[float]]] = {k: {n: [] for n in n_labels} for k in keys}
    for u, (X, y) in enumerate(users):
        spec = RKMETableSpec.fit(X, 50, kernel=sc.kernel, random_state=seed)
        r = sc.market.search(sc.query, spec=spec, top_k=top_k, max_mixture=5)
        short = [lws[index[m.learnware_id]] for m in r.single]
        mix = r.mixture
        members = ([lws[index[i]] for i in mix.learnware_ids]
                   if mix is not None and len(mix.learnware_ids) >= 2 else None)
        step = DecisionStep(short, scores=[m.score for m in r.single], reference=members,
                            reference_weights=None if members is None else mix.weights).fit(X)
        top3 = [short[i] for i in step.order_[:3]]
        p_spec, p_dec = short[0].predict(X), top3[0].predict(X)
        for n in n_labels:
            for rep in range(repeats):
                perm = np.random.default_rng([seed, 9, u, rep]).permutation(len(y))
                lab, te = perm[:n], perm[n:]
                if cls and np.unique(y[lab]).size < 2:
                    continue
                Xl, yl, Xt, yt = X[lab], y[lab], X[te], y[te]
                res["spec_top1"][n].append(loss(yt, p_spec[te]))
                res["decision_top1"][n].append(loss(yt, p_dec[te]))
                ests = {
                    "own": own_model(sc.task),
                    "augment_before": FeatureAugmentReuser(top3, residual=False,
                                                           output_scale=1.0),
                    "augment_after": FeatureAugmentReuser(top3),
                    "augment_after_mean": FeatureAugmentReuser(top3, base="mean"),
                }
                for k, est in ests.items():
                    try:
                        res[k][n].append(loss(yt, est.fit(Xl, yl).predict(Xt)))
                    except ValueError:
                        res[k][n].append(np.nan)
                d = DecisionStep(short, reference=members, random_state=seed).fit(Xl, yl)
                res["decision_labels"][n].append(loss(yt, d.reuser().predict(Xt)))
    for lw in lws:
        lw.close()
    return {"users": len(users), "repeats": repeats,
            "loss": {k: {str(n): float(np.nanmean(v)) for n, v in d.items()}
                     for k, d in res.items()}}


LABEL_ROWS = {
    "spec_top1": "spec top-1, no labels",
    "decision_top1": "decision step's top-1, no labels",
    "own": "own model on the labels",
    "augment_before": "FeatureAugmentReuser before (no residual, outputs shrunk)",
    "augment_after": "FeatureAugmentReuser now (residual on the first / scaled outputs)",
    "augment_after_mean": "FeatureAugmentReuser now, residual on the mean",
    "decision_labels": "decision step with labels (validated choice)",
}


def labels_report(key: str, lab: dict[str, Any], task: str) -> str:
    unit = "error rate" if task == "classification" else "RMSE"
    ns = list(next(iter(lab["loss"].values())).keys())
    rows = [[LABEL_ROWS[k], *(f"{lab['loss'][k][n]:.4f}" for n in ns)] for k in LABEL_ROWS]
    return "\n".join([f"#### {key}: mean {unit} on the unlabeled rest with n labels "
                      f"({lab['users']} users x {lab['repeats']} draws)", "",
                      markdown_table(["method", *(f"n = {n}" for n in ns)], rows)])


LABELS = {
    "spec": "spec search top-1 (today)",
    "auto": "+ decision step (default: agreement for classification, spec order for "
            "regression)",
    "agreement": "+ decision step: agreement with the mixture's ensemble",
    "hard_agreement": "+ decision step: hard agreement",
    "confidence": "+ decision step: confidence",
    "coverage": "+ decision step: coverage",
    "shortlist_ens": "+ decision step: agreement with the top-k's equal-weight ensemble",
    "avg_mixture_weights": "multiple: average of search mixture, mixture weights",
    "avg_mixture_uniform": "multiple: average of search mixture, equal weights",
    "avg_shortlist_uniform": "multiple: average of the top-k, equal weights",
    "job_hard": "multiple: job selector on the mixture, hard routing (before)",
    "job_soft": "multiple: job selector on the mixture, soft routing (now)",
    "decision_recommended": "decision step's label-free recommendation (single or ensemble)",
    "oracle": "oracle single",
    "reference": "reference engine: its spec search top-1 (same run)",
    "reference_mixture": "reference engine: average of its mixture (same run)",
}


def ci_cell(d: dict[str, Any], key: str, digits: int) -> str:
    """A table cell: the value and its 95% interval when ``d`` has one."""
    if key not in d:
        return "n/a"
    if f"{key}_ci" not in d:
        return f"{d[key]:.{digits}f}"
    lo, hi = d[f"{key}_ci"]
    return f"{d[key]:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def report(key: str, summ: dict[str, Any], notes: list[str], task: str) -> str:
    digits = 3 if task == "classification" else 4
    unit = "error rate" if task == "classification" else "RMSE"
    rows = []
    for k, label in LABELS.items():
        if k not in summ:
            continue
        d = summ[k]
        rows.append([label, ci_cell(d, "hit1", 2), ci_cell(d, "hit5", 2), ci_cell(d, "regret", digits),
                     f"{d['loss']:.{digits}f}"])
    head = ["method", "hit@1 [95% CI]", "hit@5 [95% CI]", f"mean regret ({unit}) [95% CI]",
            f"mean {unit}"]
    text = [f"### {key} ({summ['_users']} users; shortlist top-{summ['_top_k']})", "",
            *[f"- {n}" for n in notes],
            f"- decision step (agreement): median {summ['_decide_seconds_median'] * 1e3:.0f} ms "
            f"per user; recommends an ensemble for {summ['_recommended_ensemble_share']:.0%} of "
            "users", "", markdown_table(head, rows)]
    return "\n".join(text)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scenario", choices=("digits", "birthdays", "flights"), action="append")
    ap.add_argument("--learnwares", type=int, default=30, help="digits: market size")
    ap.add_argument("--users", type=int, default=40, help="digits: number of users")
    ap.add_argument("--top-k", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--labels", type=str, default="",
                    help="also measure reuse with these label counts, e.g. 10,20,50")
    ap.add_argument("--label-users", type=int, default=30)
    ap.add_argument("--label-repeats", type=int, default=3)
    ap.add_argument("--no-reference", action="store_true",
                    help="skip the reference engine rows (they need .venv-ref)")
    args = ap.parse_args(argv)
    out = results_dir("identification", args.out)
    machine = machine_info()
    results: dict[str, Any] = {"machine": machine}
    parts = [f"Run on {describe_machine(machine)}."]
    with single_thread(), tempfile.TemporaryDirectory(prefix="learndock-ident-") as tmp:
        for key in args.scenario or ["digits"]:
            t0 = time.perf_counter()
            if key == "digits":
                sc = digits_scenario(Path(tmp) / "digits", args.learnwares, args.users,
                                     args.seed)
            else:
                sc = panel_scenario(key, None, args.seed)
            ref = None if args.no_reference else run_reference(sc, 50, args.seed)
            summ = evaluate(sc, args.top_k, args.seed, ref)
            summ["_reference"] = ref is not None
            if args.labels:
                ns = tuple(int(v) for v in args.labels.split(","))
                lab = evaluate_labels(sc, args.top_k, args.seed, ns, args.label_repeats,
                                      args.label_users)
                summ["_labels"] = lab
            sc.market.close()
            summ["_seconds"] = time.perf_counter() - t0
            results[key] = {"summary": summ, "notes": sc.notes}
            parts.append(report(key, summ, sc.notes, sc.task))
            if "_labels" in summ:
                parts.append(labels_report(key, summ["_labels"], sc.task))
            print(parts[-1], file=sys.stderr)
    write_json(out / "results.json", results)
    (out / "report.md").write_text("\n\n".join(parts) + "\n")
    print("\n\n".join(parts))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
