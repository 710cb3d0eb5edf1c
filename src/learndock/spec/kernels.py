"""The Gaussian kernel on scaled features, batched so memory stays O(rows x K).

``k(x, y) = exp(-gamma * ||(x - y) / scale||^2)``. The per-feature ``scale`` is part of the
kernel (stored in every spec): it keeps the kernel from degenerating on features measured in
large units, and because it is a property of the *feature space* rather than of one data set,
specs of the same feature space stay comparable (see :func:`infer_scale`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from learndock.errors import KernelMismatchError, SpecError

#: Rows processed per batch in kernel sums against large data (memory ~ rows x K x 8 bytes).
DEFAULT_BATCH_ROWS = 16_384


def default_gamma(dimension: int) -> float:
    """``1 / d``: on features in unit scale a typical pair sits at ``||x-y||^2 ~ 2d``, so the
    kernel value of a typical pair is ~e^-2 -- neither ~1 (blind) nor ~0 (degenerate) whatever
    the dimension. Narrower than the median heuristic, which identifies learnwares worse."""
    return 1.0 / float(dimension)


#: Offset (in octaves) of the grid :func:`infer_scale` snaps a standard deviation to: scales
#: are ``2**(k + 0.25)`` (..., 0.297, 0.595, 1.19, ...), so rounding flips at ``log2(std) =
#: k + 0.75``. The plain power-of-two grid flips at ``k + 0.5``, exactly where sin/cos of a
#: uniform angle (std 1/sqrt 2) sits; on this grid sin/cos and standardised features (std 1) are
#: 0.25 octave (19% of the std) from a flip, uniform features (1/sqrt 12, 1/sqrt 3) 0.46.
SCALE_GRID_OFFSET = 0.25


def infer_scale(X: np.ndarray) -> np.ndarray:
    """Per-feature scale: a property of the feature's units, stable across samples.

    * A two-valued feature (a one-hot or other indicator) gets half the gap between its two
      values (0.5 for 0/1): its units, whatever the class frequency. Its std,
      ``sqrt(p (1 - p))``, would move with the frequency and, for 1-in-k one-hots with k from 2
      to 12, covers most of an octave, so any rounding grid would cut through it.
    * Any other feature gets its standard deviation snapped to the grid ``2**(k + 0.25)``
      (see ``SCALE_GRID_OFFSET``): data sets of the same feature space whose spreads differ by
      less than ~19% get the same kernel, and common distributions sit far from a flip.
    * Constant or all-missing features get scale 1.
    """
    X = np.asarray(X, dtype=np.float64)
    finite = np.isfinite(X)
    if finite.all():  # the common case: no masked copy of a large table
        std = X.std(axis=0)
        lo, hi = X.min(axis=0), X.max(axis=0)
        two = (np.equal(X, lo) | np.equal(X, hi)).all(axis=0)
    else:
        import warnings

        masked = np.where(finite, X, np.nan)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            std = np.nanstd(masked, axis=0)
            lo, hi = np.nanmin(masked, axis=0), np.nanmax(masked, axis=0)
        two = (np.equal(X, lo) | np.equal(X, hi) | ~finite).all(axis=0)
    ok = np.isfinite(std) & (std > 0)
    snapped = np.exp2(np.round(np.log2(np.where(ok, std, 1.0)) - SCALE_GRID_OFFSET)
                      + SCALE_GRID_OFFSET)
    scale = np.where(two & ok & (hi > lo), (hi - lo) / 2.0, snapped)
    return np.where(ok, scale, 1.0)


@dataclass(frozen=True, eq=False)
class GaussianKernel:
    """Gaussian (RBF) kernel with a per-feature scale; equality is exact on the parameters."""

    gamma: float
    scale: np.ndarray = field(repr=False)

    def __post_init__(self) -> None:
        scale = np.asarray(self.scale, dtype=np.float64).reshape(-1)
        if not (np.isfinite(self.gamma) and self.gamma > 0):
            raise SpecError(f"kernel gamma must be a positive finite number, got {self.gamma!r}")
        if scale.size == 0 or not np.all(np.isfinite(scale)) or np.any(scale <= 0):
            raise SpecError("kernel scale must be a non-empty vector of positive finite numbers")
        scale.setflags(write=False)
        object.__setattr__(self, "scale", scale)
        object.__setattr__(self, "gamma", float(self.gamma))

    @classmethod
    def for_dimension(cls, dimension: int, gamma: float | None = None) -> GaussianKernel:
        return cls(gamma if gamma is not None else default_gamma(dimension), np.ones(dimension))

    @property
    def dimension(self) -> int:
        return int(self.scale.shape[0])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, GaussianKernel):
            return NotImplemented
        return self.gamma == other.gamma and np.array_equal(self.scale, other.scale)

    def __hash__(self) -> int:
        return hash(self.key())

    def key(self) -> str:
        """A short canonical id of the kernel, used in island keys."""
        h = hashlib.sha256()
        h.update(b"gaussian\0")
        h.update(np.float64(self.gamma).tobytes())
        h.update(np.ascontiguousarray(self.scale, dtype="<f8").tobytes())
        return "gauss-" + h.hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        return {"type": "gaussian", "gamma": self.gamma, "scale": self.scale.tolist()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GaussianKernel:
        if not isinstance(d, dict):
            raise SpecError(f"kernel must be a JSON object, got {type(d).__name__}")
        if d.get("type", "gaussian") != "gaussian":
            raise SpecError(f"unknown kernel type {d.get('type')!r}; only 'gaussian' is supported")
        try:
            return cls(float(d["gamma"]), np.asarray(d["scale"], dtype=np.float64))
        except KeyError as exc:
            raise SpecError(f"kernel is missing field {exc.args[0]!r}") from None

    def describe(self) -> str:
        s = self.scale
        scale = f"{s[0]:g}" if np.all(s == s[0]) else f"per-feature [{s.min():g} .. {s.max():g}]"
        return json.dumps({"gamma": self.gamma, "scale": scale})

    def check_same(self, other: GaussianKernel, what: str = "specs") -> None:
        if self.dimension != other.dimension:
            raise KernelMismatchError(
                f"cannot compare {what}: dimensions differ ({self.dimension} vs {other.dimension})"
            )
        if self != other:
            raise KernelMismatchError(
                f"cannot compare {what}: kernel parameters differ ({self.key()} gamma="
                f"{self.gamma:g} vs {other.key()} gamma={other.gamma:g}); regenerate one spec "
                "with the other's kernel (e.g. `learndock spec table --kernel-from OTHER.json`)"
            )

    # -- kernel evaluation (inputs already divided by scale) -------------------------------
    def scaled(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(X, dtype=np.float64) / self.scale

    def gram_scaled(self, A: np.ndarray, B: np.ndarray) -> np.ndarray:
        return np.exp(-self.gamma * sq_dists(A, B))

    def gram(self, A: np.ndarray, B: np.ndarray) -> np.ndarray:
        return self.gram_scaled(self.scaled(A), self.scaled(B))


def sq_dists(
    A: np.ndarray,
    B: np.ndarray,
    a_sq: np.ndarray | None = None,
    b_sq: np.ndarray | None = None,
) -> np.ndarray:
    """Squared Euclidean distances via the BLAS identity, clipped at 0 (float64)."""
    if a_sq is None:
        a_sq = np.einsum("ij,ij->i", A, A)
    if b_sq is None:
        b_sq = np.einsum("ij,ij->i", B, B)
    d = A @ B.T
    d *= -2.0
    d += a_sq[:, None]
    d += b_sq[None, :]
    np.maximum(d, 0.0, out=d)
    return d


def row_batches(n: int, batch_rows: int = DEFAULT_BATCH_ROWS) -> Iterator[slice]:
    for start in range(0, n, batch_rows):
        yield slice(start, min(n, start + batch_rows))


class RandomFourierFeatures:
    """Random Fourier features for the Gaussian kernel (Rahimi & Recht).

    ``phi(x) . phi(y) ~ k(x, y)``, so a spec's embedding ``sum_j beta_j phi(z_j)`` turns MMD
    between specs into a Euclidean distance between fixed-length vectors. Seeded: one seed per
    island gives every spec of the island the same feature map.
    """

    def __init__(self, kernel: GaussianKernel, n_components: int = 256, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        d = kernel.dimension
        self.kernel = kernel
        self.n_components = n_components
        self.W = rng.normal(0.0, np.sqrt(2.0 * kernel.gamma), size=(d, n_components))
        self.b = rng.uniform(0.0, 2 * np.pi, size=n_components)

    def transform(self, X: np.ndarray) -> np.ndarray:
        U = self.kernel.scaled(X)
        return np.sqrt(2.0 / self.n_components) * np.cos(U @ self.W + self.b)

    def embed(self, z: np.ndarray, beta: np.ndarray) -> np.ndarray:
        return beta @ self.transform(z)
