"""Specifications: semantic (tags + text) and statistical (RKME) descriptions of learnwares.

Names are imported on first use (PEP 562): ``import learndock.spec`` costs nothing, and
``from learndock.spec import RKMETableSpec`` loads the table spec's numpy code only -- not the
image/text encoders, pydantic models or the QP solver -- so a ``learndock spec table`` process
starts in a fraction of a second.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "RKMEEmbeddingSpec": "learndock.spec.embedding",
    "RKMEImageSpec": "learndock.spec.embedding",
    "RKMETextSpec": "learndock.spec.embedding",
    "generate_image_spec": "learndock.spec.embedding",
    "generate_text_spec": "learndock.spec.embedding",
    "FashionCNNEncoder": "learndock.spec.encoders",
    "MiniLMEncoder": "learndock.spec.encoders",
    "RandomConvEncoder": "learndock.spec.encoders",
    "load_stat_spec": "learndock.spec.io",
    "stat_spec_from_dict": "learndock.spec.io",
    "validate_stat_spec": "learndock.spec.io",
    "GaussianKernel": "learndock.spec.kernels",
    "RandomFourierFeatures": "learndock.spec.kernels",
    "infer_scale": "learndock.spec.kernels",
    "DataType": "learndock.spec.semantic",
    "FeatureDescriptions": "learndock.spec.semantic",
    "LibraryType": "learndock.spec.semantic",
    "License": "learndock.spec.semantic",
    "Scenario": "learndock.spec.semantic",
    "SemanticQuery": "learndock.spec.semantic",
    "SemanticSpec": "learndock.spec.semantic",
    "TaskType": "learndock.spec.semantic",
    "RKMETableSpec": "learndock.spec.table",
    "generate_table_spec": "learndock.spec.table",
}

__all__ = [
    "DataType",
    "FashionCNNEncoder",
    "FeatureDescriptions",
    "GaussianKernel",
    "LibraryType",
    "License",
    "MiniLMEncoder",
    "RKMEEmbeddingSpec",
    "RKMEImageSpec",
    "RKMETableSpec",
    "RKMETextSpec",
    "RandomConvEncoder",
    "RandomFourierFeatures",
    "Scenario",
    "SemanticQuery",
    "SemanticSpec",
    "TaskType",
    "generate_image_spec",
    "generate_table_spec",
    "generate_text_spec",
    "infer_scale",
    "load_stat_spec",
    "stat_spec_from_dict",
    "validate_stat_spec",
]

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from learndock.spec.embedding import (
        RKMEEmbeddingSpec,
        RKMEImageSpec,
        RKMETextSpec,
        generate_image_spec,
        generate_text_spec,
    )
    from learndock.spec.encoders import FashionCNNEncoder, MiniLMEncoder, RandomConvEncoder
    from learndock.spec.io import load_stat_spec, stat_spec_from_dict, validate_stat_spec
    from learndock.spec.kernels import GaussianKernel, RandomFourierFeatures, infer_scale
    from learndock.spec.semantic import (
        DataType,
        FeatureDescriptions,
        LibraryType,
        License,
        Scenario,
        SemanticQuery,
        SemanticSpec,
        TaskType,
    )
    from learndock.spec.table import RKMETableSpec, generate_table_spec


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'learndock.spec' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
