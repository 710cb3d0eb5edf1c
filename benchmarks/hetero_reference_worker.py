"""Run the reference engine's heterogeneous market on ``benchmarks/hetero.py``'s arrays.

Runs ONLY under the reference venv (``.venv-ref/bin/python``; ``benchmarks/reference.py``
says how to build it) and never imports learndock; data cross as .npz/.json files.

    .venv-ref/bin/python benchmarks/hetero_reference_worker.py hetero-scenario \
        --data DIR --out OUT.json

``DIR/config.json`` (written by ``benchmarks/hetero.py``): ``learnwares`` (panel, group,
island, descriptions, output), ``users`` (panel, group, user, descriptions, and ``curves``:
whether to run the labeled-data curves for this user, default true), ``k``, ``seed``,
``model`` (HistGradientBoostingRegressor parameters), ``n_labels``, ``repeats``,
``top_ensemble``, ``vocab_dir`` (the MiniLM package's folder: its uncased WordPiece
``vocab.txt`` stands in for ``bert-base-uncased``, which the reference's HeteroMap tokenizer
would download), optional ``mapping_params`` and ``align_params``. ``lw_III.npz`` (X, y) and
``user_JJJ.npz`` (X, y, test, pool, orders).

What it does, as a reference user would: the same scikit-learn model per learnware, its RKME
table specs (gamma 0.1), its HeteroMap trained on every learnware's spec at once (the
market's ``HeteroMapTableOrganizer.train``), hetero specs for learnwares and users, ranking by
distance in that space, ``FeatureAlignLearnware`` reuse of every same-task learnware (mean,
oracle), of the top-1, an average over the top ``top_ensemble``, and with labels its
``HeteroMapAlignLearnware`` on the top-1. Output JSON per user: ``mean``, ``oracle``,
``top1``, ``ensemble``, ``hit1`` (exact), ``regret``, ``err`` ({learnware index: RMSE} for
the same-task and top ensemble learnwares), ``curves`` ({n: [RMSE per repeat]}; empty when
the user has none), the ranking; steps that fail record their error instead of a number.
"""

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reference_worker import _prepare_env  # noqa: E402 -- our own helper, no learndock import

# HeteroMap's own defaults (hidden 128, 2 layers, 10 epochs, lr 1e-4). The example workflow's
# larger network (hidden 256, 6 layers, 50 epochs) took 22 s an epoch on 720 reduced points
# on this CPU box -- ~2 hours for this market -- so it is opt-in through the config.
MAPPING_PARAMS = {"num_epoch": 10}
ALIGN_PARAMS = {"num_epoch": 50, "lr": 1e-3}


def _offline_tokenizer(vocab_dir: str) -> None:
    """Point ``BertTokenizerFast.from_pretrained("bert-base-uncased")`` at ``vocab_dir``."""
    import transformers

    cls = transformers.BertTokenizerFast
    original = cls.from_pretrained.__func__

    def from_pretrained(klass, name, *args, **kwargs):
        if str(name) == "bert-base-uncased":
            name = vocab_dir
            kwargs["local_files_only"] = True
        return original(klass, name, *args, **kwargs)

    cls.from_pretrained = classmethod(from_pretrained)


def _ridge_compat() -> None:
    """The reference's FeatureAugmentReuser passes ``store_cv_values`` to RidgeCV, which
    scikit-learn 1.5 renamed and 1.7 removed; drop it so its label-using reuse can run."""
    import learnware.reuse.feature_augment as fa
    from sklearn.linear_model import RidgeCV

    class RidgeCVCompat(RidgeCV):
        def __init__(self, *args, store_cv_values=None, **kwargs):
            super().__init__(*args, **kwargs)

    RidgeCVCompat.__init__.__signature__ = __import__("inspect").signature(RidgeCV.__init__)
    fa.RidgeCV = RidgeCVCompat


def cmd_hetero_scenario(args: argparse.Namespace) -> None:
    import numpy as np
    import torch

    torch.set_num_threads(1)
    data = Path(args.data)
    cfg = json.loads((data / "config.json").read_text())
    _offline_tokenizer(cfg["vocab_dir"])
    import learnware
    from learnware.learnware import Learnware
    from learnware.market.heterogeneous.organizer import HeteroMapTableOrganizer
    from learnware.model import BaseModel
    from learnware.reuse.hetero import FeatureAlignLearnware, HeteroMapAlignLearnware
    from learnware.specification import Specification, generate_rkme_table_spec
    from learnware.utils import setup_seed
    from sklearn.ensemble import HistGradientBoostingRegressor

    _ridge_compat()
    name = "RKMETableSpecification"
    k, seed = int(cfg["k"]), int(cfg["seed"])
    mapping = {**MAPPING_PARAMS, **cfg.get("mapping_params", {})}
    align = {**ALIGN_PARAMS, **cfg.get("align_params", {})}

    class FittedModel(BaseModel):
        def __init__(self, est, d):
            super().__init__(input_shape=(d,), output_shape=(1,))
            self.est = est

        def fit(self, X, y):
            raise NotImplementedError

        def finetune(self, X, y):
            raise NotImplementedError

        def predict(self, X):
            return np.asarray(self.est.predict(np.asarray(X, dtype=np.float64)), float)

    def semantic(descs, output):
        return {"Data": {"Type": "Class", "Values": ["Table"]},
                "Task": {"Type": "Class", "Values": ["Regression"]},
                "Library": {"Type": "Class", "Values": ["Scikit-learn"]},
                "Scenario": {"Type": "Tag", "Values": ["Others"]},
                "License": {"Type": "Class", "Values": ["MIT"]},
                "Name": {"Type": "String", "Values": "lw"},
                "Description": {"Type": "String", "Values": "hetero benchmark"},
                "Input": {"Dimension": len(descs),
                          "Description": {str(i): d for i, d in enumerate(descs)}},
                "Output": {"Dimension": 1, "Description": {"0": output}}}

    def spec_of(X):
        setup_seed(seed)
        return generate_rkme_table_spec(X, gamma=0.1, reduced_set_size=k, cuda_idx=-1)

    def rmse(y, p):
        return float(np.sqrt(np.mean((np.asarray(y, float) - np.asarray(p, float).reshape(-1))
                                     ** 2)))

    out = {"versions": {"learnware": learnware.__version__, "torch": torch.__version__},
           "mapping_params": mapping, "align_params": align, "users": [], "errors": {}}
    lws, meta = [], cfg["learnwares"]
    t0 = time.perf_counter()
    for i, m in enumerate(meta):
        with np.load(data / f"lw_{i:03d}.npz", allow_pickle=False) as f:
            X, y = f["X"], f["y"]
        est = HistGradientBoostingRegressor(**cfg["model"]).fit(X, y)
        spec = Specification(semantic_spec=semantic(m["descriptions"], m["output"]),
                             stat_spec={name: spec_of(X)})
        lws.append(Learnware(str(i), FittedModel(est, X.shape[1]), spec, "."))
    out["build_seconds"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ref-hetero-") as tmp:
        market_mapping = HeteroMapTableOrganizer.train(learnware_list=lws,
                                                       save_dir=str(Path(tmp) / "model.bin"),
                                                       **mapping)
    out["mapping_train_seconds"] = time.perf_counter() - t0

    def hetero_spec(rkme, descs):
        return market_mapping.hetero_mapping(rkme, {str(i): d for i, d in enumerate(descs)})

    lw_hetero = [hetero_spec(lw.get_specification().get_stat_spec()[name], m["descriptions"])
                 for lw, m in zip(lws, meta, strict=True)]
    for j, um in enumerate(cfg["users"]):
        with np.load(data / f"user_{j:03d}.npz", allow_pickle=False) as f:
            X, y, test, pool, orders = (f[a] for a in ("X", "y", "test", "pool", "orders"))
        u = {"panel": um["panel"], "group": um["group"], "user": um.get("user", um["group"]),
             "curves_requested": bool(um.get("curves", True))}
        t0 = time.perf_counter()
        user_rkme = spec_of(X[pool])
        uh = hetero_spec(user_rkme, um["descriptions"])
        dist = [float(uh.dist(h)) for h in lw_hetero]
        ranking = [int(i) for i in np.argsort(dist, kind="stable")]
        u["search_seconds"] = time.perf_counter() - t0
        u["ranking"] = ranking
        same = [i for i, m in enumerate(meta) if m["panel"] == um["panel"]]
        err, preds = {}, {}
        for i in sorted(set(same) | set(ranking[: int(cfg["top_ensemble"])])):
            try:
                al = FeatureAlignLearnware(lws[i], cuda_idx=-1, **align)
                al.align(user_rkme)
                preds[i] = np.asarray(al.predict(X[test].copy()), float).reshape(-1)
                err[i] = rmse(y[test], preds[i])
            except Exception as exc:  # noqa: BLE001 -- record why, keep going
                out["errors"]["feature_align"] = f"{type(exc).__name__}: {str(exc)[:300]}"
                err[i] = math.nan
        ok = [i for i in same if math.isfinite(err[i])]
        if ok:
            oracle = min(ok, key=lambda i: err[i])
            top1 = ranking[0]
            u.update(mean=float(np.mean([err[i] for i in ok])), oracle=err[oracle],
                     top1=err.get(top1, math.nan), hit1=int(top1 == oracle),
                     regret=err.get(top1, math.nan) - err[oracle])
            ens = [i for i in ranking[: int(cfg["top_ensemble"])] if i in preds]
            u["ensemble"] = (rmse(y[test], np.mean([preds[i] for i in ens], axis=0))
                             if ens else math.nan)
        u["err"] = {str(i): e for i, e in err.items()}
        curves = {}
        for r in range(int(cfg["repeats"]) if um.get("curves", True) else 0):
            for n in cfg["n_labels"]:
                lab = pool[orders[r][: min(int(n), len(pool))]]
                try:
                    hm = HeteroMapAlignLearnware(lws[ranking[0]], mode="regression",
                                                 cuda_idx=-1, **align)
                    hm.align(user_rkme, X[lab].copy(), y[lab])
                    curves.setdefault(str(n), []).append(rmse(y[test], hm.predict(
                        X[test].copy())))
                except Exception as exc:  # noqa: BLE001
                    out["errors"]["hetero_map_align"] = f"{type(exc).__name__}: {str(exc)[:300]}"
                    curves.setdefault(str(n), []).append(math.nan)
        u["curves"] = curves
        out["users"].append(u)
        print(f"user {j + 1}/{len(cfg['users'])} done", file=sys.stderr, flush=True)
    with open(args.out, "w") as fh:
        json.dump(out, fh)


def cmd_version(args: argparse.Namespace) -> None:
    import learnware

    print(learnware.__version__)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("hetero-scenario", help="the hetero scenario (benchmarks/hetero.py)")
    p.add_argument("--data", required=True, help="exchange folder written by hetero.py")
    p.add_argument("--out", required=True, help="output .json")
    p.set_defaults(func=cmd_hetero_scenario)
    p = sub.add_parser("version", help="import learnware and print its version")
    p.set_defaults(func=cmd_version)
    args = parser.parse_args(argv)
    _prepare_env()
    args.func(args)


if __name__ == "__main__":
    main()
