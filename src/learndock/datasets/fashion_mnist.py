"""Fashion-MNIST from the Debian package ``dataset-fashion-mnist`` (installs offline).

The files are found through ``dpkg -L`` (no hard-coded path) or ``$LEARNDOCK_FASHION_MNIST``,
and read as IDX gz files with numpy.
"""

from __future__ import annotations

import gzip
import os
import subprocess
from functools import lru_cache
from pathlib import Path

import numpy as np

from learndock.errors import LearndockError

CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
           "Bag", "Ankle boot"]
INSTALL_HINT = "apt-get install -y dataset-fashion-mnist (Debian package, 31 MB)"


def data_dir() -> Path:
    """The folder holding the IDX files."""
    env = os.environ.get("LEARNDOCK_FASHION_MNIST")
    if env:
        return Path(env)
    try:
        out = subprocess.run(["dpkg", "-L", "dataset-fashion-mnist"], capture_output=True,
                             text=True, check=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        raise LearndockError(f"Fashion-MNIST is not installed: {INSTALL_HINT}") from None
    for line in out.splitlines():
        if line.rstrip("/").endswith("/fashion-mnist") and Path(line).is_dir():
            return Path(line)
    raise LearndockError(f"dataset-fashion-mnist lists no fashion-mnist folder: {INSTALL_HINT}")


def available() -> bool:
    try:
        return (data_dir() / "train-images-idx3-ubyte.gz").is_file()
    except LearndockError:
        return False


def _read(path: Path, offset: int) -> np.ndarray:
    with gzip.open(path, "rb") as fh:
        return np.frombuffer(fh.read(), dtype=np.uint8, offset=offset)


@lru_cache(maxsize=2)
def load(split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """Images ``(N, 28, 28)`` uint8 and labels ``(N,)`` int64; ``split`` is train or test."""
    prefix = {"train": "train", "test": "t10k"}.get(split)
    if prefix is None:
        raise ValueError("split must be 'train' or 'test'")
    d = data_dir()
    images = _read(d / f"{prefix}-images-idx3-ubyte.gz", 16).reshape(-1, 28, 28)
    labels = _read(d / f"{prefix}-labels-idx1-ubyte.gz", 8).astype(np.int64)
    if images.shape[0] != labels.shape[0]:
        raise LearndockError(f"Fashion-MNIST {split}: {images.shape[0]} images, "
                             f"{labels.shape[0]} labels")
    return images, labels
