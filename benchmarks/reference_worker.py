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
    t0 = time.perf_counter()
    spec = generate_rkme_table_spec(X, gamma=args.gamma, reduced_set_size=args.k, cuda_idx=-1)
    seconds = time.perf_counter() - t0
    np.savez(
        args.out,
        z=np.asarray(spec.get_z(), dtype=np.float64),
        beta=np.asarray(spec.get_beta(), dtype=np.float64).reshape(-1),
        gamma=np.float64(spec.gamma),
        seconds=np.float64(seconds),
    )


def cmd_version(args: argparse.Namespace) -> None:
    import learnware

    print(learnware.__version__)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("table-spec", help="time generate_rkme_table_spec on X (.npy)")
    p.add_argument("--x", required=True, help="input .npy (n x d)")
    p.add_argument("--out", required=True, help="output .npz with z, beta, gamma, seconds")
    p.add_argument("--k", type=int, default=100, help="reduced set size")
    p.add_argument("--gamma", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_table_spec)

    p = sub.add_parser("version", help="import learnware and print its version")
    p.set_defaults(func=cmd_version)

    # Future subcommands (e.g. `search --market DIR --user USER.json`) go here.

    args = parser.parse_args(argv)
    _prepare_env()
    args.func(args)


if __name__ == "__main__":
    main()
