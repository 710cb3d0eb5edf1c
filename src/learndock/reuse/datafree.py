"""Data-free reusers: no user labels needed."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, clone
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.utils.validation import check_is_fitted

from learndock.reuse.base import (
    aligned_proba,
    check_learnwares,
    check_weights,
    data_type_of,
    spec_featurizer,
    task_of,
    union_labels,
    validate_X,
)
from learndock.spec.semantic import DataType


class _Reuser(BaseEstimator):
    def _setup(self, X: Any) -> np.ndarray:
        self.learnwares_ = check_learnwares(self.learnwares)
        self.task_ = task_of(self.learnwares_)
        self.data_type_ = data_type_of(self.learnwares_)
        self.weights_ = check_weights(self.weights, len(self.learnwares_))
        if self.task_ == "classification":
            self.classes_ = union_labels(self.learnwares_)
        return validate_X(self, X, reset=True)

    def _more_tags(self) -> dict[str, Any]:
        return {"requires_y": False}


class AveragingReuser(ClassifierMixin, RegressorMixin, _Reuser):
    """Average the learnwares' outputs, optionally with the mixture weights from search.

    Classification: ``mode="proba"`` averages class probabilities aligned on the union of
    the label sets; ``mode="vote"`` takes the weighted majority of predicted labels.
    Regression: the weighted mean of predictions. ``fit`` learns nothing from ``y``; it only
    validates inputs and records ``classes_`` (so the estimator works in Pipelines).
    """

    def __init__(self, learnwares: Any = None, weights: Any = None, mode: str = "proba") -> None:
        self.learnwares = learnwares
        self.weights = weights
        self.mode = mode

    def fit(self, X: Any, y: Any = None) -> AveragingReuser:
        if self.mode not in ("proba", "vote"):
            raise ValueError(f"mode must be 'proba' or 'vote', got {self.mode!r}")
        self._setup(X)
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "learnwares_")
        if self.task_ != "classification":
            raise AttributeError("predict_proba is only available for classification")
        X = validate_X(self, X, reset=False)
        out = np.zeros((X.shape[0], self.classes_.shape[0]))
        if self.mode == "proba":
            for w, lw in zip(self.weights_, self.learnwares_, strict=True):
                out += w * aligned_proba(lw, X, self.classes_)
        else:
            pos = {c: i for i, c in enumerate(self.classes_.tolist())}
            for w, lw in zip(self.weights_, self.learnwares_, strict=True):
                pred = lw.predict(X)
                out[np.arange(X.shape[0]), [pos[p] for p in pred.tolist()]] += w
        return out / out.sum(axis=1, keepdims=True)

    def predict(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "learnwares_")
        if self.task_ == "classification":
            return self.classes_[np.argmax(self.predict_proba(X), axis=1)]
        X = validate_X(self, X, reset=False)
        preds = np.stack([lw.predict(X) for lw in self.learnwares_], axis=0)
        return np.tensordot(self.weights_, preds, axes=1)

    def score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        check_is_fitted(self, "learnwares_")
        if self.task_ == "classification":
            return ClassifierMixin.score(self, X, y, sample_weight)
        return RegressorMixin.score(self, X, y, sample_weight)


class JobSelectorReuser(ClassifierMixin, RegressorMixin, _Reuser):
    """Route each user row to the learnware whose distribution it comes from.

    From each learnware's RKME spec, kernel herding draws points that represent its training
    distribution (more for larger mixture weights); a gradient-boosting selector learns which
    learnware each point came from and routes user rows accordingly. No user labels needed.

    ``routing="soft"`` (default) weighs each learnware's output by the selector's probability
    that the row comes from it. Hard routing (``"hard"``, one learnware per row) lost to plain
    top-1 reuse on both table panels: there the learnwares' distributions overlap (every state
    has the same calendar), so the selector's argmax is close to a coin toss and each row gets
    an arbitrary member. Soft routing turns into the average where the distributions overlap
    and into routing where they separate. ``separability_`` is the selector's accuracy on
    held-out herded points, minus chance, over (1 - chance): near 0 means routing is guesswork.
    """

    def __init__(
        self,
        learnwares: Any = None,
        weights: Any = None,
        n_herding: int = 300,
        selector: Any = None,
        random_state: int | None = 0,
        routing: str = "soft",
    ) -> None:
        self.learnwares = learnwares
        self.weights = weights
        self.n_herding = n_herding
        self.selector = selector
        self.random_state = random_state
        self.routing = routing

    def fit(self, X: Any = None, y: Any = None) -> JobSelectorReuser:
        lws = check_learnwares(self.learnwares)
        if X is None:
            X = (["placeholder"] if data_type_of(lws) is DataType.TEXT
                 else np.zeros((1, *lws[0].manifest.input.shape)))
        if self.routing not in ("soft", "hard"):
            raise ValueError(f"routing must be 'soft' or 'hard', got {self.routing!r}")
        self._setup(X)
        if len(self.learnwares_) == 1:
            self.selector_ = None
            self.separability_ = 1.0
            return self
        counts = np.maximum(20, np.round(self.weights_ * self.n_herding * len(self.learnwares_)))
        points, owners = [], []
        for i, (lw, n) in enumerate(zip(self.learnwares_, counts.astype(int), strict=True)):
            seed = None if self.random_state is None else self.random_state + i
            pts = lw.stat_spec.herd(int(n), random_state=seed)
            points.append(pts)
            owners.append(np.full(pts.shape[0], i))
        base = self.selector if self.selector is not None else HistGradientBoostingClassifier(
            max_iter=200,
            early_stopping=True,  # herded sets are usually separable: stop when it stops helping
            validation_fraction=0.15,
            n_iter_no_change=10,
            random_state=self.random_state,
        )
        P, owner = np.vstack(points), np.concatenate(owners)
        self.separability_ = self._separability(base, P, owner)
        self.selector_ = clone(base).fit(P, owner)
        return self

    def _separability(self, base: Any, P: np.ndarray, owner: np.ndarray) -> float:
        """How much better than chance the selector tells the herded sets apart (held out)."""
        from sklearn.model_selection import train_test_split

        tr, te = train_test_split(np.arange(owner.size), test_size=0.25, stratify=owner,
                                  random_state=self.random_state)
        acc = float(np.mean(clone(base).fit(P[tr], owner[tr]).predict(P[te]) == owner[te]))
        chance = float(np.max(np.bincount(owner[te])) / te.size)
        return float(max(0.0, (acc - chance) / max(1e-12, 1.0 - chance)))

    def route(self, X: Any) -> np.ndarray:
        """Index of the learnware each row is sent to (the most likely source)."""
        return np.argmax(self.route_proba(X), axis=1)

    def route_proba(self, X: Any) -> np.ndarray:
        """(n, n_learnwares): the selector's probability that each row comes from each one."""
        check_is_fitted(self, "learnwares_")
        X = validate_X(self, X, reset=False)
        m = len(self.learnwares_)
        if self.selector_ is None:
            return np.ones((X.shape[0], 1))
        encode = spec_featurizer(self.learnwares_[0].stat_spec)
        if encode is not None:
            X = encode(X)  # herded points live in the encoder's space: route there too
        p = self.selector_.predict_proba(X)
        out = np.zeros((X.shape[0], m))
        out[:, np.asarray(self.selector_.classes_, dtype=int)] = p
        return out

    def _dispatch(self, X: np.ndarray, method: str) -> np.ndarray:
        if self.routing == "soft":
            R = self.route_proba(X)
            outs = [aligned_proba(lw, X, self.classes_) if method == "proba"
                    else np.asarray(lw.predict(X), dtype=np.float64).reshape(-1)
                    for lw in self.learnwares_]
            if method == "proba":
                return np.einsum("nm,mnc->nc", R, np.stack(outs))
            return np.einsum("nm,mn->n", R, np.stack(outs))
        route = self.route(X)
        out: np.ndarray | None = None
        for i, lw in enumerate(self.learnwares_):
            rows = np.flatnonzero(route == i)
            if rows.size == 0:
                continue
            if method == "proba":
                part = aligned_proba(lw, X[rows], self.classes_)
            else:
                part = lw.predict(X[rows])
            if out is None:
                out = np.empty((X.shape[0], *part.shape[1:]), dtype=part.dtype)
            out[rows] = part
        assert out is not None
        return out

    def predict_proba(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "learnwares_")
        if self.task_ != "classification":
            raise AttributeError("predict_proba is only available for classification")
        return self._dispatch(validate_X(self, X, reset=False), "proba")

    def predict(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "learnwares_")
        X = validate_X(self, X, reset=False)
        if self.task_ == "classification":
            return self.classes_[np.argmax(self._dispatch(X, "proba"), axis=1)]
        return self._dispatch(X, "predict").astype(np.float64)

    def score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        check_is_fitted(self, "learnwares_")
        if self.task_ == "classification":
            return ClassifierMixin.score(self, X, y, sample_weight)
        return RegressorMixin.score(self, X, y, sample_weight)
