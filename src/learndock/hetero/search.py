"""Heterogeneous search: rank learnwares of *other* islands for a user's column set.

Why a separate score: inside an island, MMD under the island's kernel ranks learnwares; across
islands there is no common kernel, and a learnware whose inputs the user only partly has cannot
be judged by distribution match alone. The score multiplies three numbers in [0, 1], each on an
absolute scale, so a score means the same whatever the island:

* ``similarity``: kernel-normalised inner product ``<mu_u, mu_l> / (|mu_u| |mu_l|)`` of the two
  specs on their shared system features, read in standardised system units (see
  :mod:`learndock.hetero.space`) under the fixed **system kernel**
  ``k(u, v) = exp(-||u - v||^2 / m)`` (m = number of shared features: gamma 1/m keeps a typical
  pair at ~e^-2 whatever m, as the island default 1/d does). 1 = same distribution;
* ``coverage``: the share of the learnware's inputs the user can supply, each input weighted by
  its importance to the learnware's model when known (:func:`column_importance`, label-free),
  else equally;
* ``task``: when the user describes the target and the learnware its output, the description
  similarity over ``TASK_FULL`` (capped at 1), and 0 below ``TASK_MIN`` (another target: the
  learnware must rank below every learnware of the user's task); 1 when either is missing.
  Column statistics cannot tell two tasks on the same inputs apart; the target description
  can.

Verdicts (calibrated on ``benchmarks/hetero.py``): "poor match" when nothing is shared, the
task descriptions disagree (below ``TASK_MIN``) or the score is below ``FAIR``; "good match" at
``GOOD`` or above; "fair match" between. Every result is ``cross_island=True`` and carries its
:class:`~learndock.hetero.bridge.Bridge`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from learndock.errors import SpecError
from learndock.hetero.bridge import Bridge
from learndock.hetero.space import ColumnMatch, SystemSpace, accepts
from learndock.spec.kernels import sq_dists

#: Score thresholds of the verdicts (see the module docstring and benchmarks/hetero.py).
GOOD = 0.45
FAIR = 0.2
#: Target/output description similarity: below TASK_MIN the tasks differ ("poor match");
#: at TASK_FULL or above the task factor is 1.
TASK_MIN = 0.4
TASK_FULL = 0.6
#: Least gain in joint similarity for :func:`refine_bridge` to swap two pairs.
REFINE_GAIN = 0.002


@dataclass(frozen=True)
class HeteroCandidate:
    """A learnware as hetero search sees it."""

    learnware_id: str
    island_key: str
    spec: Any  # RKMETableSpec (or anything with z, beta) in the island's columns
    descriptions: Sequence[str] = ()
    output_description: str | None = None
    importance: Sequence[float] | None = None  # per input column, any non-negative scale


@dataclass(frozen=True)
class HeteroMatch:
    learnware_id: str
    island_key: str
    score: float
    similarity: float
    mmd2: float
    coverage: float
    task: float | None
    verdict: str
    bridge: Bridge
    shared: int
    map_version: int
    cross_island: bool = True
    notes: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        return {"learnware_id": self.learnware_id, "island": self.island_key,
                "score": self.score, "similarity": self.similarity, "mmd2": self.mmd2,
                "coverage": self.coverage, "task": self.task, "verdict": self.verdict,
                "cross_island": self.cross_island, "shared_features": self.shared,
                "map_version": self.map_version, "bridge": self.bridge.to_dict(),
                "notes": list(self.notes)}


def system_similarity(a: np.ndarray, wa: np.ndarray, b: np.ndarray, wb: np.ndarray
                      ) -> tuple[float, float]:
    """(similarity, MMD^2) of two weighted point sets in system units, system kernel."""
    m = a.shape[1]
    if m == 0:
        return 0.0, float("nan")
    gamma = 1.0 / m
    kab = float(wa @ np.exp(-gamma * sq_dists(a, b)) @ wb)
    kaa = float(wa @ np.exp(-gamma * sq_dists(a, a)) @ wa)
    kbb = float(wb @ np.exp(-gamma * sq_dists(b, b)) @ wb)
    sim = float(np.clip(kab / np.sqrt(max(kaa * kbb, 1e-300)), 0.0, 1.0))
    return sim, max(kaa + kbb - 2 * kab, 0.0)


def column_importance(predict: Callable[[np.ndarray], Any], spec: Any, *, n: int = 300,
                      random_state: int | None = 0) -> np.ndarray:
    """Label-free permutation importance of each input column of a model, on points herded
    from its own spec: how much the model's output moves when the column is shuffled.

    Meant to run once per learnware (at upload, where the dock runs the model anyway) and be
    stored. Normalised to sum 1; equal weights when the model ignores every column.
    Classification models: pass ``predict_proba``."""
    X = spec.herd(n, random_state=random_state)
    rng = np.random.default_rng(random_state)
    base = np.asarray(predict(X), float).reshape(X.shape[0], -1)
    imp = np.zeros(X.shape[1])
    for j in range(X.shape[1]):
        Xp = X.copy()
        Xp[:, j] = X[rng.permutation(X.shape[0]), j]
        out = np.asarray(predict(Xp), float).reshape(X.shape[0], -1)
        imp[j] = float(np.mean((out - base) ** 2))
    total = float(imp.sum())
    if not np.isfinite(total) or total <= 0:
        return np.full(X.shape[1], 1.0 / X.shape[1])
    return imp / total


def _verdict(score: float, shared: int, task: float | None) -> str:
    if shared == 0 or (task is not None and task < TASK_MIN) or score < FAIR:
        return "poor match"
    return "good match" if score >= GOOD else "fair match"


def refine_bridge(space: SystemSpace, matches: list[ColumnMatch], user_spec: Any,
                  island: str, points: np.ndarray, beta: np.ndarray,
                  sim: np.ndarray, dist: np.ndarray, stats: list[Any],
                  min_gain: float = REFINE_GAIN, max_passes: int = 3) -> list[ColumnMatch]:
    """Revisit ambiguous column pairs with the joint distribution.

    Marginals cannot tell "is it Monday" from "is it Saturday" (both indicators of rate 1/7)
    and MiniLM barely can; the joint distribution with the other shared columns can (births a
    week earlier are low on weekends). For each two user columns bridged into ``island``, swap
    their features when both swapped pairs are still acceptable matches and the system-kernel
    similarity between the user's spec and the island's pooled spec (``points``, ``beta``:
    system units, one column per island column) rises by more than ``min_gain``; repeat until
    nothing improves. Returns the refined column matches."""
    feats = space.islands[island]
    tpos = {f: j for j, f in enumerate(feats)}
    cur = list(matches)
    z = np.asarray(user_spec.z, float)
    ub = np.asarray(user_spec.beta, float)
    ub = ub / ub.sum()

    def value(ms: list[ColumnMatch]) -> float:
        used = [m for m in ms if m.feature is not None and m.feature in tpos]
        if len(used) < 2:
            return 0.0
        a = np.column_stack([m.alpha * z[:, m.column] + m.delta for m in used])
        b = points[:, [tpos[int(m.feature)] for m in used]]  # type: ignore[arg-type]
        return system_similarity(a, ub, b, beta)[0]

    best = value(cur)
    for _ in range(max_passes):
        improved = False
        idx = [i for i, m in enumerate(cur) if m.feature is not None and m.feature in tpos]
        for x in range(len(idx)):
            for y in range(x + 1, len(idx)):
                i, k = idx[x], idx[y]
                fi, fk = int(cur[i].feature), int(cur[k].feature)  # type: ignore[arg-type]
                if not (accepts(sim[i, fk], dist[i, fk]) and accepts(sim[k, fi], dist[k, fi])):
                    continue
                trial = list(cur)
                trial[i] = space.column_match(i, cur[i].description, fk, stats[i], sim[i, fk],
                                              dist[i, fk])
                trial[k] = space.column_match(k, cur[k].description, fi, stats[k], sim[k, fi],
                                              dist[k, fi])
                v = value(trial)
                if v > best + min_gain:
                    cur, best, improved = trial, v, True
        if not improved:
            break
    return cur


def effective_coverage(bridge: Bridge, spec: Any, weights: np.ndarray) -> float:
    """Importance-weighted share of the learnware's inputs the user supplies -- counting a
    missing input in proportion to how well the shared inputs predict it on the learnware's
    own reduced set (leave-one-out kernel regression R^2, weighted by beta): a missing input
    that the user's columns determine is not really missing."""
    shared, missing = bridge.targets, bridge.missing
    if not shared:
        return 0.0
    cov = float(weights[shared].sum())
    if not missing:
        return cov
    z = np.asarray(spec.z, float)
    scale = np.asarray(getattr(getattr(spec, "kernel", None), "scale", np.ones(z.shape[1])),
                       float)
    b = np.asarray(spec.beta, float)
    b = b / b.sum()
    S = z[:, shared] / scale[shared]
    logw = -sq_dists(S, S) / len(shared) + np.log(np.maximum(b, 1e-300))[None, :]
    np.fill_diagonal(logw, -np.inf)
    logw -= logw.max(axis=1, keepdims=True)
    W = np.exp(logw)
    W /= W.sum(axis=1, keepdims=True)
    Y = z[:, missing]
    var = b @ (Y - b @ Y) ** 2
    err = b @ (W @ Y - Y) ** 2
    r2 = np.where(var > 1e-12, np.clip(1.0 - err / np.maximum(var, 1e-300), 0.0, 1.0), 1.0)
    return float(min(1.0, cov + float(weights[missing] @ r2)))


def hetero_search(
    user_spec: Any,
    user_descriptions: Sequence[str],
    candidates: Sequence[HeteroCandidate | tuple],
    space: SystemSpace,
    top_k: int | None = 10,
    *,
    target_description: str | None = None,
    refine: bool = False,
) -> list[HeteroMatch]:
    """Rank ``candidates`` (learnwares of any island already in ``space``) for a user whose
    columns are ``user_descriptions`` and whose data ``user_spec`` summarises (a spec fitted
    on the user's own columns, any kernel). Tuples are read as :class:`HeteroCandidate`
    fields in order. ``refine``: revisit ambiguous column pairs per island with the joint
    distribution (:func:`refine_bridge`; off by default: on the quick benchmark it made one island's
    bridges more correct and another's less -- weekday indicators differ too little in their
    joint distribution with the other columns). Returns the ``top_k`` best (all with
    ``top_k=None``), best first."""
    descs = [str(d) for d in user_descriptions]
    z = np.asarray(getattr(user_spec, "z", None))
    if z.ndim != 2 or z.shape[1] != len(descs):
        raise SpecError(f"user spec has shape {z.shape}; give one description per column "
                        f"({len(descs)} given)")
    cands = [c if isinstance(c, HeteroCandidate) else HeteroCandidate(*c) for c in candidates]
    for c in cands:
        if c.island_key not in space.islands:
            raise SpecError(f"island {c.island_key!r} of learnware {c.learnware_id!r} is not "
                            "in the system space; add it with SystemSpace.add_island")
    matches = space.match(descs, user_spec)
    if refine:
        sim_m, dist_m, stats = space.scores(descs, user_spec)
    t_emb = (space._embed([target_description])[0] if target_description else None)
    projections = {c.learnware_id: space.project(c.island_key, c.spec) for c in cands}
    bridges: dict[str, Bridge] = {}
    island_matches: dict[str, list[ColumnMatch]] = {}
    for isl in dict.fromkeys(c.island_key for c in cands):
        ms = matches
        if refine:
            members = [projections[c.learnware_id] for c in cands if c.island_key == isl]
            pts = np.vstack([p.points for p in members])
            pb = np.concatenate([p.beta / len(members) for p in members])
            ms = refine_bridge(space, matches, user_spec, isl, pts, pb, sim_m, dist_m, stats)
        island_matches[isl] = ms
        bridges[isl] = space.bridge_columns(ms, isl)
    ub = np.asarray(user_spec.beta, float)
    ub = ub / ub.sum()
    zu = np.asarray(user_spec.z, float)
    out = []
    for c in cands:
        br = bridges[c.island_key]
        by_col = {m.column: m for m in island_matches[c.island_key]}
        proj = projections[c.learnware_id]
        feats = [p.feature for p in br.pairs]
        a = (np.column_stack([by_col[p.source].alpha * zu[:, p.source] + by_col[p.source].delta
                              for p in br.pairs]) if br.pairs else np.zeros((zu.shape[0], 0)))
        b = proj.restrict(feats)
        sim, mmd2 = system_similarity(a, ub, b, proj.beta)
        d = br.target_dimension
        w = (np.full(d, 1.0 / d) if c.importance is None
             else np.asarray(c.importance, float).reshape(-1))
        if w.shape[0] != d or np.any(w < 0) or not np.isfinite(w).all() or w.sum() <= 0:
            raise SpecError(f"importance of {c.learnware_id!r} must be {d} non-negative numbers")
        w = w / w.sum()
        coverage = effective_coverage(br, c.spec, w)
        task = None
        notes = []
        if t_emb is not None and c.output_description:
            task = float(t_emb @ space._embed([c.output_description])[0])
        elif t_emb is None:
            notes.append("no target description: the score cannot tell tasks apart")
        task_factor = (1.0 if task is None else 0.0 if task < TASK_MIN
                       else float(min(1.0, task / TASK_FULL)))
        score = sim * coverage * task_factor
        if br.missing:
            notes.append(f"{len(br.missing)} of {d} inputs imputed from the learnware's spec")
        out.append(HeteroMatch(c.learnware_id, c.island_key, float(score), sim, mmd2, coverage,
                               task, _verdict(score, len(br.pairs), task), br, len(br.pairs),
                               space.version, True, tuple(notes)))
    out.sort(key=lambda m: (-m.score, m.learnware_id))
    return out if top_k is None else out[:top_k]
