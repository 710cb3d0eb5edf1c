"""Bridges: explicit, stored maps from one column set to an island's columns.

Why stored data and not a function: a bridge is what search showed the user and what reuse
will apply, so it must be inspectable, serialisable and tied to the system-space version that
made it. A pair says "source column i feeds target column j as ``scale * x + shift``" with the
confidence of the column match; target columns without a pair are *missing* (the reusers
impute them from the learnware's own spec).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from learndock.errors import SpecError


@dataclass(frozen=True)
class BridgePair:
    source: int
    target: int
    feature: int  # system feature id
    scale: float  # x_target = scale * x_source + shift
    shift: float
    confidence: float

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "target": self.target, "feature": self.feature,
                "scale": self.scale, "shift": self.shift, "confidence": self.confidence}


@dataclass(frozen=True)
class Bridge:
    """Column pairs from ``source`` (a user column set or an island) into ``target`` (an
    island), made by system-space version ``map_version``."""

    source: str
    target: str
    source_dimension: int
    target_dimension: int
    pairs: tuple[BridgePair, ...]
    map_version: int

    def __post_init__(self) -> None:
        tg = [p.target for p in self.pairs]
        sc = [p.source for p in self.pairs]
        if len(set(tg)) != len(tg) or len(set(sc)) != len(sc):
            raise SpecError("a bridge pairs each source and each target column at most once")
        if any(not 0 <= p.target < self.target_dimension for p in self.pairs) or any(
                not 0 <= p.source < self.source_dimension for p in self.pairs):
            raise SpecError("bridge pair outside the source/target dimensions")
        if any(not (np.isfinite(p.scale) and np.isfinite(p.shift)) for p in self.pairs):
            raise SpecError("bridge unit maps must be finite")

    @property
    def targets(self) -> list[int]:
        return [p.target for p in self.pairs]

    @property
    def sources(self) -> list[int]:
        return [p.source for p in self.pairs]

    @property
    def missing(self) -> list[int]:
        """Target columns the source cannot supply."""
        have = set(self.targets)
        return [j for j in range(self.target_dimension) if j not in have]

    @property
    def unused(self) -> list[int]:
        """Source columns the target does not take."""
        have = set(self.sources)
        return [i for i in range(self.source_dimension) if i not in have]

    @property
    def coverage(self) -> float:
        return len(self.pairs) / self.target_dimension

    def transform(self, X: Any) -> np.ndarray:
        """Source rows in target columns; missing target columns are NaN."""
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.source_dimension:
            raise ValueError(f"the bridge takes {self.source_dimension} source columns, got "
                             f"shape {X.shape}")
        out = np.full((X.shape[0], self.target_dimension), np.nan)
        for p in self.pairs:
            out[:, p.target] = p.scale * X[:, p.source] + p.shift
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"format": "learndock-bridge", "format_version": 1, "source": self.source,
                "target": self.target, "source_dimension": self.source_dimension,
                "target_dimension": self.target_dimension, "map_version": self.map_version,
                "pairs": [p.to_dict() for p in self.pairs]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Bridge:
        if not isinstance(d, dict) or d.get("format") != "learndock-bridge":
            raise SpecError("not a learndock bridge (missing format marker)")
        try:
            pairs = tuple(BridgePair(int(p["source"]), int(p["target"]), int(p["feature"]),
                                     float(p["scale"]), float(p["shift"]),
                                     float(p["confidence"])) for p in d["pairs"])
            return cls(str(d["source"]), str(d["target"]), int(d["source_dimension"]),
                       int(d["target_dimension"]), pairs, int(d["map_version"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise SpecError(f"malformed bridge: {exc}") from None
