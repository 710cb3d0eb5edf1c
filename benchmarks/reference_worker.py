"""Run the reference engine (PyPI ``learnware``, LAMDA) for side-by-side benchmarks.

This script exists so that learndock's benchmarks can compare against the
reference implementation without its heavy, old-pinned dependency tree ever
entering our venv. It runs ONLY under the separate reference venv
(``.venv-ref/bin/python``; see ``benchmarks/reference.py`` for how it is built)
and never imports learndock. Data crosses the process boundary as .npy/.npz/.json
files only -- no pickle.

Usage:
    .venv-ref/bin/python benchmarks/reference_worker.py table-spec \
        --x IN.npy --out OUT.npz --k 100 --gamma 0.1 --seed 0
    .venv-ref/bin/python benchmarks/reference_worker.py table-scenario \
        --data DIR --out OUT.json      # benchmarks/scenarios/table.py writes DIR

Importing learnware creates ``~/.learnware/{database,cache,stdout}`` (and reads
``~/.learnware/config.json`` if present). To keep the real home untouched, HOME
is pointed at ``LEARNWARE_REFERENCE_HOME`` (default: ``<venv>/learnware-home``)
before the import; Hugging Face libraries are forced offline.
"""

import argparse
import os
import sys
import time
import warnings
from pathlib import Path


def _prepare_env() -> None:
    home = os.environ.get("LEARNWARE_REFERENCE_HOME") or str(Path(sys.prefix) / "learnware-home")
    os.makedirs(home, exist_ok=True)
    os.environ["HOME"] = home
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        os.environ.setdefault(var, "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore", category=FutureWarning)  # torch's pynvml notice


def cmd_table_spec(args: argparse.Namespace) -> None:
    import numpy as np
    from learnware.specification import generate_rkme_table_spec
    from learnware.utils import setup_seed

    X = np.load(args.x, allow_pickle=False)
    setup_seed(args.seed)  # numpy, random, torch (kmeans init uses torch RNG)
    t0, c0 = time.perf_counter(), time.process_time()
    spec = generate_rkme_table_spec(X, gamma=args.gamma, reduced_set_size=args.k, cuda_idx=-1)
    seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
    np.savez(
        args.out,
        z=np.asarray(spec.get_z(), dtype=np.float64),
        beta=np.asarray(spec.get_beta(), dtype=np.float64).reshape(-1),
        gamma=np.float64(spec.gamma),
        seconds=np.float64(seconds),
        cpu_seconds=np.float64(cpu_seconds),
    )


def cmd_stat_search(args: argparse.Namespace) -> None:
    """Time the reference's EasyStatSearcher over N specs given as arrays (search_speed.py).

    Input ``--market`` .npz: ``z`` (all reduced sets stacked, raw units), ``beta``, ``lens``
    (points per spec), ``ids``; ``--queries`` .npz: ``z`` (Q x K x d), ``beta`` (Q x K).
    Output JSON: per-query seconds of the whole searcher call and of its single-spec ranking
    alone (``_search_by_rkme_spec_single``), the top-1 ids, and the set-up time.
    """
    import json

    import numpy as np
    import torch
    from learnware.learnware import Learnware
    from learnware.market.base import BaseUserInfo
    from learnware.market.easy import EasyStatSearcher
    from learnware.specification import RKMETableSpecification, Specification

    name = "RKMETableSpecification"

    def make_spec(z, beta):
        spec = RKMETableSpecification(gamma=args.gamma, cuda_idx=-1)
        spec.z = torch.from_numpy(np.ascontiguousarray(z, dtype=np.float64))
        spec.beta = torch.from_numpy(np.ascontiguousarray(beta, dtype=np.float64))
        spec.num_points = int(z.shape[0])
        return spec

    t0 = time.perf_counter()
    with np.load(args.market, allow_pickle=False) as f:
        z, beta, lens, ids = f["z"], f["beta"], f["lens"], f["ids"]
    bounds = np.concatenate([[0], np.cumsum(lens)])
    model = {"class_name": "Unused", "module_path": "unused.py", "kwargs": {}}
    learnwares = [
        Learnware(
            str(ids[i]),
            model,
            Specification(stat_spec={name: make_spec(z[bounds[i]:bounds[i + 1]],
                                                      beta[bounds[i]:bounds[i + 1]])}),
            ".",
        )
        for i in range(len(lens))
    ]
    with np.load(args.queries, allow_pickle=False) as f:
        qz, qbeta = f["z"], f["beta"]
    n_q = min(len(qz), args.max_queries) if args.max_queries else len(qz)
    load_seconds = time.perf_counter() - t0
    searcher = EasyStatSearcher(organizer=None)
    seconds, single_seconds, top1 = [], [], []
    for q in range(n_q):
        user = BaseUserInfo(stat_info={name: make_spec(qz[q], qbeta[q])})
        t0 = time.perf_counter()
        res = searcher(learnwares, user, max_search_num=5, search_method="greedy")
        seconds.append(time.perf_counter() - t0)
        singles = res.get_single_results()
        top1.append(singles[0].learnware.id if singles else None)
        searcher.stat_spec_type = name
        t0 = time.perf_counter()
        searcher._search_by_rkme_spec_single(learnwares, user.stat_info[name])
        single_seconds.append(time.perf_counter() - t0)
    with open(args.out, "w") as fh:
        json.dump({"seconds": seconds, "single_seconds": single_seconds, "top1": top1,
                   "load_seconds": load_seconds, "n_learnwares": len(learnwares),
                   "torch_threads": torch.get_num_threads()}, fh)


def cmd_table_scenario(args: argparse.Namespace) -> None:
    """The tabular scenario (``benchmarks/scenarios/table.py``) run by the reference engine.

    ``--data`` holds ``config.json`` (k, model parameters, seed, n_labels, repeats, top_prune,
    top_augment, max_search_num, control_scale, control_gamma, n_learnwares, n_users),
    ``lw_III.npz`` (X, y: one learnware's training rows) and ``user_JJJ.npz`` (X, y; test, pool:
    row indices; orders: per repeat, the order in which pool rows get labelled; check: our
    models' predictions on X[:50], one row per learnware).

    The worker trains the same scikit-learn model with the same seed on the same rows, builds
    its RKME table specs with its default kernel (gamma 0.1 on raw features) and ranks, mixes
    and reuses with ``EasyStatSearcher`` and its reusers, as a reference user would. As a
    control it also ranks with its specs built under learndock's kernel (X / scale, gamma
    1/d). ``job_herding_num`` is passed to its JobSelectorReuser (its default, 1000, herds up
    to 1000 points per learnware from 100x as many candidates with a cost cubic in the count:
    ~10 s at 200 points, hours at 1000 on one core). Reusers that fail (missing optional dependencies, API drift in scikit-learn) are
    reported by their error message instead of a number. Output JSON: per learnware and per
    user, indices refer to the learnware order.
    """
    import json
    import math
    from pathlib import Path as _Path

    import numpy as np
    import sklearn
    import torch

    torch.set_num_threads(1)
    import learnware
    from learnware.learnware import Learnware
    from learnware.market.base import BaseUserInfo
    from learnware.market.easy import EasyStatSearcher
    from learnware.model import BaseModel
    from learnware.reuse import (
        AveragingReuser,
        EnsemblePruningReuser,
        FeatureAugmentReuser,
        JobSelectorReuser,
    )
    from learnware.specification import Specification, generate_rkme_table_spec
    from learnware.utils import setup_seed
    from sklearn.ensemble import HistGradientBoostingRegressor

    data = _Path(args.data)
    cfg = json.loads((data / "config.json").read_text())
    name = "RKMETableSpecification"
    k, seed = int(cfg["k"]), int(cfg["seed"])
    scale = np.asarray(cfg["control_scale"], dtype=np.float64)
    control_gamma = float(cfg["control_gamma"])

    class FittedModel(BaseModel):
        """A model already trained in this process (the reference accepts BaseModel objects).

        Predictions on the current user's rows are computed once and looked up afterwards
        (the scenario's side does the same), so reuse times are the reusers' own work.
        """

        def __init__(self, est, d):
            super().__init__(input_shape=(d,), output_shape=(1,))
            self.est = est
            self.memo = {}

        def remember(self, X):
            X = np.ascontiguousarray(X, dtype=np.float64)
            pred = np.asarray(self.est.predict(X), dtype=np.float64).reshape(-1)
            self.memo = {row.tobytes(): float(p) for row, p in zip(X, pred, strict=True)}
            return pred

        def predict(self, X):
            arr = np.ascontiguousarray(X, dtype=np.float64)
            try:
                return np.array([self.memo[row.tobytes()] for row in arr], dtype=np.float64)
            except (KeyError, ValueError, TypeError):
                return self.est.predict(arr)

    def spec_of(X, gamma):
        setup_seed(seed)  # its k-means start draws from torch's RNG
        t0 = time.perf_counter()
        spec = generate_rkme_table_spec(X, gamma=gamma, reduced_set_size=k, cuda_idx=-1)
        return spec, time.perf_counter() - t0

    def rmse(y, p):
        return float(np.sqrt(np.mean((np.asarray(y, float) - np.asarray(p, float).reshape(-1))
                                     ** 2)))

    out = {"versions": {"learnware": learnware.__version__, "torch": torch.__version__,
                        "sklearn": sklearn.__version__, "numpy": np.__version__},
           "learnwares": [], "users": [], "errors": {}}
    lws, controls = [], []
    for i in range(int(cfg["n_learnwares"])):
        with np.load(data / f"lw_{i:03d}.npz", allow_pickle=False) as f:
            X, y = f["X"], f["y"]
        t0 = time.perf_counter()
        est = HistGradientBoostingRegressor(**cfg["model"]).fit(X, y)
        train_s = time.perf_counter() - t0
        spec, spec_s = spec_of(X, 0.1)
        cspec, cspec_s = spec_of(X / scale, control_gamma)
        model = FittedModel(est, X.shape[1])
        lws.append(Learnware(str(i), model, Specification(stat_spec={name: spec}), "."))
        controls.append(Learnware(str(i), model, Specification(stat_spec={name: cspec}), "."))
        out["learnwares"].append({"train_seconds": train_s, "spec_seconds": spec_s,
                                  "control_spec_seconds": cspec_s, "rows": int(X.shape[0])})
    index = {lw.id: i for i, lw in enumerate(lws)}
    searcher = EasyStatSearcher(organizer=None)
    control_searcher = EasyStatSearcher(organizer=None)
    n_labels, repeats = cfg["n_labels"], int(cfg["repeats"])

    def try_curve(key, cls, chosen, Xl, yl, Xt, yt):
        if key in out["errors"]:
            return math.nan
        try:
            reuser = cls(learnware_list=chosen, mode="regression")
            reuser.fit(Xl, yl)
            return rmse(yt, reuser.predict(Xt))
        except Exception as exc:  # noqa: BLE001 -- report why it cannot run
            out["errors"][key] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
            return math.nan

    for j in range(int(cfg["n_users"])):
        with np.load(data / f"user_{j:03d}.npz", allow_pickle=False) as f:
            X, y, test, pool, orders, check = (f[a] for a in ("X", "y", "test", "pool",
                                                             "orders", "check"))
        u = {}
        t0 = time.perf_counter()
        P = np.stack([lw.model.remember(X) for lw in lws])
        u["predict_all_seconds"] = time.perf_counter() - t0
        u["err"] = np.sqrt(np.mean((P - y) ** 2, axis=1)).tolist()
        u["check_max_abs_diff"] = float(np.max(np.abs(P[:, : check.shape[1]] - check)))
        spec, u["spec_seconds"] = spec_of(X, 0.1)
        user = BaseUserInfo(stat_info={name: spec})
        t0 = time.perf_counter()
        res = searcher(lws, user, max_search_num=int(cfg["max_search_num"]),
                       search_method="greedy")
        u["search_seconds"] = time.perf_counter() - t0
        singles = res.get_single_results()
        multiple = res.get_multiple_results()
        # Its single list is cut at score 0.6 (often to one learnware): hit@5 and the top-n
        # lists for the label-using reusers come from its full MMD ranking.
        t0 = time.perf_counter()
        _, ranked = searcher._search_by_rkme_spec_single(lws, spec)
        u["rank_seconds"] = time.perf_counter() - t0
        u["ranking"] = [index[lw.id] for lw in ranked]
        u["returned_single"] = len(singles)
        u["top1"] = index[singles[0].learnware.id]
        mix = [index[lw.id] for lw in multiple[0].learnwares] if multiple else [u["top1"]]
        u["mixture"] = mix
        chosen = [lws[i] for i in mix]
        t0 = time.perf_counter()
        p_job = JobSelectorReuser(learnware_list=chosen,
                                  herding_num=int(cfg["job_herding_num"])).predict(X)
        u["job_seconds"] = time.perf_counter() - t0
        u["job_rmse"] = rmse(y, p_job)
        u["avg_rmse"] = rmse(y, AveragingReuser(learnware_list=chosen, mode="mean").predict(X))
        cspec, u["control_spec_seconds"] = spec_of(X / scale, control_gamma)
        control_searcher.stat_spec_type = name
        _, cranked = control_searcher._search_by_rkme_spec_single(controls, cspec)
        u["control_ranking"] = [index[lw.id] for lw in cranked]
        top_p = [lws[i] for i in u["ranking"][: int(cfg["top_prune"])]]
        top_a = [lws[i] for i in u["ranking"][: int(cfg["top_augment"])]]
        curves = {"pruning": {}, "augment": {}}
        for r in range(repeats):
            for n in n_labels:
                kk = len(pool) if n == "all" else min(int(n), len(pool))
                lab = pool[orders[r][:kk]]
                Xl, yl, Xt, yt = X[lab], y[lab], X[test], y[test]
                curves["pruning"].setdefault(str(n), []).append(
                    try_curve("pruning", EnsemblePruningReuser, top_p, Xl, yl, Xt, yt))
                curves["augment"].setdefault(str(n), []).append(
                    try_curve("augment", FeatureAugmentReuser, top_a, Xl, yl, Xt, yt))
        u["curves"] = curves
        out["users"].append(u)
        print(f"user {j + 1}/{cfg['n_users']} done", file=sys.stderr, flush=True)
    with open(args.out, "w") as fh:
        json.dump(out, fh)


def cmd_version(args: argparse.Namespace) -> None:
    import learnware

    print(learnware.__version__)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("table-spec", help="time generate_rkme_table_spec on X (.npy)")
    p.add_argument("--x", required=True, help="input .npy (n x d)")
    p.add_argument("--out", required=True, help="output .npz: z, beta, gamma, seconds, cpu_seconds")
    p.add_argument("--k", type=int, default=100, help="reduced set size")
    p.add_argument("--gamma", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_table_spec)

    p = sub.add_parser("version", help="import learnware and print its version")
    p.set_defaults(func=cmd_version)

    p = sub.add_parser("stat-search", help="time EasyStatSearcher over specs (.npz)")
    p.add_argument("--market", required=True, help=".npz: z (stacked), beta, lens, ids")
    p.add_argument("--queries", required=True, help=".npz: z (Q x K x d), beta (Q x K)")
    p.add_argument("--gamma", type=float, required=True, help="RBF gamma on raw features")
    p.add_argument("--max-queries", type=int, default=0, help="time at most this many")
    p.add_argument("--out", required=True, help="output .json")
    p.set_defaults(func=cmd_stat_search)

    p = sub.add_parser("table-scenario", help="the tabular scenario (benchmarks/scenarios)")
    p.add_argument("--data", required=True, help="exchange folder written by table.py")
    p.add_argument("--out", required=True, help="output .json")
    p.set_defaults(func=cmd_table_scenario)

    p = sub.add_parser("image-spec", help="time generate_rkme_image_spec on images (.npy)")
    p.add_argument("--x", required=True, help="input .npy, N x C x H x W float")
    p.add_argument("--out", required=True, help="output .npz (see cmd_image_spec)")
    p.add_argument("--k", type=int, default=50, help="reduced set size (its default: 50)")
    p.add_argument("--steps", type=int, default=100, help="optimisation steps (default 100)")
    p.add_argument("--sample-size", type=int, default=5000, help="its auto-subsample size")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--transformed", help="also save the images mapped into z's space (.npy)")
    p.set_defaults(func=cmd_image_spec)

    p = sub.add_parser("spec-search", help="reference specs + EasyStatSearcher (table/image)")
    p.add_argument("--data", required=True, help="folder: config.json, lw_III.npy, user_JJJ.npy")
    p.add_argument("--out", required=True, help="output .json")
    p.set_defaults(func=cmd_spec_search)

    # Future subcommands (e.g. `search --market DIR --user USER.json`) go here.

    args = parser.parse_args(argv)
    _prepare_env()
    args.func(args)


# ----------------------------------------------------------------- image and embedding specs
# (benchmarks/image_text_specs.py drives these two subcommands.)
IMAGE_WIDTH = 32  # the reference's image spec works on 32 x 32 images


def _torchvision_stub() -> str:
    """Make ``from torchvision.transforms import Resize`` importable; returns what was done.

    The reference's image spec imports torchvision only for ``Resize``. The PyPI torchvision
    wheel that matches torch 2.13 is a CUDA build and fails to load next to the CPU torch
    (``operator torchvision::nms does not exist``), and no CPU build is available offline.
    Call it after importing learnware (whose imports probe for torchvision). When
    torchvision cannot be imported, a stub module stands in for it; callers resize to
    32 x 32 beforehand with :func:`_resize32` (so the stub's Resize is never called -- it
    raises if it is).
    """
    try:
        from torchvision.transforms import Resize  # noqa: F401

        return "torchvision"
    except Exception:  # noqa: BLE001 -- a broken install raises RuntimeError/OSError too
        pass
    import importlib.machinery
    import types

    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]

    class Resize:
        def __init__(self, *args, **kwargs):
            pass

        def __call__(self, x):
            raise NotImplementedError("torchvision stub: resize images to 32x32 beforehand")

    tv = types.ModuleType("torchvision")
    tr = types.ModuleType("torchvision.transforms")
    tr.Resize = Resize
    tv.transforms = tr
    tv.__spec__ = importlib.machinery.ModuleSpec("torchvision", None)
    tr.__spec__ = importlib.machinery.ModuleSpec("torchvision.transforms", None)
    sys.modules["torchvision"] = tv
    sys.modules["torchvision.transforms"] = tr
    return "stub (images pre-resized with torch interpolate)"


def _resize32(X):
    """[N, C, H, W] float tensor -> [N, C, 32, 32]: bilinear with anti-aliasing, what
    ``torchvision.transforms.Resize((32, 32), antialias=True)`` computes on a float tensor."""
    import torch
    import torch.nn.functional as F  # noqa: N812

    X = torch.as_tensor(X).float()
    if X.shape[2] == IMAGE_WIDTH and X.shape[3] == IMAGE_WIDTH:
        return X
    return F.interpolate(X, size=(IMAGE_WIDTH, IMAGE_WIDTH), mode="bilinear", antialias=True,
                         align_corners=False)


def _timed_image_spec_class():
    """The reference's image spec class with its feature pass timed (black-box wrapper).

    Returns (class, passes, z_init): ``passes`` collects (rows, seconds) of every random-feature
    pass; ``z_init`` gets the reduced set as it is when beta is first solved (the start of the
    optimisation), to measure how far the optimisation moved it.
    """
    from learnware.specification.regular.image.rkme import RKMEImageSpecification as cls

    passes, z_init = [], {}
    feature, update_beta = cls._generate_random_feature, cls._update_beta

    def timed_feature(self, data_X, *a, **kw):
        t0 = time.perf_counter()
        out = feature(self, data_X, *a, **kw)
        passes.append((int(data_X.shape[0]), time.perf_counter() - t0))
        return out

    def snap_beta(self, *a, **kw):
        if "z" not in z_init:
            z_init["z"] = self.z.detach().cpu().numpy().copy()
        return update_beta(self, *a, **kw)

    cls._generate_random_feature = timed_feature
    cls._update_beta = snap_beta
    return cls, passes, z_init


def cmd_image_spec(args: argparse.Namespace) -> None:
    """Time ``generate_rkme_image_spec`` (CPU) on images [N, C, H, W] from .npy.

    Output .npz: z (K x C x 32 x 32, in the reference's standardised pixel space), beta,
    seconds and cpu_seconds of the call (including our resize to 32 x 32), pass_rows and
    pass_seconds of every random-feature pass, z_init (the reduced set when the optimisation
    starts), and -- with ``--transformed`` -- the input images mapped into z's space (resize,
    then per-channel standardisation over the data set, which is what the reference applies
    before optimising; its ZCA whitening applies only to C > 1 and is not replicated).
    """
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    from learnware.specification import generate_rkme_image_spec
    from learnware.utils import setup_seed

    how = _torchvision_stub()

    _, passes, z_init = _timed_image_spec_class()
    X = np.load(args.x, allow_pickle=False)
    setup_seed(args.seed)
    t0, c0 = time.perf_counter(), time.process_time()
    Xr = _resize32(torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32)))
    spec = generate_rkme_image_spec(Xr.clone(), reduced_set_size=args.k, steps=args.steps,
                                    sample_size=args.sample_size, cuda_idx=-1, verbose=False)
    seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
    extra = {}
    if args.transformed:
        if Xr.shape[1] != 1:
            raise SystemExit("--transformed replicates per-channel standardisation only (C = 1)")
        mean = Xr.mean(dim=(0, 2, 3), keepdim=True)
        std = Xr.std(dim=(0, 2, 3), keepdim=True)
        np.save(args.transformed, ((Xr - mean) / std).numpy().astype(np.float32))
        extra = {"channel_mean": mean.reshape(-1).numpy().astype(np.float64),
                 "channel_std": std.reshape(-1).numpy().astype(np.float64)}
    np.savez(
        args.out,
        z=np.asarray(spec.get_z(), dtype=np.float32),
        beta=np.asarray(spec.get_beta(), dtype=np.float64).reshape(-1),
        z_init=np.asarray(z_init.get("z", np.zeros(0)), dtype=np.float32),
        seconds=np.float64(seconds),
        cpu_seconds=np.float64(cpu_seconds),
        pass_rows=np.asarray([r for r, _ in passes], dtype=np.int64),
        pass_seconds=np.asarray([s for _, s in passes], dtype=np.float64),
        torch_threads=np.int64(torch.get_num_threads()),
        torchvision=np.str_(how),
        **extra,
    )


def cmd_spec_search(args: argparse.Namespace) -> None:
    """Build reference specs of learnwares and users and rank with ``EasyStatSearcher``.

    ``--data`` holds ``config.json`` (kind: "table" or "image"; n_learnwares, n_users, k,
    max_search_num, seed, threads, mixture (default true; false: rank only, no searcher
    call); table: gamma; image: steps, sample_size, n_models) and
    ``lw_III.npy`` / ``user_JJJ.npy`` (a table n x d, or images N x C x H x W). Output JSON:
    spec seconds per learnware and user; per user the full MMD ranking (its
    ``_search_by_rkme_spec_single``), the greedy mixture of its searcher call (indices into the
    learnware order; empty when it returns none) and the search seconds.
    """
    import json

    import numpy as np
    import torch
    from learnware.learnware import Learnware
    from learnware.market.base import BaseUserInfo
    from learnware.market.easy import EasyStatSearcher
    from learnware.specification import Specification, generate_rkme_table_spec
    from learnware.utils import setup_seed

    data = Path(args.data)
    cfg = json.loads((data / "config.json").read_text())
    torch.set_num_threads(int(cfg.get("threads", 1)))
    kind, k, seed = cfg["kind"], int(cfg["k"]), int(cfg.get("seed", 0))
    out = {"kind": kind, "learnware_spec_seconds": [], "users": []}
    if kind == "image":
        out["torchvision"] = _torchvision_stub()
        cls, _, _ = _timed_image_spec_class()
        name = "RKMEImageSpecification"
    else:
        name = "RKMETableSpecification"

    def spec_of(X):
        setup_seed(seed)
        t0 = time.perf_counter()
        if kind == "image":
            kw = {"n_models": int(cfg["n_models"])} if cfg.get("n_models") else {}
            spec = cls(cuda_idx=-1, **kw)
            spec.generate_stat_spec_from_data(
                _resize32(torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32))), k,
                steps=int(cfg.get("steps", 100)), sample_size=int(cfg.get("sample_size", 5000)),
                verbose=False)
        else:
            spec = generate_rkme_table_spec(X, gamma=float(cfg["gamma"]), reduced_set_size=k,
                                            cuda_idx=-1)
        return spec, time.perf_counter() - t0

    model = {"class_name": "Unused", "module_path": "unused.py", "kwargs": {}}
    lws = []
    for i in range(int(cfg["n_learnwares"])):
        spec, s = spec_of(np.load(data / f"lw_{i:03d}.npy", allow_pickle=False))
        lws.append(Learnware(str(i), model, Specification(stat_spec={name: spec}), "."))
        out["learnware_spec_seconds"].append(s)
        print(f"learnware {i + 1}/{cfg['n_learnwares']} spec done", file=sys.stderr, flush=True)
    searcher = EasyStatSearcher(organizer=None)
    for j in range(int(cfg["n_users"])):
        spec, s = spec_of(np.load(data / f"user_{j:03d}.npy", allow_pickle=False))
        user = BaseUserInfo(stat_info={name: spec})
        res, multiple, search_s = None, [], None
        if cfg.get("mixture", True):
            t0 = time.perf_counter()
            res = searcher(lws, user, max_search_num=int(cfg.get("max_search_num", 5)),
                           search_method="greedy")
            search_s = time.perf_counter() - t0
            multiple = res.get_multiple_results()
        searcher.stat_spec_type = name
        t0 = time.perf_counter()
        dists, ranked = searcher._search_by_rkme_spec_single(lws, spec)
        rank_s = time.perf_counter() - t0
        out["users"].append({
            "spec_seconds": s, "search_seconds": search_s, "rank_seconds": rank_s,
            "ranking": [int(lw.id) for lw in ranked], "mmd2": [float(d) for d in dists],
            "mixture": [int(lw.id) for lw in multiple[0].learnwares] if multiple else [],
            "top1_returned": int(res.get_single_results()[0].learnware.id)
            if res is not None and res.get_single_results() else None,
        })
        print(f"user {j + 1}/{cfg['n_users']} done", file=sys.stderr, flush=True)
    with open(args.out, "w") as fh:
        json.dump(out, fh)


if __name__ == "__main__":
    main()
