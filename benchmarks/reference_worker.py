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

    # Future subcommands (e.g. `search --market DIR --user USER.json`) go here.

    args = parser.parse_args(argv)
    _prepare_env()
    args.func(args)


if __name__ == "__main__":
    main()
