"""Statistical search over one island: prefilter by random features, rerank exactly.

Stage 1 ranks every candidate by the Euclidean distance between random-Fourier-feature
embeddings (an unbiased approximation of MMD^2, one vectorised pass). Stage 2 computes the
exact MMD between the user's spec and the top candidates with one batched kernel block.
The score is the kernel-normalised similarity ``2<u,l> / (|u|^2 + |l|^2) = 1 - MMD^2 /
(|u|^2 + |l|^2)``: 1 for identical embeddings, 0 for disjoint supports, the same meaning for
every query and market.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from learndock.spec.kernels import GaussianKernel, RandomFourierFeatures, sq_dists
from learndock.spec.qp import simplex_qp
from learndock.spec.table import RKMETableSpec

#: Rows of the embedding matrix processed per step by :func:`prefilter`.
_PREFILTER_CHUNK = 1024


@dataclass
class Candidate:
    """A candidate spec as stored: arrays in raw units plus its cached self inner product."""

    learnware_id: str
    z: np.ndarray
    beta: np.ndarray
    self_inner: float


@dataclass
class Nearest:
    """What the nearest-neighbour stage returns: spec row ids, nearest first, how many specs
    passed the tag filters, and how they were ranked (``exact`` or ``ann``)."""

    spec_row_ids: np.ndarray
    n_allowed: int
    method: str


class IslandVectors(Protocol):
    """One island's searchable specs as the prefilter sees them: the island's kernel and
    random-feature map, how many specs it serves, and a nearest-neighbour query that applies
    the semantic query's tag filters itself (:class:`learndock.market.index.IslandView`)."""

    kernel: GaussianKernel
    rff_map: RandomFourierFeatures

    @property
    def size(self) -> int: ...

    def nearest(self, embedding: np.ndarray, k: int, q: Any) -> Nearest: ...


def prefilter(
    embeddings: np.ndarray, user_embedding: np.ndarray, allowed: np.ndarray | None, k: int
) -> np.ndarray:
    """Row indices of the ``k`` embeddings nearest the user's (restricted to ``allowed``)."""
    u = user_embedding.astype(embeddings.dtype)
    n = embeddings.shape[0]
    d = np.empty(n, dtype=embeddings.dtype)
    # Chunked so the difference block stays in cache instead of an n x dim temporary
    # (same element-wise operations, bit-identical distances).
    buf = np.empty((min(_PREFILTER_CHUNK, n), embeddings.shape[1]), dtype=embeddings.dtype)
    for start in range(0, n, _PREFILTER_CHUNK):
        block = embeddings[start : start + _PREFILTER_CHUNK]
        diff = buf[: block.shape[0]]
        np.subtract(block, u, out=diff)
        d[start : start + block.shape[0]] = np.einsum("ij,ij->i", diff, diff)
    if allowed is not None:
        d = np.where(allowed, d, np.inf)
    n_ok = int(np.isfinite(d).sum())
    k = min(k, n_ok)
    if k <= 0:
        return np.empty(0, dtype=np.int64)
    idx = np.argpartition(d, k - 1)[:k] if k < d.shape[0] else np.arange(d.shape[0])
    return idx[np.argsort(d[idx], kind="stable")]


def cross_inner(user: RKMETableSpec, cands: list[Candidate], kernel: GaussianKernel) -> np.ndarray:
    """``<u, l_i>`` for every candidate, with one kernel block over all stacked reduced sets."""
    if not cands:
        return np.empty(0)
    zu = kernel.scaled(user.z)
    stacked = kernel.scaled(np.vstack([c.z for c in cands]))
    block = np.exp(-kernel.gamma * sq_dists(stacked, zu)) @ user.beta
    out = np.empty(len(cands))
    start = 0
    for i, c in enumerate(cands):
        end = start + c.z.shape[0]
        out[i] = float(c.beta @ block[start:end])
        start = end
    return out


def exact_scores(
    user: RKMETableSpec, cands: list[Candidate], kernel: GaussianKernel
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(MMD, score, inner products) of each candidate against the user's spec (a corrupt
    stored spec yields NaN/inf here, quietly: :func:`keep_finite` drops it)."""
    ip = cross_inner(user, cands, kernel)
    self_l = np.array([c.self_inner for c in cands])
    uu = user.self_inner
    with np.errstate(over="ignore", invalid="ignore"):
        mmd2 = np.maximum(uu + self_l - 2.0 * ip, 0.0)
        score = np.clip(1.0 - mmd2 / (uu + self_l), 0.0, 1.0)
    return np.sqrt(mmd2), score, ip


def keep_finite(
    cands: list[Candidate], mmd: np.ndarray, score: np.ndarray, ip: np.ndarray
) -> tuple[list[Candidate], np.ndarray, np.ndarray, np.ndarray, int]:
    """Drop the candidates whose MMD, score or inner product is NaN/inf (a corrupt stored spec
    or an overflow): a non-finite number must never reach a ranking or a caller. Returns the
    kept (candidates, mmd, score, ip) and how many were dropped."""
    ok = np.isfinite(mmd) & np.isfinite(score) & np.isfinite(ip)
    if ok.all():
        return cands, mmd, score, ip, 0
    kept = [c for c, k in zip(cands, ok, strict=True) if k]
    return kept, mmd[ok], score[ok], ip[ok], int((~ok).sum())


def gram(cands: list[Candidate], kernel: GaussianKernel) -> np.ndarray:
    """``<l_i, l_j>`` among candidates (one block over the stacked reduced sets)."""
    stacked = kernel.scaled(np.vstack([c.z for c in cands]))
    block = np.exp(-kernel.gamma * sq_dists(stacked, stacked))
    bounds = np.cumsum([0] + [c.z.shape[0] for c in cands])
    m = len(cands)
    g = np.empty((m, m))
    for i in range(m):
        bi = block[bounds[i] : bounds[i + 1]]
        for j in range(i, m):
            v = float(cands[i].beta @ bi[:, bounds[j] : bounds[j + 1]] @ cands[j].beta)
            g[i, j] = g[j, i] = v
    np.fill_diagonal(g, [c.self_inner for c in cands])
    return g


def mixture_weights(
    user_self: float, g: np.ndarray, h: np.ndarray, max_members: int
) -> tuple[np.ndarray, float]:
    """Simplex weights minimising ``MMD^2(u, sum w_i l_i)``, with at most ``max_members``.

    Solves the QP over all candidates, keeps the ``max_members`` largest weights and re-solves
    on those (simplex QPs are sparse at the optimum, so pruning rarely costs anything).
    Returns (weights over all candidates, mixture MMD^2).
    """
    w = simplex_qp(g, h)
    if np.count_nonzero(w > 1e-6) > max_members:
        keep = np.argsort(-w, kind="stable")[:max_members]
        wk = simplex_qp(g[np.ix_(keep, keep)], h[keep])
        w = np.zeros_like(w)
        w[keep] = wk
    mmd2 = max(float(user_self - 2.0 * w @ h + w @ g @ w), 0.0)
    return w, mmd2
