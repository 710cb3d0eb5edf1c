"""Reference engine: build its RKME table specs over given vectors and rank with its searcher.

Runs ONLY under the reference venv (``.venv-ref/bin/python``), never imports learndock, and
reads/writes plain .npz/.json files (no pickle). Used by the text scenario: the reference's own
text spec downloads its encoder at run time (impossible offline), and is a table RKME over
sentence embeddings, so we give it the *same* MiniLM embeddings we use.

    .venv-ref/bin/python benchmarks/reference_rank_worker.py --data IN.npz --out OUT.json

IN.npz: ``lw_X_<i>`` (embeddings of learnware i's training texts), ``user_X_<j>``, ``k``,
``gamma``, ``seed``, ``max_search_num``. OUT.json: per learnware spec seconds; per user spec
seconds, search seconds, full ranking (learnware indices by its MMD) and its mixture.
"""

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reference_worker import _prepare_env  # noqa: E402


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    _prepare_env()
    import numpy as np
    import torch

    torch.set_num_threads(1)
    from learnware.learnware import Learnware
    from learnware.market.base import BaseUserInfo
    from learnware.market.easy import EasyStatSearcher
    from learnware.model import BaseModel
    from learnware.specification import Specification, generate_rkme_table_spec
    from learnware.utils import setup_seed

    name = "RKMETableSpecification"
    with np.load(args.data, allow_pickle=False) as f:
        files = dict(f)
    k, gamma, seed = int(files["k"]), float(files["gamma"]), int(files["seed"])
    n_lw = len([key for key in files if key.startswith("lw_X_")])
    n_users = len([key for key in files if key.startswith("user_X_")])

    class NoModel(BaseModel):
        """Ranking needs no predictions; the reference still wants a model object."""

        def __init__(self, d):
            super().__init__(input_shape=(d,), output_shape=(1,))

        def fit(self, X, y):
            raise NotImplementedError

        def predict(self, X):
            raise NotImplementedError("this worker only ranks")

        def finetune(self, X, y):
            raise NotImplementedError

    def spec_of(X):
        setup_seed(seed)
        t0 = time.perf_counter()
        spec = generate_rkme_table_spec(X, gamma=gamma, reduced_set_size=k, cuda_idx=-1)
        return spec, time.perf_counter() - t0

    out = {"learnwares": [], "users": []}
    lws = []
    for i in range(n_lw):
        X = files[f"lw_X_{i}"]
        spec, s = spec_of(X)
        lws.append(Learnware(str(i), NoModel(X.shape[1]), Specification(stat_spec={name: spec}),
                             "."))
        out["learnwares"].append({"spec_seconds": s})
    searcher = EasyStatSearcher(organizer=None)
    searcher.stat_spec_type = name
    for j in range(n_users):
        spec, s = spec_of(files[f"user_X_{j}"])
        user = BaseUserInfo(stat_info={name: spec})
        t0 = time.perf_counter()
        res = searcher(lws, user, max_search_num=int(files["max_search_num"]),
                       search_method="greedy")
        search_s = time.perf_counter() - t0
        _, ranked = searcher._search_by_rkme_spec_single(lws, spec)
        multiple = res.get_multiple_results()
        out["users"].append({
            "spec_seconds": s,
            "search_seconds": search_s,
            "ranking": [int(lw.id) for lw in ranked],
            "mixture": [int(lw.id) for lw in multiple[0].learnwares] if multiple else [],
        })
    Path(args.out).write_text(json.dumps(out))


if __name__ == "__main__":
    main()
