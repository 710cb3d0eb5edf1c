"""Shared pieces of the reusers: task detection, label alignment, input validation."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_array

from learndock.errors import ContractError, SpecError
from learndock.package.learnware import Learnware
from learndock.spec.embedding import RKMEEmbeddingSpec
from learndock.spec.encoders import as_texts
from learndock.spec.semantic import DataType, TaskType


def task_of(learnwares: Sequence[Learnware]) -> str:
    """'classification' or 'regression'; all learnwares must agree."""
    if not learnwares:
        raise ValueError("a reuser needs at least one learnware")
    tasks = {lw.semantic.task_type for lw in learnwares}
    if tasks == {TaskType.CLASSIFICATION}:
        return "classification"
    if tasks == {TaskType.REGRESSION}:
        return "regression"
    raise ContractError(
        f"learnwares mix tasks {sorted(t.value for t in tasks)}; reuse needs one task type"
    )


def union_labels(learnwares: Sequence[Learnware]) -> np.ndarray:
    """The union of the learnwares' declared label sets, sorted."""
    labels: set[Any] = set()
    for lw in learnwares:
        if lw.labels is None:
            raise ContractError(f"{lw.name!r} declares no label set")
        labels.update(lw.labels)
    kinds = {type(v) for v in labels}
    if len(kinds) > 1:
        raise ContractError(f"label sets mix types {sorted(k.__name__ for k in kinds)}")
    return np.array(sorted(labels))


def aligned_proba(lw: Learnware, X: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """``lw.predict_proba(X)`` with columns placed on ``classes`` (zeros where it knows no class).

    A learnware that knows {2, 3} says nothing about class 0; its probability mass stays on the
    classes it knows -- the reference engine averaged mismatched columns instead.
    """
    proba = lw.predict_proba(X)
    out = np.zeros((X.shape[0], classes.shape[0]))
    pos = {c: i for i, c in enumerate(classes.tolist())}
    for j, label in enumerate(lw.labels or []):
        out[:, pos[label]] = proba[:, j]
    return out


def spec_featurizer(spec: Any) -> Any:
    """The encoder of an image/text spec as a featurizer (None for table specs)."""
    return spec.encode if isinstance(spec, RKMEEmbeddingSpec) else None


def data_type_of(learnwares: Sequence[Learnware]) -> DataType:
    kinds = {lw.semantic.data_type for lw in learnwares}
    if len(kinds) > 1:
        raise ContractError(f"learnwares mix data types {sorted(k.value for k in kinds)}")
    return kinds.pop()


def validate_X(est: BaseEstimator, X: Any, reset: bool) -> np.ndarray:
    """Check user inputs the way the learnwares take them: tables as 2-D float arrays (the
    scikit-learn convention, with ``n_features_in_``), images as (n, ...) float arrays of one
    sample shape, texts as a 1-D array of strings."""
    kind = getattr(est, "data_type_", DataType.TABLE)
    if kind is DataType.TEXT:
        try:
            return np.asarray(as_texts(X), dtype=object)
        except SpecError as exc:
            raise ValueError(str(exc)) from None
    if kind is DataType.IMAGE:
        X = np.asarray(X, dtype=np.float64)
        if X.ndim < 2:
            raise ValueError(f"images must be an (n, ...) array, got shape {X.shape}")
        if reset:
            est.input_shape_ = tuple(X.shape[1:])
        elif tuple(X.shape[1:]) != est.input_shape_:
            raise ValueError(f"images have shape {X.shape[1:]}, but {type(est).__name__} was "
                             f"fitted on {est.input_shape_}")
        return X
    X = check_array(X, dtype=np.float64, ensure_all_finite="allow-nan")
    if reset:
        est.n_features_in_ = X.shape[1]
    elif X.shape[1] != est.n_features_in_:
        raise ValueError(
            f"X has {X.shape[1]} features, but {type(est).__name__} is expecting "
            f"{est.n_features_in_} features as input"
        )
    return X


def check_learnwares(learnwares: Any) -> list[Learnware]:
    lws = list(learnwares) if learnwares is not None else []
    if not lws:
        raise ValueError("learnwares must be a non-empty list of Learnware objects")
    for lw in lws:
        if not isinstance(lw, Learnware):
            raise TypeError(f"expected Learnware objects, got {type(lw).__name__}")
    dims = {tuple(lw.manifest.input.shape) for lw in lws}
    if len(dims) > 1:
        raise ContractError(f"learnwares take different input shapes {sorted(dims)}")
    return lws


def check_weights(weights: Any, n: int) -> np.ndarray:
    if weights is None:
        return np.full(n, 1.0 / n)
    w = np.asarray(weights, dtype=np.float64).reshape(-1)
    if w.shape[0] != n or np.any(w < 0) or not np.isfinite(w).all() or w.sum() <= 0:
        raise ValueError(f"weights must be {n} non-negative numbers with a positive sum")
    return w / w.sum()
