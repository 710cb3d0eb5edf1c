"""Specifications: semantic (tags + text) and statistical (RKME) descriptions of learnwares."""

from learndock.spec.embedding import (
    RKMEEmbeddingSpec,
    RKMEImageSpec,
    RKMETextSpec,
    generate_image_spec,
    generate_text_spec,
)
from learndock.spec.encoders import MiniLMEncoder, RandomConvEncoder
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

__all__ = [
    "DataType",
    "FeatureDescriptions",
    "GaussianKernel",
    "LibraryType",
    "MiniLMEncoder",
    "RKMEEmbeddingSpec",
    "RKMEImageSpec",
    "RKMETextSpec",
    "RandomConvEncoder",
    "License",
    "RKMETableSpec",
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
