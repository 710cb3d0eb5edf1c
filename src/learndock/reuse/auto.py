"""Auto reuse: answer "is reuse worth it for my data?" by cross-validation."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, clone
from sklearn.metrics import accuracy_score, mean_squared_error
from sklearn.utils.validation import check_is_fitted

from learndock.reuse.base import (
    check_learnwares,
    data_type_of,
    spec_featurizer,
    task_of,
    validate_X,
)
from learndock.reuse.datadep import (
    EnsemblePruningReuser,
    FeatureAugmentReuser,
    _splitter,
    own_model,
)
from learndock.reuse.datafree import AveragingReuser, JobSelectorReuser

CANDIDATES = ("own_model", "averaging", "job_selector", "ensemble_pruning", "feature_augment")
DATA_FREE = ("averaging", "job_selector")


class AutoReuser(ClassifierMixin, RegressorMixin, BaseEstimator):
    """Pick, by K-fold cross-validation on the user's labels, among training an own model on
    those labels alone, the data-free reusers and the label-using ones; refit the winner.

    ``cv_results_`` holds each candidate's mean/std CV score (accuracy, or negative MSE) and
    ``choice_`` the winner -- the report of whether the market helped. Candidates are the names
    in ``CANDIDATES`` and ``"single:i"`` (learnware ``i`` alone).

    Without labels (``fit(X)``) nothing can be validated, so the decision step
    (:class:`~learndock.reuse.decision.DecisionStep`) ranks the learnwares by what their models
    do on ``X`` and ``choice_`` is its recommendation; ``decision_`` holds its reasons. Give it
    the search's mixture (``weights``, or ``ensemble`` indices) to agree with: without one it
    agrees with the plain average of ``learnwares``, which identifies less well.

    ``ensemble`` (indices) restricts the "averaging" candidate to some learnwares. ``weights``
    weigh the data-free reusers; the default ``None`` averages equally, which measured better
    than the search's mixture weights (those pile onto the first member; BENCHMARKS.md).
    """

    def __init__(
        self,
        learnwares: Any = None,
        weights: Any = None,
        candidates: tuple[str, ...] = CANDIDATES,
        cv: int = 5,
        random_state: int | None = 0,
        ensemble: Any = None,
        scores: Any = None,
    ) -> None:
        self.learnwares = learnwares
        self.weights = weights
        self.candidates = candidates
        self.ensemble = ensemble
        self.scores = scores
        self.cv = cv
        self.random_state = random_state

    def _make(self, name: str) -> BaseEstimator:
        lws = self.learnwares_
        if name == "own_model":
            spec = lws[0].stat_spec if lws[0].specs else None
            return own_model(self.task_, featurizer=spec_featurizer(spec))
        if name == "averaging":
            if self.ensemble is not None:
                idx = [int(i) for i in self.ensemble]
                w = None if self.weights is None else [self.weights[i] for i in idx]
                return AveragingReuser([lws[i] for i in idx], weights=w)
            return AveragingReuser(lws, weights=self.weights)
        if name.startswith("single:"):
            try:
                i = int(name.split(":", 1)[1])
                lw = lws[i]
            except (ValueError, IndexError):
                raise ValueError(f"{name!r} names no learnware (there are {len(lws)})") from None
            return AveragingReuser([lw])
        if name == "job_selector":
            return JobSelectorReuser(lws, weights=self.weights, random_state=self.random_state)
        if name == "ensemble_pruning":
            return EnsemblePruningReuser(lws, random_state=self.random_state)
        if name == "feature_augment":
            return FeatureAugmentReuser(lws, random_state=self.random_state)
        raise ValueError(
            f"unknown candidate {name!r}; choose from {CANDIDATES} or 'single:<index>'")

    def _score(self, y: np.ndarray, pred: np.ndarray) -> float:
        if self.task_ == "classification":
            return float(accuracy_score(y, pred))
        return -float(mean_squared_error(y, pred))

    def fit(self, X: Any, y: Any = None) -> AutoReuser:
        self.learnwares_ = check_learnwares(self.learnwares)
        self.task_ = task_of(self.learnwares_)
        self.data_type_ = data_type_of(self.learnwares_)
        if y is None:
            return self._fit_label_free(X)
        X = validate_X(self, X, reset=True)
        y = np.asarray(y)
        if y.shape[0] != X.shape[0]:
            raise ValueError(f"X has {X.shape[0]} rows but y has {y.shape[0]}")
        self.decision_ = None
        classification = self.task_ == "classification"
        split = _splitter(y, classification, self.cv, self.random_state)
        if split is None:
            raise ValueError("AutoReuser needs at least 2 labelled rows (per class) to compare")
        results: dict[str, dict[str, float]] = {}
        folds = list(split.split(X, y))
        for name in self.candidates:
            scores = []
            if name in DATA_FREE or name.startswith("single:"):
                # Labels play no part in fitting these, so one fit serves every fold.
                pred = clone(self._make(name)).fit(X).predict(X)
                scores = [self._score(y[te], pred[te]) for _, te in folds]
                results[name] = {"mean": float(np.mean(scores)), "std": float(np.std(scores))}
                continue
            for tr, te in folds:
                if classification and np.unique(y[tr]).shape[0] < 2 and name in (
                    "own_model", "feature_augment"
                ):
                    continue
                est = clone(self._make(name))
                try:
                    est.fit(X[tr], y[tr])
                except ValueError:
                    continue
                scores.append(self._score(y[te], est.predict(X[te])))
            if scores:
                results[name] = {"mean": float(np.mean(scores)), "std": float(np.std(scores))}
        if not results:
            raise ValueError("no candidate could be evaluated on these labels")
        self.cv_results_ = results
        order = list(self.candidates)
        self.choice_ = max(results, key=lambda k: (results[k]["mean"], -order.index(k)))
        self.estimator_ = clone(self._make(self.choice_)).fit(X, y)
        if classification:
            self.classes_ = getattr(self.estimator_, "classes_", np.unique(y))
        return self

    def _fit_label_free(self, X: Any) -> AutoReuser:
        from learndock.reuse.decision import DecisionStep

        # The ensemble to agree with: the mixture (``ensemble`` members and/or ``weights``)
        # when given -- it measured far better than the plain average of all candidates.
        ref, ref_w = None, None
        if self.ensemble is not None or self.weights is not None:
            idx = (list(range(len(self.learnwares_))) if self.ensemble is None
                   else [int(i) for i in self.ensemble])
            ref = [self.learnwares_[i] for i in idx]
            ref_w = None if self.weights is None else [self.weights[i] for i in idx]
        step = DecisionStep(self.learnwares_, scores=self.scores, reference=ref,
                            reference_weights=ref_w, random_state=self.random_state).fit(X)
        X = validate_X(self, X, reset=True)
        self.decision_ = step.decision_
        self.cv_results_ = None
        self.choice_ = self.decision_.choice
        self.estimator_ = step.reuser().fit(X)
        if self.task_ == "classification":
            self.classes_ = self.estimator_.classes_
        return self

    def predict(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "estimator_")
        return self.estimator_.predict(validate_X(self, X, reset=False))

    def predict_proba(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "estimator_")
        return self.estimator_.predict_proba(validate_X(self, X, reset=False))

    def report(self) -> str:
        check_is_fitted(self, "estimator_")
        if self.cv_results_ is None:
            d = self.decision_
            lines = [f"no labels: {d.notes[0] if d.notes else 'decision step'}"]
            for r in d.ranking:
                mark = "  <- chosen" if d.choice == f"single:{r.index}" else ""
                lines.append(f"  {r.rank}. {r.name}: {r.reason}{mark}")
            if d.recommendation == "ensemble":
                names = ", ".join(self.learnwares_[i].name for i in d.ensemble)
                lines.append(f"  chosen: the average of {names} (no single one knows the "
                             "labels of enough rows)")
            return "\n".join(lines)
        metric = "accuracy" if self.task_ == "classification" else "-MSE"
        lines = [f"cross-validated {metric} on your labels:"]
        for k, v in sorted(self.cv_results_.items(), key=lambda kv: -kv[1]["mean"]):
            mark = "  <- chosen" if k == self.choice_ else ""
            lines.append(f"  {k:<17} {v['mean']:.4f} +/- {v['std']:.4f}{mark}")
        return "\n".join(lines)

    def score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        if self.task_ == "classification":
            return ClassifierMixin.score(self, X, y, sample_weight)
        return RegressorMixin.score(self, X, y, sample_weight)
