"""The market-owned kernel of each island: its first version, its revisions, and spec vectors.

An island is a feature space, not a kernel: developers fit their specs with whatever kernel
their data suggested (``scale="auto"`` differs from one data set to the next), and a user may
bring a spec fitted with yet another. An RKME is a weighted point set, so the market can
evaluate every inner product and MMD under *one* kernel of its own choosing. Each island keeps
one current kernel (versioned: ``islands.kernel_version`` and the history in
``island_kernels``); every stored spec's self inner product and random-feature vector are
computed under it. The developer's fitting kernel stays only as metadata.

Version 1 is the first spec's own kernel (so a market whose developers share a kernel scores
exactly as they do), unless that kernel is degenerate (e.g. the reference engine's fixed gamma
on raw features), in which case the market's default is used: per-feature scale = the reduced
set's weighted standard deviation, gamma = 1/d.

A revision is explicit and rare: :func:`choose_kernel` proposes one when an island reaches
:data:`REVISE_AT` specs (or an operator asks), and it is adopted only when it identifies the
island's learnwares clearly better than the current kernel: by a gain larger than the noise of
two accuracies measured on n specs (:func:`required_gain`), or with a clearly larger margin. The criterion is *self-retrieval*:
split every spec's reduced set into two random halves; a good kernel makes each half's nearest
other half (by MMD) its own. Too wide a kernel makes all specs look alike, too narrow a one
makes even two halves of one data set look unrelated; the criterion measures exactly the
property search needs (telling the learnwares' training distributions apart) on the market's
own specs, without any user data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from learndock.spec.health import kernel_health
from learndock.spec.io import StatSpec
from learndock.spec.kernels import GaussianKernel, RandomFourierFeatures, sq_dists

#: Island sizes (number of spec rows) at which the market considers a kernel revision by itself.
REVISE_AT = frozenset(2**i for i in range(3, 11))  # 8, 16, ..., 1024; later: operator only
#: Specs the criterion looks at (a seeded sample beyond this).
CRITERION_MAX_SPECS = 128
#: Random features per half-spec in the criterion (its noise is far below the gaps it judges).
CRITERION_RFF_DIM = 512
#: Gamma multipliers tried around each candidate scale's base gamma.
GAMMA_STEPS = tuple(2.0**j for j in range(-3, 4))
#: A revision must beat the current kernel's self-retrieval accuracy by this much, and by
#: NOISE_Z standard errors of the difference of two accuracies over the n specs judged ...
MIN_ACCURACY_GAIN = 0.05
NOISE_Z = 2.0
#: ... or match it with a positive margin this many times larger.
MIN_MARGIN_RATIO = 1.5


def required_gain(current: float, best: float, n: int) -> float:
    """The accuracy gain that is not noise: at 16 specs two accuracies near 0.2 differ by
    ~0.15 by chance alone (measured in ``benchmarks/kernel_width.py``: a 0.06 gain there
    moved a class-subset island to a 4x wider kernel that identified learnwares no better)."""
    se = np.sqrt((current * (1 - current) + best * (1 - best)) / max(n, 1))
    return max(MIN_ACCURACY_GAIN, NOISE_Z * float(se))


@dataclass(frozen=True)
class KernelScore:
    """How well one kernel tells the island's specs apart (see the module docstring)."""

    kernel: GaussianKernel
    accuracy: float  # share of specs whose half found its own other half first
    margin: float  # median normalised gap between the own half and the nearest other one

    def to_dict(self) -> dict[str, Any]:
        return {"gamma": self.kernel.gamma, "scale": _describe_scale(self.kernel),
                "accuracy": round(self.accuracy, 4), "margin": round(self.margin, 4)}


@dataclass
class KernelChoice:
    """The outcome of :func:`choose_kernel`: the kernel to use and why."""

    kernel: GaussianKernel
    changed: bool
    reason: str
    n_specs: int
    current: KernelScore | None = None
    best: KernelScore | None = None
    tried: list[KernelScore] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "changed": self.changed,
            "reason": self.reason,
            "n_specs": self.n_specs,
            "current": self.current.to_dict() if self.current else None,
            "best": self.best.to_dict() if self.best else None,
            "tried": [s.to_dict() for s in self.tried],
        }


def _describe_scale(kernel: GaussianKernel) -> str:
    s = kernel.scale
    return f"{s[0]:.4g}" if np.all(s == s[0]) else f"per-feature [{s.min():.4g} .. {s.max():.4g}]"


def weighted_std(z: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """Per-feature standard deviation of a weighted point set (0 and non-finite -> 1)."""
    w = np.clip(np.asarray(beta, dtype=np.float64), 0.0, None)
    w = w / w.sum() if w.sum() > 0 else np.full(len(w), 1.0 / len(w))
    mean = w @ z
    var = w @ (z - mean) ** 2
    std = np.sqrt(np.maximum(var, 0.0))
    return np.where(np.isfinite(std) & (std > 0), std, 1.0)


def default_kernel(z: np.ndarray, beta: np.ndarray) -> GaussianKernel:
    """The market's default for a feature space it knows from one weighted point set."""
    return GaussianKernel(1.0 / z.shape[1], weighted_std(z, beta))


def first_kernel(spec: StatSpec) -> GaussianKernel:
    """Version 1 of a new island's kernel: the first spec's own, unless it is degenerate."""
    if kernel_health(spec).degenerate:
        return default_kernel(spec.z, spec.beta)
    return spec.kernel


def pooled_scale(point_sets: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Per-feature spread of the island's data as its specs describe it (each spec weighs
    the same): the standard deviation of the union of the weighted reduced sets."""
    z = np.vstack([p[0] for p in point_sets])
    beta = np.concatenate([np.asarray(p[1], dtype=np.float64) / len(point_sets)
                           for p in point_sets])
    return weighted_std(z, beta)


def self_inner(z: np.ndarray, beta: np.ndarray, kernel: GaussianKernel) -> float:
    """``<mu, mu>`` of a weighted point set under ``kernel``."""
    zs = kernel.scaled(z)
    return float(beta @ kernel.gram_scaled(zs, zs) @ beta)


def spec_vectors(z: np.ndarray, beta: np.ndarray, kernel: GaussianKernel, rff_dim: int,
                 rff_seed: int) -> tuple[float, bytes]:
    """A stored spec's island-index values under the island's kernel: its self inner product
    and its random-feature vector (little-endian float32 bytes)."""
    emb = RandomFourierFeatures(kernel, rff_dim, rff_seed).embed(z, beta)
    return self_inner(z, beta, kernel), np.asarray(emb, dtype="<f4").tobytes()


def batch_vectors(specs: list[StatSpec], kernel: GaussianKernel, rff_dim: int, rff_seed: int
                  ) -> list[tuple[float, bytes]]:
    """:func:`spec_vectors` of many specs at once: the random-feature map is drawn once and
    applied to blocks of ~2,000 points (a block stays in cache; one block for all points would
    be memory-bound)."""
    if not specs:
        return []
    rff = RandomFourierFeatures(kernel, rff_dim, rff_seed)
    out: list[tuple[float, bytes]] = []
    i = 0
    while i < len(specs):
        j, points = i, 0
        while j < len(specs) and (points < 2048 or j == i):
            points += specs[j].z.shape[0]
            j += 1
        block = specs[i:j]
        feats = rff.transform(np.vstack([s.z for s in block]))
        start = 0
        for s in block:
            end = start + s.z.shape[0]
            emb = np.asarray(s.beta @ feats[start:end], dtype="<f4")
            out.append((self_inner(s.z, s.beta, kernel), emb.tobytes()))
            start = end
        i = j
    return out


def _halves(point_sets: list[tuple[np.ndarray, np.ndarray]], rng: np.random.Generator
            ) -> tuple[list[tuple[np.ndarray, np.ndarray]], list[tuple[np.ndarray, np.ndarray]]]:
    """Split each weighted point set into two random halves, each renormalised."""
    a, b = [], []
    for z, beta in point_sets:
        order = rng.permutation(z.shape[0])
        half = z.shape[0] // 2
        for idx, out in ((order[:half], a), (order[half:], b)):
            w = np.asarray(beta, dtype=np.float64)[idx]
            w = w / w.sum() if w.sum() > 0 else np.full(len(idx), 1.0 / len(idx))
            out.append((z[idx], w))
    return a, b


def score_kernel(kernel: GaussianKernel, halves_a: list[tuple[np.ndarray, np.ndarray]],
                 halves_b: list[tuple[np.ndarray, np.ndarray]], seed: int = 0) -> KernelScore:
    """Self-retrieval of the halves under ``kernel`` (random features: one pass per kernel)."""
    rff = RandomFourierFeatures(kernel, CRITERION_RFF_DIM, seed)
    ea = np.stack([rff.embed(z, w) for z, w in halves_a])
    eb = np.stack([rff.embed(z, w) for z, w in halves_b])
    d = sq_dists(ea, eb)
    n = d.shape[0]
    own = np.diag(d).copy()
    others = d + np.diag(np.full(n, np.inf))
    nearest_other = others.min(axis=1)
    accuracy = float(np.mean(own < nearest_other))
    typical = np.median(d[~np.eye(n, dtype=bool)]) if n > 1 else 1.0
    margin = float(np.median((nearest_other - own) / typical)) if typical > 0 else 0.0
    return KernelScore(kernel, accuracy, margin if np.isfinite(margin) else 0.0)


def choose_kernel(
    point_sets: list[tuple[np.ndarray, np.ndarray]],
    current: GaussianKernel,
    *,
    random_state: int = 0,
) -> KernelChoice:
    """Propose the island's kernel from its specs' reduced sets (``(z, beta)`` pairs).

    Tries the current scale and the pooled scale (:func:`pooled_scale`), each with gammas
    :data:`GAMMA_STEPS` times its base (the current gamma; ``1/d`` for the pooled scale),
    and keeps the current kernel unless another identifies the specs clearly better
    (:data:`MIN_ACCURACY_GAIN`, :data:`MIN_MARGIN_RATIO`). Deterministic for a seed.
    """
    usable = [(np.asarray(z, dtype=np.float64), np.asarray(b, dtype=np.float64))
              for z, b in point_sets if np.asarray(z).shape[0] >= 4]
    n = len(usable)
    if n < 3:
        return KernelChoice(current, False, f"kept: {n} spec(s) with 4+ points are too few to "
                            "judge a kernel by", n)
    rng = np.random.default_rng(random_state)
    if n > CRITERION_MAX_SPECS:
        keep = rng.choice(n, CRITERION_MAX_SPECS, replace=False)
        usable = [usable[i] for i in np.sort(keep)]
    halves_a, halves_b = _halves(usable, rng)
    d = current.dimension
    bases = [(current.scale, current.gamma), (pooled_scale(usable), 1.0 / d)]
    tried: list[KernelScore] = []
    seen: set[str] = set()
    for scale, gamma0 in bases:
        for step in GAMMA_STEPS:
            k = GaussianKernel(gamma0 * step, scale)
            if k.key() in seen:
                continue
            seen.add(k.key())
            tried.append(score_kernel(k, halves_a, halves_b, seed=random_state))
    cur = next(s for s in tried if s.kernel == current)
    best = max(tried, key=lambda s: (round(s.accuracy, 6), s.margin))
    gain = best.accuracy - cur.accuracy
    n_judged = len(halves_a)
    better = gain >= required_gain(cur.accuracy, best.accuracy, n_judged) or (
        gain >= 0 and best.margin > 0 and best.margin > MIN_MARGIN_RATIO * max(cur.margin, 0.0)
    )
    if best.kernel == current or not better:
        return KernelChoice(current, False,
                            f"kept: self-retrieval {cur.accuracy:.2f} (margin {cur.margin:.3f}); "
                            f"the best alternative scored {best.accuracy:.2f} "
                            f"(margin {best.margin:.3f})", n, cur, best, tried)
    return KernelChoice(best.kernel, True,
                        f"revised: self-retrieval {cur.accuracy:.2f} -> {best.accuracy:.2f}, "
                        f"margin {cur.margin:.3f} -> {best.margin:.3f}", n, cur, best, tried)
