"""Specification islands: one per feature space.

Two specs are comparable when they describe the same kind of data (data type) in the same
feature space (dimension and feature schema: names + dtypes; for images and texts, the encoder).
The kernel a developer fitted with does not split an island: an RKME is a weighted point set,
so the market scores every spec of an island under the island's own kernel
(:mod:`learndock.market.kernels`), whatever kernel built it. The key keeps its parts as separate
fields, so a bridge between feature spaces (heterogeneous search) can relate islands without
blurring what each one means.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from learndock.package.manifest import Manifest
from learndock.spec.embedding import RKMEEmbeddingSpec
from learndock.spec.table import RKMETableSpec

RFF_DIM = 512


@dataclass(frozen=True)
class IslandKey:
    data_type: str
    dimension: int
    schema_hash: str

    def __str__(self) -> str:
        return f"{self.data_type.lower()}:d{self.dimension}:{self.schema_hash[:12]}"

    @property
    def rff_seed(self) -> int:
        """A seed derived from the key: every spec of an island shares one feature map."""
        return int(hashlib.sha256(str(self).encode()).hexdigest()[:12], 16)


def schema_hash(feature_schema: list[tuple[str, str]] | None, dimension: int) -> str:
    payload = json.dumps(feature_schema if feature_schema is not None else ["unnamed", dimension])
    return hashlib.sha256(payload.encode()).hexdigest()


def encoder_schema_hash(encoder_id: str) -> str:
    """Image and text specs live in their encoder's space: the encoder *is* the schema."""
    return hashlib.sha256(json.dumps(["encoder", encoder_id]).encode()).hexdigest()


def spec_island_key(spec: RKMETableSpec, manifest: Manifest | None = None) -> IslandKey:
    """The island of a spec: table specs by the manifest's feature schema, image/text specs by
    their encoder (so specs of different encoders never share an island)."""
    if isinstance(spec, RKMEEmbeddingSpec):
        return IslandKey(spec.data_type, spec.dimension, encoder_schema_hash(spec.encoder_id))
    if manifest is None:
        raise ValueError("table specs need the manifest's feature schema for their island")
    return island_key_for(manifest)


def island_key_for(manifest: Manifest) -> IslandKey:
    return IslandKey(
        data_type=manifest.semantic.data_type.value,
        dimension=manifest.input.size,
        schema_hash=schema_hash(manifest.feature_schema, manifest.input.size),
    )
