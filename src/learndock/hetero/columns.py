"""Column embeddings: one unit vector per column description.

A system feature is found by *what a column means*, which only its description says, so every
description is embedded once (MiniLM by default, cached in memory and in the encoder's on-disk
cache: descriptions are short and repeat across uploads). :class:`HashingEmbedder` is a
dependency-free stand-in (character n-grams hashed into a fixed vector) for tests and for
installs without the ``text`` extra; it only matches near-identical wording.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from learndock.errors import SpecError


class ColumnEmbedder(Protocol):
    """Anything that turns descriptions into unit vectors and names itself."""

    identity: str

    def embed(self, descriptions: Sequence[str]) -> np.ndarray: ...


#: Abbreviations spelled out before embedding. MiniLM does not link "Mon" to "Monday": with
#: the abbreviation every user wording of a weekday indicator matched Wednesday's column;
#: spelled out, each matched its own day (measured in benchmarks/hetero.py).
ABBREVIATIONS = {
    "mon": "monday", "tue": "tuesday", "tues": "tuesday", "wed": "wednesday",
    "thu": "thursday", "thur": "thursday", "thurs": "thursday", "fri": "friday",
    "sat": "saturday", "sun": "sunday", "jan": "january", "feb": "february", "mar": "march",
    "apr": "april", "jun": "june", "jul": "july", "aug": "august", "sep": "september",
    "sept": "september", "oct": "october", "nov": "november", "dec": "december",
    "dow": "day of week", "doy": "day of year", "hr": "hour", "hrs": "hours",
    "min": "minutes", "mins": "minutes", "km": "kilometres", "mi": "miles",
}
_ABBREV = re.compile(r"\b(" + "|".join(sorted(ABBREVIATIONS, key=len, reverse=True)) + r")\b")


def normalise_description(text: str) -> str:
    """Whitespace and case folded, common abbreviations spelled out (``ABBREVIATIONS``):
    "Departure  Delay (min)" and "departure delay (minutes)" are one text."""
    t = re.sub(r"\s+", " ", str(text)).strip().lower()
    return _ABBREV.sub(lambda m: ABBREVIATIONS[m.group(1)], t)


class _Memo:
    """In-memory memo shared by the embedders (descriptions repeat across islands)."""

    def __init__(self) -> None:
        self._memo: dict[str, np.ndarray] = {}

    def _embed_new(self, texts: list[str]) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def embed(self, descriptions: Sequence[str]) -> np.ndarray:
        texts = [normalise_description(t) for t in descriptions]
        if any(not t for t in texts):
            raise SpecError("column descriptions must not be empty")
        todo = sorted({t for t in texts if t not in self._memo})
        if todo:
            vecs = np.asarray(self._embed_new(todo), dtype=np.float64)
            for t, v in zip(todo, vecs, strict=True):
                self._memo[t] = v / max(float(np.linalg.norm(v)), 1e-12)
        if not texts:
            return np.zeros((0, self.dimension))
        return np.stack([self._memo[t] for t in texts])

    dimension: int = 0


class MiniLMColumnEmbedder(_Memo):
    """Descriptions embedded by all-MiniLM-L6-v2 (``learndock.spec.encoders.MiniLMEncoder``)."""

    dimension = 384

    def __init__(self, encoder: Any = None, *, device: str | None = "cpu",
                 cache: Any = None) -> None:
        super().__init__()
        if encoder is None:
            from learndock.spec.encoders import MiniLMEncoder

            encoder = MiniLMEncoder(device=device, cache=cache)
        self.encoder = encoder
        self.identity = f"minilm:{encoder.identity}"

    def _embed_new(self, texts: list[str]) -> np.ndarray:
        return self.encoder.encode(texts, progress=False)


class HashingEmbedder(_Memo):
    """Character 3-gram hashing into ``dimension`` signed buckets (deterministic, no model).

    Good enough to match identical or lightly edited descriptions; it knows no synonyms, so
    renamed columns need MiniLM."""

    def __init__(self, dimension: int = 256) -> None:
        super().__init__()
        self.dimension = int(dimension)
        self.identity = f"hashing-3gram:{self.dimension}"

    def _embed_new(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dimension))
        for i, t in enumerate(texts):
            padded = f"  {t}  "
            for j in range(len(padded) - 2):
                h = hashlib.blake2b(padded[j:j + 3].encode(), digest_size=8).digest()
                v = int.from_bytes(h, "little")
                out[i, v % self.dimension] += 1.0 if (v >> 32) & 1 else -1.0
        return out


def default_embedder() -> ColumnEmbedder:
    """MiniLM when the ``text`` extra is installed; a clear error otherwise."""
    try:
        return MiniLMColumnEmbedder()
    except SpecError as exc:
        raise SpecError(f"{exc}; or pass embedder=HashingEmbedder() (exact wording only)") from None
