"""Search results: one object with the single ranking, the mixture and an explanation."""

from __future__ import annotations

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
class SearchResult:
    single: list[SingleMatch] = field(default_factory=list)
    mixture: MixtureMatch | None = None
    explanation: list[str] = field(default_factory=list)
    timings_ms: dict[str, float] = field(default_factory=dict)

    @property
    def best(self) -> SingleMatch | None:
        return self.single[0] if self.single else None

    @property
    def learnware_ids(self) -> list[str]:
        """What to reuse: the recommended mixture, else the best single learnware."""
        if self.mixture is not None and self.mixture.recommended:
            return list(self.mixture.learnware_ids)
        return [self.single[0].learnware_id] if self.single else []

    def to_dict(self) -> dict[str, Any]:
        return {
            "single": [asdict(s) for s in self.single],
            "mixture": asdict(self.mixture) if self.mixture else None,
            "explanation": list(self.explanation),
            "timings_ms": dict(self.timings_ms),
        }
