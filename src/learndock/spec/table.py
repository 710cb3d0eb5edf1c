"""RKME table specification: a small weighted point set whose kernel mean matches the data.

Given data X (n x d) the spec is a reduced set ``z`` (K x d, in the data's own units) and
weights ``beta`` (non-negative, summing to one) that minimise

    MMD^2(X, spec) = mean_{i,l} k(x_i, x_l) - 2 sum_j beta_j c_j + beta' K_zz beta,
    c_j = mean_l k(z_j, x_l).

Fitting runs a preconditioned quasi-Newton method (L-BFGS) on ``z`` from a k-means++ start,
with ``beta`` solved exactly (active-set simplex QP) at every step, in float32, on a seeded
sample of the rows that grows in stages on very large tables; beta is then re-solved against
all rows. Every pass over X is batched, so memory is O(batch x K), never n x n, and only numpy
is imported (a whole ``learndock spec table`` process must start and finish in well under a
second).
"""

from __future__ import annotations

import functools
import hashlib
import json
import warnings
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from learndock.errors import SpecError
from learndock.spec.kernels import (
    DEFAULT_BATCH_ROWS,
    GaussianKernel,
    default_gamma,
    infer_scale,
    row_batches,
    sq_dists,
)
from learndock.spec.kmeans import kmeans_plusplus
from learndock.spec.simplex import simplex_qp_active_set

SPEC_TYPE = "rkme-table"
FORMAT_VERSION = 1
REFERENCE_TYPES = ("RKMETableSpecification", "RKMEStatSpecification")

#: Above this many rows a progress bar is shown while fitting.
PROGRESS_ROWS = 200_000
#: Rows of the first optimisation stage (at least 20 K): the data term is a mean over rows,
#: and below this many rows a spec starts to fit the sample rather than the data (measured in
#: benchmarks/spec_speed.py).
OPT_ROWS = 2_000
#: Quasi-Newton steps per round (the unit of ``max_iter`` and of the convergence test).
ROUND_STEPS = 10
#: Rows of the optimisation sample used to estimate the data-data term of MMD^2; it enters only
#: the reported MMD^2, never the optimum or the convergence test.
XX_ROWS = 1_000
#: Largest optimisation sample (rows; reached from 3.2 million rows on, see
#: ``STAGE_ROWS_DIVISOR``): its sampling floor ``1/m`` (~3e-5) is a few per cent of the MMD^2
#: of a K = 100 spec on the benchmark data, and a stage on it takes a few seconds.
OPT_ROWS_MAX = 32_000
#: Each stage optimises on this many times the rows of the previous one.
STAGE_GROWTH = 4
#: A later stage has at most n / this many rows: a stage takes ~100 evaluations on its m rows,
#: so it costs about as much as one pass over all n rows (which the fit makes anyway).
STAGE_ROWS_DIVISOR = 100
#: Halvings of the step before a line search gives up.
LINE_SEARCH_STEPS = 30
#: The mean-shift preconditioner divides by ``c_j = mean_l k(z_j, x_l)``; below this fraction
#: of the beta-weighted mean of c it is floored, so a point that has drifted away from the data
#: (c_j -> 0) does not get an unbounded step (it would cap the step of every other point).
PRECOND_FLOOR = 0.25


def as_2d_float(X: Any, what: str = "X") -> np.ndarray:
    """Validate and convert table data (array, DataFrame, list) to a float64 n x d array."""
    try:
        arr = np.asarray(X, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise SpecError(f"{what} must be numeric: {exc}") from None
    if arr.ndim == 1:
        raise SpecError(
            f"{what} must be 2-D (n_samples, n_features); got a 1-D array of length "
            f"{arr.shape[0]} -- reshape(-1, 1) for a single feature"
        )
    if arr.ndim > 2:
        arr = arr.reshape(arr.shape[0], -1)
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise SpecError(f"{what} is empty (shape {arr.shape})")
    return arr


def handle_missing(X: np.ndarray, policy: str = "impute") -> tuple[np.ndarray, int]:
    """Apply the missing-value policy; returns the cleaned array and the number of cells fixed.

    ``impute`` (default): +-inf count as missing and each missing cell takes its column's mean
    over the finite values (rows are kept, so the spec still weighs every record).
    ``drop``: rows with any missing cell are removed. ``error``: any missing cell raises.
    """
    bad = ~np.isfinite(X)
    n_bad = int(bad.sum())
    if n_bad == 0:
        return X, 0
    if policy == "error":
        raise SpecError(f"data has {n_bad} NaN/inf cells and missing='error'")
    if policy == "drop":
        keep = ~bad.any(axis=1)
        if not keep.any():
            raise SpecError("every row has a NaN/inf cell; nothing left after missing='drop'")
        return X[keep], n_bad
    if policy != "impute":
        raise SpecError(f"unknown missing-value policy {policy!r} (impute, drop or error)")
    all_bad = np.flatnonzero(bad.all(axis=0))
    if all_bad.size:
        raise SpecError(f"feature columns {all_bad.tolist()[:10]} have no finite value at all")
    X = np.where(bad, np.nan, X)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        means = np.nanmean(X, axis=0)
    rows, cols = np.nonzero(bad)
    X[rows, cols] = means[cols]
    return X, n_bad


def check_weights(beta: np.ndarray, what: str = "weights") -> None:
    """Finite weights must be non-negative and sum to 1; each failure has its own message."""
    if np.any(beta < -1e-12):
        raise SpecError(
            f"{what} must be non-negative (smallest is {beta.min():.3g}); weights must be "
            "non-negative and sum to 1"
        )
    with np.errstate(over="ignore"):
        total = float(beta.sum())
    if not np.any(beta > 0):
        raise SpecError(f"all {what} are zero; weights must be non-negative and sum to 1")
    if not abs(total - 1.0) <= 1e-6:
        raise SpecError(f"{what} must sum to 1 (their sum is {total:.6g})")


@dataclass(frozen=True, eq=False)
class RKMETableSpec:
    """A fitted RKME table spec. Immutable; compare specs only under the same kernel."""

    z: np.ndarray = field(repr=False)
    beta: np.ndarray = field(repr=False)
    kernel: GaussianKernel
    n_samples: int = 0
    fit_info: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    type_name = SPEC_TYPE

    def __post_init__(self) -> None:
        z = np.asarray(self.z, dtype=np.float64)
        beta = np.asarray(self.beta, dtype=np.float64).reshape(-1)
        if z.ndim != 2:
            raise SpecError(f"reduced set z must be 2-D (K, d), got shape {z.shape}")
        if beta.shape[0] != z.shape[0]:
            raise SpecError(f"beta has {beta.shape[0]} weights for {z.shape[0]} reduced points")
        if z.shape[0] == 0:
            raise SpecError("spec has no reduced points (z is empty)")
        if not np.all(np.isfinite(z)):
            raise SpecError("spec contains NaN or inf values in its reduced set z")
        if not np.all(np.isfinite(beta)):
            raise SpecError("spec contains NaN or inf values in its weights beta")
        check_weights(beta)
        if z.shape[1] != self.kernel.dimension:
            raise SpecError(
                f"reduced set has dimension {z.shape[1]} but the kernel scale has "
                f"{self.kernel.dimension} entries"
            )
        z.setflags(write=False)
        beta.setflags(write=False)
        object.__setattr__(self, "z", z)
        object.__setattr__(self, "beta", beta)

    # ------------------------------------------------------------------ construction
    @classmethod
    def fit(
        cls,
        X: Any,
        n_points: int = 100,
        *,
        kernel: GaussianKernel | None = None,
        gamma: float | None = None,
        scale: np.ndarray | str | float | None = "auto",
        missing: str = "impute",
        max_iter: int = 20,
        tol: float = 0.02,
        random_state: int | None = 0,
        batch_rows: int = DEFAULT_BATCH_ROWS,
        progress: bool | None = None,
        opt_rows: int | None = None,
        max_opt_rows: int | None = None,
    ) -> RKMETableSpec:
        """Build the spec of table data ``X``.

        Parameters
        ----------
        n_points: size K of the reduced set (capped at n/2 so a spec never lists the data).
        kernel: use exactly this kernel (e.g. an island's or another spec's) -- the way to make
            a spec comparable with existing ones. Otherwise ``gamma`` (default ``1/d``) and
            ``scale`` (``"auto"``: :func:`infer_scale`; a number or vector; ``None`` = 1).
        missing: NaN/inf policy, see :func:`handle_missing`.
        max_iter: most rounds per stage; a round is ``ROUND_STEPS`` (10) quasi-Newton steps.
        tol: a stage on m rows ends when a round lowers MMD^2 (on those rows) by less than
            ``tol / m``: ``1/m`` bounds how far an m-row sample sits from its own distribution
            (expected MMD^2 ``(1 - E k(x, x')) / m``), so gains far below it only fit the
            sample. The next stage then optimises on ``STAGE_GROWTH`` (4) times the rows (a
            superset; warm start, fresh curvature memory). ``fit_info["converged"]`` is true
            when the rule (or a numerical minimum: no descent step left) ended the last stage,
            false when ``max_iter`` did (the fit then stops there).
        random_state: seed of the k-means++ start and of the optimisation samples; same data +
            seed gives the same spec.
        opt_rows: rows of the first stage (default ``max(2000, 20 K)``; all rows when n is at
            most that). Later stages grow x4 while they have at most ``n / 100`` rows (a stage
            then costs about one pass over the data) and at most ``max_opt_rows`` (default
            ``OPT_ROWS_MAX``); with the defaults only tables of 800,000+ rows have a second
            stage. Beta is then solved exactly against all rows. ``fit_info["stages"]`` lists
            each stage's rows, rounds, evaluations, gain threshold and why it stopped;
            ``fit_info["mmd2_history"]`` has MMD^2 on the current stage's rows at the start and
            after every round (its data-data term is estimated on ``XX_ROWS`` rows, so the
            differences between entries are exact but the level is not; it jumps where a
            stage starts, as the rows change).
        """
        X = as_2d_float(X)
        X, n_fixed = handle_missing(np.array(X, dtype=np.float64, copy=True), missing)
        n, d = X.shape
        if kernel is None:
            if isinstance(scale, str):
                if scale != "auto":
                    raise SpecError(f"scale must be 'auto', a number or a vector, not {scale!r}")
                scale_vec = infer_scale(X)
            elif scale is None:
                scale_vec = np.ones(d)
            else:
                scale_vec = np.broadcast_to(np.asarray(scale, dtype=np.float64), (d,)).copy()
            kernel = GaussianKernel(gamma if gamma is not None else default_gamma(d), scale_vec)
        elif kernel.dimension != d:
            raise SpecError(f"kernel is for dimension {kernel.dimension} but the data has {d}")
        if n_points < 1:
            raise SpecError("n_points must be >= 1")
        k = int(min(n_points, max(1, n // 2)))
        X /= kernel.scale  # work in scaled units; X is our private copy
        show = progress if progress is not None else n >= PROGRESS_ROWS
        # The matrices are small (batch x K): one BLAS thread is as fast on an idle machine and
        # several times faster on a busy one, where BLAS threads spin-wait (measured in
        # BENCHMARKS.md). Restored on exit.
        with _blas_controller().limit(limits=1, user_api="blas"):
            z_u, beta, info = _fit_scaled(
                X, k, kernel.gamma, max_iter, tol, random_state, batch_rows, show, opt_rows,
                max_opt_rows,
            )
        info.update({"imputed_cells": n_fixed, "missing": missing, "n_points": k})
        return cls(z_u * kernel.scale, beta, kernel, n_samples=n, fit_info=info)

    # ------------------------------------------------------------------ basic properties
    @property
    def dimension(self) -> int:
        return int(self.z.shape[1])

    @property
    def n_points(self) -> int:
        return int(self.z.shape[0])

    @cached_property
    def _z_scaled(self) -> np.ndarray:
        return self.kernel.scaled(self.z)

    @cached_property
    def self_inner(self) -> float:
        """``<mu, mu>`` in the RKHS (cached: it is used by every comparison)."""
        g = self.kernel.gram_scaled(self._z_scaled, self._z_scaled)
        return float(self.beta @ g @ self.beta)

    # ------------------------------------------------------------------ comparisons
    def _check(self, other: RKMETableSpec) -> None:
        if not isinstance(other, RKMETableSpec) or other.type_name != self.type_name:
            raise SpecError(f"cannot compare an RKME table spec with {type(other).__name__}")
        self.kernel.check_same(other.kernel)

    def inner(self, other: RKMETableSpec) -> float:
        """RKHS inner product of the two kernel mean embeddings."""
        self._check(other)
        g = self.kernel.gram_scaled(self._z_scaled, other._z_scaled)
        return float(self.beta @ g @ other.beta)

    def mmd2(self, other: RKMETableSpec) -> float:
        """Squared MMD between the two specs (>= 0, symmetric, 0 for identical specs)."""
        if other is self:
            return 0.0
        v = self.self_inner + other.self_inner - 2.0 * self.inner(other)
        return max(v, 0.0)

    def mmd(self, other: RKMETableSpec) -> float:
        return float(np.sqrt(self.mmd2(other)))

    def similarity(self, other: RKMETableSpec) -> float:
        """Kernel-normalised similarity ``<a,b> / (|a| |b|)`` in [0, 1]: an absolute score
        (1 = same embedding), comparable across queries and markets."""
        v = self.inner(other) / np.sqrt(self.self_inner * other.self_inner)
        return float(np.clip(v, 0.0, 1.0))

    def mmd2_to_data(
        self,
        X: Any,
        *,
        max_exact: int = 20_000,
        random_state: int | None = 0,
        batch_rows: int = DEFAULT_BATCH_ROWS,
    ) -> float:
        """Squared MMD between this spec and data ``X`` (raw units, same features).

        The data-data term is exact up to ``max_exact`` rows; above that it is estimated on a
        seeded random subsample of ``max_exact`` rows (the other terms stay exact).
        """
        X = as_2d_float(X)
        if X.shape[1] != self.dimension:
            raise SpecError(f"data has {X.shape[1]} features but the spec has {self.dimension}")
        X, _ = handle_missing(np.array(X, copy=True), "impute")
        U = self.kernel.scaled(X)
        c, _ = _data_terms(U, self._z_scaled, self.kernel.gamma, batch_rows, need_grad=False)
        xx = _mean_data_kernel(U, self.kernel.gamma, max_exact, random_state, batch_rows)
        return max(xx - 2.0 * float(self.beta @ c) + self.self_inner, 0.0)

    # ------------------------------------------------------------------ sampling
    def herd(
        self,
        n: int,
        *,
        random_state: int | None = 0,
        n_candidates: int | None = None,
        noise: float = 0.25,
    ) -> np.ndarray:
        """Draw ``n`` points that represent the spec's distribution, by kernel herding.

        Candidates are the reduced-set points plus Gaussian perturbations of them (component
        chosen with probability beta, noise ``noise / sqrt(gamma d)`` per scaled feature);
        herding then greedily picks the candidate that best closes the gap between the spec's
        kernel mean and the mean of the points picked so far. Returns raw-unit points (n x d).
        """
        if n < 1:
            raise SpecError("n must be >= 1")
        rng = np.random.default_rng(random_state)
        zu = self._z_scaled
        k, d = zu.shape
        m = n_candidates or max(20 * n, 2000)
        comps = rng.choice(k, size=m, p=self.beta / self.beta.sum())
        sigma = noise / np.sqrt(self.kernel.gamma * d)
        cand = np.vstack([zu, zu[comps] + rng.normal(0.0, sigma, size=(m, d))])
        gamma = self.kernel.gamma
        mu = np.zeros(cand.shape[0])
        for sl in row_batches(cand.shape[0]):
            mu[sl] = np.exp(-gamma * sq_dists(cand[sl], zu)) @ self.beta
        acc = np.zeros(cand.shape[0])
        cand_sq = np.einsum("ij,ij->i", cand, cand)
        picked = np.empty(n, dtype=np.int64)
        for t in range(n):
            score = mu - acc / (t + 1)
            j = int(np.argmax(score))
            picked[t] = j
            diff = cand_sq + cand_sq[j] - 2.0 * (cand @ cand[j])
            acc += np.exp(-gamma * np.maximum(diff, 0.0))
        return cand[picked] * self.kernel.scale

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        return {
            "type": SPEC_TYPE,
            "format_version": FORMAT_VERSION,
            "n_samples": int(self.n_samples),
            "kernel": self.kernel.to_dict(),
            "beta": self.beta.tolist(),
            "z": self.z.tolist(),
            "fit_info": _jsonable(self.fit_info),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RKMETableSpec:
        if not isinstance(d, dict):
            raise SpecError("spec JSON must be an object")
        t = d.get("type")
        if t in REFERENCE_TYPES:
            return cls.from_reference_dict(d)
        if t != SPEC_TYPE:
            raise SpecError(f"not an RKME table spec: type is {t!r}")
        version = d.get("format_version")
        if version != FORMAT_VERSION:
            raise SpecError(f"unsupported rkme-table format_version {version!r}")
        try:
            return cls(
                z=np.asarray(d["z"], dtype=np.float64),
                beta=np.asarray(d["beta"], dtype=np.float64),
                kernel=GaussianKernel.from_dict(d["kernel"]),
                n_samples=_n_samples(d.get("n_samples", 0)),
                fit_info=dict(d.get("fit_info") or {}),
            )
        except KeyError as exc:
            raise SpecError(f"spec JSON is missing field {exc.args[0]!r}") from None
        except (TypeError, ValueError, OverflowError) as exc:
            if isinstance(exc, SpecError):
                raise
            raise SpecError(f"spec JSON has malformed arrays: {exc}") from None

    @classmethod
    def from_reference_dict(cls, d: dict[str, Any]) -> RKMETableSpec:
        """Load the reference engine's RKMETableSpecification JSON (RBF with fixed gamma)."""
        try:
            z = np.asarray(d["z"], dtype=np.float64)
            beta = np.asarray(d["beta"], dtype=np.float64).reshape(-1)
            gamma = float(d.get("gamma", 0.1))
            n_samples = _n_samples(d.get("num_points", 0))
        except KeyError as exc:
            raise SpecError(f"reference spec JSON is missing field {exc.args[0]!r}") from None
        except (TypeError, ValueError, OverflowError) as exc:
            if isinstance(exc, SpecError):
                raise
            raise SpecError(f"reference spec JSON has malformed arrays: {exc}") from None
        if z.ndim < 2:
            raise SpecError(f"reference spec z must be at least 2-D, got shape {z.shape}")
        z = z.reshape(z.shape[0], -1)
        if not np.all(np.isfinite(beta)):
            raise SpecError("reference spec contains NaN or inf values in its weights beta")
        if np.any(beta < 0):
            # The reference allows signed weights when nonnegative_beta=False; we keep the
            # simplex invariant and say so rather than silently changing the embedding.
            raise SpecError("reference spec has negative weights; only simplex weights load")
        if not np.any(beta > 0):
            raise SpecError("reference spec: all weights are zero; they cannot be normalised")
        with np.errstate(over="ignore"):
            total = beta.sum()
        if not np.isfinite(total):
            raise SpecError("reference spec weights are too large to normalise (sum is inf)")
        beta = beta / total
        kernel = GaussianKernel(gamma, np.ones(max(z.shape[1], 1)))
        return cls(z, beta, kernel, n_samples=n_samples, fit_info={"source": "reference"})

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(self.to_json(), encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | Path) -> RKMETableSpec:
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise SpecError(f"spec file not found: {path}") from None
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise SpecError(f"spec file {path} is not valid JSON: {exc}") from None
        return cls.from_dict(data)

    def fingerprint(self) -> str:
        """SHA-256 of the spec's numbers and kernel (fit diagnostics excluded)."""
        h = hashlib.sha256()
        h.update(SPEC_TYPE.encode())
        h.update(self.kernel.key().encode())
        h.update(np.ascontiguousarray(self.z, dtype="<f8").tobytes())
        h.update(np.ascontiguousarray(self.beta, dtype="<f8").tobytes())
        return h.hexdigest()


# ---------------------------------------------------------------------- fitting internals
def with_columns(spec: RKMETableSpec, names: list[str], descriptions: list[str]) -> RKMETableSpec:
    """The spec carrying what its columns are (``fit_info["columns"]``: name + description per
    column, in order), as ``learndock spec table --descriptions`` writes it. Older readers keep
    it as part of ``fit_info``; :func:`column_descriptions` reads it back."""
    if not (len(names) == len(descriptions) == spec.dimension):
        raise SpecError(f"give one name and description per column ({spec.dimension}), got "
                        f"{len(names)} and {len(descriptions)}")
    info = dict(spec.fit_info)
    info["columns"] = [{"name": str(n), "description": str(d)}
                       for n, d in zip(names, descriptions, strict=True)]
    return RKMETableSpec(spec.z, spec.beta, spec.kernel, n_samples=spec.n_samples,
                         fit_info=info)


def column_descriptions(spec: Any) -> list[str]:
    """The column descriptions a table spec carries (one per column), or ``[]``."""
    cols = (getattr(spec, "fit_info", None) or {}).get("columns")
    if not isinstance(cols, list) or len(cols) != getattr(spec, "dimension", -1):
        return []
    out = []
    for c in cols:
        d = c.get("description") if isinstance(c, dict) else c
        if not isinstance(d, str) or not d.strip():
            return []
        out.append(d.strip())
    return out


def _n_samples(v: Any) -> int:
    if isinstance(v, float) and not np.isfinite(v):
        raise SpecError(f"n_samples must be a whole number, got {v!r}")
    n = int(v)
    if n < 0:
        raise SpecError(f"n_samples must be non-negative, got {n}")
    return n


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def _data_terms(
    U: np.ndarray,
    Z: np.ndarray,
    gamma: float,
    batch_rows: int,
    need_grad: bool = True,
    u_sq: np.ndarray | None = None,
    dtype: Any = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """One pass over the data: ``c_j = mean_l k(z_j, u_l)`` and ``M_j = mean_l k(z_j,u_l) u_l``.

    Runs in ``dtype`` (default: ``U``'s; float32 for speed during fitting: the data are centred
    and scaled, so squared distances carry ~7 significant digits), converting one batch at a
    time, and accumulates in float64.
    """
    n = U.shape[0]
    k, d = Z.shape
    dtype = np.dtype(dtype or U.dtype)
    Zc = Z.astype(dtype, copy=False)
    c = np.zeros(k)
    m = np.zeros((k, d)) if need_grad else None
    z_sq = np.einsum("ij,ij->i", Zc, Zc)
    for sl in row_batches(n, batch_rows):
        b = U[sl].astype(dtype, copy=False)
        kb = sq_dists(b, Zc, None if u_sq is None else u_sq[sl], z_sq)
        kb *= -gamma
        np.exp(kb, out=kb)
        c += kb.sum(axis=0, dtype=np.float64)
        if m is not None:
            m += (kb.T @ b).astype(np.float64)
    c /= n
    if m is not None:
        m /= n
    return c, m


def _mean_data_kernel(
    U: np.ndarray, gamma: float, max_exact: int, random_state: int | None, batch_rows: int
) -> float:
    """``mean_{i,l} k(u_i, u_l)`` over all n^2 pairs (diagonal included, as in MMD(X, spec)).

    Exact up to ``max_exact`` rows; above, the off-diagonal mean is estimated on a seeded
    subsample and combined with the exact diagonal share ``1/n`` (unbiased). Runs in ``U``'s
    dtype (float32 during fitting, where it only feeds the reported MMD^2) and sums in float64.
    """
    n = U.shape[0]
    sub = U
    if n > max_exact:
        idx = np.random.default_rng(random_state).choice(n, size=max_exact, replace=False)
        sub = U[np.sort(idx)]
    # the diagonal is exactly k(u, u) = 1: mean over n^2 pairs = 1/n + (1 - 1/n) * off-diagonal
    return 1.0 / n + (1.0 - 1.0 / n) * _mean_off_diagonal(sub, gamma, batch_rows)


def _mean_off_diagonal(U: np.ndarray, gamma: float, batch_rows: int) -> float:
    """``mean_{i != l} k(u_i, u_l)`` over the rows of ``U`` (exact; 1 for a single row)."""
    m = U.shape[0]
    if m < 2:
        return 1.0
    sq = np.einsum("ij,ij->i", U, U)
    total = 0.0
    for sl in row_batches(m, max(1, min(batch_rows, 4096))):
        kb = sq_dists(U[sl], U, sq[sl], sq)
        kb *= -gamma
        np.exp(kb, out=kb)
        total += float(kb.sum(dtype=np.float64))
    return (total - m) / (m * (m - 1))


class _Objective:
    """MMD^2 (up to the data-data constant) and its exact gradient in z.

    :meth:`projected` solves beta exactly at every z (variable projection): by the envelope
    theorem the gradient of ``min_beta MMD^2(z, beta)`` is the fixed-beta gradient at the
    optimal beta, so one quasi-Newton run optimises z and beta together, with no restarts that
    would throw its curvature estimate away.
    """

    def __init__(self, U: np.ndarray, gamma: float, batch_rows: int) -> None:
        self.U = U
        self.gamma = gamma
        self.batch_rows = batch_rows
        self.u_sq = np.einsum("ij,ij->i", U, U)
        # [U, 1]: one matmul gives both M (sum_l k_jl u_l) and c (sum_l k_jl)
        self._u_aug = np.hstack([U, np.ones((U.shape[0], 1), dtype=U.dtype)])
        self._neg_u_sq = (-gamma * self.u_sq).astype(U.dtype)
        self.evaluations = 0
        self.beta: np.ndarray | None = None  # the last exact beta (warm start of the next)

    def kzz(self, Z: np.ndarray) -> np.ndarray:
        return np.exp(-self.gamma * sq_dists(Z, Z))

    def _terms(self, Z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``c`` and ``M`` (as in :func:`_data_terms`) with the exponent built in place:
        ``-gamma ||u - z||^2 = 2 gamma u.z - gamma |u|^2 - gamma |z|^2`` (two matmuls and three
        elementwise passes over the n x K block; rounding above 0 only gives exp(~0) ~ 1).

        (Folding ``-gamma |u|^2`` and ``-gamma |z|^2`` into the first matmul as two extra
        columns is ~40% faster at 1,500 x 17, but it changes the float32 rounding, and with it
        fits that sit on a knife edge downstream; kept as it was.)"""
        n = self.U.shape[0]
        k, d = Z.shape
        Zc = Z.astype(self.U.dtype)
        neg_z_sq = (-self.gamma * np.einsum("ij,ij->i", Zc, Zc)).astype(self.U.dtype)
        mc = np.zeros((k, d + 1))
        for sl in row_batches(n, self.batch_rows):
            e = self.U[sl] @ (Zc * self.U.dtype.type(2.0 * self.gamma)).T
            e += self._neg_u_sq[sl, None]
            e += neg_z_sq[None, :]
            np.exp(e, out=e)
            mc += (e.T @ self._u_aug[sl]).astype(np.float64)
        mc /= n
        return mc[:, d].copy(), mc[:, :d]

    def c(self, Z: np.ndarray) -> np.ndarray:
        self.evaluations += 1
        return self._terms(Z)[0]

    def value(self, Z: np.ndarray, beta: np.ndarray, c: np.ndarray) -> float:
        return float(beta @ self.kzz(Z) @ beta - 2.0 * beta @ c)

    def _value_grad(self, Z: np.ndarray, beta: np.ndarray | None
                    ) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
        self.evaluations += 1
        g = self.kzz(Z)
        c, m = self._terms(Z)
        if beta is None:
            beta = simplex_qp_active_set(g, c, start=self.beta)
            self.beta = beta
        gb = g * beta[None, :]  # gb[j, i] = k(z_j, z_i) beta_i
        # d/dz_j of beta'K beta:  -4 gamma beta_j sum_i beta_i k_ji (z_j - z_i)
        repulsion = gb.sum(axis=1)[:, None] * Z - gb @ Z
        # d/dz_j of -2 beta'c:    +4 gamma beta_j (c_j z_j - M_j)
        attraction = c[:, None] * Z - m
        grad = 4.0 * self.gamma * beta[:, None] * (attraction - repulsion)
        # Diagonal preconditioner: the curvature of the attraction term at z_j is about
        # 4 gamma beta_j c_j, so a unit preconditioned step is a mean-shift step of z_j; c_j is
        # floored (PRECOND_FLOOR) so a point far from the data cannot take an unbounded step.
        c_floor = PRECOND_FLOOR * float(beta @ c)
        precond = 1.0 / (4.0 * self.gamma * np.maximum(beta * np.maximum(c, c_floor), 1e-300))
        return float(beta @ g @ beta - 2.0 * beta @ c), grad, beta, precond

    def value_and_grad(self, flat: np.ndarray, beta: np.ndarray) -> tuple[float, np.ndarray]:
        """Objective and gradient in z for a fixed ``beta``."""
        f, grad, _, _ = self._value_grad(flat.reshape(beta.shape[0], -1), beta)
        return f, grad.ravel()

    def projected(self, Z: np.ndarray) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
        """``min_beta`` objective at ``Z``, its gradient in z, the minimising beta and the
        diagonal preconditioner (per reduced point)."""
        return self._value_grad(Z, None)


def _lbfgs(
    opt: _Objective,
    Z: np.ndarray,
    xx: float,
    max_rounds: int,
    threshold: float,
    bar: Any,
    memory: int = 10,
) -> tuple[np.ndarray, np.ndarray, list[float], str]:
    """Preconditioned L-BFGS (two-loop recursion, Armijo backtracking) on the projected MMD^2.

    Written in numpy rather than taken from ``scipy.optimize`` because importing that module
    costs ~0.3-0.7 s, half of a whole ``learndock spec table`` run's budget, and because the
    per-point preconditioner (a mean-shift step) changes with beta at every iterate. A round is
    ``ROUND_STEPS`` accepted steps (the curvature memory is kept across rounds). Returns after
    the first round that lowers the objective by at most ``threshold`` (``"resolution"``),
    when no step along a descent direction lowers it at all, even from a fresh mean-shift
    direction (``"no descent"``), or after ``max_rounds`` rounds (``"max_iter"``). ``xx`` is
    the data-data term, so ``xx + f`` is MMD^2 on the rows used (reported only).
    """
    f, g, beta, P = opt.projected(Z)
    history = [xx + f]
    max_step = 1.0 / np.sqrt(opt.gamma)
    S: list[np.ndarray] = []
    Y: list[np.ndarray] = []
    shape = Z.shape
    for _ in range(max_rounds):
        f_round = f
        for _step in range(ROUND_STEPS):
            gf = g.ravel()
            Pf = np.repeat(P, shape[1])
            accepted = False
            for _attempt in range(2):  # the L-BFGS direction, then a fresh mean-shift one
                if S:
                    q = -gf
                    alphas = []
                    for s, y in zip(reversed(S), reversed(Y), strict=True):
                        a = float(s @ q) / float(s @ y)
                        alphas.append(a)
                        q = q - a * y
                    q = q * ((float(S[-1] @ Y[-1]) / float(Y[-1] @ (Pf * Y[-1]))) * Pf)
                    for (s, y), a in zip(zip(S, Y, strict=True), reversed(alphas), strict=True):
                        q += s * (a - float(y @ q) / float(s @ y))
                else:
                    q = -Pf * gf
                d = q
                gd = float(gf @ d)
                if not gd < 0:  # lost descent (stale curvature pairs): restart from mean shift
                    if not S:
                        break
                    S.clear()
                    Y.clear()
                    continue
                # never move a point by more than one kernel width in a step (a safeguard while
                # the curvature pairs are still poor)
                t = min(1.0, max_step / max(float(np.abs(d).max()), 1e-300))
                for _ls in range(LINE_SEARCH_STEPS):
                    Zn = Z + t * d.reshape(shape)
                    fn, gn, bn, Pn = opt.projected(Zn)
                    if np.isfinite(fn) and fn <= f + 1e-4 * t * gd:
                        accepted = True
                        break
                    t *= 0.5
                if accepted or not S:
                    break
                S.clear()  # the quasi-Newton direction failed: retry along the mean shift
                Y.clear()
            if not accepted:  # no decrease along a descent direction: a (numerical) minimum
                history.append(xx + f)
                bar.update(1)
                return Z, beta, history, "no descent"
            s_vec = (Zn - Z).ravel()
            y_vec = (gn - g).ravel()
            if float(s_vec @ y_vec) > 1e-12 * float(s_vec @ s_vec):
                S.append(s_vec)
                Y.append(y_vec)
                if len(S) > memory:
                    S.pop(0)
                    Y.pop(0)
            Z, f, g, beta, P = Zn, fn, gn, bn, Pn
        history.append(xx + f)
        bar.update(1)
        if f_round - f <= threshold:
            return Z, beta, history, "resolution"
    return Z, beta, history, "max_iter"


def _stage_sizes(n: int, first: int, cap: int) -> list[int]:
    """Rows of each optimisation stage: all ``n`` when ``n <= first``; else ``first``, then
    x``STAGE_GROWTH`` while the stage stays within ``min(cap, n / STAGE_ROWS_DIVISOR)``."""
    if n <= first:
        return [n]
    sizes = [first]
    while sizes[-1] * STAGE_GROWTH <= min(cap, n // STAGE_ROWS_DIVISOR):
        sizes.append(sizes[-1] * STAGE_GROWTH)
    return sizes


def _fit_scaled(
    U: np.ndarray,
    k: int,
    gamma: float,
    max_iter: int,
    tol: float,
    random_state: int | None,
    batch_rows: int,
    progress: bool,
    opt_rows: int | None = None,
    max_opt_rows: int | None = None,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Fit in scaled units. Returns (z, beta, diagnostics); z in the same (scaled) units."""
    n, d = U.shape
    rng = np.random.default_rng(random_state)
    center = U.mean(axis=0)
    U -= center  # the kernel is translation invariant; centring keeps float32 distances exact
    first = opt_rows or max(OPT_ROWS, 20 * k)
    cap = max(first, max_opt_rows or OPT_ROWS_MAX)
    sizes = _stage_sizes(n, first, cap)
    # Nested samples: stage s optimises on the first sizes[s] rows of one seeded random order,
    # so each stage's sample contains the previous one. (With all rows in one stage the order
    # only picks the XX_ROWS subsample; it is drawn after the k-means++ start, as before.)
    order = None if sizes[-1] == n else rng.choice(n, size=sizes[-1], replace=False)
    bar = _progress_bar(max_iter * len(sizes), progress)
    Z: np.ndarray | None = None
    history: list[float] = []
    stages: list[dict[str, Any]] = []
    evaluations = 0
    beta = np.full(k, 1.0 / k)
    off_diag: float | None = None
    for m in sizes:
        rows = slice(None) if order is None else np.sort(order[:m])
        U_opt = U[rows].astype(np.float32)
        if Z is None:
            Z = kmeans_plusplus(U_opt, k, random_state=rng).astype(np.float64)
            if order is None:
                order = rng.permutation(n)
            sub = U[np.sort(order[: min(m, XX_ROWS)])].astype(np.float32)  # uniform rows
            off_diag = _mean_off_diagonal(sub, gamma, batch_rows)
        assert off_diag is not None
        xx = 1.0 / m + (1.0 - 1.0 / m) * off_diag  # mean k over the m x m pairs, diagonal incl.
        opt = _Objective(U_opt, gamma, batch_rows)
        threshold = tol / m
        Z, beta, hist, stop = _lbfgs(opt, Z, xx, max_iter, threshold, bar)
        evaluations += opt.evaluations
        history += hist[1:] if history else hist  # a stage's start: in its own entry
        stages.append({"rows": m, "rounds": len(hist) - 1, "evaluations": opt.evaluations,
                       "gain_threshold": threshold, "stop": stop,
                       "mmd2_start": max(hist[0], 0.0), "mmd2_end": max(hist[-1], 0.0)})
        if stop == "max_iter":  # the round limit, not the rule, ended this stage: stop here
            break
    converged = stages[-1]["stop"] != "max_iter" and len(stages) == len(sizes)
    assert Z is not None
    if stages[-1]["rows"] < n:  # beta against all rows
        c = _data_terms(U, Z, gamma, batch_rows, need_grad=False, dtype=np.float32)[0]
        beta = simplex_qp_active_set(np.exp(-gamma * sq_dists(Z, Z)), c, start=beta)
        evaluations += 1
    bar.close()
    info = {
        "rounds": sum(st["rounds"] for st in stages),
        "evaluations": evaluations,
        "optimisation_rows": stages[-1]["rows"],
        "stages": stages,
        "converged": converged,
        "mmd2_history": [max(h, 0.0) for h in history],
        "random_state": random_state,
    }
    return Z + center, beta, info


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def _progress_bar(total: int, show: bool) -> Any:
    if not show:
        return _NoBar()
    from tqdm.auto import tqdm  # only when shown: tqdm.auto is slow to import

    return tqdm(total=total, desc="RKME fit", unit="round", leave=False)


@functools.lru_cache(maxsize=1)
def _blas_controller() -> Any:
    """One threadpoolctl controller per process: building it scans every loaded library
    (tens of ms), which a 30 ms fit cannot pay on every call."""
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def generate_table_spec(X: Any, n_points: int = 100, **kwargs: Any) -> RKMETableSpec:
    """Functional alias of :meth:`RKMETableSpec.fit`."""
    return RKMETableSpec.fit(X, n_points, **kwargs)
