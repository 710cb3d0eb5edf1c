"""Is a spec's kernel degenerate on its own reduced set?

An RKME is only as informative as its kernel. With a Gaussian kernel whose gamma is far too
large for the data's units (the reference engine fixes ``gamma = 0.1`` on raw features: on
8x8 digit pixels in 0..16 a typical squared distance is ~1,000, so ``k ~ e^-100``), every two
distinct points look *unrelated*: the embedding is a set of isolated spikes, its inner product
with any other spec is ~0 and every search score is ~0 whatever the data. With gamma far too
small, every two points look *identical* (``k ~ 1``) and the spec cannot tell distributions
apart. Both show on the reduced set itself: :func:`kernel_health` looks at the median kernel
value between distinct reduced points.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from learndock.spec.kernels import sq_dists
from learndock.spec.table import RKMETableSpec

#: Below this median kernel value the reduced points look unrelated to each other.
UNRELATED_BELOW = 1e-3
#: Above this median kernel value they look identical.
IDENTICAL_ABOVE = 0.999
#: Reduced points used at most (a seeded subsample beyond): the pairs cost O(K^2).
MAX_POINTS = 512

Verdict = Literal["ok", "unrelated", "identical", "undetermined"]


@dataclass(frozen=True)
class KernelHealth:
    """What the kernel makes of the spec's own reduced set.

    ``median``: median of ``k(z_i, z_j)`` over distinct pairs (NaN when there is no pair);
    ``verdict``: ``"unrelated"`` (median < ``low``), ``"identical"`` (median > ``high``),
    ``"ok"``, or ``"undetermined"`` (fewer than two distinct reduced points);
    ``suggested_gamma``: the gamma that would put the median pair at ``k = e^-1`` (the inverse
    median squared distance between reduced points, in the kernel's scaled units), None when
    undetermined; ``explanation``: a sentence for people ("" when ok).
    """

    verdict: Verdict
    median: float
    gamma: float
    n_points: int
    n_pairs: int
    low: float
    high: float
    suggested_gamma: float | None
    explanation: str

    @property
    def degenerate(self) -> bool:
        return self.verdict in ("unrelated", "identical")

    def to_dict(self) -> dict[str, object]:
        return {
            "verdict": self.verdict,
            "degenerate": self.degenerate,
            "median_kernel": None if np.isnan(self.median) else self.median,
            "gamma": self.gamma,
            "n_points": self.n_points,
            "n_pairs": self.n_pairs,
            "thresholds": [self.low, self.high],
            "suggested_gamma": self.suggested_gamma,
            "explanation": self.explanation,
        }


def kernel_health(
    spec: RKMETableSpec,
    *,
    low: float = UNRELATED_BELOW,
    high: float = IDENTICAL_ABOVE,
    max_points: int = MAX_POINTS,
    random_state: int | None = 0,
) -> KernelHealth:
    """Judge ``spec``'s kernel by the median kernel value between its distinct reduced points.

    Works for any RKME spec (table, image, text: the reduced set and the kernel are the
    spec's own). Costs O(min(K, ``max_points``)^2 d); deterministic for a given
    ``random_state`` (which reduced points are kept when K > ``max_points``).
    """
    if not 0.0 < low < high < 1.0:
        raise ValueError(f"need 0 < low < high < 1, got low={low}, high={high}")
    z = spec.kernel.scaled(spec.z)
    if z.shape[0] > max_points:
        keep = np.random.default_rng(random_state).choice(z.shape[0], max_points, replace=False)
        z = z[np.sort(keep)]
    gamma = spec.kernel.gamma
    d2 = sq_dists(z, z)[np.triu_indices(z.shape[0], k=1)]
    d2 = d2[d2 > 0]  # duplicated reduced points say nothing about the kernel
    units = _units(spec)
    if d2.size == 0:
        return KernelHealth("undetermined", float("nan"), gamma, int(spec.z.shape[0]), 0, low,
                            high, None, "the spec has fewer than two distinct reduced points: "
                            "its kernel cannot be judged from it")
    median_d2 = float(np.median(d2))
    median = float(np.exp(-gamma * median_d2))
    suggested = 1.0 / median_d2
    verdict: Verdict = "ok"
    explanation = ""
    if median < low:
        verdict = "unrelated"
        explanation = (
            f"degenerate kernel: under gamma={gamma:g} on {units}, the spec's reduced points look "
            f"unrelated to each other (median kernel value between two of them {median:.2g}, "
            f"below {low:g}). Compared under this kernel, the spec is nearly orthogonal to any "
            "data that does not sit almost on its reduced points, so its search scores are ~0 "
            f"and carry no signal. A gamma near {suggested:.3g} (the inverse median squared "
            "distance between reduced points) would make a typical pair ~0.37; learndock's "
            "default kernel (gamma 1/d on features scaled by their spread) avoids this."
        )
    elif median > high:
        verdict = "identical"
        explanation = (
            f"degenerate kernel: under gamma={gamma:g} on {units}, the spec's reduced points look "
            f"identical (median kernel value between two of them {median:.6f}, above {high:g}). "
            "Every distribution then has nearly the same embedding, so the spec cannot tell "
            f"data sets apart. A gamma near {suggested:.3g} (the inverse median squared "
            "distance between reduced points) would make a typical pair ~0.37."
        )
    return KernelHealth(verdict, median, gamma, int(spec.z.shape[0]), int(d2.size), low, high,
                        suggested, explanation)


def degenerate_kernel(spec: RKMETableSpec, **kwargs: object) -> str | None:
    """The explanation when ``spec``'s kernel is degenerate on its reduced set, else None
    (``kwargs`` go to :func:`kernel_health`)."""
    health = kernel_health(spec, **kwargs)  # type: ignore[arg-type]
    return health.explanation if health.degenerate else None


def _units(spec: RKMETableSpec) -> str:
    scale = spec.kernel.scale
    encoder = getattr(spec, "encoder", None)
    if isinstance(encoder, dict) and encoder.get("id"):
        return f"the {encoder.get('name') or encoder['id']} embedding space"
    if np.all(scale == 1.0):
        return "features in their raw units (no per-feature scale)"
    return "features divided by their per-feature scale"
