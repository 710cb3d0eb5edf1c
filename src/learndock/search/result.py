"""Search results: one object with the single ranking, the mixture and an explanation."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class SingleMatch:
    """One learnware and how well its spec matches the user's (absolute score in [0, 1])."""

    learnware_id: str
    name: str
    version: int
    score: float | None = None
    mmd: float | None = None
    text_rank: float | None = None
    island: str | None = None


@dataclass
class MixtureMatch:
    """Learnwares whose weighted specs together explain the user's data."""

    learnware_ids: list[str]
    names: list[str]
    weights: list[float]
    mmd: float
    score: float
    best_single_mmd: float
    improvement: float  # 1 - mixture MMD^2 / best single MMD^2
    recommended: bool
    island: str | None = None


@dataclass
class CrossIslandMatch:
    """A learnware of *another* feature space (island), ranked in the system space
    (heterogeneous search, :mod:`learndock.hetero`). ``score`` in [0, 1] is on one absolute
    scale for every island (system-kernel similarity x coverage of the learnware's inputs x
    task agreement), ``verdict`` says "good match", "fair match" or "poor match";
    ``shared_features`` of the learnware's inputs come from the user's columns through
    ``bridge`` (a :class:`learndock.hetero.Bridge` as a dict: user column -> learnware column,
    with the unit map), made by system-space version ``map_version``. Never mixed into
    :attr:`SearchResult.single`, whose scores are MMD under an island's own kernel."""

    learnware_id: str
    name: str
    version: int
    island: str
    score: float
    verdict: str
    similarity: float
    coverage: float
    shared_features: int
    input_dimension: int
    map_version: int
    bridge: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    cross_island: bool = True


@dataclass
class SearchResult:
    single: list[SingleMatch] = field(default_factory=list)
    mixture: MixtureMatch | None = None
    explanation: list[str] = field(default_factory=list)
    timings_ms: dict[str, float] = field(default_factory=dict)
    decision: Any = None  # a learndock.reuse.Decision once decide() ran (on the user's side)
    #: learnwares of other feature spaces (only when the user described their columns)
    cross_island: list[CrossIslandMatch] = field(default_factory=list)

    @property
    def best(self) -> SingleMatch | None:
        return self.single[0] if self.single else None

    @property
    def learnware_ids(self) -> list[str]:
        """What to reuse: the recommended mixture, else the best single learnware."""
        if self.mixture is not None and self.mixture.recommended:
            return list(self.mixture.learnware_ids)
        return [self.single[0].learnware_id] if self.single else []

    def decide_loading(self, load: Any, X: Any, labels: Any = None, *,
                       top_k: int | None = None, **params: Any) -> Any:
        """:meth:`decide` with the learnwares loaded by ``load(learnware_id)`` (each once):
        the first ``top_k`` single matches and the mixture's members. ``Market.decide`` and
        ``Client.decide`` are this with their own loaders."""
        loaded: dict[str, Any] = {}

        def get(lid: str) -> Any:
            if lid not in loaded:
                loaded[lid] = load(lid)
            return loaded[lid]

        lws = [get(m.learnware_id) for m in self.single[: top_k or len(self.single)]]
        mix = [get(i) for i in self.mixture.learnware_ids] if self.mixture else None
        return self.decide(lws, X, labels, mixture_learnwares=mix, **params)

    def decide(self, learnwares: Sequence[Any], X: Any, labels: Any = None,
               mixture_learnwares: Sequence[Any] | None = None, **params: Any) -> Any:
        """Run the decision step on the user's rows and keep its answer in ``decision``.

        ``learnwares`` are the loaded learnwares of ``single``, in the same order (a prefix is
        fine: the shortlist is what was loaded); ``mixture_learnwares`` those of ``mixture``,
        in its order -- the models then agree with the mixture's ensemble, which identified
        the best learnware far more often than the shortlist's plain average (BENCHMARKS.md).
        The spec ranking sees where each learnware has data; the models' outputs on ``X`` say
        which one to reuse (see :class:`learndock.reuse.DecisionStep`; ``params`` go to it).
        Runs locally: ``X`` and ``labels`` never leave this process.
        """
        from learndock.reuse.decision import decide

        lws = list(learnwares)
        if not self.single:
            raise ValueError("this search result is empty: nothing to decide among")
        if not lws or len(lws) > len(self.single):
            raise ValueError(f"pass the loaded learnwares of the first 1..{len(self.single)} "
                             f"single matches, in order (got {len(lws)})")
        matches = self.single[: len(lws)]
        for m, lw in zip(matches, lws, strict=True):
            if getattr(lw, "name", m.name) != m.name:
                raise ValueError(f"learnware {lw.name!r} is not the match {m.name!r} at that "
                                 "rank: load them in the order of result.single")
        scores = None if any(m.score is None for m in matches) else [m.score for m in matches]
        if mixture_learnwares is not None:
            mix = self.mixture
            ref = list(mixture_learnwares)
            if mix is None or len(ref) != len(mix.learnware_ids):
                raise ValueError("mixture_learnwares must be the loaded learnwares of "
                                 f"result.mixture ({0 if mix is None else len(mix.learnware_ids)}"
                                 f" of them), in its order; got {len(ref)}")
            for name, lw in zip(mix.names, ref, strict=True):
                if getattr(lw, "name", name) != name:
                    raise ValueError(f"learnware {lw.name!r} is not the mixture member {name!r} "
                                     "at that position")
            params.update(reference=ref, reference_weights=list(mix.weights),
                          reference_ids=list(mix.learnware_ids))
        self.decision = decide(lws, X, labels, scores=scores,
                               ids=[m.learnware_id for m in matches], **params)
        return self.decision

    def to_dict(self) -> dict[str, Any]:
        out = {
            "single": [asdict(s) for s in self.single],
            "mixture": asdict(self.mixture) if self.mixture else None,
            "cross_island": [asdict(c) for c in self.cross_island],
            "explanation": list(self.explanation),
            "timings_ms": dict(self.timings_ms),
        }
        if self.decision is not None:
            out["decision"] = self.decision.to_dict()
        return out
