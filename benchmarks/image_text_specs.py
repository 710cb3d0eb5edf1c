"""Image and text specs: generation time, identification, mixture coverage and privacy.

    python -m benchmarks.image_text_specs [--quick] [--out benchmarks/results/image_text]

Writes ``report.md``, ``results.json``, ``BENCHMARKS-section.md`` and two plots to ``--out``.

**1. Image spec time.** 12,000 Fashion-MNIST train images (seeded sample), CPU: learndock's
``RandomConvEncoder`` (encode) + ``RKMEImageSpec.fit`` (n_points 100), median of 3 runs; and,
with ``.venv-ref``, the reference engine's ``generate_rkme_image_spec`` (its defaults, CPU) on
the same images in the same run. Its cost is one random-feature pass over (up to) 5,000 images
through 16 random conv nets per optimisation step, so the full run uses ``--ref-steps`` (default
0: the initial pass and beta solve only) and reports the measured pass time and the implied
lower bound for its default 100 steps.

**2. Image identification** (the reference's protocol). Learnwares: 4 classes each at
0.4:0.4:0.1:0.1 from the train split; users: 6 classes at 0.3:0.3:0.1:0.1:0.1:0.1 from the
test split. Single search: hit-rate@1/@5 of a learnware covering the most user class mass (ties
count), mean regret in covered mass. Mixture: the simplex-QP mixture that ``Market.search``
computes (``learndock.search.statistical``: top 16 by MMD, at most 5 members), the user class
mass covered by the union of its members, and how often it covers all 6 classes against an
oracle union of the same size. Methods: ours (RandomConvEncoder + RKMEImageSpec), a pixel
baseline (``RKMETableSpec`` on flattened pixels / 255, gamma 1/d, unit scale) and -- only with
``--ref-image-search N`` (hours at its defaults on a CPU) -- the reference's image spec with its
own ``EasyStatSearcher``.

**3. Privacy.** Specs built from 3,000 (and from the 12,000 of part 1) training images:
``privacy_report`` -- each reduced-set point's distance to its nearest training sample over the
median nearest-neighbour distance between training samples, in the space the spec lives in
(ours: the encoder's 512-d space; pixel baseline: pixels / 255; reference: its 32 x 32
per-channel-standardised pixel space, the space its z lives in).

**4. Text** (BBC News, 5 topics). Learnwares: every 3-topic subset x 2 halves of the train
split; users: every topic pair x 2 halves of the test split. Spec time (cold encode, cached
encode, fit), hit-rate@1/@5 of a learnware whose topics contain both user topics, mixture
coverage. Ours (``RKMETextSpec``, MiniLM, gamma 2) vs the reference's table RKME
(``generate_rkme_table_spec``, its default gamma 0.1) over the *same* MiniLM embeddings -- its
own text spec downloads its encoder at run time, which fails offline -- ranked by its
``EasyStatSearcher``; plus a control: learndock's table RKME under the reference's gamma 0.1.

``--quick`` (CI smoke, < 2 min): small sizes everywhere, fits capped at 5 rounds, the reference's
image spec on a 100-image sample; its numbers are not benchmarks.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import describe_machine, machine_info

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO_ROOT / "benchmarks" / "results" / "image_text"
CACHE_ROOT = REPO_ROOT / "benchmarks" / "results" / "cache"
#: Shared with benchmarks/scenarios/text.py: content-addressed, safe for several processes.
TEXT_CACHE = CACHE_ROOT / "text" / "embeddings.sqlite3"
IMAGE_CACHE = CACHE_ROOT / "image_text"
SEED = 0
LW_RATIOS = (0.4, 0.4, 0.1, 0.1)
USER_RATIOS = (0.3, 0.3, 0.1, 0.1, 0.1, 0.1)
MIXTURE_POOL = 16  # Market.search defaults
MAX_MIXTURE = 5
REF_DEFAULT_STEPS = 100  # generate_rkme_image_spec's default
REF_DEFAULT_SAMPLE = 5000
REF_DEFAULT_K = 50
TIE = 1e-9


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Config:
    quick: bool
    timing_images: int
    repeats: int
    n_points: int
    n_learnwares: int
    lw_size: tuple[int, int]
    n_users: int
    user_size: tuple[int, int]
    privacy_images: int
    text_cap: tuple[int, int] | None  # max train / test articles per topic (quick)
    text_cold_articles: int
    threads: int
    ref_steps: int
    ref_sample_size: int  # for the timed run (the reference's default unless --quick)
    ref_image_search: int
    ref_search_steps: int
    ref_search_sample_size: int
    ref_search_n_models: int | None
    ref_search_mixture: bool
    max_iter: int | None  # None: the library's default

    @classmethod
    def make(cls, args: argparse.Namespace) -> Config:
        q = bool(args.quick)
        return cls(
            quick=q,
            timing_images=2_000 if q else 12_000,
            repeats=1 if q else 3,
            n_points=100,
            n_learnwares=args.n_learnwares or (8 if q else 50),
            lw_size=(400, 600) if q else (2_000, 3_000),
            n_users=args.n_users or (8 if q else 50),
            user_size=(300, 600) if q else (1_000, 3_000),
            privacy_images=800 if q else 3_000,
            text_cap=(16, 8) if q else None,
            text_cold_articles=16 if q else 200,
            threads=args.threads,
            ref_steps=args.ref_steps,
            ref_sample_size=100 if q else REF_DEFAULT_SAMPLE,
            ref_image_search=args.ref_image_search,
            ref_search_steps=args.ref_search_steps,
            ref_search_sample_size=args.ref_search_sample_size,
            ref_search_n_models=args.ref_search_n_models or None,
            ref_search_mixture=not args.ref_search_no_mixture,
            max_iter=5 if q else None,
        )

    def fit_kwargs(self) -> dict[str, Any]:
        kw: dict[str, Any] = {"random_state": SEED, "progress": False}
        if self.max_iter is not None:
            kw["max_iter"] = self.max_iter
        return kw


def median(values: list[float]) -> float | None:
    return float(statistics.median(values)) if values else None


# ------------------------------------------------------------------------------ spec makers
def image_encoder() -> Any:
    from learndock.spec.encoders import RandomConvEncoder

    return RandomConvEncoder(device="cpu")


def fit_ours_image(images: np.ndarray, E: np.ndarray, enc: Any, cfg: Config) -> Any:
    from learndock.spec.embedding import RKMEImageSpec

    return RKMEImageSpec.fit(images, cfg.n_points, encoder=enc, embeddings=E, **cfg.fit_kwargs())


def pixels(images: np.ndarray) -> np.ndarray:
    return images.reshape(images.shape[0], -1).astype(np.float64) / 255.0


def fit_pixel(images: np.ndarray, cfg: Config) -> Any:
    """The pixel-space baseline: RBF on pixels / 255, gamma 1/d, unit scale."""
    from learndock.spec.table import RKMETableSpec

    P = pixels(images)
    return RKMETableSpec.fit(P, cfg.n_points, gamma=1.0 / P.shape[1], scale=None,
                             **cfg.fit_kwargs())


def as_reference_images(images: np.ndarray) -> np.ndarray:
    """[N, 28, 28] uint8 -> [N, 1, 28, 28] float32 in [0, 1] (the layout the reference wants)."""
    return (images[:, None, :, :].astype(np.float32) / 255.0).copy()


def encode_rows(enc: Any, images: np.ndarray, rows: np.ndarray, split: str,
                use_cache: bool) -> np.ndarray:
    """Embeddings of ``images[rows]`` as a full-split float32 array (rows not asked: zeros).

    With ``use_cache`` the whole split is encoded once and kept under
    ``benchmarks/results/cache/image_text`` (float32 is lossless: the encoder computes in
    float32), keyed by the encoder identity.
    """
    key = enc.identity.replace(":", "-")
    path = IMAGE_CACHE / f"{key}-fashion-{split}.npy"
    if use_cache and path.exists():
        E = np.load(path, allow_pickle=False)
        if E.shape == (images.shape[0], enc.dimension):
            return E
    todo = np.arange(images.shape[0]) if use_cache else np.unique(rows)
    E = np.zeros((images.shape[0], enc.dimension), dtype=np.float32)
    t0 = time.perf_counter()
    E[todo] = enc.encode(images[todo], progress=False).astype(np.float32)
    log(f"encoded {len(todo)} {split} images in {time.perf_counter() - t0:.1f}s")
    if use_cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, E, allow_pickle=False)
    return E


# ------------------------------------------------------------------------------ search
def rank_and_mix(user: Any, cands: list[Any], kernel: Any) -> dict[str, Any]:
    """What ``Market.search`` computes for one island: exact MMD ranking + simplex mixture."""
    from learndock.market.market import MIXTURE_MIN_IMPROVEMENT
    from learndock.search.statistical import exact_scores, gram, mixture_weights

    t0 = time.perf_counter()
    mmd, score, ip = exact_scores(user, cands, kernel)
    order = np.lexsort((np.arange(len(mmd)), np.round(mmd, 12)))
    pool = order[:MIXTURE_POOL]
    g = gram([cands[i] for i in pool], kernel)
    w, mix2 = mixture_weights(user.self_inner, g, ip[pool], MAX_MIXTURE)
    keep = [i for i in np.argsort(-w, kind="stable") if w[i] > 1e-4]
    best2 = float(mmd[order[0]]) ** 2
    improvement = 1.0 - mix2 / best2 if best2 > 0 else 0.0
    return {
        "ranking": order.tolist(),
        "mmd": mmd[order].tolist(),
        "mixture": [int(pool[i]) for i in keep],
        "weights": [float(w[i]) for i in keep],
        "improvement": float(improvement),
        "recommended": bool(len(keep) >= 2 and improvement >= MIXTURE_MIN_IMPROVEMENT),
        "seconds": time.perf_counter() - t0,
    }


def search_all(lw_specs: list[Any], user_specs: list[Any]) -> list[dict[str, Any]]:
    from learndock.search.statistical import Candidate

    cands = [Candidate(str(i), s.z, s.beta, s.self_inner) for i, s in enumerate(lw_specs)]
    kernel = lw_specs[0].kernel
    return [rank_and_mix(u, cands, kernel) for u in user_specs]


# ------------------------------------------------------------------------------ metrics
def best_union(masks: np.ndarray, p: np.ndarray, m: int) -> tuple[float, bool]:
    """Oracle: the most user mass (and whether all of the user's classes) that the union of
    ``m`` learnwares can cover. Exact, by dynamic programming over support-restricted masks."""
    support = np.flatnonzero(p > 0)
    bits = {int(sum(1 << j for j, c in enumerate(support) if row[c])) for row in masks}
    reach = {0}
    for _ in range(m):
        reach = reach | {a | b for a in reach for b in bits}
    mass = {r: float(sum(p[c] for j, c in enumerate(support) if r >> j & 1)) for r in reach}
    full = (1 << len(support)) - 1
    return max(mass.values()), full in reach


def identification_metrics(results: list[dict[str, Any]], lw_masks: np.ndarray,
                           user_p: np.ndarray) -> dict[str, Any]:
    """Hit-rates, regret and mixture coverage. ``lw_masks``: [n_lw, C] bool (classes or topics
    each learnware holds); ``user_p``: [n_users, C] class mass of each user."""
    cover = user_p @ lw_masks.T.astype(np.float64)
    best = cover.max(axis=1)
    hit1, hit5, regret, top1_mass = [], [], [], []
    mix_size, mix_mass, mix_all, orc_mass, orc_all, reuse_mass, reuse_all, rec = ([] for _ in
                                                                                  range(8))
    for u, r in enumerate(results):
        rank = r["ranking"]
        hit1.append(cover[u, rank[0]] >= best[u] - TIE)
        hit5.append(bool(np.any(cover[u, rank[:5]] >= best[u] - TIE)))
        regret.append(float(best[u] - cover[u, rank[0]]))
        top1_mass.append(float(cover[u, rank[0]]))
        need = user_p[u] > 0
        members = r["mixture"] or [rank[0]]
        union = lw_masks[members].any(axis=0)
        mix_size.append(len(members))
        mix_mass.append(float(user_p[u] @ union))
        mix_all.append(bool(np.all(union[need])))
        om, oa = best_union(lw_masks, user_p[u], len(members))
        orc_mass.append(om)
        orc_all.append(oa)
        reuse = members if r.get("recommended", bool(r["mixture"])) else [rank[0]]
        ru = lw_masks[reuse].any(axis=0)
        reuse_mass.append(float(user_p[u] @ ru))
        reuse_all.append(bool(np.all(ru[need])))
        rec.append(bool(r.get("recommended", bool(r["mixture"]))))
    return {
        "n_users": len(results),
        "hit_at_1": float(np.mean(hit1)),
        "hit_at_5": float(np.mean(hit5)),
        "mean_regret": float(np.mean(regret)),
        "mean_top1_covered_mass": float(np.mean(top1_mass)),
        "mean_best_covered_mass": float(np.mean(best)),
        "mixture_mean_size": float(np.mean(mix_size)),
        "mixture_union_mass": float(np.mean(mix_mass)),
        "mixture_all_covered": float(np.mean(mix_all)),
        "oracle_union_mass_same_size": float(np.mean(orc_mass)),
        "oracle_all_covered_same_size": float(np.mean(orc_all)),
        "mixture_recommended": float(np.mean(rec)),
        "reuse_set_mass": float(np.mean(reuse_mass)),
        "reuse_set_all_covered": float(np.mean(reuse_all)),
        "mean_search_ms": float(np.mean([r.get("seconds", np.nan) for r in results]) * 1e3),
    }


# ------------------------------------------------------------------------------ reference
def reference_available(enabled: bool) -> tuple[bool, str]:
    if not enabled:
        return False, "disabled (--no-reference)"
    from benchmarks.reference import find_reference_python

    python = find_reference_python()
    if python is None:
        return False, "not installed (.venv-ref; see benchmarks/reference.py)"
    return True, str(python)


def run_reference_image(X: np.ndarray, *, steps: int, sample_size: int, threads: int,
                        transformed: bool) -> dict[str, Any]:
    from benchmarks.reference import reference_image_spec

    try:
        out = reference_image_spec(as_reference_images(X), k=REF_DEFAULT_K, steps=steps,
                                   sample_size=sample_size, seed=SEED, threads=threads,
                                   transformed=transformed, timeout=3 * 3600)
    except subprocess.TimeoutExpired:
        return {"status": "timeout"}
    except (RuntimeError, OSError) as exc:
        return {"status": "failed", "error": str(exc)[-1500:]}
    if out is None:
        return {"status": "not installed"}
    out["status"] = "ok"
    return out


def reference_pass_summary(out: dict[str, Any], n_images: int, sample_size: int,
                           steps: int) -> dict[str, Any]:
    rows = min(n_images, sample_size)
    pr, ps = np.asarray(out["pass_rows"]), np.asarray(out["pass_seconds"])
    data = ps[pr == rows]
    pass_s = float(np.mean(data)) if data.size else float("nan")
    return {
        "status": "ok",
        "seconds": out["seconds"],
        "cpu_seconds": out["cpu_seconds"],
        "process_wall_seconds": out.get("wall_seconds"),
        "peak_rss_mib": None if not out.get("peak_rss_bytes") else out["peak_rss_bytes"] / 2**20,
        "steps": steps,
        "sample_size": sample_size,
        "rows_per_pass": rows,
        "data_passes": int(data.size),
        "data_pass_seconds": pass_s,
        # 1 initial pass + 1 per step; the z update and beta QP of each step come on top
        "default_steps_lower_bound_seconds": pass_s * (REF_DEFAULT_STEPS + 1)
        * min(n_images, REF_DEFAULT_SAMPLE) / rows,
        "z_moved_max_abs": float(np.max(np.abs(out["z"] - out["z_init"])))
        if np.size(out["z_init"]) else None,
        "torch_threads": out["torch_threads"],
        "torchvision": out["torchvision"],
        "k": int(np.asarray(out["beta"]).shape[0]),
    }


def reference_as_spec(z: np.ndarray, beta: np.ndarray) -> Any:
    """The reference's (z, beta) as a table spec over its flattened, standardised 32x32 pixel
    space (unit scale), so ``privacy_report`` measures it like ours. beta is clipped at 0 and
    renormalised (it does not enter the privacy measure)."""
    from learndock.spec.kernels import GaussianKernel
    from learndock.spec.table import RKMETableSpec

    Z = np.asarray(z, dtype=np.float64).reshape(z.shape[0], -1)
    b = np.clip(np.asarray(beta, dtype=np.float64).reshape(-1), 0.0, None)
    return RKMETableSpec(Z, b / b.sum(), GaussianKernel(1.0 / Z.shape[1], np.ones(Z.shape[1])))


# ------------------------------------------------------------------------------ part 1
def part_image_timing(cfg: Config, X_train: np.ndarray, ref_ok: bool,
                      state: dict[str, Any]) -> dict[str, Any]:
    rng = np.random.default_rng(SEED)
    rows = np.sort(rng.choice(X_train.shape[0], cfg.timing_images, replace=False))
    X = X_train[rows]
    enc = image_encoder()
    enc.encode(X[:64], progress=False)  # torch start-up, not part of the measurement
    enc_s, fit_s = [], []
    E = spec = None
    for r in range(cfg.repeats):
        t0 = time.perf_counter()
        E = enc.encode(X, progress=False)
        enc_s.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        spec = fit_ours_image(X, E, enc, cfg)
        fit_s.append(time.perf_counter() - t0)
        log(f"ours image spec run {r + 1}: encode {enc_s[-1]:.1f}s fit {fit_s[-1]:.1f}s")
    state.update(timing_rows=rows, timing_E=E, timing_spec=spec)
    ours = {
        "n_images": int(X.shape[0]),
        "encode_seconds": enc_s,
        "fit_seconds": fit_s,
        "encode_median": median(enc_s),
        "fit_median": median(fit_s),
        "total_median": median([a + b for a, b in zip(enc_s, fit_s, strict=True)]),
        "images_per_second_encode": X.shape[0] / median(enc_s),
        "fit_rounds": spec.fit_info.get("rounds"),
        "fit_converged": spec.fit_info.get("converged"),
        "encoder": enc.info(),
    }
    res: dict[str, Any] = {"ours": ours}
    if ref_ok:
        log(f"reference image spec on {X.shape[0]} images (steps={cfg.ref_steps}, "
            f"sample_size={cfg.ref_sample_size}) ...")
        out = run_reference_image(X, steps=cfg.ref_steps, sample_size=cfg.ref_sample_size,
                                  threads=cfg.threads, transformed=True)
        if out["status"] == "ok":
            res["reference"] = reference_pass_summary(out, X.shape[0], cfg.ref_sample_size,
                                                      cfg.ref_steps)
            state["timing_ref"] = out
            log(f"reference: {out['seconds']:.1f}s")
        else:
            res["reference"] = {k: v for k, v in out.items() if k in ("status", "error")}
    return res


# ------------------------------------------------------------------------------ part 2
def draw_sets(rng: np.random.Generator, labels: np.ndarray, n_sets: int, ratios: tuple,
              size: tuple[int, int], n_classes: int = 10) -> list[dict[str, Any]]:
    pools = [np.flatnonzero(labels == c) for c in range(n_classes)]
    out = []
    for _ in range(n_sets):
        classes = rng.choice(n_classes, len(ratios), replace=False)
        n = int(rng.integers(size[0], size[1] + 1))
        counts = [int(round(n * r)) for r in ratios]
        rows = np.concatenate([rng.choice(pools[c], k, replace=False)
                               for c, k in zip(classes, counts, strict=True)])
        p = np.zeros(n_classes)
        p[classes] = np.asarray(counts) / sum(counts)
        out.append({"classes": [int(c) for c in classes], "counts": counts,
                    "rows": np.sort(rows), "p": p})
    return out


def part_image_identification(cfg: Config, data: dict[str, Any], ref_ok: bool,
                              state: dict[str, Any]) -> dict[str, Any]:
    Xtr, ytr, Xte, yte = data["Xtr"], data["ytr"], data["Xte"], data["yte"]
    rng = np.random.default_rng(SEED + 1)
    lws = draw_sets(rng, ytr, cfg.n_learnwares, LW_RATIOS, cfg.lw_size)
    users = draw_sets(rng, yte, cfg.n_users, USER_RATIOS, cfg.user_size)
    lw_masks = np.array([np.isin(np.arange(10), s["classes"]) for s in lws])
    user_p = np.array([u["p"] for u in users])
    enc = image_encoder()
    need_tr = np.concatenate([s["rows"] for s in lws] + [state["privacy_rows"]])
    Etr = encode_rows(enc, Xtr, need_tr, "train", use_cache=not cfg.quick)
    Ete = encode_rows(enc, Xte, np.concatenate([u["rows"] for u in users]), "test",
                      use_cache=not cfg.quick)
    state["Etr"] = Etr
    methods: dict[str, Any] = {}
    specs: dict[str, tuple[list, list]] = {}
    for name, fit in (
        ("ours", lambda X, E: fit_ours_image(X, E, enc, cfg)),
        ("pixel", lambda X, E: fit_pixel(X, cfg)),
    ):
        fit_s: list[float] = []

        def timed(X: np.ndarray, E: np.ndarray, fit: Any = fit, fit_s: list = fit_s) -> Any:
            t0 = time.perf_counter()
            s = fit(X, E)
            fit_s.append(time.perf_counter() - t0)
            return s

        t0 = time.perf_counter()
        lw_specs = [timed(Xtr[s["rows"]], Etr[s["rows"]].astype(np.float64)) for s in lws]
        user_specs = [timed(Xte[u["rows"]], Ete[u["rows"]].astype(np.float64)) for u in users]
        results = search_all(lw_specs, user_specs)
        m = identification_metrics(results, lw_masks, user_p)
        m["fit_seconds_median"] = median(fit_s)
        m["wall_seconds"] = time.perf_counter() - t0
        specs[name] = (lw_specs, user_specs)
        methods[name] = {"metrics": m, "per_user": [
            {k: r[k] for k in ("ranking", "mixture", "weights", "recommended", "improvement")}
            | {"ranking": r["ranking"][:10]} for r in results]}
        log(f"image identification {name}: hit@1 {m['hit_at_1']:.2f} hit@5 {m['hit_at_5']:.2f} "
            f"mixture all-6 {m['mixture_all_covered']:.2f} ({m['wall_seconds']:.0f}s)")
    if ref_ok and cfg.ref_image_search > 0:
        ref = reference_image_identification(cfg, Xtr, Xte, lws, users)
        methods["reference"] = ref
        if "metrics" in ref:  # ours and the pixel baseline on the same subset
            n = cfg.ref_image_search
            for name, (lw_specs, user_specs) in specs.items():
                sub = identification_metrics(search_all(lw_specs[:n], user_specs[:n]),
                                             lw_masks[:n], user_p[:n])
                sub["fit_seconds_median"] = methods[name]["metrics"]["fit_seconds_median"]
                ref.setdefault("same_subset", {})[name] = {"metrics": sub}
    elif not ref_ok:
        methods["reference"] = {"status": "reference not available"}
    else:
        methods["reference"] = {"status": "skipped (run with --ref-image-search N)"}
    return {
        "learnwares": [{"classes": s["classes"], "counts": s["counts"]} for s in lws],
        "users": [{"classes": u["classes"], "counts": u["counts"]} for u in users],
        "methods": methods,
    }


def reference_image_identification(cfg: Config, Xtr: np.ndarray, Xte: np.ndarray,
                                   lws: list, users: list) -> dict[str, Any]:
    from benchmarks.reference import reference_spec_search

    n = cfg.ref_image_search
    lw_sub, user_sub = lws[:n], users[:n]
    conf = {"kind": "image", "k": REF_DEFAULT_K, "steps": cfg.ref_search_steps,
            "sample_size": cfg.ref_search_sample_size, "threads": cfg.threads,
            "max_search_num": MAX_MIXTURE, "seed": SEED, "mixture": cfg.ref_search_mixture}
    if cfg.ref_search_n_models:
        conf["n_models"] = cfg.ref_search_n_models
    log(f"reference image identification: {n} learnwares x {n} users, {conf} ...")
    try:
        out = reference_spec_search([as_reference_images(Xtr[s["rows"]]) for s in lw_sub],
                                    [as_reference_images(Xte[u["rows"]]) for u in user_sub],
                                    conf, timeout=6 * 3600)
    except (subprocess.TimeoutExpired, RuntimeError, OSError) as exc:
        return {"status": f"failed: {str(exc)[-800:]}"}
    if out is None:
        return {"status": "reference not available"}
    results = [{"ranking": u["ranking"], "mixture": u["mixture"],
                "seconds": u["rank_seconds"]} for u in out["users"]]
    masks = np.array([np.isin(np.arange(10), s["classes"]) for s in lw_sub])
    m = identification_metrics(results, masks, np.array([u["p"] for u in user_sub]))
    m["fit_seconds_median"] = median(out["learnware_spec_seconds"]
                                     + [u["spec_seconds"] for u in out["users"]])
    if conf["mixture"]:
        m["mixture_returned"] = float(np.mean([bool(u["mixture"]) for u in out["users"]]))
    else:  # ranking only: no mixture to score
        for key in [k for k in m if k.startswith(("mixture", "oracle", "reuse"))]:
            m[key] = None
    rank_s = [u["rank_seconds"] for u in out["users"]]
    return {"status": "ok", "config": conf, "metrics": m, "wall_seconds": out["wall_seconds"],
            "rank_seconds_per_user": median(rank_s),
            # its ranking computes dist() per learnware: 3 inner products each
            "inner_product_seconds": median(rank_s) / (3 * n)}


# ------------------------------------------------------------------------------ part 3
def typical_nn_exact(T: np.ndarray, n_reference: int = 2000, random_state: int = 0) -> float:
    """The median nearest-neighbour distance between training samples that ``privacy_report``
    means to compute (same seeded sample), with each sample excluded *by index* and exact
    duplicates by a relative tolerance. ``privacy_report`` excludes a sample by ``d <= 1e-18``
    on BLAS-identity squared distances, whose rounding for a sample against itself is about
    1e-16 x its squared norm; where that fails it measures a sample's distance to itself."""
    from learndock.spec.kernels import sq_dists

    T = np.asarray(T, dtype=np.float64)
    rng = np.random.default_rng(random_state)
    ref = rng.choice(T.shape[0], size=min(n_reference, T.shape[0]), replace=False)
    sq = np.einsum("ij,ij->i", T, T)
    out = []
    for start in range(0, len(ref), 256):
        idx = ref[start:start + 256]
        d = sq_dists(T[idx], T, sq[idx], sq)
        d[np.arange(len(idx)), idx] = np.inf
        d[d <= 1e-9 * (sq[idx][:, None] + sq[None, :])] = np.inf
        out.append(np.sqrt(d.min(axis=1)))
    return float(np.median(np.concatenate(out)))


def with_exact_typical(d: dict[str, Any], typical: float, near_ratio: float) -> dict[str, Any]:
    """Privacy summary from ``privacy_report``'s output ``d`` (``ratios``, ``beta``,
    ``typical_nn_distance``) with the ratios rescaled to the exact typical distance."""
    lib = float(d["typical_nn_distance"])
    ratios = np.asarray(d["ratios"], dtype=np.float64) * lib / typical
    b = np.asarray(d["beta"], dtype=np.float64) if d.get("beta") is not None else None
    near = ratios < near_ratio
    out = dict(d)
    out.update(
        library_typical_nn_distance=lib,
        library_min_ratio=float(d.get("library_min_ratio", d["min_ratio"])),
        library_n_near_copies=int(d.get("library_n_near_copies", d["n_near_copies"])),
        typical_nn_distance=typical,
        min_ratio=float(ratios.min()),
        median_ratio=float(np.median(ratios)),
        p05_ratio=float(np.quantile(ratios, 0.05)),
        n_near_copies=int(near.sum()),
        near_copy_beta_sum=None if b is None else float(b[near].sum() / b.sum()),
        ratios=[round(float(r), 4) for r in ratios],
    )
    return out


def part_privacy(cfg: Config, data: dict[str, Any], ref_ok: bool,
                 state: dict[str, Any]) -> dict[str, Any]:
    from learndock.spec.privacy import NEAR_COPY_RATIO, privacy_report

    Xtr = data["Xtr"]
    enc = image_encoder()
    out: dict[str, Any] = {"near_copy_ratio": NEAR_COPY_RATIO, "sets": {}}

    def summary(rep: Any, beta: Any, T: np.ndarray) -> dict[str, Any]:
        d = rep.to_dict()
        d["ratios"] = np.asarray(d.pop("ratios"))
        d["beta"] = [float(b) for b in np.asarray(beta, dtype=np.float64).reshape(-1)]
        return with_exact_typical(d, typical_nn_exact(T), NEAR_COPY_RATIO)

    sets = [("privacy", state["privacy_rows"], None, None, None)]
    if "timing_spec" in state:
        sets.append(("timing", state["timing_rows"], state["timing_spec"], state["timing_E"],
                     state.get("timing_ref")))
    for label, rows, ours_spec, E, ref in sets:
        X = Xtr[rows]
        if E is None:
            E = state["Etr"][rows].astype(np.float64)
        if ours_spec is None:
            ours_spec = fit_ours_image(X, E, enc, cfg)
        res: dict[str, Any] = {"n_train": int(len(rows))}
        res["ours"] = summary(privacy_report(ours_spec, X, embeddings=E), ours_spec.beta, E)
        pix = fit_pixel(X, cfg)
        res["pixel"] = summary(privacy_report(pix, pixels(X)), pix.beta, pixels(X))
        if ref is None and ref_ok and label == "privacy" and not cfg.quick:
            # Its z never depends on the data (checked below against the 12,000-image spec), so
            # a small sample_size gives the z a default run would; --transformed gives X in
            # z's space with this set's own standardisation.
            ref = run_reference_image(X, steps=1, sample_size=60, threads=cfg.threads,
                                      transformed=True)
            if ref.get("status") == "ok":
                state["privacy_ref"] = ref
        if ref is not None and ref.get("status") == "ok":
            Xs = ref["X_transformed"].reshape(len(rows), -1).astype(np.float64)
            res["reference"] = summary(privacy_report(reference_as_spec(ref["z"], ref["beta"]),
                                                      Xs), ref["beta"], Xs)
            res["reference"]["z_moved_from_init_max_abs"] = float(
                np.max(np.abs(ref["z"] - ref["z_init"])))
        log(f"privacy ({label}): ours min {res['ours']['min_ratio']:.2f} pixel min "
            f"{res['pixel']['min_ratio']:.2f}"
            + (f" reference min {res['reference']['min_ratio']:.2f}" if "reference" in res
               else ""))
        out["sets"][label] = res
    a, b = state.get("privacy_ref"), state.get("timing_ref")
    if a is not None and b is not None and a["z"].shape == b["z"].shape:
        out["reference_z_identical_across_data_sets"] = bool(np.array_equal(a["z"], b["z"]))
    return out


# ------------------------------------------------------------------------------ part 4
def part_text(cfg: Config, ref_ok: bool, cache: Path) -> dict[str, Any]:
    from learndock.datasets import bbc_news
    from learndock.spec.embedding import RKMETextSpec
    from learndock.spec.encoders import MiniLMEncoder
    from learndock.spec.table import RKMETableSpec

    texts, y = bbc_news.load()
    tr, te = bbc_news.split()
    n_topics = len(bbc_news.TOPICS)
    if cfg.text_cap:
        tr = np.concatenate([tr[y[tr] == k][: cfg.text_cap[0]] for k in range(n_topics)])
        te = np.concatenate([te[y[te] == k][: cfg.text_cap[1]] for k in range(n_topics)])
    res: dict[str, Any] = {"n_train": int(len(tr)), "n_test": int(len(te)), "cache": str(cache)}

    # --- spec time: cold (no cache) on a fixed sample, cached on the whole train split
    cold = MiniLMEncoder(cache=False, device="cpu")
    t0 = time.perf_counter()
    cold.encode(["warm-up"])
    res["model_load_seconds"] = time.perf_counter() - t0
    sample = [texts[i] for i in tr[: cfg.text_cold_articles]]
    t0 = time.perf_counter()
    E_cold = cold.encode(sample, progress=False)
    res["cold_articles"] = len(sample)
    res["cold_encode_seconds"] = time.perf_counter() - t0
    res["cold_articles_per_second"] = len(sample) / res["cold_encode_seconds"]
    enc = MiniLMEncoder(cache=cache, device="cpu")
    all_rows = np.concatenate([tr, te])
    t0 = time.perf_counter()
    E_all = enc.encode([texts[i] for i in all_rows], progress=False)
    res["cache_fill_seconds"] = time.perf_counter() - t0  # cold where the cache lacked them
    E = np.zeros((len(texts), E_all.shape[1]))
    E[all_rows] = E_all
    res["cache_vs_cold_max_abs_diff"] = float(np.max(np.abs(E[tr[: len(sample)]] - E_cold)))
    train_texts = [texts[i] for i in tr]
    cached_s, fit_s = [], []
    for _ in range(cfg.repeats):
        t0 = time.perf_counter()
        Et = enc.encode(train_texts, progress=False)
        cached_s.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        RKMETextSpec.fit(train_texts, cfg.n_points, encoder=enc, embeddings=Et,
                         **cfg.fit_kwargs())
        fit_s.append(time.perf_counter() - t0)
    res["train_split_cached_encode_median"] = median(cached_s)
    res["train_split_fit_median"] = median(fit_s)
    res["train_split_cold_encode_estimate"] = len(tr) / res["cold_articles_per_second"]
    log(f"text spec: load {res['model_load_seconds']:.1f}s, cold {res['cold_articles_per_second']:.1f}"
        f" articles/s, cached encode {median(cached_s):.2f}s, fit {median(fit_s):.1f}s")

    # --- identification
    rng = np.random.default_rng(SEED + 2)
    halves_tr = {k: np.array_split(rng.permutation(tr[y[tr] == k]), 2) for k in range(n_topics)}
    halves_te = {k: np.array_split(rng.permutation(te[y[te] == k]), 2) for k in range(n_topics)}
    lws = [{"topics": list(s), "half": h,
            "rows": np.sort(np.concatenate([halves_tr[k][h] for k in s]))}
           for s in itertools.combinations(range(n_topics), 3) for h in (0, 1)]
    users = [{"topics": list(pair), "half": h,
              "rows": np.sort(np.concatenate([halves_te[k][h] for k in pair]))}
             for pair in itertools.combinations(range(n_topics), 2) for h in (0, 1)]
    lw_masks = np.array([np.isin(np.arange(n_topics), s["topics"]) for s in lws])
    user_p = np.array([np.bincount(y[u["rows"]], minlength=n_topics) / len(u["rows"])
                       for u in users])
    res["n_learnwares"], res["n_users"] = len(lws), len(users)
    res["learnware_sizes"] = [int(len(s["rows"])) for s in lws]
    res["user_sizes"] = [int(len(u["rows"])) for u in users]
    methods: dict[str, Any] = {}
    makers = {
        "ours": lambda rows: RKMETextSpec.fit([texts[i] for i in rows], cfg.n_points,
                                              encoder=enc, embeddings=E[rows],
                                              **cfg.fit_kwargs()),
        "table_gamma_0.1": lambda rows: RKMETableSpec.fit(E[rows], cfg.n_points, gamma=0.1,
                                                          scale=None, **cfg.fit_kwargs()),
    }
    for name, make in makers.items():
        fit_times: list[float] = []

        def timed(rows: np.ndarray, make: Any = make, fit_times: list = fit_times) -> Any:
            t0 = time.perf_counter()
            s = make(rows)
            fit_times.append(time.perf_counter() - t0)
            return s

        lw_specs = [timed(s["rows"]) for s in lws]
        user_specs = [timed(u["rows"]) for u in users]
        results = search_all(lw_specs, user_specs)
        m = identification_metrics(results, lw_masks, user_p)
        m["fit_seconds_median"] = median(fit_times)
        methods[name] = {"metrics": m}
        log(f"text identification {name}: hit@1 {m['hit_at_1']:.2f} hit@5 {m['hit_at_5']:.2f}")
    if ref_ok:
        from benchmarks.reference import reference_spec_search

        try:
            out = reference_spec_search(
                [E[s["rows"]] for s in lws], [E[u["rows"]] for u in users],
                {"kind": "table", "gamma": 0.1, "k": cfg.n_points, "threads": 1,
                 "max_search_num": MAX_MIXTURE, "seed": SEED}, timeout=3600)
        except (subprocess.TimeoutExpired, RuntimeError, OSError) as exc:
            out = None
            methods["reference"] = {"status": f"failed: {str(exc)[-800:]}"}
        if out is not None:
            results = [{"ranking": u["ranking"], "mixture": u["mixture"],
                        "seconds": u["rank_seconds"]} for u in out["users"]]
            m = identification_metrics(results, lw_masks, user_p)
            m["fit_seconds_median"] = median(out["learnware_spec_seconds"]
                                             + [u["spec_seconds"] for u in out["users"]])
            m["mixture_returned"] = float(np.mean([bool(u["mixture"]) for u in out["users"]]))
            methods["reference"] = {"status": "ok", "metrics": m}
            log(f"text identification reference: hit@1 {m['hit_at_1']:.2f} "
                f"hit@5 {m['hit_at_5']:.2f}")
    else:
        methods["reference"] = {"status": "reference not available"}
    res["methods"] = methods
    return res


# ------------------------------------------------------------------------------ output
def f2(v: Any, digits: int = 2) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "n/a"
    return f"{v:.{digits}f}"


def fsec(v: Any) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "n/a"
    if v >= 3600:
        return f"{v / 3600:.1f} h"
    if v >= 120:
        return f"{v / 60:.1f} min"
    return f"{v:.2f} s" if v < 10 else f"{v:.1f} s"


def pct(v: Any) -> str:
    return "n/a" if v is None else f"{100 * v:.0f}%"


def pct_se(v: Any, n: int) -> str:
    """A rate with its binomial standard error, e.g. ``44% +- 7``."""
    if v is None:
        return "n/a"
    return f"{100 * v:.0f}% ± {100 * np.sqrt(v * (1 - v) / max(n, 1)):.0f}"


METHOD_LABELS = {
    "ours": "learndock (RandomConvEncoder + RKMEImageSpec)",
    "pixel": "pixel RBF baseline (RKMETableSpec on pixels/255, gamma 1/d)",
    "reference": "reference image spec + EasyStatSearcher",
}
TEXT_LABELS = {
    "ours": "learndock RKMETextSpec (MiniLM, gamma 2)",
    "table_gamma_0.1": "control: learndock table RKME on MiniLM, gamma 0.1",
    "reference": "reference table RKME on MiniLM (gamma 0.1) + EasyStatSearcher",
}


def ident_table(methods: dict[str, Any], labels: dict[str, str], n_classes: int) -> list[str]:
    lines = [
        "| method | hit@1 | hit@5 | mean regret | top-1 covered mass | mixture size | "
        "mixture union mass (oracle) | mixture covers all "
        f"{n_classes} (oracle) | mixture recommended | spec fit (median) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, m in methods.items():
        if "metrics" not in m:
            lines.append(f"| {labels.get(name, name)} | {m.get('status')} |" + " |" * 8)
            continue
        x = m["metrics"]
        note = f" ({x['n_users']} users)" if name == "reference" else ""
        lines.append(
            f"| {labels.get(name, name)}{note} | {pct_se(x['hit_at_1'], x['n_users'])} | "
            f"{pct_se(x['hit_at_5'], x['n_users'])} | "
            f"{f2(x['mean_regret'], 3)} | {f2(x['mean_top1_covered_mass'], 3)} | "
            f"{f2(x['mixture_mean_size'], 1)} | {f2(x['mixture_union_mass'], 3)} "
            f"({f2(x['oracle_union_mass_same_size'], 3)}) | {pct(x['mixture_all_covered'])} "
            f"({pct(x['oracle_all_covered_same_size'])}) | "
            + (pct(x["mixture_recommended"]) if "mixture_returned" not in x
               else f"{pct(x['mixture_returned'])} returned")
            + f" | {fsec(x['fit_seconds_median'])} |")
    return lines


def gap_se(a: float, b: float, n: int) -> float:
    se = np.sqrt((a * (1 - a) + b * (1 - b)) / max(n, 1))
    return float(abs(a - b) / se) if se > 0 else 0.0


def summary_lines(results: dict[str, Any]) -> list[str]:
    """A few headline sentences, from the numbers (empty where a part did not run)."""
    out = []
    t1, t2 = results.get("image_spec_time", {}), results.get("image_identification", {})
    t3, t4 = results.get("privacy", {}), results.get("text", {})
    o, r = t1.get("ours"), t1.get("reference", {})
    if o:
        line = (f"- Image spec of {o['n_images']} images: learndock **{fsec(o['total_median'])}** "
                f"(encode {fsec(o['encode_median'])} + fit {fsec(o['fit_median'])})")
        if r.get("status") == "ok":
            line += (f"; the reference {fsec(r['seconds'])} with {r['steps']} optimisation steps, "
                     f">= {fsec(r['default_steps_lower_bound_seconds'])} at its default "
                     f"{REF_DEFAULT_STEPS}")
        out.append(line + ".")
    ms = {k: v["metrics"] for k, v in t2.get("methods", {}).items()
          if "metrics" in v and k != "reference"}
    if "ours" in ms and "pixel" in ms:
        a, b = ms["ours"], ms["pixel"]
        out.append(
            f"- Image identification ({a['n_users']} users): hit@1 {pct(a['hit_at_1'])} vs "
            f"{pct(b['hit_at_1'])} for the pixel baseline, hit@5 {pct(a['hit_at_5'])} vs "
            f"{pct(b['hit_at_5'])}, regret {f2(a['mean_regret'], 3)} vs "
            f"{f2(b['mean_regret'], 3)}; the mixture covers all 6 user classes for "
            f"{pct(a['mixture_all_covered'])} vs {pct(b['mixture_all_covered'])} of users "
            f"(oracle {pct(a['oracle_all_covered_same_size'])}). The hit@1 gap is "
            f"{gap_se(a['hit_at_1'], b['hit_at_1'], a['n_users']):.1f} standard errors "
            "(unpaired binomial).")
    sets = t3.get("sets", {})
    if sets:
        parts = []
        for s in sets.values():
            cells = [f"{name} min {f2(s[name]['min_ratio'])}, {s[name]['n_near_copies']} "
                     "near-copies" for name in ("ours", "pixel", "reference") if name in s]
            parts.append(f"{s['n_train']} images: " + "; ".join(cells))
        out.append("- Privacy (NN-distance ratio, near-copy < "
                   f"{t3['near_copy_ratio']}): " + " | ".join(parts) + ".")
    tm = {k: v["metrics"] for k, v in t4.get("methods", {}).items() if "metrics" in v}
    if tm:
        out.append("- Text (BBC News, " + str(t4["n_users"]) + " users): hit@1 "
                   + ", ".join(f"{k} {pct(v['hit_at_1'])}" for k, v in tm.items())
                   + f"; cold MiniLM {t4['cold_articles_per_second']:.0f} articles/s, cached "
                   f"train split {fsec(t4['train_split_cached_encode_median'])}.")
    return out + [""] if out else []


def render(results: dict[str, Any]) -> tuple[str, str]:
    """(report.md, BENCHMARKS-section.md)."""
    cfg = results["config"]
    t1, t2, t3, t4 = (results.get(k, {}) for k in ("image_spec_time", "image_identification",
                                                   "privacy", "text"))
    o = t1.get("ours", {})
    r = t1.get("reference", {})
    L: list[str] = []
    L.append("### Image and text specs (`benchmarks/image_text_specs.py`)\n")
    L.append(f"Machine: {results['machine_line']}. torch {results['torch']} on the CPU, "
             f"{cfg['threads']} torch thread(s) on both engines; numpy/BLAS 1 thread. "
             f"Reference: {results['reference']}. "
             f"Command: `{results['command']}` ({fsec(results['total_seconds'])} in all; "
             f"1-min load average {results['load_average']['start']:.1f} at the start, "
             f"{results['load_average']['end']:.1f} at the end"
             + (" -- other jobs shared the 2 cores, so times are upper bounds"
                if max(results["load_average"].values()) > 1.5 else "") + ")."
             + (" **Quick run: sizes and fits reduced, not a benchmark.**" if cfg["quick"]
                else "") + "\n")
    L.extend(summary_lines(results))
    # ---- 1
    L.append(f"**1. Image spec generation, {o.get('n_images')} Fashion-MNIST images (CPU).**\n")
    L.append("| engine | encode | fit | total | notes |")
    L.append("|---|---|---|---|---|")
    if o:
        L.append(f"| learndock: RandomConvEncoder + RKMEImageSpec.fit (K {cfg['n_points']}) | "
                 f"{fsec(o['encode_median'])} | {fsec(o['fit_median'])} | "
                 f"**{fsec(o['total_median'])}** | median of {len(o['encode_seconds'])} runs; "
                 f"{o['images_per_second_encode']:.0f} images/s encoded; fit "
                 f"{o['fit_rounds']} rounds |")
    if r.get("status") == "ok":
        L.append(
            f"| reference: generate_rkme_image_spec (K {r['k']}, steps **{r['steps']}** instead "
            f"of {REF_DEFAULT_STEPS}, sample_size {r['sample_size']}) | - | - | "
            f"**{fsec(r['seconds'])}** | one run; {r['data_passes']} random-feature pass(es) over "
            f"{r['rows_per_pass']} images x 16 conv nets, {fsec(r['data_pass_seconds'])} each; "
            f"at its default {REF_DEFAULT_STEPS} steps >= "
            f"**{fsec(r['default_steps_lower_bound_seconds'])}** (101 passes, z updates not "
            "counted); worker peak RSS "
            + (f"{r['peak_rss_mib'] / 1024:.1f} GiB |" if r.get("peak_rss_mib") else "n/a |"))
    elif r:
        L.append(f"| reference | - | - | {r.get('status')} | |")
    L.append("")
    if r.get("status") == "ok":
        zp = t3.get("sets", {}).get("privacy", {}).get("reference", {}).get(
            "z_moved_from_init_max_abs")
        same = t3.get("reference_z_identical_across_data_sets")
        moved = (f"max |z - z_init| = {f2(r['z_moved_max_abs'], 6)} after {r['steps']} step(s)"
                 + (f", {f2(zp, 6)} after 1 step in the privacy run" if zp is not None else "")
                 + f"; z identical for two different data sets: {same}")
        if zp == 0 and same:
            L.append(
                f"The reference's reduced set never moves ({moved}). Its z is a seeded "
                "Gaussian-noise image set created without `requires_grad`, so its optimiser "
                "never gets a gradient for z: the steps only re-solve beta against fresh random "
                "nets, and all the information about the data is in beta.")
        else:
            L.append(f"Reference reduced set: {moved}.")
        L.append(
            f" torchvision: {r['torchvision']} -- the PyPI torchvision for torch 2.13 is a "
            "CUDA build that cannot load next to the CPU torch, so the worker resizes 28->32 "
            "itself with torch's bilinear anti-aliased interpolate (what Resize does on "
            "tensors) and stubs the import.\n")
    # ---- 2
    if t2:
        n_lw, n_u = len(t2["learnwares"]), len(t2["users"])
        L.append(f"**2. Image identification** ({n_lw} learnwares x 4 classes at "
                 f"0.4:0.4:0.1:0.1 from train, {n_u} users x 6 classes at "
                 "0.3:0.3:0.1:0.1:0.1:0.1 from test; hit = a learnware covering the most user "
                 "class mass, ties count; mixture = Market.search's simplex-QP mixture over the "
                 "top 16, <= 5 members; oracle = the best union of the same size; ± = binomial "
                 "standard error over users).\n")
        L.extend(ident_table({k: v for k, v in t2["methods"].items()
                              if not (k == "reference" and "metrics" in v)}, METHOD_LABELS, 6))
        L.append("")
        ref = t2["methods"].get("reference", {})
        if "metrics" in ref:
            c = ref["config"]
            L.append(f"Like for like with the reference, on the first {ref['metrics']['n_users']} "
                     "learnwares and users only. Reference settings (its image spec is hours per "
                     f"spec at its defaults on this CPU): K {c['k']}, steps {c['steps']} (default "
                     f"{REF_DEFAULT_STEPS}), sample_size {c['sample_size']} (default "
                     f"{REF_DEFAULT_SAMPLE}), n_models {c.get('n_models', 16)} (default 16); "
                     "ranked by its EasyStatSearcher (NNGP-kernel MMD, "
                     f"{fsec(ref['rank_seconds_per_user'])} per user to rank "
                     f"{ref['metrics']['n_users']} learnwares, i.e. "
                     f"{fsec(ref['inner_product_seconds'])} per spec inner product), "
                     + ("mixture = its greedy mixture" if c.get("mixture", True) else
                        "ranking only (`--ref-search-no-mixture`, to bound the run time), so no "
                        "mixture columns")
                     + f". The reference part took {fsec(ref['wall_seconds'])}.\n")
            rows = {**ref.get("same_subset", {}), "reference": ref}
            L.extend(ident_table(rows, METHOD_LABELS, 6))
            L.append("")
        else:
            L.append(
                "The reference's image spec is not in this table: each of its specs costs "
                f"{REF_DEFAULT_STEPS + 1} random-feature passes over up to 5,000 images x 16 "
                "conv nets (part 1: "
                + (f"{fsec(r.get('data_pass_seconds'))} per pass" if r.get("status") == "ok"
                   else "see above")
                + f"), i.e. hours per spec and days for {n_lw + n_u} specs on this CPU. "
                "`--ref-image-search N` runs it on the first N learnwares and users with "
                "reduced settings.\n")
    # ---- 3
    if t3:
        L.append("**3. Privacy** (`privacy_report`: distance of each reduced-set point to its "
                 "nearest training image / median NN distance between training images; "
                 f"near-copy = ratio < {t3['near_copy_ratio']}).\n")
        L.append("| training set | spec | space | points | min ratio | 5th pct | median ratio "
                 "| near-copies | their share of beta |")
        L.append("|---|---|---|---|---|---|---|---|---|")
        spaces = {"ours": "encoder (512-d)", "pixel": "pixels / 255 (784-d)",
                  "reference": "standardised 32x32 pixels"}
        for s in t3["sets"].values():
            for name in ("ours", "pixel", "reference"):
                if name in s:
                    x = s[name]
                    L.append(f"| {s['n_train']} images | {name} | {spaces[name]} | "
                             f"{x['n_points']} | {f2(x['min_ratio'])} | {f2(x['p05_ratio'])} "
                             f"| {f2(x['median_ratio'])} | {x['n_near_copies']} | "
                             f"{pct(x['near_copy_beta_sum'])} |")
        L.append("")
        off = [(s["n_train"], name, x) for s in t3["sets"].values()
               for name, x in s.items() if isinstance(x, dict) and "library_typical_nn_distance"
               in x and abs(x["library_typical_nn_distance"] / x["typical_nn_distance"] - 1)
               > 0.01]
        if off:
            L.append(
                "**Ratios use the exact typical NN distance** (each training sample excluded by "
                "index, `typical_nn_exact`). learndock's `privacy_report` excludes a sample from "
                "its own NN search by `squared distance <= 1e-18`, which BLAS-identity rounding "
                "misses for about a third of the samples here, so its typical distance was too "
                "small: "
                + "; ".join(f"{n} {name}: {x['library_typical_nn_distance']:.3g} instead of "
                            f"{x['typical_nn_distance']:.3g} (min ratio "
                            f"{x['library_min_ratio']:.3g}, near-copies "
                            f"{x['library_n_near_copies']})" for n, name, x in off)
                + ". Bug reported; the library numbers are kept in results.json.\n")
        L.append("Pixel and reference ratios are invariant to the reference's per-channel "
                 "standardisation (one channel: a global affine map), so the pixel baseline "
                 "measured on pixels / 255 equals it measured after that standardisation. "
                 + (f"The reference's {t3['sets']['privacy']['n_train']}-image spec was built "
                    "with steps 1 and sample_size 60 to save CPU: its z does not depend on the "
                    "data (see part 1), and the images are standardised with that set's own "
                    "statistics. " if "reference" in t3["sets"].get("privacy", {}) else "")
                 + "Our spec's points live in the encoder's space, so they are compared with "
                 "the training images' embeddings, the closest an attacker could start from.\n")
    # ---- 4
    if t4:
        L.append(f"**4. Text: BBC News** ({t4['n_train']} train / {t4['n_test']} test articles; "
                 f"{t4['n_learnwares']} learnwares = every 3-topic subset x 2 halves of train; "
                 f"{t4['n_users']} users = every topic pair x 2 halves of test).\n")
        L.append(
            f"Spec time: model load {fsec(t4['model_load_seconds'])}; cold MiniLM encoding "
            f"{t4['cold_articles_per_second']:.1f} articles/s ({t4['cold_articles']} articles "
            f"in {fsec(t4['cold_encode_seconds'])}; the {t4['n_train']}-article train split "
            f"would take ~{fsec(t4['train_split_cold_encode_estimate'])} cold); with the "
            f"embedding cache the train split encodes in "
            f"{fsec(t4['train_split_cached_encode_median'])} and its spec fits in "
            f"{fsec(t4['train_split_fit_median'])} (K {cfg['n_points']}). Cached and cold "
            f"embeddings agree to {t4['cache_vs_cold_max_abs_diff']:.1e}.\n")
        L.extend(ident_table(t4["methods"], TEXT_LABELS, 2))
        L.append("")
        L.append("The reference's own text spec (`generate_rkme_text_spec`) downloads its "
                 "sentence encoder at run time and fails offline, so the reference row uses "
                 "its table RKME (`generate_rkme_table_spec`, default gamma 0.1) over the same "
                 "MiniLM embeddings; the control row isolates the kernel from the engine.\n")
    section = "\n".join(L)
    report = ("# Image and text specs\n\n" + section
              + "\n\n![identification](identification.png)\n\n![privacy](privacy.png)\n")
    return report, section


def plot(results: dict[str, Any], out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    for ax, key, labels, title in (
        (axes[0], "image_identification", METHOD_LABELS, "Fashion-MNIST (6-class users)"),
        (axes[1], "text", TEXT_LABELS, "BBC News (2-topic users)"),
    ):
        methods = {k: v for k, v in results.get(key, {}).get("methods", {}).items()
                   if "metrics" in v and not (key == "image_identification"
                                              and k == "reference")}
        metrics = [("hit_at_1", "hit@1"), ("hit_at_5", "hit@5"),
                   ("mixture_all_covered", "mixture covers all"),
                   ("oracle_all_covered_same_size", "oracle (same size)")]
        width = 0.8 / max(len(methods), 1)
        for i, (name, m) in enumerate(methods.items()):
            vals = [m["metrics"][k] for k, _ in metrics]
            ax.bar(np.arange(len(metrics)) + i * width, vals, width,
                   label=labels.get(name, name).split(" (")[0])
        ax.set_xticks(np.arange(len(metrics)) + width * (len(methods) - 1) / 2)
        ax.set_xticklabels([lab for _, lab in metrics])
        ax.set_ylim(0, 1.05)
        ax.set_title(title)
        ax.legend(fontsize=7, loc="lower left")
    fig.suptitle("Identification and mixture coverage")
    fig.tight_layout()
    fig.savefig(out / "identification.png", dpi=110)
    plt.close(fig)
    written.append("identification.png")
    sets = results.get("privacy", {}).get("sets", {})
    if sets:
        fig, ax = plt.subplots(figsize=(8, 4))
        data, names = [], []
        for s in sets.values():
            for name in ("ours", "pixel", "reference"):
                if name in s:
                    data.append(np.maximum(s[name]["ratios"], 1e-3))
                    names.append(f"{name}\n{s['n_train']} images")
        ax.boxplot(data)
        ax.set_xticks(np.arange(1, len(names) + 1), names)
        ax.axhline(results["privacy"]["near_copy_ratio"], color="red", ls="--",
                   label="near-copy threshold")
        ax.set_yscale("log")
        ax.set_ylabel("NN distance to training / typical NN distance")
        ax.set_title("Privacy of reduced-set points (higher = farther from any training image)")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / "privacy.png", dpi=110)
        plt.close(fig)
        written.append("privacy.png")
    return written


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, (np.bool_,)):
        return bool(obj)
    return obj


# ------------------------------------------------------------------------------ 5. encoders
LOOK_ALIKE = (0, 2, 4, 6)  # T-shirt/top, Pullover, Coat, Shirt


def _nearest_spec_check(enc: Any, images: np.ndarray, labels: np.ndarray, n_ref: int,
                        n_query_sets: int, query_size: int, k_ref: int, k_query: int,
                        rng_seed: int) -> dict[str, Any]:
    """Per class: one reference spec of ``n_ref`` images and ``n_query_sets`` disjoint query
    specs of ``query_size`` images. A query is identified when its nearest reference spec
    (smallest MMD^2) is its own class's. Also the separation ratio: the median MMD^2 between
    two classes' reference specs over the median MMD^2 between a query and its own class's
    reference (scale-free, so comparable across encoders and kernels)."""
    from learndock.spec.embedding import RKMEImageSpec

    rng = np.random.default_rng(rng_seed)
    t0 = time.perf_counter()
    E = enc.encode(images)
    encode_s = time.perf_counter() - t0
    classes = np.unique(labels)
    refs, queries = {}, []
    for c in classes:
        idx = rng.permutation(np.flatnonzero(labels == c))
        r = idx[:n_ref]
        refs[int(c)] = RKMEImageSpec.fit(images[r], k_ref, encoder=enc, embeddings=E[r],
                                         random_state=SEED, progress=False)
        for q in range(n_query_sets):
            qi = idx[n_ref + q * query_size:n_ref + (q + 1) * query_size]
            if len(qi) < query_size:
                break
            queries.append((int(c), RKMEImageSpec.fit(images[qi], k_query, encoder=enc,
                                                      embeddings=E[qi], random_state=SEED,
                                                      progress=False)))
    hits, own, look_hits, look_n, confusions = 0, [], 0, 0, {}
    for c, qs in queries:
        d = {k: qs.mmd2(r) for k, r in refs.items()}
        best = min(d, key=d.get)
        hits += best == c
        own.append(d[c])
        if c in LOOK_ALIKE:
            look_n += 1
            look_hits += best == c
        if best != c:
            confusions[f"{c}->{best}"] = confusions.get(f"{c}->{best}", 0) + 1
    between = [refs[a].mmd2(refs[b]) for a, b in itertools.combinations(refs, 2)]
    look = [refs[a].mmd2(refs[b]) for a, b in itertools.combinations(LOOK_ALIKE, 2)
            if a in refs and b in refs]
    return {
        "queries": len(queries), "identified": hits / len(queries),
        "look_alike_identified": (look_hits / look_n) if look_n else None,
        "look_alike_queries": look_n,
        "separation_ratio": float(np.median(between) / np.median(own)),
        "look_alike_separation_ratio": (float(np.median(look) / np.median(own))
                                        if look else None),
        "confusions": confusions, "encode_seconds": encode_s, "n_images": int(len(images)),
    }


def part_encoders(cfg: Config, data: dict[str, Any]) -> dict[str, Any]:
    """Old (random-conv) vs new (Fashion-MNIST-trained CNN) image encoder: how well specs
    separate classes on Fashion-MNIST *test* images and on digits neither encoder saw
    (scikit-learn ``load_digits``, 8 x 8, upsampled to 28 / 32 pixels by the encoders)."""
    from sklearn.datasets import load_digits

    from learndock.spec.encoders import FashionCNNEncoder, RandomConvEncoder

    digits = load_digits()
    per_class = 300 if cfg.quick else 1000
    keep = np.concatenate([np.flatnonzero(data["yte"] == c)[:per_class] for c in range(10)])
    out: dict[str, Any] = {"protocol": {
        "fashion_test": "per class: reference spec of 500 test images (K 50), 5 disjoint "
                        "query specs of 100 (K 20)" if not cfg.quick else "quick: 150 / 3 x 50",
        "digits": "per class: reference spec of 90 images (K 20), 3 disjoint query specs of 28 "
                  "(K 10)",
    }}
    for name, enc in (("random-conv", RandomConvEncoder(device="cpu")),
                      ("fmnist-cnn", FashionCNNEncoder())):
        log(f"encoder check: {name}")
        fm = (_nearest_spec_check(enc, data["Xte"][keep], data["yte"][keep], 150, 3, 50, 30,
                                  10, SEED) if cfg.quick else
              _nearest_spec_check(enc, data["Xte"][keep], data["yte"][keep], 500, 5, 100, 50,
                                  20, SEED))
        dg = _nearest_spec_check(enc, digits.images, digits.target, 90, 3, 28, 20, 10, SEED)
        out[name] = {"id": enc.identity, "gamma": enc.gamma, "dimension": enc.dimension,
                     "fashion_test": fm, "digits": dg}
        log(f"  fashion test: identified {fm['identified']:.2f} (look-alike "
            f"{fm['look_alike_identified']:.2f}), separation {fm['separation_ratio']:.1f}; "
            f"digits: identified {dg['identified']:.2f}, separation {dg['separation_ratio']:.1f}")
    return out


def encoder_section(res: dict[str, Any]) -> str:
    L = ["| encoder | Fashion-MNIST test: identified | of which look-alike classes "
         "| separation ratio (look-alike) | digits (unseen): identified | separation ratio "
         "| encode 1,000 images |",
         "|---|---:|---:|---:|---:|---:|---:|"]
    for name in ("random-conv", "fmnist-cnn"):
        r = res[name]
        fm, dg = r["fashion_test"], r["digits"]
        L.append(f"| {name} (`{r['id']}`, gamma {r['gamma']:.3g}) "
                 f"| {fm['identified']:.2f} ({fm['queries']}) "
                 f"| {fm['look_alike_identified']:.2f} ({fm['look_alike_queries']}) "
                 f"| {fm['separation_ratio']:.1f} ({fm['look_alike_separation_ratio']:.1f}) "
                 f"| {dg['identified']:.2f} ({dg['queries']}) | {dg['separation_ratio']:.1f} "
                 f"| {fm['encode_seconds'] / fm['n_images'] * 1000:.2f} s |")
    return "\n".join(L) + "\n"


def write_reports(results: dict[str, Any], out: Path) -> None:
    report, section = render(results)
    (out / "report.md").write_text(report)
    (out / "BENCHMARKS-section.md").write_text(section + "\n")
    plot(results, out)


# ------------------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="CI smoke run (< 2 min)")
    p.add_argument("--out", default=str(DEFAULT_OUT), help="output folder")
    p.add_argument("--cache", default=str(TEXT_CACHE), help="MiniLM embedding cache file")
    p.add_argument("--threads", type=int, default=2, help="torch threads (both engines)")
    p.add_argument("--no-reference", action="store_true", help="skip the reference engine")
    p.add_argument("--ref-steps", type=int, default=0,
                   help="steps of the timed reference image spec (its default: 100)")
    p.add_argument("--ref-image-search", type=int, default=0, metavar="N",
                   help="also run the reference image identification on N learnwares/users")
    p.add_argument("--ref-search-steps", type=int, default=0)
    p.add_argument("--ref-search-sample-size", type=int, default=500)
    p.add_argument("--ref-search-n-models", type=int, default=0, help="0: its default (16)")
    p.add_argument("--ref-search-no-mixture", action="store_true",
                   help="reference image search: rank only (its greedy mixture costs many "
                   "NNGP inner products)")
    p.add_argument("--n-learnwares", type=int, default=0, help="override (image part)")
    p.add_argument("--n-users", type=int, default=0, help="override (image part)")
    p.add_argument("--only", default="1234",
                   help="parts to run, e.g. 23; 5 alone = the old-vs-new encoder check")
    p.add_argument("--rerender", action="store_true",
                   help="rewrite report.md, the section and plots from --out/results.json")
    args = p.parse_args(argv)
    cfg = Config.make(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.rerender:
        results = json.loads((out / "results.json").read_text())
        write_reports(results, out)
        return 0

    import torch
    from threadpoolctl import threadpool_limits

    from learndock.datasets import fashion_mnist

    torch.set_num_threads(cfg.threads)
    t_start = time.perf_counter()
    load_start = os.getloadavg()[0]
    ref_ok, ref_note = reference_available(not args.no_reference)
    log(f"reference: {ref_note}")
    results: dict[str, Any] = {
        "config": asdict(cfg),
        "machine": machine_info(),
        "machine_line": describe_machine(),
        "torch": torch.__version__,
        "reference": "learnware (PyPI) in .venv-ref" if ref_ok else ref_note,
        "command": " ".join(["python -m benchmarks.image_text_specs", *(argv if argv is not None
                                                                        else sys.argv[1:])]),
    }
    Xtr, ytr = fashion_mnist.load("train")
    Xte, yte = fashion_mnist.load("test")
    data = {"Xtr": Xtr, "ytr": ytr, "Xte": Xte, "yte": yte}
    state: dict[str, Any] = {"privacy_rows": np.sort(np.random.default_rng(SEED + 3).choice(
        Xtr.shape[0], cfg.privacy_images, replace=False))}
    if args.only == "5":  # the encoder check alone: its own files, the other parts' kept
        with threadpool_limits(limits=1):
            enc_res = part_encoders(cfg, data)
        enc_res.update({"machine_line": results["machine_line"], "command": results["command"],
                        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                        "seconds": time.perf_counter() - t_start})
        (out / "encoders.json").write_text(json.dumps(_jsonable(enc_res), indent=1))
        (out / "encoders.md").write_text(encoder_section(enc_res))
        log(f"wrote {out / 'encoders.md'}")
        return 0
    with threadpool_limits(limits=1), tempfile.TemporaryDirectory():
        if "1" in args.only:
            results["image_spec_time"] = part_image_timing(cfg, Xtr, ref_ok, state)
        if "2" in args.only or "3" in args.only:
            results["image_identification"] = part_image_identification(cfg, data, ref_ok,
                                                                        state)
        if "3" in args.only:
            results["privacy"] = part_privacy(cfg, data, ref_ok, state)
        if "4" in args.only:
            results["text"] = part_text(cfg, ref_ok, Path(args.cache))
    results["total_seconds"] = time.perf_counter() - t_start
    results["load_average"] = {"start": load_start, "end": os.getloadavg()[0]}
    results["plots"] = ["identification.png", "privacy.png"]
    results = _jsonable(results)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    write_reports(results, out)
    log(f"wrote {out} in {fsec(results['total_seconds'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
