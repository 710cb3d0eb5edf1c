"""Specification islands: the sets of specs that can be compared with each other.

Two specs are comparable only if they describe the same kind of data (data type), the same
feature space (dimension and feature schema: names + dtypes) and were built with the same
kernel. The key keeps those parts as separate fields, so a later bridge between feature spaces
(heterogeneous search) can relate islands without blurring what each one means.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from learndock.package.manifest import Manifest
from learndock.spec.embedding import RKMEEmbeddingSpec
from learndock.spec.kernels import GaussianKernel
from learndock.spec.table import RKMETableSpec

RFF_DIM = 512


@dataclass(frozen=True)
class IslandKey:
    data_type: str
    dimension: int
    schema_hash: str
    kernel_key: str

    def __str__(self) -> str:
        return f"{self.data_type.lower()}:d{self.dimension}:{self.schema_hash[:12]}:{self.kernel_key}"

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
        return IslandKey(spec.data_type, spec.dimension, encoder_schema_hash(spec.encoder_id),
                         spec.kernel.key())
    if manifest is None:
        raise ValueError("table specs need the manifest's feature schema for their island")
    return island_key_for(manifest, spec.kernel)


def island_key_for(manifest: Manifest, kernel: GaussianKernel) -> IslandKey:
    return IslandKey(
        data_type=manifest.semantic.data_type.value,
        dimension=manifest.input.size,
        schema_hash=schema_hash(manifest.feature_schema, manifest.input.size),
        kernel_key=kernel.key(),
    )
