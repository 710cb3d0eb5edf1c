"""Builders for the heterogeneous-search integration tests: two islands cut from one real
table (scikit-learn's diabetes data) with different, renamed column sets, and a user holding a
third subset. Holds no assertions (PYTEST_DONT_REWRITE)."""

from __future__ import annotations

import functools
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.datasets import load_diabetes
from sklearn.linear_model import Ridge

from learndock.package import pack, write_package
from learndock.spec import RKMETableSpec

#: The diabetes columns and their descriptions (from the data set's documentation).
DESCRIPTIONS = [
    "age in years", "sex", "body mass index", "average blood pressure",
    "tc, total serum cholesterol", "ldl, low-density lipoproteins",
    "hdl, high-density lipoproteins", "tch, total cholesterol / HDL",
    "ltg, possibly log of serum triglycerides level", "glu, blood sugar level",
]
#: Island A: columns 0-6 under their short names; island B: columns 3-9, renamed.
ISLAND_A = (list(range(7)), ["age", "sex", "bmi", "bp", "s1", "s2", "s3"])
ISLAND_B = (list(range(3, 10)),
            ["blood_pressure", "chol", "ldl", "hdl", "tch", "ltg", "glucose"])
#: The user's columns: some of A's, some of B's, some of both, renamed again.
USER_COLS = [2, 3, 4, 8, 9]
USER_NAMES = ["BMI", "BP", "TC", "LTG", "GLU"]
TARGET = "disease progression one year after baseline"
SPEC_K = 15


@functools.lru_cache(maxsize=1)
def diabetes() -> tuple[np.ndarray, np.ndarray]:
    X, y = load_diabetes(return_X_y=True)
    return X, y


def island_package(workdir: Path, island: tuple[list[int], list[str]], part: int,
                   name: str) -> Path:
    """A packed Ridge learnware on rows ``part::2`` of the island's columns."""
    cols, names = island
    X, y = diabetes()
    Xi, yi = X[part::2][:, cols], y[part::2]
    spec = RKMETableSpec.fit(Xi, SPEC_K, max_iter=4, random_state=part)
    sem: dict[str, Any] = {
        "name": name, "description": f"Diabetes progression from {len(cols)} measurements.",
        "data_type": "Table", "task_type": "Regression", "library_type": "Scikit-learn",
        "scenarios": ["Health"], "license": "MIT",
        "input": {"dimension": len(cols),
                  "descriptions": {i: DESCRIPTIONS[c] for i, c in enumerate(cols)}},
        "output": {"dimension": 1, "descriptions": {0: TARGET}},
    }
    d = workdir / f"{name}-{uuid.uuid4().hex[:6]}"
    write_package(d, Ridge(alpha=0.1).fit(Xi, yi), name=name, semantic=sem, spec=spec,
                  feature_names=names)
    out = d.parent / f"{d.name}.zip"
    pack(d, out)
    return out


def user_data() -> tuple[np.ndarray, list[str], list[str]]:
    """(rows, column names, descriptions) of the user's table."""
    X, _ = diabetes()
    return X[1::3][:, USER_COLS], list(USER_NAMES), [DESCRIPTIONS[c] for c in USER_COLS]


def user_spec() -> RKMETableSpec:
    X, _, _ = user_data()
    return RKMETableSpec.fit(X, SPEC_K, max_iter=4, random_state=0)


def two_island_dock(workdir: Path) -> Iterator[Any]:
    """A live dock (hashing column embedder, no workers) holding one learnware of each of
    ISLAND_A and ISLAND_B (yield it from a module-scoped fixture)."""
    import pytest

    from server_helpers import LiveServer

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LEARNDOCK_HETERO_EMBEDDER", "hashing")
        with LiveServer(workdir / "home", workers=0) as s:
            for isl, name in ((ISLAND_A, "dia-a"), (ISLAND_B, "dia-b")):
                s.dock.market.add(island_package(workdir, isl, 0, name))
            yield s
