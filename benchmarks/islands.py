"""The README's developer example at market scale: 20 developers of one 16-feature table, each
fitting a spec with the defaults (``RKMETableSpec.fit(X_train)``, ``scale="auto"`` from their own
data), and 20 users (one per developer's task) searching.

Reports the number of islands the market makes, how many learnwares a user's search can reach,
and top-1 / top-3 identification (the user's own developer's learnware), for:

* **island per kernel** (the rule before one island per feature space): a spec is comparable only
  with specs fitted under exactly its kernel, so a user reaches the learnwares of the island whose
  kernel they fit with (``kernel_for``: the largest such island);
* **one island, user fits with the island's kernel** (``learndock market kernel``);
* **one island, user fits with their own defaults** (rescored under the island's kernel).

The data: scikit-learn digits pooled to 4x4 = 16 features; developer i trains on a subset of 3
digit classes (20 different subsets), users hold held-out rows of the same subsets.

Run: ``python -m benchmarks.islands`` (about a minute).
"""

from __future__ import annotations

import itertools
import json
import tempfile
from pathlib import Path

import numpy as np

from benchmarks.common import machine_info

REPO_ROOT = Path(__file__).resolve().parent.parent
SUBSETS = list(itertools.combinations(range(10), 3))[::6]


def data() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    X, y = load_digits(return_X_y=True)
    X = X.reshape(-1, 4, 2, 4, 2).mean(axis=(2, 4)).reshape(-1, 16)
    return tuple(train_test_split(X, y, test_size=0.3, stratify=y, random_state=0))  # type: ignore[return-value]


def main() -> int:
    from sklearn.linear_model import LogisticRegression

    from learndock.market import Market
    from learndock.package import pack, write_package
    from learndock.spec import RKMETableSpec

    Xa, Xb, ya, yb = data()
    work = Path(tempfile.mkdtemp(prefix="islands-bench-"))
    market = Market(work / "home")
    ids, dev_kernels, dev_specs = [], [], []
    for classes in SUBSETS:
        m = np.isin(ya, classes)
        spec = RKMETableSpec.fit(Xa[m], 50, random_state=0)  # the README's defaults
        dev_kernels.append(spec.kernel)
        dev_specs.append(spec)
        d = work / ("dev" + "".join(map(str, classes)))
        write_package(d, LogisticRegression(max_iter=1000).fit(Xa[m], ya[m]), name=d.name,
                      spec=spec, semantic={
                          "name": d.name, "description": "digits", "data_type": "Table",
                          "task_type": "Classification", "library_type": "Scikit-learn",
                          "scenarios": ["Education"], "license": "MIT",
                          "input": {"dimension": 16, "descriptions": {i: f"cell {i}"
                                                                      for i in range(16)}},
                          "output": {"dimension": 3, "descriptions": {i: f"class {i}"
                                                                      for i in range(3)}}})
        pack(d, d.with_suffix(".zip"))
        ids.append(market.add(d.with_suffix(".zip")).learnware_id)
    kernel_groups: dict[str, list[int]] = {}
    for i, k in enumerate(dev_kernels):
        kernel_groups.setdefault(k.key(), []).append(i)
    largest = max(kernel_groups.values(), key=len)
    island = market.islands()[0]
    rows = {"island per kernel (before)": [], "one island, island's kernel": [],
            "one island, user's own defaults": []}
    reach = {}
    for classes in SUBSETS:
        m = np.isin(yb, classes)
        # before: only the largest island of the user's kernel is searched (kernel_for)
        own = RKMETableSpec.fit(Xb[m], 50, kernel=dev_kernels[largest[0]], random_state=1)
        ranked_before = sorted(largest, key=lambda j: own.mmd(dev_specs[j]))
        rows["island per kernel (before)"].append([ids[j] for j in ranked_before])
        reach["island per kernel (before)"] = len(largest)
        user = RKMETableSpec.fit(Xb[m], 50, kernel=market.kernel_for(16), random_state=1)
        rows["one island, island's kernel"].append(
            [s.learnware_id for s in market.search(spec=user, top_k=20).single])
        mine = RKMETableSpec.fit(Xb[m], 50, random_state=1)
        rows["one island, user's own defaults"].append(
            [s.learnware_id for s in market.search(spec=mine, top_k=20).single])
    reach["one island, island's kernel"] = reach["one island, user's own defaults"] = \
        island.n_learnwares
    out = {"machine": machine_info(), "developers": len(SUBSETS),
           "distinct_fitting_kernels": len(kernel_groups), "islands": len(market.islands()),
           "kernel_history": market.island_kernel(island.key).history, "rows": {}}
    for name, ranked in rows.items():
        top1 = np.mean([r[:1] == [ids[u]] for u, r in enumerate(ranked)])
        top3 = np.mean([ids[u] in r[:3] for u, r in enumerate(ranked)])
        out["rows"][name] = {"reachable": reach[name], "top1": float(top1), "top3": float(top3)}
    print(json.dumps(out, indent=1))
    dest = REPO_ROOT / "benchmarks" / "results" / "islands"
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "islands.json").write_text(json.dumps(out, indent=1))
    market.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
