"""Quadratic programs on the probability simplex, solved with clarabel.

Both the RKME weight step and the mixture search reduce to
``min_w  w' G w - 2 h' w  s.t.  w >= 0, sum(w) = 1`` with ``G`` a (PSD) Gram matrix.
"""

from __future__ import annotations

import clarabel
import numpy as np
from scipy import sparse


def simplex_qp(gram: np.ndarray, linear: np.ndarray, ridge: float = 1e-10) -> np.ndarray:
    """Minimise ``w' G w - 2 h' w`` over the simplex; returns ``w`` (non-negative, sums to 1).

    A tiny ridge relative to the diagonal keeps the problem strictly convex when the Gram matrix
    is singular (duplicate points); it changes the objective by at most ``ridge * max(diag)``.
    """
    gram = np.asarray(gram, dtype=np.float64)
    linear = np.asarray(linear, dtype=np.float64)
    k = gram.shape[0]
    if gram.shape != (k, k) or linear.shape != (k,):
        raise ValueError(f"shapes do not match: gram {gram.shape}, linear {linear.shape}")
    if k == 1:
        return np.ones(1)
    g = 0.5 * (gram + gram.T)
    g = g + ridge * max(float(np.max(np.diag(g))), 1.0) * np.eye(k)
    p = sparse.triu(sparse.csc_matrix(2.0 * g), format="csc")
    q = -2.0 * linear
    a = sparse.vstack([sparse.csc_matrix(np.ones((1, k))), -sparse.identity(k, format="csc")]).tocsc()
    b = np.concatenate([[1.0], np.zeros(k)])
    cones = [clarabel.ZeroConeT(1), clarabel.NonnegativeConeT(k)]
    settings = clarabel.DefaultSettings()
    settings.verbose = False
    settings.tol_gap_abs = 1e-12
    settings.tol_gap_rel = 1e-12
    settings.tol_feas = 1e-12
    solver = clarabel.DefaultSolver(p, q, a, b, cones, settings)
    sol = solver.solve()
    w = np.asarray(sol.x, dtype=np.float64)
    if not np.all(np.isfinite(w)):
        # Clarabel failed numerically; the best vertex is a safe, feasible answer.
        w = np.zeros(k)
        w[int(np.argmin(np.diag(g) - 2 * linear))] = 1.0
        return w
    w = np.clip(w, 0.0, None)
    s = w.sum()
    return w / s if s > 0 else np.full(k, 1.0 / k)
