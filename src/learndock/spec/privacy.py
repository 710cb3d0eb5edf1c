"""How close does a spec come to the data it was built from?

A spec is published; its reduced set must not contain near-copies of training samples. For
every reduced-set point we measure the distance to its nearest training sample and compare it
with the *typical* nearest-neighbour distance between training samples themselves (the median
over a seeded sample). A ratio well below 1 means that point sits closer to one training sample
than training samples sit to each other -- a near-copy. Distances are measured in the space the
spec lives in (the scaled feature space of a table spec, the encoder's space of an image or text
spec), which is also the space an attacker would start from.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from learndock.errors import SpecError
from learndock.spec.embedding import RKMEEmbeddingSpec
from learndock.spec.kernels import row_batches, sq_dists
from learndock.spec.table import RKMETableSpec, as_2d_float

#: A reduced-set point closer than this fraction of the typical NN distance is a near-copy.
NEAR_COPY_RATIO = 0.5


@dataclass(frozen=True)
class PrivacyReport:
    n_points: int
    n_train: int
    typical_nn_distance: float  # median NN distance between training samples
    min_ratio: float  # smallest (reduced point -> nearest train) / typical
    median_ratio: float
    n_near_copies: int  # reduced points with ratio < NEAR_COPY_RATIO
    ratios: list[float]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        return (f"{self.n_points} reduced points vs {self.n_train} training samples: nearest-"
                f"sample distance / typical NN distance: min {self.min_ratio:.2f}, median "
                f"{self.median_ratio:.2f}; near-copies (< {NEAR_COPY_RATIO}): {self.n_near_copies}")


def _nn_dist(A: np.ndarray, B: np.ndarray, self_index: np.ndarray | None = None) -> np.ndarray:
    """Distance from each row of A to its nearest row of B; with ``self_index``, row i of A is
    row ``self_index[i]`` of B and that one entry is skipped (by index: a norm-based test
    misses many self-pairs, whose computed distance is rounding noise, not zero)."""
    out = np.empty(A.shape[0])
    for sl in row_batches(A.shape[0], 2048):
        d = sq_dists(A[sl], B)
        if self_index is not None:
            d[np.arange(d.shape[0]), self_index[sl]] = np.inf
        out[sl] = np.sqrt(np.maximum(d.min(axis=1), 0.0))
    return out


def near_copy_ratios(Z: np.ndarray, T: np.ndarray, *, n_reference: int = 2000,
                     random_state: int | None = 0) -> tuple[np.ndarray, float]:
    """(distance of each point of Z to its nearest row of T / typical NN distance in T, typical)."""
    rng = np.random.default_rng(random_state)
    ref = rng.choice(T.shape[0], size=min(n_reference, T.shape[0]), replace=False)
    typical = float(np.median(_nn_dist(T[ref], T, self_index=ref)))
    return _nn_dist(Z, T) / max(typical, 1e-12), typical


def privacy_report(
    spec: RKMETableSpec,
    X: Any,
    *,
    embeddings: np.ndarray | None = None,
    n_reference: int = 2000,
    random_state: int | None = 0,
) -> PrivacyReport:
    """Compare ``spec``'s reduced set with the training data ``X`` it was built from.

    For image/text specs pass ``embeddings`` (the encoder's output for ``X``) to skip encoding.
    """
    if isinstance(spec, RKMEEmbeddingSpec):
        T = np.asarray(embeddings) if embeddings is not None else spec.encode(X)
        Z = np.asarray(spec.z)
    else:
        T = spec.kernel.scaled(as_2d_float(X))
        Z = spec.kernel.scaled(spec.z)
    if T.ndim != 2 or T.shape[1] != Z.shape[1]:
        raise SpecError(f"training data has shape {T.shape}, spec points have {Z.shape[1]} dims")
    ratios, typical = near_copy_ratios(Z, T, n_reference=n_reference, random_state=random_state)
    return PrivacyReport(
        n_points=int(Z.shape[0]), n_train=int(T.shape[0]), typical_nn_distance=typical,
        min_ratio=float(ratios.min()), median_ratio=float(np.median(ratios)),
        n_near_copies=int((ratios < NEAR_COPY_RATIO).sum()), ratios=ratios.tolist(),
    )
