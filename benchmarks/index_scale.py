"""One island at 10^4 .. 10^6 learnwares: the island index (change log + usearch HNSW graph).

What is measured for each market size N (one island, d = 16, K = 32, plan-notes §5):

* bulk load: ``Market.bulk_load`` (the migration path: batches of 10,000 per transaction)
  learnwares per second;
* index build from the database (the graph of all N random-feature vectors) and reopening the
  saved graph, seconds; resident memory of the process after the build (``/proc``);
* warm search latency of ``Market.search(spec=..., top_k=10)``, p50 / p95 over the queries,
  plain and with a tag filter that keeps ~10% (``license = Apache-2.0``);
* recall@10 of the search against the exhaustive exact MMD ranking of all N specs (computed
  here from the stored reduced sets, batched) for every query;
* writes while warm: publishing single learnwares (``bulk_load`` of one) and deleting, per
  second, and the latency of the first search after a write against a warm one (the index
  applies the change log instead of reloading).

Specs are derived from real data as ``search_speed`` does: base specs are FITTED (K = 32) on data
sets drawn from scikit-learn digits pooled to 4x4 = 16 features (70% of the images), the rest are
jittered base specs or jittered halves of two base specs (still K = 32); queries are specs fitted
on data sets drawn from the held-out 30%. Markets are cached outside the repo (``--cache``,
default ``~/.cache/learndock-bench``) so a 10^6 build runs once.

Run from the repo root::

    python -m benchmarks.index_scale --n 10000 100000            # ~10 min on 2 cores
    python -m benchmarks.index_scale --n 1000000 --dtype f16     # ~1 h the first time
    python -m benchmarks.index_scale --compare-ann 100000        # usearch vs hnswlib
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from tqdm.auto import tqdm

from benchmarks.common import machine_info

D, K = 16, 32
SEED = 11
REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS = REPO_ROOT / "benchmarks" / "results" / "index_scale"
console = Console(stderr=True, highlight=False)


def kernel():
    from learndock.spec.kernels import GaussianKernel

    return GaussianKernel(1.0 / D, np.full(D, 4.0))


def pooled_digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    X, y = load_digits(return_X_y=True)
    X = X.reshape(-1, 4, 2, 4, 2).mean(axis=(2, 4)).reshape(-1, D)
    return tuple(train_test_split(X, y, test_size=0.3, stratify=y, random_state=SEED))  # type: ignore[return-value]


def draw(rng: np.random.Generator, X: np.ndarray, y: np.ndarray) -> np.ndarray:
    n_cls = int(rng.choice([1, 2, 3, 4], p=[0.25, 0.35, 0.25, 0.15]))
    classes = rng.choice(10, size=n_cls, replace=False)
    counts = rng.multinomial(int(rng.integers(150, 400)), rng.dirichlet(np.ones(n_cls)))
    parts = [X[y == c][rng.integers(0, int((y == c).sum()), size=max(int(m), 1))]
             for c, m in zip(classes, counts, strict=True)]
    Xs = np.vstack(parts)
    if rng.random() < 0.5:
        Xs = Xs + rng.normal(0.0, 1.0, size=D)
    return Xs + rng.normal(0.0, 0.5, size=Xs.shape)


def fit_many(X: np.ndarray, y: np.ndarray, count: int, seed: int, what: str) -> list[Any]:
    from learndock.spec import RKMETableSpec

    rng = np.random.default_rng(seed)
    return [RKMETableSpec.fit(draw(rng, X, y), K, kernel=kernel(), random_state=seed + i,
                              max_iter=5, progress=False)
            for i in tqdm(range(count), desc=f"fit {what} specs", unit="spec")]


def derived(base: list[Any], rng: np.random.Generator) -> Any:
    from learndock.spec import RKMETableSpec

    if rng.random() < 0.5:
        a = base[int(rng.integers(len(base)))]
        z = a.z + rng.normal(0.0, 0.4, size=a.z.shape)
        beta = a.beta * rng.gamma(4.0, 1.0, size=K)
    else:
        i, j = rng.choice(len(base), size=2, replace=False)
        pick_a, pick_b = rng.choice(K, K // 2, replace=False), rng.choice(K, K // 2, replace=False)
        w = rng.uniform(0.2, 0.8)
        z = np.vstack([base[i].z[pick_a], base[j].z[pick_b]]) + rng.normal(0.0, 0.3, size=(K, D))
        beta = np.concatenate([w * base[i].beta[pick_a] / base[i].beta[pick_a].sum(),
                               (1 - w) * base[j].beta[pick_b] / base[j].beta[pick_b].sum()])
    beta = np.maximum(beta, 1e-12)
    return RKMETableSpec(z, beta / beta.sum(), kernel())


def template(home: Path, work: Path, X: np.ndarray, y: np.ndarray, spec: Any) -> Any:
    """One real learnware through ``Market.add``: creates the island, the blob, the rows."""
    from sklearn.linear_model import LogisticRegression

    from learndock.market import Market
    from learndock.package import pack, write_package

    sem = {"name": "pooled digits", "description": "digits pooled to 4x4", "data_type": "Table",
           "task_type": "Classification", "library_type": "Scikit-learn",
           "scenarios": ["Education"], "license": "MIT",
           "input": {"dimension": D, "descriptions": {i: f"cell {i}" for i in range(D)}},
           "output": {"dimension": 10, "descriptions": {i: f"digit {i}" for i in range(10)}}}
    d = work / "template"
    write_package(d, LogisticRegression(max_iter=500).fit(X, y), name="pooled-digits",
                  semantic=sem, spec=spec)
    pack(d, work / "template.zip")
    market = Market(home, ann_dtype=ARGS.dtype)
    added = market.add(work / "template.zip")
    if not added.accepted:
        raise RuntimeError(added.report.text())
    return market, added


def items(market: Any, lid: str, base: list[Any], n: int, seed: int, start: int = 0) -> Any:
    """``n`` BulkItems copying the template's manifest (10% with license Apache-2.0)."""
    from sqlalchemy import select

    from learndock.market import schema as t
    from learndock.market.market import BulkItem
    from learndock.package.manifest import Manifest

    with market.engine.connect() as conn:
        v = conn.execute(select(t.versions).where(t.versions.c.learnware_id == lid)
                         ).mappings().one()
    doc = json.loads(v["manifest_json"])
    rng = np.random.default_rng(seed)
    for i in range(start, start + n):
        d = dict(doc, name=f"scale-{i}")
        d["semantic"] = dict(doc["semantic"], name=f"pooled digits {i}",
                             license="Apache-2.0" if rng.random() < 0.1 else "MIT")
        yield BulkItem(Manifest.parse(d), [derived(base, rng)], v["blob_sha256"],
                       int(v["size_bytes"]), v["content_digest"], {"checks": []}, owner="bench")


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def exact_top(market: Any, island: str, queries: list[Any], k: int = 10) -> list[list[str]]:
    """The exhaustive exact-MMD top ``k`` of every query over all searchable specs."""
    from sqlalchemy import and_, select

    from learndock.market import schema as t
    kern = market.island_kernel(island).kernel
    # float32 blocks of 2,000 specs (64,000 x queries*K kernel values, ~80 MB): a block stays
    # near the cache; one float64 block of 20,000 specs was memory-bound and 20x slower
    qz = np.vstack([kern.scaled(q.z) for q in queries]).astype(np.float32)
    qb = np.stack([q.beta for q in queries]).astype(np.float32)  # (Q, K)
    qs = np.array([q.self_inner for q in queries])
    q_sq = np.einsum("ij,ij->i", qz, qz)
    ids_all: list[str] = []
    mmd_parts: list[np.ndarray] = []
    current = select(t.learnwares.c.current_version_id).where(t.learnwares.c.deleted_at.is_(None))
    nq = len(queries)
    with market.engine.connect() as conn:
        res = conn.execution_options(stream_results=True).execute(
            select(t.specs.c.learnware_id, t.specs.c.z, t.specs.c.beta, t.specs.c.self_inner)
            .where(and_(t.specs.c.island_key == island, t.specs.c.version_id.in_(current))))
        bar = tqdm(desc="exact MMD (ground truth)", unit="spec", mininterval=1.0)
        while rows := res.fetchmany(2000):
            z = np.frombuffer(b"".join(r[1] for r in rows), dtype="<f8").reshape(-1, D)
            z = kern.scaled(z).astype(np.float32)
            b = np.frombuffer(b"".join(r[2] for r in rows), dtype="<f8").reshape(len(rows), K)
            si = np.array([r[3] for r in rows])
            d2 = z @ qz.T
            d2 *= -2.0
            d2 += np.einsum("ij,ij->i", z, z)[:, None]
            d2 += q_sq[None, :]
            np.maximum(d2, 0.0, out=d2)
            d2 *= -kern.gamma
            np.exp(d2, out=d2)  # (rows*K, Q*K) kernel values
            g = d2.reshape(len(rows), K, nq, K)
            ip = np.einsum("nk,nkqj,qj->nq", b.astype(np.float32), g, qb, optimize=True)
            mmd_parts.append(np.sqrt(np.maximum(si[:, None] + qs[None, :] - 2 * ip, 0)))
            ids_all += [r[0] for r in rows]
            bar.update(len(rows))
        bar.close()
    mmd = np.vstack(mmd_parts)
    ids = np.array(ids_all, dtype=object)
    return [list(ids[np.argsort(mmd[:, i], kind="stable")[:k]]) for i in range(len(queries))]


def pct(v: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(v), q))


def run_size(n: int, base: list[Any], queries: list[Any], X: np.ndarray, y: np.ndarray
             ) -> dict[str, Any]:
    from learndock.market import Market

    home = ARGS.cache / f"n{n}-{ARGS.dtype}"
    out: dict[str, Any] = {"n": n, "dtype": ARGS.dtype}
    done = home / "built.json"
    if not done.exists():
        shutil.rmtree(home, ignore_errors=True)
        home.mkdir(parents=True)
        market, added = template(home, home, X, y, base[0])
        t0 = time.perf_counter()
        market.bulk_load(items(market, added.learnware_id, base, n - 1, SEED), batch_size=10_000)
        out["bulk_load_per_s"] = (n - 1) / (time.perf_counter() - t0)
        done.write_text(json.dumps({"lid": added.learnware_id, "island": added.island,
                                    "bulk_load_per_s": out["bulk_load_per_s"]}))
        market.close()
    meta = json.loads(done.read_text())
    out["bulk_load_per_s"] = meta["bulk_load_per_s"]
    island = meta["island"]
    shutil.rmtree(home / "index", ignore_errors=True)
    rss0 = rss_mb()
    market = Market(home, ann_dtype=ARGS.dtype)
    t0 = time.perf_counter()
    market.search(spec=queries[0])
    out["build_s"] = time.perf_counter() - t0
    out["rss_mb"] = rss_mb()
    out["rss_index_mb"] = out["rss_mb"] - rss0
    view = market.index.cache[island]
    out["graph"] = view.ann is not None
    market.close()  # saves the graph
    market = Market(home, ann_dtype=ARGS.dtype)
    t0 = time.perf_counter()
    market.search(spec=queries[0])
    out["reopen_s"] = time.perf_counter() - t0
    console.log(f"N={n}: built in {out['build_s']:.1f} s, reopened in {out['reopen_s']:.1f} s, "
                f"RSS {out['rss_mb']:.0f} MB")

    lat, lat_f, found = [], [], []
    for q in queries:
        for r in range(ARGS.repeats):
            t0 = time.perf_counter()
            res = market.search(spec=q, top_k=10)
            lat.append((time.perf_counter() - t0) * 1e3)
            if r == 0:
                found.append([s.learnware_id for s in res.single])
            t0 = time.perf_counter()
            market.search({"license": ["Apache-2.0"]}, spec=q, top_k=10)
            lat_f.append((time.perf_counter() - t0) * 1e3)
    out.update(p50_ms=pct(lat, 50), p95_ms=pct(lat, 95), filtered_p50_ms=pct(lat_f, 50),
               filtered_p95_ms=pct(lat_f, 95))
    truth = exact_top(market, island, queries)
    recalls = [len(set(a) & set(b)) / 10 for a, b in zip(found, truth, strict=True)]
    out["recall10"] = float(np.mean(recalls))
    out["recall10_min"] = float(np.min(recalls))

    # writes while warm, and the first search after each
    after, warm = [], []
    t0 = time.perf_counter()
    new_ids = []
    for i in range(ARGS.writes):
        new_ids += market.bulk_load(items(market, meta["lid"], base, 1, SEED + 1000 + i,
                                          start=n + i), progress=False)
        t1 = time.perf_counter()
        market.search(spec=queries[i % len(queries)], top_k=10)
        after.append((time.perf_counter() - t1) * 1e3)
        t1 = time.perf_counter()
        market.search(spec=queries[i % len(queries)], top_k=10)
        warm.append((time.perf_counter() - t1) * 1e3)
    out["inserts_per_s"] = ARGS.writes / (time.perf_counter() - t0 - sum(after + warm) / 1e3)
    out["first_after_write_extra_ms"] = float(np.median(np.array(after) - np.array(warm)))
    t0 = time.perf_counter()
    for lid in new_ids:
        market.delete(lid)
    out["deletes_per_s"] = len(new_ids) / (time.perf_counter() - t0)
    market.search(spec=queries[0])
    out["peak_rss_mb"] = _peak_mb()
    market.close()
    console.log(out)
    return out


def writes_only(n: int, base: list[Any], queries: list[Any]) -> dict[str, Any]:
    """Reopen a cached market's saved index (no rebuild) and measure only what writes cost:
    warm latency, the first search after each publication, deletes, and publications after
    deletes (a removed graph node's slot used to make the next insert ~30x slower)."""
    from learndock.market import Market

    home = ARGS.cache / f"n{n}-{ARGS.dtype}"
    meta = json.loads((home / "built.json").read_text())
    market = Market(home, ann_dtype=ARGS.dtype)
    t0 = time.perf_counter()
    market.search(spec=queries[0])
    out: dict[str, Any] = {"n": n, "dtype": ARGS.dtype, "reopen_s": time.perf_counter() - t0}
    warm = []
    for q in queries:
        for _ in range(ARGS.repeats):
            t0 = time.perf_counter()
            market.search(spec=q, top_k=10)
            warm.append((time.perf_counter() - t0) * 1e3)
    out.update(p50_ms=pct(warm, 50), p95_ms=pct(warm, 95))

    def publish_then_search(rounds: int, seed: int) -> tuple[list[str], list[float]]:
        ids, extra = [], []
        for i in range(rounds):
            ids += market.bulk_load(items(market, meta["lid"], base, 1, seed + i,
                                          start=10 * n + seed + i), progress=False)
            q = queries[i % len(queries)]
            t1 = time.perf_counter()
            market.search(spec=q, top_k=10)
            after = time.perf_counter() - t1
            t1 = time.perf_counter()
            market.search(spec=q, top_k=10)
            extra.append((after - (time.perf_counter() - t1)) * 1e3)
        return ids, extra

    ids, extra = publish_then_search(ARGS.writes, SEED + 5000)
    out["first_after_write_extra_ms"] = float(np.median(extra))
    t0 = time.perf_counter()
    for lid in ids:
        market.delete(lid)
    out["deletes_per_s"] = len(ids) / (time.perf_counter() - t0)
    market.search(spec=queries[0])
    ids2, extra2 = publish_then_search(ARGS.writes, SEED + 6000)
    out["first_after_write_after_deletes_extra_ms"] = float(np.median(extra2))
    for lid in ids2:
        market.delete(lid)
    out["rss_mb"] = rss_mb()
    market.close()
    console.log(out)
    return out


def _peak_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def compare_ann(n: int, base: list[Any]) -> dict[str, Any]:
    """usearch vs hnswlib on n random-feature vectors of derived specs (same graph degree and
    search breadth): build time, query time, recall@64 against the exact ranking, memory."""
    import hnswlib
    from usearch.index import Index

    from learndock.spec.kernels import RandomFourierFeatures

    rng = np.random.default_rng(SEED)
    rff = RandomFourierFeatures(kernel(), 512, 7)
    vecs = np.stack([rff.embed(s.z, s.beta) for s in
                     (derived(base, rng) for _ in tqdm(range(n), desc="vectors"))]
                    ).astype(np.float32)
    qs = vecs[rng.choice(n, 50, replace=False)] + rng.normal(0, 0.01, (50, 512)).astype(np.float32)
    d = ((qs[:, None, :] - vecs[None, :, :]) ** 2).sum(-1) if n <= 20_000 else np.stack(
        [((vecs - q) ** 2).sum(1) for q in qs])
    truth = np.argsort(d, axis=1)[:, :64]
    out = {}
    t0 = time.perf_counter()
    u = Index(ndim=512, metric="l2sq", dtype="f32", connectivity=16, expansion_add=128,
              expansion_search=256)
    u.add(np.arange(n), vecs)
    ub = time.perf_counter() - t0
    t0 = time.perf_counter()
    got = [u.search(q, 64).keys for q in qs]
    uq = (time.perf_counter() - t0) / len(qs) * 1e3
    out["usearch"] = {"build_s": ub, "query_ms": uq, "memory_mb": u.memory_usage / 2**20,
                      "recall64": float(np.mean([len(set(g) & set(t)) / 64
                                                 for g, t in zip(got, truth, strict=True)]))}
    t0 = time.perf_counter()
    h = hnswlib.Index(space="l2", dim=512)
    h.init_index(max_elements=n, M=16, ef_construction=128)
    h.add_items(vecs, np.arange(n))
    hb = time.perf_counter() - t0
    h.set_ef(256)
    t0 = time.perf_counter()
    got = [h.knn_query(q, 64)[0][0] for q in qs]
    hq = (time.perf_counter() - t0) / len(qs) * 1e3
    out["hnswlib"] = {"build_s": hb, "query_ms": hq, "memory_mb": None,
                      "recall64": float(np.mean([len(set(g) & set(t)) / 64
                                                 for g, t in zip(got, truth, strict=True)]))}
    out["n"] = n
    console.log(out)
    return out


def plot(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ns = [r["n"] for r in results]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    axes[0].loglog(ns, [r["p50_ms"] for r in results], "o-", label="search p50")
    axes[0].loglog(ns, [r["p95_ms"] for r in results], "s--", label="search p95")
    axes[0].loglog(ns, [r["filtered_p50_ms"] for r in results], "^-", label="10% tag filter p50")
    axes[0].set_xlabel("learnwares in the island (N)")
    axes[0].set_ylabel("latency (ms)")
    axes[0].legend()
    axes[0].grid(True, which="both", alpha=0.3)
    axes[1].loglog(ns, [r["rss_mb"] for r in results], "o-", label="RSS after build")
    axes[1].loglog(ns, [r["build_s"] for r in results], "s--", label="index build (s)")
    axes[1].set_xlabel("learnwares in the island (N)")
    axes[1].set_ylabel("MB / seconds")
    axes[1].legend()
    axes[1].grid(True, which="both", alpha=0.3)
    fig.suptitle(f"island index (usearch HNSW, {results[0]['dtype']}), d=16, K=32")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def markdown(results: list[dict[str, Any]]) -> str:
    """The BENCHMARKS.md table of a run."""
    head = ("| N | index | search p50 / p95 (ms) | 10% tag filter p50 / p95 (ms) | recall@10 (min) "
            "| build / reopen (s) | RSS after build (MB) | bulk load (/s) | inserts / deletes (/s) "
            "| first search after a write |\n|---:|---|---|---|---|---|---:|---:|---|---|\n")
    rows = [
        f"| {r['n']:,} | {'HNSW ' + r['dtype'] if r['graph'] else 'exact matrix'} "
        f"| {r['p50_ms']:.0f} / {r['p95_ms']:.0f} | {r['filtered_p50_ms']:.0f} / "
        f"{r['filtered_p95_ms']:.0f} | {r['recall10']:.3f} ({r['recall10_min']:.1f}) "
        f"| {r['build_s']:.1f} / {r['reopen_s']:.1f} | {r['rss_mb']:.0f} "
        f"| {r['bulk_load_per_s']:.0f} | {r['inserts_per_s']:.0f} / {r['deletes_per_s']:.0f} "
        f"| +{r['first_after_write_extra_ms']:.1f} ms |"
        for r in results]
    return head + "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    global ARGS
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, nargs="+", default=[10_000])
    p.add_argument("--queries", type=int, default=20)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--writes", type=int, default=30)
    p.add_argument("--base", type=int, default=300)
    p.add_argument("--dtype", choices=["f32", "f16", "i8"], default="f32")
    p.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "learndock-bench")
    p.add_argument("--compare-ann", type=int, default=0)
    p.add_argument("--writes-only", action="store_true",
                   help="reopen the cached markets' saved indexes and measure writes only")
    p.add_argument("--out", type=Path, default=RESULTS)
    ARGS = p.parse_args(argv)
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    Xa, Xb, ya, yb = pooled_digits()
    base = fit_many(Xa, ya, ARGS.base, SEED, "base")
    ARGS.out.mkdir(parents=True, exist_ok=True)
    payload: dict[str, Any] = {"machine": machine_info(), "args": {
        k: str(v) for k, v in vars(ARGS).items()}}
    if ARGS.compare_ann:
        payload["compare_ann"] = compare_ann(ARGS.compare_ann, base)
        (ARGS.out / f"compare_ann_{ARGS.compare_ann}.json").write_text(
            json.dumps(payload, indent=1))
        return 0
    queries = fit_many(Xb, yb, ARGS.queries, SEED + 10_000, "query")
    if ARGS.writes_only:
        payload["writes"] = [writes_only(n, base, queries) for n in ARGS.n]
        tag = "-".join(str(n) for n in ARGS.n) + f"-{ARGS.dtype}"
        (ARGS.out / f"index_writes_{tag}.json").write_text(json.dumps(payload, indent=1))
        return 0
    results = [run_size(n, base, queries, Xa, ya) for n in ARGS.n]
    payload["results"] = results
    tag = "-".join(str(n) for n in ARGS.n) + f"-{ARGS.dtype}"
    (ARGS.out / f"index_scale_{tag}.json").write_text(json.dumps(payload, indent=1))
    if len(results) > 1:
        plot(results, ARGS.out / f"index_scale_{tag}.png")
    (ARGS.out / f"index_scale_{tag}.md").write_text(markdown(results))
    for r in results:
        console.print(
            f"N={r['n']:>9,}  p50 {r['p50_ms']:6.1f} ms  p95 {r['p95_ms']:6.1f} ms  "
            f"filtered p50 {r['filtered_p50_ms']:6.1f} ms  recall@10 {r['recall10']:.3f} "
            f"(min {r['recall10_min']:.1f})  build {r['build_s']:6.1f} s  reopen "
            f"{r['reopen_s']:5.1f} s  RSS {r['rss_mb']:6.0f} MB  load {r['bulk_load_per_s']:6.0f}/s"
            f"  inserts {r['inserts_per_s']:5.1f}/s  deletes {r['deletes_per_s']:5.1f}/s  "
            f"first-after-write +{r['first_after_write_extra_ms']:.1f} ms")
    return 0


ARGS: Any = None

if __name__ == "__main__":
    raise SystemExit(main())
