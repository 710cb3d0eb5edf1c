"""Statistical search at 10,000 learnwares: latency of ``Market.search`` and prefilter recall.

What is measured (per market size N and random-feature dimension ``rff_dim``):

* latency of ``market.search(spec=user, top_k=10)`` per query on a warm market (the island
  index cached), p50 / p90 / mean, and the medians of the per-stage ``timings_ms``
  (semantic / statistical / mixture); the same with a tag filter
  (``{"task_type": "Classification"}``) and with ``prefilter_k=256``;
* the cold first search on a freshly opened ``Market`` (island index loaded from SQL), and the
  index load alone;
* recall@10 of the two-stage search (random-feature prefilter, then exact MMD of the
  ``prefilter_k`` survivors) against the exact ranking of ALL N specs by MMD (computed here,
  batched, with :func:`learndock.search.statistical.exact_scores`); and recall@10 of the raw
  random-feature ranking's top ``k`` (k = 10, 64, 256) against the same exact top 10;
* the time of that exhaustive exact ranking per query (the brute-force alternative);
* optionally (``--reference``) the reference engine's ``EasyStatSearcher`` over the same specs.

How the market is built, and why not with N calls of ``Market.add``: ``add`` canonicalises
the zip and runs the model checks in a sandbox subprocess (seconds per package), which would
make a 10,000-learnware benchmark take hours while measuring ingestion, not search. So two
REAL packages (a skops classifier and a skops regressor on digits) go through ``Market.add``
-- creating the island, the blob, the template rows -- and the other N - 2 learnwares go
through ``Market.bulk_load`` (the migration path: batched transactions, specs scored under the
island's kernel, full-text rows and change-log entries written as an add writes them) with the
matching template's manifest (name and description replaced), check report and blob. Search
then reads exactly what it would read after N real adds. 25% of the bulk learnwares copy the
regressor (task_type Regression), so the tag filter has something to remove.

The specs (all d = 64, one island, one kernel): ``--base`` data sets are drawn from the
training 70% of sklearn digits -- 1 to 4 classes with Dirichlet class weights, 150 to 400
rows, half of them with a random per-pixel shift, plus pixel noise -- and an RKME spec with
K = 50 is FITTED on each (``RKMETableSpec.fit`` with the island kernel). The remaining specs
are derived from them, cheaply but validly: half are a base spec with jittered points and
re-drawn weights (K = 50), half the convex combination of two base specs (K = 100: the
kernel mean of a mixture of two data sets is the same mixture of their kernel means), also
jittered. Queries are specs fitted (K = 50) on data sets drawn the same way from the
held-out 30% of digits, with the kernel ``Market.kernel_for`` returns for the island.

Kernel: Gaussian with gamma = 1/d and a uniform scale of 4 pixel units (digits' overall std
is 6; a typical pair of digits then has k ~ 0.1). Fitted base/query specs are cached in
``benchmarks/results/cache/`` (git-ignored; ``--no-cache`` to refit).

Run from the repo root::

    python -m benchmarks.search_speed                       # N = 10,000, 50 queries
    python -m benchmarks.search_speed --n 1000 10000 --rff-dims 512 256 1024 \
        --reference --ref-queries 5                         # what BENCHMARKS.md reports
    python -m benchmarks.search_speed --quick               # N = 500, 5 queries (CI, ~30 s)

Every timed pass is also repeated with BLAS limited to one thread (``threadpoolctl``):
OpenBLAS worker threads busy-wait between calls, which on a small machine shared with other
processes costs the search more than the threads gain (see BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from tqdm.auto import tqdm

try:
    from benchmarks.common import describe_machine, machine_info
except ImportError:  # pragma: no cover - run as a plain script
    from common import describe_machine, machine_info  # type: ignore[no-redef]

D = 64
BASE_K = 50
TOP_K = 10
SEED = 0
RFF_KS = (10, 64, 256)
TAG_QUERY = {"task_type": "Classification"}
REGRESSOR_SHARE = 0.25
TARGET_P50_MS = 50.0
REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO_ROOT / "benchmarks" / "results" / "search_speed"
CACHE_DIR = REPO_ROOT / "benchmarks" / "results" / "cache"
#: Bump when the data-set recipe changes, so stale cached specs are not reused.
RECIPE_VERSION = 1

console = Console(stderr=True, highlight=False)


# ---------------------------------------------------------------------------- data + specs
def island_kernel():
    from learndock.spec import GaussianKernel

    return GaussianKernel(1.0 / D, np.full(D, 4.0))


def digits_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """sklearn digits, split 70/30 per class (seeded): learnwares vs queries."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    X, y = load_digits(return_X_y=True)
    Xa, Xb, ya, yb = train_test_split(X, y, test_size=0.3, stratify=y, random_state=SEED)
    return Xa, ya, Xb, yb


def draw_dataset(
    rng: np.random.Generator, X: np.ndarray, y: np.ndarray, rows: tuple[int, int]
) -> tuple[np.ndarray, dict[str, Any]]:
    """A data set that is a mixture of 1-4 digit classes with random weights, maybe shifted."""
    n_cls = int(rng.choice([1, 2, 3, 4], p=[0.25, 0.35, 0.25, 0.15]))
    classes = np.sort(rng.choice(10, size=n_cls, replace=False))
    weights = rng.dirichlet(np.ones(n_cls))
    n = int(rng.integers(rows[0], rows[1] + 1))
    counts = rng.multinomial(n, weights)
    parts = []
    for c, m in zip(classes, counts, strict=True):
        pool = X[y == c]
        parts.append(pool[rng.integers(0, len(pool), size=max(int(m), 1))])
    Xs = np.vstack(parts).astype(np.float64)
    shifted = bool(rng.random() < 0.5)
    if shifted:
        Xs = Xs + rng.normal(0.0, 1.0, size=D)  # a per-pixel offset (a "different scanner")
    Xs = Xs + rng.normal(0.0, 0.5, size=Xs.shape)
    desc = {"classes": classes.tolist(), "weights": np.round(weights, 3).tolist(),
            "rows": int(Xs.shape[0]), "shifted": shifted}
    return Xs, desc


def _cache_path(kind: str, **params: Any) -> Path:
    key = json.dumps({"kind": kind, "recipe": RECIPE_VERSION, **params}, sort_keys=True)
    return CACHE_DIR / f"search_speed_{kind}_{hashlib.sha256(key.encode()).hexdigest()[:12]}.npz"


def fit_specs(
    kind: str, X: np.ndarray, y: np.ndarray, count: int, seed: int, max_iter: int,
    rows: tuple[int, int], use_cache: bool,
) -> tuple[list[Any], list[dict[str, Any]]]:
    """Fit ``count`` K = 50 specs on data sets drawn from (X, y); cached as one .npz."""
    from learndock.spec import RKMETableSpec

    kernel = island_kernel()
    path = _cache_path(kind, count=count, seed=seed, max_iter=max_iter, rows=list(rows),
                       kernel=kernel.key())
    if use_cache and path.exists():
        with np.load(path, allow_pickle=False) as f:
            z, beta, n = f["z"], f["beta"], f["n"]
            descs = json.loads(str(f["descs"]))
        specs = [RKMETableSpec(z[i], beta[i], kernel, n_samples=int(n[i])) for i in range(count)]
        console.log(f"{kind}: {count} fitted specs from cache {path.name}")
        return specs, descs
    rng = np.random.default_rng(seed)
    specs, descs = [], []
    for i in tqdm(range(count), desc=f"fit {kind} specs", unit="spec"):
        Xs, desc = draw_dataset(rng, X, y, rows)
        specs.append(RKMETableSpec.fit(Xs, BASE_K, kernel=kernel, random_state=seed + i,
                                       max_iter=max_iter))
        descs.append(desc)
    if use_cache:
        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        np.savez(path, z=np.stack([s.z for s in specs]), beta=np.stack([s.beta for s in specs]),
                 n=np.array([s.n_samples for s in specs]), descs=json.dumps(descs))
    return specs, descs


def derive_specs(base: list[Any], count: int, seed: int) -> list[tuple[Any, str]]:
    """``count`` further valid specs: jittered base specs (K = 50) and jittered convex
    combinations of two base specs (K = 100)."""
    from learndock.spec import RKMETableSpec

    rng = np.random.default_rng(seed + 1)
    out = []
    for _ in tqdm(range(count), desc="derive specs", unit="spec", mininterval=0.5):
        if rng.random() < 0.5:
            a = base[int(rng.integers(len(base)))]
            z = a.z + rng.normal(0.0, 0.5, size=a.z.shape)
            beta = a.beta * rng.gamma(4.0, 1.0, size=a.beta.shape)
            label = "jittered"
        else:
            i, j = rng.choice(len(base), size=2, replace=False)
            a, b = base[int(i)], base[int(j)]
            w = rng.uniform(0.2, 0.8)
            z = np.vstack([a.z, b.z]) + rng.normal(0.0, 0.3, size=(a.n_points + b.n_points, D))
            beta = np.concatenate([w * a.beta, (1.0 - w) * b.beta])
            label = "combination"
        beta = np.maximum(beta, 0.0)
        out.append((RKMETableSpec(z, beta / beta.sum(), a.kernel, n_samples=a.n_samples), label))
    return out


# ---------------------------------------------------------------------------- market building
def write_templates(tmp: Path, Xa: np.ndarray, ya: np.ndarray, specs: list[Any]) -> dict[str, Path]:
    """Two real skops packages (classifier, regressor) whose specs are specs[0], specs[1]."""
    from sklearn.linear_model import LogisticRegression, Ridge

    from learndock.package.writer import write_package

    def semantic(task: str, name: str, n_out: int) -> dict[str, Any]:
        return {
            "name": name,
            "description": f"A {task.lower()} model for 8x8 handwritten digit images.",
            "data_type": "Table",
            "task_type": task,
            "library_type": "Scikit-learn",
            "scenarios": ["Education", "Computer"],
            "license": "MIT",
            "input": {"dimension": D, "descriptions": {i: f"pixel {i}" for i in range(D)}},
            "output": {"dimension": n_out,
                       "descriptions": {i: f"output {i}" for i in range(n_out)}},
        }

    names = [f"px{i}" for i in range(D)]
    clf = LogisticRegression(max_iter=300).fit(Xa, ya)
    reg = Ridge().fit(Xa, ya.astype(float))
    out = {}
    for key, model, task, n_out, spec in (
        ("classifier", clf, "Classification", 10, specs[0]),
        ("regressor", reg, "Regression", 1, specs[1]),
    ):
        name = f"digits-{key}"
        write_package(tmp / key, model, name=name, semantic=semantic(task, name, n_out),
                      spec=spec, feature_names=names)
        out[key] = tmp / key
    return out


def build_market(
    home: Path, rff_dim: int, templates: dict[str, Path], bulk: list[tuple[Any, str]],
    seed: int,
) -> tuple[Any, dict[str, Any]]:
    """A market of 2 + len(bulk) learnwares: 2 real adds, the rest bulk-inserted (see top)."""
    from sqlalchemy import select

    from learndock.market import schema as t
    from learndock.market.market import Market
    from learndock.package.manifest import Manifest

    info: dict[str, Any] = {}
    market = Market(home, rff_dim=rff_dim)
    t0 = time.perf_counter()
    added = {key: market.add(path) for key, path in templates.items()}
    info["real_add_seconds"] = round(time.perf_counter() - t0, 2)
    for key, res in added.items():
        if not res.accepted:
            raise RuntimeError(f"template {key} was rejected:\n{res.report.text()}")
    island = added["classifier"].island
    if added["regressor"].island != island:
        raise RuntimeError("the two template packages landed in different islands")

    with market.engine.connect() as conn:
        lw_rows = {k: dict(conn.execute(select(t.learnwares).where(
            t.learnwares.c.id == r.learnware_id)).mappings().one()) for k, r in added.items()}
        v_rows = {k: dict(conn.execute(select(t.versions).where(
            t.versions.c.id == lw_rows[k]["current_version_id"])).mappings().one())
            for k in added}
    manifests = {k: json.loads(v["manifest_json"]) for k, v in v_rows.items()}

    from learndock.market.market import BulkItem

    rng = np.random.default_rng(seed + 2)
    t0 = time.perf_counter()
    items = []
    for i, (spec, label) in enumerate(bulk):
        kind = "regressor" if rng.random() < REGRESSOR_SHARE else "classifier"
        name = f"digits-{kind}-{i:05d}"
        description = (f"A {label} digits {kind} ({'Regression' if kind == 'regressor' else 'Classification'}) "
                       f"number {i}.")
        doc = dict(manifests[kind], name=name)
        doc["semantic"] = dict(doc["semantic"], name=name, description=description)
        v = v_rows[kind]
        items.append(BulkItem(Manifest.parse(doc), [spec], v["blob_sha256"], int(v["size_bytes"]),
                              v["content_digest"], json.loads(v["report_json"])))
    info["spec_rows_seconds"] = round(time.perf_counter() - t0, 2)
    t0 = time.perf_counter()
    # the migration path: batched transactions, the island's kernel, the change log
    market.bulk_load(items, batch_size=5000)
    info["insert_seconds"] = round(time.perf_counter() - t0, 2)
    info["island"] = island
    info["n_learnwares"] = len(market)
    info["n_regression"] = 1 + sum(1 for it in items
                                   if it.manifest.semantic.task_type.value == "Regression")
    return market, info


# ---------------------------------------------------------------------------- measurements
def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def _summary(walls: list[float], stages: list[dict[str, float]], cpus: list[float]
             ) -> dict[str, Any]:
    out = {
        "n": len(walls),
        "cpu_p50_ms": _pct(cpus, 50),
        "p50_ms": _pct(walls, 50),
        "p90_ms": _pct(walls, 90),
        "mean_ms": float(np.mean(walls)),
        "min_ms": float(np.min(walls)),
        "max_ms": float(np.max(walls)),
        "samples_ms": [round(w, 3) for w in walls],
    }
    for stage in ("semantic", "statistical", "mixture", "total"):
        vals = [s[stage] for s in stages if stage in s]
        out[f"{stage}_p50_ms"] = float(np.median(vals)) if vals else None
    return out


def time_searches(market: Any, queries: list[Any], repeats: int, **kw: Any) -> tuple[
        dict[str, Any], list[Any]]:
    """Wall and CPU time (this process, all threads) of each search; results of the first pass."""
    walls, cpus, stages, first = [], [], [], []
    for r in range(repeats):
        for q in queries:
            c0, t0 = time.process_time(), time.perf_counter()
            res = market.search(spec=q, top_k=TOP_K, **kw)
            walls.append((time.perf_counter() - t0) * 1e3)
            cpus.append((time.process_time() - c0) * 1e3)
            stages.append(dict(res.timings_ms))
            if r == 0:
                first.append(res)
    return _summary(walls, stages, cpus), first


def _top_ids(mmd: np.ndarray, ids: np.ndarray, mask: np.ndarray | None, k: int) -> list[str]:
    """Exact top k as search orders it: MMD rounded to 1e-12, then learnware id."""
    sel = np.arange(len(mmd)) if mask is None else np.flatnonzero(mask)
    order = sorted(sel.tolist(), key=lambda i: (round(float(mmd[i]), 12), ids[i]))
    return [ids[i] for i in order[:k]]


def _all_candidates(market: Any, row_ids: list[int]) -> list[Any]:
    out = []
    with market.engine.connect() as conn:
        for start in range(0, len(row_ids), 2000):
            part = market._candidates(conn, row_ids[start:start + 2000])
            out.extend(part[r] for r in row_ids[start:start + 2000])
    return out


def exact_all(market: Any, island: str, queries: list[Any]) -> dict[str, Any]:
    """Exact MMD of every query to every spec of the island (index order), batched, with one
    BLAS thread; the brute-force ranking the prefilter is measured against."""
    from threadpoolctl import threadpool_limits

    from learndock.search.statistical import exact_scores

    idx = market._indexes[island]
    cands = _all_candidates(market, [int(r) for r in idx.spec_row_ids])
    mmds, ms = [], []
    with threadpool_limits(limits=1, user_api="blas"):
        for q in tqdm(queries, desc="exact MMD to all specs", unit="query"):
            t0 = time.perf_counter()
            mmds.append(np.concatenate([exact_scores(q, cands[s:s + 1000], idx.kernel)[0]
                                        for s in range(0, len(cands), 1000)]))
            ms.append((time.perf_counter() - t0) * 1e3)
    return {"mmd": mmds, "ms": ms, "points": int(sum(c.z.shape[0] for c in cands))}


def recall_study(
    market: Any, island: str, queries: list[Any], res_default: list[Any], res_filter: list[Any],
    res_k256: list[Any], exact_cache: dict[int, dict[str, Any]],
) -> dict[str, Any]:
    """Recall@10 of search and of raw RFF top-k against the exact ranking of ALL specs.

    Markets of the same N hold the same specs in the same index order (spec rows are inserted
    in a fixed order), so the exact MMDs are computed once per N and reused for other rff_dims
    (checked on a sample)."""
    from sqlalchemy import select

    from learndock.market import schema as t
    from learndock.search.statistical import exact_scores, prefilter

    idx = market._indexes[island]
    n = len(idx.spec_row_ids)
    cached = exact_cache.get(n)
    if cached is None:
        cached = exact_cache[n] = exact_all(market, island, queries)
    else:
        sample = _all_candidates(market, [int(r) for r in idx.spec_row_ids[:50]])
        check = exact_scores(queries[0], sample, idx.kernel)[0]
        if not np.allclose(check, cached["mmd"][0][:50], rtol=1e-9, atol=1e-12):
            raise RuntimeError("cached exact MMDs do not match this market's specs")
    with market.engine.connect() as conn:
        regression = set(conn.execute(select(t.learnwares.c.id).where(
            t.learnwares.c.task_type == "Regression")).scalars())
    ids = np.asarray(idx.learnware_ids, dtype=object)
    clf_mask = np.array([i not in regression for i in ids])
    out: dict[str, Any] = {"per_query": []}
    for qi, q in enumerate(queries):
        mmd = cached["mmd"][qi]
        exact = _top_ids(mmd, ids, None, TOP_K)
        exact_set = set(exact)
        exact_f = set(_top_ids(mmd, ids, clf_mask, TOP_K))
        got = [m.learnware_id for m in res_default[qi].single]
        got_f = {m.learnware_id for m in res_filter[qi].single}
        got_256 = {m.learnware_id for m in res_k256[qi].single}
        emb = idx.rff_map.embed(q.z, q.beta)
        rff = {k: len(exact_set & set(ids[prefilter(idx.rff, emb, None, k)].tolist())) / TOP_K
               for k in RFF_KS}
        by_id = dict(zip(ids.tolist(), mmd.tolist(), strict=True))
        exact_mean = float(np.mean([by_id[i] for i in exact]))
        got_mean = float(np.mean([by_id[i] for i in got]))
        out["per_query"].append({
            "search_recall": len(exact_set & set(got)) / TOP_K,
            "search_recall_filtered": len(exact_f & got_f) / TOP_K,
            "search_recall_k256": len(exact_set & got_256) / TOP_K,
            "top1_match": bool(got and got[0] == exact[0]),
            "top10_mmd_excess": got_mean / exact_mean - 1.0 if exact_mean > 0 else 0.0,
            "rff_recall": rff,
            "exact_best_mmd": float(by_id[exact[0]]),
            "exact_top1": exact[0],
        })
    pq = out["per_query"]
    out["search_recall_at10"] = float(np.mean([p["search_recall"] for p in pq]))
    out["search_recall_at10_min"] = float(np.min([p["search_recall"] for p in pq]))
    out["search_recall_at10_filtered"] = float(np.mean([p["search_recall_filtered"] for p in pq]))
    out["search_recall_at10_k256"] = float(np.mean([p["search_recall_k256"] for p in pq]))
    out["top1_match_rate"] = float(np.mean([p["top1_match"] for p in pq]))
    out["top10_mmd_excess_mean"] = float(np.mean([p["top10_mmd_excess"] for p in pq]))
    out["rff_recall_at10"] = {str(k): float(np.mean([p["rff_recall"][k] for p in pq]))
                              for k in RFF_KS}
    out["exhaustive_exact_p50_ms"] = float(np.median(cached["ms"]))
    out["spec_points_total"] = cached["points"]
    return out


def bench_config(
    tmp: Path, n: int, rff_dim: int, templates: dict[str, Path], bulk_all: list[tuple[Any, str]],
    queries: list[Any], repeats: int, ref: bool, ref_queries: int,
    exact_cache: dict[int, dict[str, Any]],
) -> dict[str, Any]:
    from learndock.market.market import Market

    console.rule(f"N = {n:,}, rff_dim = {rff_dim}")
    home = tmp / f"home-{n}-{rff_dim}"
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):  # not measured; avoids BLAS stalls
        market, build = build_market(home, rff_dim, templates, bulk_all[: n - 2], SEED)
    console.log(f"built: {build}")
    kernel = market.kernel_for(D, [f"px{i}" for i in range(D)])
    if kernel is None or kernel != queries[0].kernel:
        raise RuntimeError("the island's kernel differs from the queries' kernel")
    market.close()

    res: dict[str, Any] = {"n": n, "rff_dim": rff_dim, "build": build}
    # Cold: a freshly opened market (as a new server process would be).
    t0 = time.perf_counter()
    market = Market(home, rff_dim=rff_dim)
    res["open_ms"] = (time.perf_counter() - t0) * 1e3
    t0 = time.perf_counter()
    cold = market.search(spec=queries[0], top_k=TOP_K)
    res["cold_first_search_ms"] = (time.perf_counter() - t0) * 1e3
    res["cold_first_search_stages_ms"] = dict(cold.timings_ms)
    probe = Market(home, rff_dim=rff_dim)
    with probe.engine.connect() as conn:
        probe._island_index(conn, build["island"])  # warm the connection/statement caches
        probe._indexes.clear()
        t0 = time.perf_counter()
        probe._island_index(conn, build["island"])
        res["index_load_ms"] = (time.perf_counter() - t0) * 1e3
    probe.close()
    market.search(spec=queries[-1], top_k=TOP_K)  # warm-up (index already cached)

    from threadpoolctl import threadpool_info, threadpool_limits

    res["blas"] = [{k: i.get(k) for k in ("internal_api", "num_threads")}
                   for i in threadpool_info()]
    load0 = os.getloadavg()[0]
    res["default"], r_default = time_searches(market, queries, repeats)
    with threadpool_limits(limits=1, user_api="blas"):
        res["one_blas_thread"], _ = time_searches(market, queries, repeats)
    res["filtered"], r_filter = time_searches(market, queries, repeats, query=TAG_QUERY)
    res["prefilter_k256"], r_256 = time_searches(market, queries, repeats, prefilter_k=256)
    res["loadavg_1min"] = [round(load0, 2), round(os.getloadavg()[0], 2)]
    res["tag_filter_kept"] = next(
        (e for e in r_filter[0].explanation if e.startswith("tag filters")), None)
    console.log(
        f"p50 {res['default']['p50_ms']:.1f} ms (1 BLAS thread: "
        f"{res['one_blas_thread']['p50_ms']:.1f} ms; stat {res['default']['statistical_p50_ms']:.1f}"
        f", mix {res['default']['mixture_p50_ms']:.1f}); filtered p50 "
        f"{res['filtered']['p50_ms']:.1f} ms; k=256 p50 {res['prefilter_k256']['p50_ms']:.1f} ms"
        f"; cold {res['cold_first_search_ms']:.0f} ms")
    res["recall"] = recall_study(market, build["island"], queries, r_default, r_filter, r_256,
                                 exact_cache)
    console.log(f"recall@10 search {res['recall']['search_recall_at10']:.3f}, raw RFF "
                f"{res['recall']['rff_recall_at10']}")
    if ref:
        res["reference"] = rf = reference_search(market, build["island"], queries, ref_queries)
        if rf.get("status") == "ok":
            exact1 = [p["exact_top1"] for p in res["recall"]["per_query"]]
            rf["top1_same_as_exact"] = float(np.mean(
                [a == b for a, b in zip(rf["top1"], exact1, strict=False)]))
    market.close()
    return res


# ---------------------------------------------------------------------------- reference
def reference_search(market: Any, island: str, queries: list[Any], max_queries: int
                     ) -> dict[str, Any]:
    """Time the reference's EasyStatSearcher over the same specs (subprocess, files only)."""
    from benchmarks.common import run_measured
    from benchmarks.reference import find_reference_python

    python = find_reference_python()
    if python is None:
        return {"status": "not installed"}
    idx = market._indexes[island]
    row_ids = [int(r) for r in idx.spec_row_ids]
    with market.engine.connect() as conn:
        cands = []
        for start in range(0, len(row_ids), 2000):
            part = market._candidates(conn, row_ids[start:start + 2000])
            cands.extend(part[r] for r in row_ids[start:start + 2000])
    kernel = idx.kernel
    # Our kernel exp(-g |(x-y)/s|^2) with a uniform scale s is the reference's RBF with
    # gamma = g / s^2 on raw features: same MMD values.
    gamma = kernel.gamma / float(kernel.scale[0]) ** 2
    with tempfile.TemporaryDirectory(prefix="learndock-ref-search-") as tmp:
        tmp_path = Path(tmp)
        lens = np.array([c.z.shape[0] for c in cands])
        np.savez(tmp_path / "market.npz", z=np.vstack([c.z for c in cands]),
                 beta=np.concatenate([c.beta for c in cands]), lens=lens,
                 ids=np.array([c.learnware_id for c in cands]))
        np.savez(tmp_path / "queries.npz", z=np.stack([q.z for q in queries]),
                 beta=np.stack([q.beta for q in queries]))
        cmd = [str(python), str(REPO_ROOT / "benchmarks" / "reference_worker.py"), "stat-search",
               "--market", str(tmp_path / "market.npz"), "--queries",
               str(tmp_path / "queries.npz"), "--gamma", repr(gamma), "--out",
               str(tmp_path / "out.json"), "--max-queries", str(max_queries)]
        r = run_measured(cmd, timeout=3600)
        if r.returncode != 0:
            return {"status": "failed", "stderr": r.stderr[-2000:]}
        out = json.loads((tmp_path / "out.json").read_text())
    secs = out["seconds"]
    ms = [s * 1e3 for s in secs]
    return {
        "status": "ok",
        "gamma": gamma,
        "queries": len(ms),
        "p50_ms": _pct(ms, 50),
        "mean_ms": float(np.mean(ms)),
        "single_p50_ms": float(np.median(out["single_seconds"])) * 1e3,
        "load_seconds": out["load_seconds"],
        "top1": out["top1"],
        "torch_threads": out.get("torch_threads"),
        "worker_wall_seconds": r.wall_seconds,
        "worker_peak_rss_bytes": r.peak_rss_bytes,
    }


# ---------------------------------------------------------------------------- reporting
def _f(v: float | None, fmt: str = ".1f") -> str:
    return "-" if v is None else format(v, fmt)


def markdown(results: list[dict[str, Any]]) -> str:
    lines = [
        "| N | rff_dim | search p50 | p90 | mean | CPU p50 | stages p50: semantic / statistical"
        " / mixture | 1 BLAS thread: p50 (CPU) | tag filter p50 | prefilter_k=256 p50 "
        "| cold first search | index load | exhaustive exact MMD (1 BLAS thread) |",
        "|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        d = r["default"]
        lines.append(
            f"| {r['n']:,} | {r['rff_dim']} | **{_f(d['p50_ms'])} ms** | {_f(d['p90_ms'])} ms "
            f"| {_f(d['mean_ms'])} ms | {_f(d['cpu_p50_ms'])} ms "
            f"| {_f(d['semantic_p50_ms'], '.2f')} / "
            f"{_f(d['statistical_p50_ms'])} / {_f(d['mixture_p50_ms'])} ms "
            f"| {_f(r['one_blas_thread']['p50_ms'])} ms "
            f"({_f(r['one_blas_thread']['cpu_p50_ms'])} ms) "
            f"| {_f(r['filtered']['p50_ms'])} ms | {_f(r['prefilter_k256']['p50_ms'])} ms "
            f"| {_f(r['cold_first_search_ms'], '.0f')} ms | {_f(r['index_load_ms'], '.0f')} ms "
            f"| {_f(r['recall']['exhaustive_exact_p50_ms'], '.0f')} ms |"
        )
    lines += [
        "",
        "| N | rff_dim | recall@10 search (default prefilter_k=64) | min over queries "
        "| with tag filter | search with prefilter_k=256 | top-1 same as exact "
        "| mean top-10 MMD excess | raw RFF top-10 | RFF top-64 | RFF top-256 |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        rc = r["recall"]
        rr = rc["rff_recall_at10"]
        lines.append(
            f"| {r['n']:,} | {r['rff_dim']} | **{rc['search_recall_at10']:.3f}** "
            f"| {rc['search_recall_at10_min']:.1f} | {rc['search_recall_at10_filtered']:.3f} "
            f"| {rc['search_recall_at10_k256']:.3f} | {rc['top1_match_rate']:.2f} "
            f"| {rc['top10_mmd_excess_mean']:.2%} | {rr['10']:.3f} | {rr['64']:.3f} "
            f"| {rr['256']:.3f} |"
        )
    refs = [r for r in results if r.get("reference", {}).get("status") == "ok"]
    if refs:
        lines += ["", "| N | reference EasyStatSearcher p50 (its single-spec ranking alone) "
                  "| queries | reference top-1 = exact top-1 | learndock search p50 "
                  "| speed-up |", "|---:|---:|---:|---:|---:|---:|"]
        for r in refs:
            rf = r["reference"]
            lines.append(
                f"| {r['n']:,} | {rf['p50_ms']:,.0f} ms ({rf['single_p50_ms']:,.0f} ms) "
                f"| {rf['queries']} | {rf.get('top1_same_as_exact', float('nan')):.2f} "
                f"| {r['default']['p50_ms']:.1f} ms "
                f"| {rf['p50_ms'] / r['default']['p50_ms']:.0f}x |")
    return "\n".join(lines) + "\n"


def plot(results: list[dict[str, Any]], path: Path, main_dim: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_h, ax_s, ax_r) = plt.subplots(1, 3, figsize=(16, 4.6))
    main = [r for r in results if r["rff_dim"] == main_dim]
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for c, r in zip(colors, main, strict=False):
        for mode, style, label in (("default", "-", "default BLAS threads"),
                                   ("one_blas_thread", "--", "1 BLAS thread")):
            ms = np.sort(r[mode]["samples_ms"])
            ax_h.step(ms, np.arange(1, len(ms) + 1) / len(ms), style, color=c, where="post",
                      label=f"N = {r['n']:,}, {label}: p50 {r[mode]['p50_ms']:.0f} ms")
    ax_h.axvline(TARGET_P50_MS, color="k", ls=":", lw=1, label="target p50 50 ms")
    ax_h.axhline(0.5, color="grey", lw=0.5)
    ax_h.set(xscale="log", xlabel="search latency, ms (warm index; log scale)",
             ylabel="fraction of searches", ylim=(0, 1.01),
             title=f"market.search(spec, top_k=10), rff_dim {main_dim}")
    from matplotlib.ticker import FuncFormatter, NullFormatter

    samples = [w for r in main for m in ("default", "one_blas_thread") for w in r[m]["samples_ms"]]
    ticks = [t for t in (5, 10, 20, 30, 50, 100, 200, 300, 500, 1000, 2000)
             if min(samples) / 1.5 <= t <= max(samples) * 1.5]
    ax_h.set_xticks(ticks)
    ax_h.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax_h.xaxis.set_minor_formatter(NullFormatter())
    ax_h.grid(True, which="both", alpha=0.3)
    ax_h.legend(fontsize=7)

    bars = [(f"N={r['n']:,}\n{lab}", r[mode]) for r in main
            for mode, lab in (("default", "default"), ("one_blas_thread", "1 BLAS thr."))]
    labels = [b[0] for b in bars]
    stages = ("semantic", "statistical", "mixture")
    bottom = np.zeros(len(bars))
    for c, st in zip(colors[3:], stages, strict=False):
        vals = np.array([b[1][f"{st}_p50_ms"] or 0.0 for b in bars])
        ax_s.bar(labels, vals, bottom=bottom, color=c, label=f"{st} (median)")
        bottom += vals
    ax_s.plot(labels, [b[1]["p50_ms"] for b in bars], "k_", ms=30, mew=2,
              label="search p50 (wall)")
    ax_s.plot(labels, [b[1]["cpu_p50_ms"] for b in bars], "_", color="tab:green", ms=30,
              mew=2, label="CPU time p50")
    ax_s.axhline(TARGET_P50_MS, color="k", ls=":", lw=1)
    ax_s.set(ylabel="ms", title="where a search spends its time")
    ax_s.tick_params(axis="x", labelsize=8)
    ax_s.legend(fontsize=7)

    big = max(r["n"] for r in results)
    for c, r in zip(colors, [r for r in results if r["n"] == big], strict=False):
        rr = r["recall"]["rff_recall_at10"]
        ax_r.plot(RFF_KS, [rr[str(k)] for k in RFF_KS], "o-", color=c,
                  label=f"rff_dim {r['rff_dim']}")
    ax_r.set(xscale="log", xticks=list(RFF_KS), xticklabels=[str(k) for k in RFF_KS],
             ylim=(0, 1.02), xlabel="prefilter_k (random-feature candidates kept)",
             ylabel="recall@10 vs exact MMD ranking",
             title=f"prefilter recall, N = {big:,} (search reranks exactly)")
    ax_r.grid(True, alpha=0.3)
    ax_r.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_outputs(out: Path, payload: dict[str, Any], results: list[dict[str, Any]],
                  main_dim: int) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "search_speed.json").write_text(json.dumps(payload, indent=2) + "\n")
    md = [
        "# Statistical search speed and prefilter recall",
        "",
        f"Command: `{payload['command']}`  ",
        f"Machine: {payload['machine_description']}  ",
        f"Queries: {payload['config']['queries']} user specs x {payload['config']['repeats']} "
        "repeat(s) per configuration, timed after one warm-up search.",
        "",
        markdown(results),
    ]
    (out / "search_speed.md").write_text("\n".join(md))
    if results:
        plot(results, out / "search_speed.png", main_dim)


# ---------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=None,
                        help="market sizes (default 10000; 500 with --quick)")
    parser.add_argument("--queries", type=int, default=None, help="user specs (default 50)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed passes over the queries (default 3; 1 with --quick)")
    parser.add_argument("--rff-dims", type=int, nargs="+", default=None,
                        help="Market(rff_dim=...) values; the first is used for every N, the "
                        "others only at the largest N (default 512)")
    parser.add_argument("--base", type=int, default=None,
                        help="fitted base specs (default 200; 8 with --quick)")
    parser.add_argument("--fit-iter", type=int, default=None,
                        help="max_iter of each RKME fit (default 5; 3 with --quick)")
    parser.add_argument("--quick", action="store_true", help="CI smoke run: N 500, 5 queries")
    parser.add_argument("--reference", action="store_true",
                        help="also time the reference EasyStatSearcher (needs .venv-ref)")
    parser.add_argument("--ref-queries", type=int, default=10,
                        help="queries timed on the reference (default 10; it is slow)")
    parser.add_argument("--ref-max-n", type=int, default=1000,
                        help="run the reference only up to this N (default 1000)")
    parser.add_argument("--no-cache", action="store_true", help="refit the base/query specs")
    parser.add_argument("--out", type=Path, default=None,
                        help=f"output folder (default {DEFAULT_OUT.relative_to(REPO_ROOT)}; "
                        "with --quick its quick/ subfolder, so CI never overwrites a full run)")
    args = parser.parse_args(argv)
    q = args.quick
    out = args.out or (DEFAULT_OUT / "quick" if q else DEFAULT_OUT)
    sizes = sorted(args.n or ([500] if q else [10_000]))
    n_queries = args.queries or (5 if q else 50)
    repeats = args.repeats or (1 if q else 3)
    dims = args.rff_dims or [512]
    n_base = args.base or (8 if q else 200)
    fit_iter = args.fit_iter or (3 if q else 5)
    if min(sizes) < 4:
        parser.error("--n must be >= 4")
    command = "python -m benchmarks.search_speed " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    machine = machine_info()
    console.log(f"machine: {describe_machine(machine)}")
    t_start = time.perf_counter()

    from threadpoolctl import threadpool_limits

    Xa, ya, Xb, yb = digits_split()
    n_base = min(n_base, max(sizes))
    with threadpool_limits(limits=1, user_api="blas"):  # small problems: threads only stall
        base, base_descs = fit_specs("base", Xa, ya, n_base, SEED, fit_iter, (150, 400),
                                     not args.no_cache)
        queries, query_descs = fit_specs("query", Xb, yb, n_queries, SEED + 1000, fit_iter,
                                         (100, 300), not args.no_cache)
    derived = derive_specs(base, max(sizes) - n_base, SEED)
    bulk_all = [(s, "fitted") for s in base[2:]] + derived  # base[0], base[1]: real packages

    payload: dict[str, Any] = {
        "benchmark": "statistical-search-speed",
        "command": command,
        "machine": machine,
        "machine_description": describe_machine(machine),
        "config": {
            "sizes": sizes, "queries": n_queries, "repeats": repeats, "rff_dims": dims,
            "base_specs_fitted": n_base, "fit_max_iter": fit_iter, "top_k": TOP_K,
            "kernel": island_kernel().to_dict() | {"scale": "uniform 4.0"},
            "tag_query": TAG_QUERY, "regressor_share": REGRESSOR_SHARE,
            "omp/openblas threads": {k: os.environ.get(k) for k in
                                     ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")},
            "query_datasets": query_descs,
            "base_datasets_head": base_descs[:20],
        },
        "results": [],
    }
    results: list[dict[str, Any]] = payload["results"]
    configs = [(n, dims[0]) for n in sizes] + [(sizes[-1], d) for d in dims[1:]]
    exact_cache: dict[int, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="learndock-search-speed-") as tmp_name:
        tmp = Path(tmp_name)
        templates = write_templates(tmp / "templates", Xa, ya, base)
        for n, dim in configs:
            results.append(bench_config(tmp, n, dim, templates, bulk_all, queries, repeats,
                                        args.reference and dim == dims[0]
                                        and n <= args.ref_max_n, args.ref_queries,
                                        exact_cache))
            write_outputs(out, payload, results, dims[0])
    payload["total_seconds"] = round(time.perf_counter() - t_start, 1)
    write_outputs(out, payload, results, dims[0])
    console.print(markdown(results))
    console.log(f"done in {payload['total_seconds']:.0f} s; wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
