"""Greedy k-means++ seeding in numpy, the start point of the RKME fit.

Written here rather than imported from ``sklearn.cluster`` because importing that module takes
~2 s on a small machine, most of a ``learndock spec table`` process; the fit needs only the
seeding (Arthur & Vassilvitskii 2007, with the greedy ``2 + log k`` local trials per centre that
scikit-learn also uses, which lowers the potential of the seeds).
"""

from __future__ import annotations

import numpy as np


def kmeans_plusplus(
    X: np.ndarray,
    n_clusters: int,
    *,
    random_state: int | np.random.Generator | None = 0,
    n_local_trials: int | None = None,
) -> np.ndarray:
    """Pick ``n_clusters`` rows of ``X`` by greedy k-means++; returns them (k x d, X's dtype).

    Each new centre is the best of ``n_local_trials`` candidates drawn with probability
    proportional to the squared distance to the nearest centre so far (best = lowest total
    potential). Rows are distinct picks unless ``X`` has fewer distinct rows than ``n_clusters``.
    """
    X = np.asarray(X)
    if X.ndim != 2 or X.shape[0] == 0:
        raise ValueError(f"X must be a non-empty 2-D array, got shape {X.shape}")
    n = X.shape[0]
    if not 1 <= n_clusters <= n:
        raise ValueError(f"n_clusters must be in [1, {n}], got {n_clusters}")
    rng = (random_state if isinstance(random_state, np.random.Generator)
           else np.random.default_rng(random_state))
    trials = n_local_trials or 2 + int(np.log(n_clusters))
    x_sq = np.einsum("ij,ij->i", X, X).astype(np.float64)

    def sq_to(rows: np.ndarray) -> np.ndarray:
        # (len(rows), n) squared distances, clipped at 0 (BLAS identity; float64 accumulation
        # of the norms keeps the potential monotone in practice).
        d = x_sq[rows][:, None] + x_sq[None, :] - 2.0 * (X[rows] @ X.T).astype(np.float64)
        return np.maximum(d, 0.0)

    picks = np.empty(n_clusters, dtype=np.int64)
    picks[0] = rng.integers(n)
    closest = sq_to(picks[:1])[0]
    potential = float(closest.sum())
    for c in range(1, n_clusters):
        if potential <= 0.0:  # every row coincides with a centre: fall back to uniform draws
            cand = rng.choice(n, size=trials)
        else:
            cum = np.cumsum(closest)
            cand = np.searchsorted(cum, rng.uniform(0.0, cum[-1], size=trials), side="right")
            cand = np.minimum(cand, n - 1)
        d = np.minimum(closest[None, :], sq_to(cand))
        pots = d.sum(axis=1)
        best = int(np.argmin(pots))
        picks[c] = cand[best]
        closest = d[best]
        potential = float(pots[best])
    return X[picks].copy()
