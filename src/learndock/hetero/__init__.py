"""Heterogeneous learnwares: search and reuse across feature spaces (islands).

* :mod:`~learndock.hetero.columns` -- column-description embeddings (MiniLM; a hashing
  stand-in without the ``text`` extra);
* :mod:`~learndock.hetero.space` -- :class:`SystemSpace`, the versioned, incrementally grown
  map from island columns to shared system features;
* :mod:`~learndock.hetero.bridge` -- :class:`Bridge`, the explicit, stored column map between a
  column set and an island;
* :mod:`~learndock.hetero.search` -- :func:`hetero_search`, cross-island ranking on one
  absolute scale, with verdicts;
* :mod:`~learndock.hetero.reuse` -- :class:`HeteroMapReuser` (no labels) and
  :class:`HeteroFinetuneReuser` (a few labels), scikit-learn estimators.
"""

from learndock.hetero.bridge import Bridge, BridgePair
from learndock.hetero.columns import HashingEmbedder, MiniLMColumnEmbedder, default_embedder
from learndock.hetero.reuse import HeteroFinetuneReuser, HeteroMapReuser
from learndock.hetero.search import (
    HeteroCandidate,
    HeteroMatch,
    column_importance,
    hetero_search,
    system_similarity,
)
from learndock.hetero.space import ColumnMatch, SystemProjection, SystemSpace

__all__ = [
    "Bridge",
    "BridgePair",
    "ColumnMatch",
    "HashingEmbedder",
    "HeteroCandidate",
    "HeteroFinetuneReuser",
    "HeteroMapReuser",
    "HeteroMatch",
    "MiniLMColumnEmbedder",
    "SystemProjection",
    "SystemSpace",
    "column_importance",
    "default_embedder",
    "hetero_search",
    "system_similarity",
]
