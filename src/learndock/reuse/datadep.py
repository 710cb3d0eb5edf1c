"""Reusers that learn from a few user labels."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.linear_model import LogisticRegression, LogisticRegressionCV, RidgeCV
from sklearn.model_selection import KFold, StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler
from sklearn.utils.validation import check_is_fitted

from learndock.errors import ContractError
from learndock.package.learnware import Learnware
from learndock.reuse.base import (
    aligned_proba,
    check_learnwares,
    data_type_of,
    spec_featurizer,
    task_of,
    union_labels,
    validate_X,
)

_EPS = 1e-6


def learnware_outputs(lws: list[Learnware], X: np.ndarray, classes: np.ndarray | None) -> np.ndarray:
    """Stacked outputs: (m, n, C) aligned probabilities, or (m, n) regression predictions."""
    if classes is not None:
        return np.stack([aligned_proba(lw, X, classes) for lw in lws], axis=0)
    return np.stack([np.asarray(lw.predict(X), dtype=np.float64).reshape(-1) for lw in lws], axis=0)


def _loss(pred: np.ndarray, y_idx: np.ndarray | None, y: np.ndarray, classification: bool) -> float:
    if classification:
        assert y_idx is not None
        p = pred[np.arange(pred.shape[0]), y_idx]
        return float(-np.mean(np.log(np.clip(p, _EPS, 1.0))))
    return float(np.mean((pred - y) ** 2))


def _splitter(y: np.ndarray, classification: bool, cv: int, random_state: int | None) -> Any:
    if classification:
        _, counts = np.unique(y, return_counts=True)
        k = int(min(cv, counts.min()))
        if k >= 2:
            return StratifiedKFold(k, shuffle=True, random_state=random_state)
    k = int(min(cv, y.shape[0]))
    return KFold(k, shuffle=True, random_state=random_state) if k >= 2 else None


class _DataReuser(BaseEstimator):
    def _setup(self, X: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
        self.learnwares_ = check_learnwares(self.learnwares)
        self.task_ = task_of(self.learnwares_)
        self.data_type_ = data_type_of(self.learnwares_)
        X = validate_X(self, X, reset=True)
        if y is None:
            raise ValueError(f"{type(self).__name__} needs labels y")
        y = np.asarray(y)
        if y.shape[0] != X.shape[0]:
            raise ValueError(f"X has {X.shape[0]} rows but y has {y.shape[0]}")
        if self.task_ == "classification":
            known = union_labels(self.learnwares_)
            self.classes_ = np.array(sorted(set(known.tolist()) | set(y.tolist())))
        else:
            y = y.astype(np.float64)
        return X, y

    def score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        check_is_fitted(self, "learnwares_")
        if self.task_ == "classification":
            return ClassifierMixin.score(self, X, y, sample_weight)
        return RegressorMixin.score(self, X, y, sample_weight)


class EnsemblePruningReuser(ClassifierMixin, RegressorMixin, _DataReuser):
    """Choose the sub-ensemble that minimises validation loss on the user's labels.

    Greedy forward selection with replacement (Caruana et al., 2004) over the learnwares'
    outputs; the number of selection rounds is chosen by K-fold cross-validation so a handful
    of labels does not overfit the choice. Loss: log loss (classification) or MSE.
    """

    def __init__(
        self,
        learnwares: Any = None,
        max_rounds: int | None = None,
        cv: int = 5,
        random_state: int | None = 0,
    ) -> None:
        self.learnwares = learnwares
        self.max_rounds = max_rounds
        self.cv = cv
        self.random_state = random_state

    @staticmethod
    def _greedy(P: np.ndarray, rows: np.ndarray, y_idx: Any, y: np.ndarray, rounds: int,
                classification: bool) -> tuple[np.ndarray, list[np.ndarray]]:
        m = P.shape[0]
        counts = np.zeros(m)
        total = np.zeros_like(P[0][rows])
        path = []
        yi = None if y_idx is None else y_idx[rows]
        for r in range(1, rounds + 1):
            losses = [
                _loss((total + P[j][rows]) / r, yi, y[rows], classification) for j in range(m)
            ]
            j = int(np.argmin(losses))
            counts[j] += 1
            total = total + P[j][rows]
            path.append(counts.copy())
        return counts, path

    def fit(self, X: Any, y: Any) -> EnsemblePruningReuser:
        X, y = self._setup(X, y)
        classification = self.task_ == "classification"
        P = learnware_outputs(self.learnwares_, X, self.classes_ if classification else None)
        y_idx = np.searchsorted(self.classes_, y) if classification else None
        rounds = self.max_rounds or max(2 * len(self.learnwares_), 5)
        split = _splitter(y, classification, self.cv, self.random_state)
        all_rows = np.arange(X.shape[0])
        if split is None:
            best_r = rounds
        else:
            cv_loss = np.zeros(rounds)
            for tr, te in split.split(X, y):
                _, path = self._greedy(P, tr, y_idx, y, rounds, classification)
                for r, counts in enumerate(path):
                    w = counts / counts.sum()
                    pred = np.tensordot(w, P[:, te], axes=1)
                    cv_loss[r] += _loss(pred, None if y_idx is None else y_idx[te], y[te],
                                        classification)
            best_r = int(np.argmin(cv_loss)) + 1
            self.cv_loss_ = cv_loss / split.get_n_splits()
        counts, _ = self._greedy(P, all_rows, y_idx, y, best_r, classification)
        self.weights_ = counts / counts.sum()
        self.n_rounds_ = best_r
        self.selected_ = [i for i in range(len(self.learnwares_)) if counts[i] > 0]
        return self

    def _combined(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "weights_")
        X = validate_X(self, X, reset=False)
        idx = self.selected_
        lws = [self.learnwares_[i] for i in idx]
        P = learnware_outputs(lws, X, self.classes_ if self.task_ == "classification" else None)
        return np.tensordot(self.weights_[idx], P, axes=1)

    def predict_proba(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "weights_")
        if self.task_ != "classification":
            raise AttributeError("predict_proba is only available for classification")
        p = self._combined(X)
        return p / np.clip(p.sum(axis=1, keepdims=True), _EPS, None)

    def predict(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "weights_")
        if self.task_ == "classification":
            return self.classes_[np.argmax(self._combined(X), axis=1)]
        return self._combined(X)


def _scale_columns(Z: np.ndarray, scale: np.ndarray) -> np.ndarray:
    return Z * scale


def _add_ones(Z: np.ndarray) -> np.ndarray:
    return np.hstack([Z, np.ones((Z.shape[0], 1))])


class FeatureAugmentReuser(ClassifierMixin, RegressorMixin, _DataReuser):
    """Stack the learnwares' outputs next to the user's features; fit a regularised model.

    Classification: standardised features + logistic regression with the regularisation chosen
    by internal cross-validation; regression: ridge with ``alphas`` chosen by internal
    leave-one-out CV. The user's own features let it correct what the learnwares get wrong.

    It starts at the learnwares' level, so a few labels cannot make it worse than reusing them
    (measured: without this it lost to plain top-1 reuse below 50-100 labels):
    regression with ``residual=True`` fits the correction ``y - base`` where ``base`` is the
    learnwares' mean (``base="mean"``, measured better) or the first one's prediction
    (``"first"``), by ridge with a *penalised* offset (a constant column, no free intercept)
    and ``residual_alphas`` (leave-one-out choice, at least 100 on standardised features), so
    strong regularisation returns exactly the base. Measured on flights (15 users, 10 labels):
    free intercept and alphas from 0.01 gave 19.9 minutes RMSE, these 16.6, top-1 reuse 17.3.
    Classification
    multiplies the standardised learnware-output columns by ``output_scale``, which divides
    their L2 penalty by its square -- the penalty shrinks the user-feature coefficients, not the
    learnwares' votes.
    """

    def __init__(
        self,
        learnwares: Any = None,
        cv: int = 5,
        alphas: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0, 100.0, 1000.0),
        use_features: bool = True,
        random_state: int | None = 0,
        featurizer: Any = None,
        residual: bool = True,
        base: str = "mean",
        output_scale: float = 10.0,
        residual_alphas: tuple[float, ...] = (100.0, 1000.0, 1e4, 1e5, 1e6),
    ) -> None:
        self.learnwares = learnwares
        self.cv = cv
        self.alphas = alphas
        self.use_features = use_features
        self.random_state = random_state
        self.featurizer = featurizer
        self.residual = residual
        self.base = base
        self.output_scale = output_scale
        self.residual_alphas = residual_alphas

    def _features(self, X: np.ndarray) -> np.ndarray:
        """The user's own features: ``featurizer(X)`` if given; tables as they are; images and
        texts through the learnwares' spec encoder (a fixed, label-free embedding)."""
        if self.featurizer is not None:
            return np.asarray(self.featurizer(X), dtype=np.float64).reshape(len(X), -1)
        lw = self.learnwares_[0]
        encode = spec_featurizer(lw.stat_spec if lw.specs else None)
        if encode is not None:
            return encode(X)
        return np.asarray(X, dtype=np.float64).reshape(X.shape[0], -1)

    def _augment(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(features + learnware outputs, regression base or None)."""
        classification = self.task_ == "classification"
        P = learnware_outputs(self.learnwares_, X, self.known_ if classification else None)
        extra = (
            np.concatenate(list(P), axis=1) if classification else P.T
        )
        F = (np.nan_to_num(self._features(X), nan=0.0) if self.use_features
             else np.zeros((X.shape[0], 0)))
        base = None
        if not classification and self.residual:
            base = P[0] if self.base == "first" else P.mean(axis=0)
        self.n_output_columns_ = extra.shape[1]
        return np.hstack([F, extra]), base

    def fit(self, X: Any, y: Any) -> FeatureAugmentReuser:
        if self.base not in ("first", "mean"):
            raise ValueError(f"base must be 'first' or 'mean', got {self.base!r}")
        if not float(self.output_scale) > 0:
            raise ValueError(f"output_scale must be positive, got {self.output_scale!r}")
        X, y = self._setup(X, y)
        if self.task_ == "classification":
            self.known_ = union_labels(self.learnwares_)
            split = _splitter(y, True, self.cv, self.random_state)
            if np.unique(y).shape[0] < 2:
                raise ValueError("FeatureAugmentReuser needs labels of at least 2 classes")
            model = (
                LogisticRegressionCV(Cs=8, cv=split, max_iter=2000)
                if split is not None
                else LogisticRegression(max_iter=2000)
            )
        elif self.residual:
            model = RidgeCV(alphas=self.residual_alphas, fit_intercept=False)
        else:
            model = RidgeCV(alphas=self.alphas)
        with warnings.catch_warnings():
            # scikit-learn 1.8+ announces a change of LogisticRegressionCV's fitted attributes;
            # we only use predict/predict_proba, which do not change.
            warnings.simplefilter("ignore", FutureWarning)
            Z, base = self._augment(X)
            steps: list[Any] = [StandardScaler()]
            if self.task_ == "classification" and self.output_scale != 1.0:
                scale = np.ones(Z.shape[1])
                scale[Z.shape[1] - self.n_output_columns_:] = float(self.output_scale)
                steps.append(FunctionTransformer(_scale_columns, kw_args={"scale": scale}))
            if base is not None:
                steps.append(FunctionTransformer(_add_ones))
            self.model_ = make_pipeline(*steps, model).fit(Z, y if base is None else y - base)
        return self

    def predict(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "model_")
        Z, base = self._augment(validate_X(self, X, reset=False))
        pred = self.model_.predict(Z)
        return pred if base is None else pred + base

    def predict_proba(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "model_")
        if self.task_ != "classification":
            raise AttributeError("predict_proba is only available for classification")
        p = self.model_.predict_proba(self._augment(validate_X(self, X, reset=False))[0])
        out = np.zeros((p.shape[0], self.classes_.shape[0]))
        cols = np.searchsorted(self.classes_, self.model_.classes_)
        out[:, cols] = p
        return out


class FinetuneReuser(ClassifierMixin, RegressorMixin, BaseEstimator):
    """Fine-tune one learnware on the user's labels, where it declares it can
    (a ``finetune`` method, or ``partial_fit`` for warm-startable scikit-learn models)."""

    def __init__(self, learnware: Any = None) -> None:
        self.learnware = learnware

    def fit(self, X: Any, y: Any) -> FinetuneReuser:
        lws = check_learnwares([self.learnware])
        self.learnware_ = lws[0]
        self.task_ = task_of(lws)
        X = validate_X(self, X, reset=True)
        if not (self.learnware_.supports("finetune") or self.learnware_.supports("partial_fit")):
            raise ContractError(f"{self.learnware_.name!r} cannot be fine-tuned")
        self.learnware_.finetune(X, np.asarray(y))
        if self.task_ == "classification":
            self.classes_ = np.asarray(self.learnware_.labels)
        return self

    def predict(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "learnware_")
        return self.learnware_.predict(validate_X(self, X, reset=False))

    def predict_proba(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "learnware_")
        return self.learnware_.predict_proba(validate_X(self, X, reset=False))

    def score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        if self.task_ == "classification":
            return ClassifierMixin.score(self, X, y, sample_weight)
        return RegressorMixin.score(self, X, y, sample_weight)


def own_model(task: str, featurizer: Any = None) -> BaseEstimator:
    """The user's own model trained only on their labels (the baseline reuse must beat).

    ``featurizer`` turns raw inputs (images, texts) into a feature table first, e.g. the
    encoder of the market's image/text specs (:func:`spec_featurizer`)."""
    steps: list[Any] = [FunctionTransformer(featurizer)] if featurizer is not None else []
    if task == "classification":
        return make_pipeline(*steps, StandardScaler(), LogisticRegression(max_iter=2000))
    return make_pipeline(*steps, StandardScaler(), RidgeCV(alphas=(0.01, 0.1, 1.0, 10.0, 100.0)))

