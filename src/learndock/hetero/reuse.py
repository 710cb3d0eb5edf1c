"""Reuse a learnware of another island on the user's columns, through a bridge.

:class:`HeteroMapReuser` needs no labels: the bridge feeds the user's columns into the
learnware's columns (with their unit maps), and the learnware's inputs the user lacks are
filled in from the learnware's own RKME spec -- conditionally on the shared columns, by kernel
regression over the reduced set ``z`` weighted by ``beta`` (bandwidth chosen by leave-one-out
on ``z`` itself). ``imputation="draws"`` (default) runs the model on the ``n_draws`` reduced
points that weigh most for each row and averages its outputs with their weights, estimating
``E[f(x_shared, X_missing) | x_shared]``; ``"mean"`` plugs in the conditional mean, which is
cheaper but feeds tree models values (e.g. 0.14 of a one-hot) they never saw.

:class:`HeteroFinetuneReuser` uses a few labels: it compares, by K-fold cross-validation on
them, the mapped learnware as it is, a linear recalibration of its output, a ridge correction
stacking its output with the user's own columns, and the user's own model; then refits the
winner on all labels. So it starts from the learnware and only leaves it when the labels say
so -- never much worse than the own model, which is one of the candidates.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.linear_model import LogisticRegression, Ridge, RidgeCV
from sklearn.model_selection import KFold, StratifiedKFold
from sklearn.preprocessing import StandardScaler
from sklearn.utils.validation import check_array, check_is_fitted

from learndock.errors import ContractError
from learndock.hetero.bridge import Bridge
from learndock.reuse.datadep import own_model

_EPS = 1e-6
IMPUTATIONS = ("draws", "mean")


def _task_of(lw: Any, task: str) -> str:
    if task in ("classification", "regression"):
        return task
    if task != "auto":
        raise ValueError(f"task must be 'auto', 'classification' or 'regression', not {task!r}")
    sem = getattr(lw, "semantic", None)
    kind = getattr(getattr(sem, "task_type", None), "value", None)
    if kind == "Classification":
        return "classification"
    if kind == "Regression":
        return "regression"
    raise ContractError("cannot tell the learnware's task; pass task='regression' or "
                        "'classification'")


def _check_learnware(lw: Any) -> Any:
    if lw is None or not callable(getattr(lw, "predict", None)):
        raise TypeError("learnware must be a Learnware (or an object with predict and stat_spec)")
    spec = getattr(lw, "stat_spec", None)
    if spec is None or not hasattr(spec, "z") or np.asarray(spec.z).ndim != 2:
        raise ContractError("hetero reuse needs the learnware's RKME table spec (stat_spec)")
    return spec


def _check_bridge(bridge: Any, spec: Any) -> Bridge:
    if isinstance(bridge, dict):
        bridge = Bridge.from_dict(bridge)
    if not isinstance(bridge, Bridge):
        raise TypeError(f"bridge must be a Bridge (or its dict), got {type(bridge).__name__}")
    d = np.asarray(spec.z).shape[1]
    if bridge.target_dimension != d:
        raise ContractError(f"the bridge targets {bridge.target_dimension} columns but the "
                            f"learnware takes {d}")
    return bridge


class HeteroMapReuser(ClassifierMixin, RegressorMixin, BaseEstimator):
    """Label-free reuse of one learnware of another island (see the module docstring).

    Parameters: ``learnware`` (a :class:`~learndock.package.learnware.Learnware`), ``bridge``
    (user columns -> its columns, from :func:`~learndock.hetero.search.hetero_search` or
    :meth:`SystemSpace.bridge_columns`), ``imputation`` ("draws" or "mean"), ``n_draws``,
    ``task`` ("auto" reads the learnware's semantic spec).
    Fitted: ``gamma_`` (imputation bandwidth on the learnware's scaled shared columns),
    ``fill_`` (user column means for NaN cells), ``classes_`` (classification).
    """

    def __init__(self, learnware: Any = None, bridge: Any = None, imputation: str = "draws",
                 n_draws: int = 16, task: str = "auto") -> None:
        self.learnware = learnware
        self.bridge = bridge
        self.imputation = imputation
        self.n_draws = n_draws
        self.task = task

    def _more_tags(self) -> dict[str, Any]:
        return {"requires_y": False}

    def fit(self, X: Any, y: Any = None) -> HeteroMapReuser:
        if self.imputation not in IMPUTATIONS:
            raise ValueError(f"imputation must be one of {IMPUTATIONS}, not {self.imputation!r}")
        if int(self.n_draws) < 1:
            raise ValueError("n_draws must be >= 1")
        spec = _check_learnware(self.learnware)
        self.bridge_ = _check_bridge(self.bridge, spec)
        self.task_ = _task_of(self.learnware, self.task)
        X = check_array(X, dtype=np.float64, ensure_all_finite="allow-nan")
        if X.shape[1] != self.bridge_.source_dimension:
            raise ValueError(f"X has {X.shape[1]} columns but the bridge maps "
                             f"{self.bridge_.source_dimension} user columns")
        self.n_features_in_ = X.shape[1]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            fill = np.nanmean(X, axis=0)
        self.fill_ = np.where(np.isfinite(fill), fill, 0.0)
        z = np.asarray(spec.z, float)
        self.beta_ = np.asarray(spec.beta, float) / float(np.sum(spec.beta))
        scale = np.asarray(getattr(getattr(spec, "kernel", None), "scale", np.ones(z.shape[1])),
                           float)
        self.z_ = z
        self.shared_ = np.asarray(self.bridge_.targets, dtype=int)
        self.missing_ = np.asarray(self.bridge_.missing, dtype=int)
        self.scale_ = np.where(scale > 0, scale, 1.0)
        self.gamma_ = self._choose_gamma()
        if self.task_ == "classification":
            labels = getattr(self.learnware, "labels", None)
            if labels is None:
                raise ContractError("a classification learnware must declare its labels")
            self.classes_ = np.asarray(labels)
        return self

    def _choose_gamma(self) -> float:
        """Leave-one-out kernel regression of the missing columns on the shared ones, over
        the reduced set (weighted by beta): the bandwidth that predicts z best."""
        s, m = self.shared_, self.missing_
        if s.size == 0 or m.size == 0:
            return 1.0
        S = self.z_[:, s] / self.scale_[s]
        Y = self.z_[:, m] / self.scale_[m]
        D = ((S[:, None, :] - S[None, :, :]) ** 2).sum(-1)
        best, best_g = np.inf, 1.0 / s.size
        for f in (1 / 16, 1 / 8, 1 / 4, 1 / 2, 1, 2, 4, 8, 16):
            g = f / s.size
            logw = -g * D + np.log(np.maximum(self.beta_, 1e-300))[None, :]
            np.fill_diagonal(logw, -np.inf)
            logw -= logw.max(axis=1, keepdims=True)
            W = np.exp(logw)
            W /= W.sum(axis=1, keepdims=True)
            err = float(self.beta_ @ ((W @ Y - Y) ** 2).sum(axis=1))
            if err < best - 1e-12:
                best, best_g = err, g
        return float(best_g)

    def _weights(self, Xt: np.ndarray) -> np.ndarray:
        """(n, K) conditional weights of the reduced points given each row's shared values."""
        s = self.shared_
        if s.size == 0:
            return np.broadcast_to(self.beta_, (Xt.shape[0], self.beta_.size)).copy()
        A = Xt[:, s] / self.scale_[s]
        B = self.z_[:, s] / self.scale_[s]
        d = (A ** 2).sum(1)[:, None] + (B ** 2).sum(1)[None, :] - 2 * A @ B.T
        logw = -self.gamma_ * np.maximum(d, 0.0) + np.log(np.maximum(self.beta_, 1e-300))[None]
        logw -= logw.max(axis=1, keepdims=True)
        W = np.exp(logw)
        return W / W.sum(axis=1, keepdims=True)

    def map_inputs(self, X: Any) -> np.ndarray:
        """User rows in the learnware's columns, missing ones by their conditional mean."""
        Xt = self._bridged(X)
        if self.missing_.size:
            W = self._weights(Xt)
            Xt[:, self.missing_] = W @ self.z_[:, self.missing_]
        return Xt

    def _bridged(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "bridge_")
        X = check_array(X, dtype=np.float64, ensure_all_finite="allow-nan")
        if X.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {X.shape[1]} features, but {type(self).__name__} is "
                             f"expecting {self.n_features_in_} features as input")
        X = np.where(np.isfinite(X), X, self.fill_[None, :])
        return self.bridge_.transform(X)

    def _outputs(self, X: Any) -> np.ndarray:
        """(n,) predictions or (n, C) probabilities, averaged over the imputations."""
        Xt = self._bridged(X)
        proba = self.task_ == "classification"
        call = self.learnware.predict_proba if proba else self.learnware.predict
        if self.missing_.size == 0:
            out = np.asarray(call(Xt), float)
            return out if proba else out.reshape(-1)
        W = self._weights(Xt)
        if self.imputation == "mean":
            Xt[:, self.missing_] = W @ self.z_[:, self.missing_]
            out = np.asarray(call(Xt), float)
            return out if proba else out.reshape(-1)
        r = min(int(self.n_draws), W.shape[1])
        top = np.argsort(-W, axis=1, kind="stable")[:, :r]  # (n, r)
        wt = np.take_along_axis(W, top, axis=1)
        wt /= wt.sum(axis=1, keepdims=True)
        n = Xt.shape[0]
        rep = np.repeat(Xt, r, axis=0)
        rep[:, self.missing_] = self.z_[top.reshape(-1)][:, self.missing_]
        out = np.asarray(call(rep), float)
        if proba:
            return np.einsum("nr,nrc->nc", wt, out.reshape(n, r, -1))
        return (wt * out.reshape(n, r)).sum(axis=1)

    def predict(self, X: Any) -> np.ndarray:
        out = self._outputs(X)
        if self.task_ == "classification":
            return self.classes_[np.argmax(out, axis=1)]
        return out

    def predict_proba(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "bridge_")
        if self.task_ != "classification":
            raise AttributeError("predict_proba is only available for classification")
        p = self._outputs(X)
        return p / np.clip(p.sum(axis=1, keepdims=True), _EPS, None)

    def score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        check_is_fitted(self, "bridge_")
        if self.task_ == "classification":
            return ClassifierMixin.score(self, X, y, sample_weight)
        return RegressorMixin.score(self, X, y, sample_weight)


REG_CANDIDATES = ("mapped", "calibrated", "stacked", "augment", "own")
CLF_CANDIDATES = ("mapped", "stacked", "own")


class HeteroFinetuneReuser(ClassifierMixin, RegressorMixin, BaseEstimator):
    """Hetero reuse with a few labels. Candidates: the mapped learnware ("mapped"), its output
    recalibrated ``a + b * f`` ("calibrated", regression), a ridge / logistic model on the
    user's columns stacked with its output ("stacked": a residual correction for regression,
    which regularisation pulls back to the learnware), the same ridge with the output as a free
    feature ("augment", regression: the learnware may also be weighed down) and the user's own
    model ("own"), each scored by K-fold CV on the labels.

    Regression with ``blend=True`` (default) combines them: the convex weights that minimise
    the squared error of their out-of-fold predictions, shrunk towards "mapped" by a prior worth
    ``blend_prior`` labels (so 10 labels barely move it off the learnware, 500 decide), and
    refits the members on all labels (``choice_ = "blend"``, ``weights_``). Selecting the CV
    winner instead (``blend=False``, and always for classification) is noisier: with heavy
    tailed targets (flight delays) the winner of 5 folds of 50 labels is often not the best.
    ``cv=10`` (not 5): where the own model's learning curve is steep, training it on 80% of
    the labels in each fold understated it and the blend leaned on the learnware too long
    (flights, 100-200 labels: 18.9 -> 18.6 and 17.8 -> 17.4 minutes RMSE with 10 folds; own
    model 17.5 and 16.9; Birthdays unchanged).

    Fitted: ``choice_``, ``cv_scores_`` (mean CV loss per candidate: MSE, or log loss),
    ``weights_`` (blend), ``mapper_`` (the :class:`HeteroMapReuser`)."""

    def __init__(self, learnware: Any = None, bridge: Any = None, cv: int = 10,
                 candidates: tuple[str, ...] | None = None, imputation: str = "draws",
                 n_draws: int = 16, alphas: tuple[float, ...] = (1.0, 10.0, 100.0, 1e3, 1e4),
                 random_state: int | None = 0, task: str = "auto", blend: bool = True,
                 blend_prior: float = 5.0) -> None:
        self.learnware = learnware
        self.bridge = bridge
        self.blend = blend
        self.blend_prior = blend_prior
        self.cv = cv
        self.candidates = candidates
        self.imputation = imputation
        self.n_draws = n_draws
        self.alphas = alphas
        self.random_state = random_state
        self.task = task

    # -------------------------------------------------------------- candidate models
    def _fit_one(self, name: str, X: np.ndarray, p: np.ndarray, y: np.ndarray) -> Any:
        clf = self.task_ == "classification"
        if name == "mapped":
            return None
        if name == "own":
            return own_model(self.task_).fit(X, y)
        if name == "calibrated":
            return Ridge(alpha=1e-3).fit(p.reshape(-1, 1), y)
        if name == "stacked":
            F = self._stack(X, p, fit=True)
            if clf:
                return LogisticRegression(max_iter=2000).fit(F, y)
            return RidgeCV(alphas=self.alphas).fit(F, y - p)
        if name == "augment":
            return RidgeCV(alphas=self.alphas).fit(self._stack(X, p, fit=True), y)
        raise ValueError(f"unknown candidate {name!r}")

    def _stack(self, X: np.ndarray, p: np.ndarray, fit: bool, scaler: Any = None) -> np.ndarray:
        P = (np.log(np.clip(p, _EPS, 1.0)) if self.task_ == "classification"
             else p.reshape(-1, 1))
        F = np.hstack([np.nan_to_num(X, nan=0.0), P])
        if fit:
            self._scaler_tmp = StandardScaler().fit(F)
            return self._scaler_tmp.transform(F)
        return scaler.transform(F)

    def _predict_one(self, name: str, model: Any, X: np.ndarray, p: np.ndarray,
                     scaler: Any) -> np.ndarray:
        clf = self.task_ == "classification"
        if name == "mapped":
            return p
        if name == "own":
            return self._proba_on(model, X) if clf else model.predict(X)
        if name == "calibrated":
            return model.predict(p.reshape(-1, 1))
        F = self._stack(X, p, fit=False, scaler=scaler)
        if name == "augment":
            return model.predict(F)
        return self._proba_on(model, F) if clf else model.predict(F) + p

    def _proba_on(self, model: Any, F: np.ndarray) -> np.ndarray:
        pr = model.predict_proba(F)
        out = np.full((F.shape[0], self.classes_.size), _EPS)
        out[:, np.searchsorted(self.classes_, model.classes_)] = pr
        return out / out.sum(axis=1, keepdims=True)

    def _mapped(self, X: np.ndarray) -> np.ndarray:
        if self.task_ == "classification":
            pm = self.mapper_.predict_proba(X)
            out = np.full((X.shape[0], self.classes_.size), _EPS)
            out[:, np.searchsorted(self.classes_, self.mapper_.classes_)] = pm
            return out / out.sum(axis=1, keepdims=True)
        return self.mapper_.predict(X)

    def _loss(self, pred: np.ndarray, y: np.ndarray) -> float:
        if self.task_ == "classification":
            idx = np.searchsorted(self.classes_, y)
            return float(-np.mean(np.log(np.clip(pred[np.arange(y.size), idx], _EPS, 1.0))))
        return float(np.mean((pred - y) ** 2))

    # -------------------------------------------------------------- estimator API
    def fit(self, X: Any, y: Any) -> HeteroFinetuneReuser:
        if y is None:
            raise ValueError("HeteroFinetuneReuser needs labels y (HeteroMapReuser needs none)")
        self.mapper_ = HeteroMapReuser(self.learnware, self.bridge, self.imputation,
                                       self.n_draws, self.task).fit(X)
        self.task_ = self.mapper_.task_
        X = check_array(X, dtype=np.float64, ensure_all_finite="allow-nan")
        self.n_features_in_ = X.shape[1]
        y = np.asarray(y)
        if y.ndim != 1 or y.shape[0] != X.shape[0]:
            raise ValueError(f"y must be 1-D with one label per row of X ({X.shape[0]})")
        clf = self.task_ == "classification"
        if clf:
            self.classes_ = np.array(sorted(set(np.asarray(self.mapper_.classes_).tolist())
                                            | set(y.tolist())))
        else:
            y = y.astype(np.float64)
            if not np.isfinite(y).all():
                raise ValueError("y contains NaN or inf")
        names = tuple(self.candidates or (CLF_CANDIDATES if clf else REG_CANDIDATES))
        bad = [c for c in names if c not in (CLF_CANDIDATES if clf else REG_CANDIDATES)]
        if bad:
            raise ValueError(f"unknown candidates {bad} for {self.task_}")
        Xf = np.where(np.isfinite(X), X, self.mapper_.fill_[None, :])
        p = self._mapped(Xf)
        self.cv_scores_: dict[str, float] = {}
        self.weights_: dict[str, float] = {}
        split = self._splitter(y, clf)
        if split is None:  # too few labels to compare: keep the learnware
            self.choice_ = "mapped" if "mapped" in names else names[0]
        else:
            folds = list(split.split(Xf, y))
            oof = np.zeros((y.shape[0], len(names))) if not clf else None
            for c, name in enumerate(names):
                losses = []
                for tr, te in folds:
                    if clf and np.unique(y[tr]).size < 2 and name != "mapped":
                        losses.append(np.inf)
                        continue
                    m = self._fit_one(name, Xf[tr], p[tr], y[tr])
                    sc = (getattr(self, "_scaler_tmp", None) if name in ("stacked", "augment")
                          else None)
                    pred = self._predict_one(name, m, Xf[te], p[te], sc)
                    if oof is not None:
                        oof[te, c] = pred
                    losses.append(self._loss(pred, y[te]))
                self.cv_scores_[name] = float(np.mean(losses))
            self.choice_ = min(names, key=lambda k: (self.cv_scores_[k], names.index(k)))
            if oof is not None and self.blend and len(names) > 1:
                self.weights_ = self._blend_weights(oof, y, names)
                self.choice_ = "blend"
        if clf and self.choice_ != "mapped" and np.unique(y).size < 2:
            self.choice_ = "mapped"
        if self.choice_ == "blend":
            self.models_ = {}
            for name, w in self.weights_.items():
                if w > 0:
                    self.models_[name] = (self._fit_one(name, Xf, p, y),
                                          getattr(self, "_scaler_tmp", None)
                                          if name in ("stacked", "augment") else None)
            self.model_ = self.models_
            self.scaler_ = None
        else:
            self.model_ = self._fit_one(self.choice_, Xf, p, y)
            self.scaler_ = (getattr(self, "_scaler_tmp", None)
                            if self.choice_ in ("stacked", "augment") else None)
        self.__dict__.pop("_scaler_tmp", None)
        return self

    def _blend_weights(self, oof: np.ndarray, y: np.ndarray, names: tuple[str, ...]
                       ) -> dict[str, float]:
        """Convex weights of the candidates' out-of-fold predictions, shrunk towards the
        mapped learnware by a prior worth ``blend_prior`` labels."""
        from learndock.spec.simplex import simplex_qp_active_set

        n = y.shape[0]
        G = oof.T @ oof / n
        h = oof.T @ y / n
        prior = np.zeros(len(names))
        prior[names.index("mapped") if "mapped" in names else 0] = 1.0
        # in units of the candidates' typical squared error, so the prior weighs like
        # ``blend_prior`` labels whatever the target's scale and offset
        mse = np.mean((oof - y[:, None]) ** 2, axis=0)
        lam = float(self.blend_prior) * float(np.mean(mse)) / n
        # ||P w - y||^2 / n + lam ||w - prior||^2  ->  w'(G + lam I)w - 2 (h + lam prior)'w
        w = simplex_qp_active_set(G + lam * np.eye(len(names)), h + lam * prior)
        w = np.where(w > 1e-6, w, 0.0)
        w = w / w.sum()
        return {name: float(v) for name, v in zip(names, w, strict=True)}

    def _splitter(self, y: np.ndarray, clf: bool) -> Any:
        n = y.shape[0]
        if clf:
            _, counts = np.unique(y, return_counts=True)
            k = int(min(self.cv, counts.min()))
            if k >= 2:
                return StratifiedKFold(k, shuffle=True, random_state=self.random_state)
        k = int(min(self.cv, n // 2))
        return KFold(k, shuffle=True, random_state=self.random_state) if k >= 2 else None

    def _out(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "model_")
        X = check_array(X, dtype=np.float64, ensure_all_finite="allow-nan")
        if X.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {X.shape[1]} features, but {type(self).__name__} is "
                             f"expecting {self.n_features_in_} features as input")
        Xf = np.where(np.isfinite(X), X, self.mapper_.fill_[None, :])
        p = self._mapped(Xf)
        if self.choice_ == "blend":
            return sum(self.weights_[name] * self._predict_one(name, m, Xf, p, sc)
                       for name, (m, sc) in self.models_.items())
        return self._predict_one(self.choice_, self.model_, Xf, p, self.scaler_)

    def predict(self, X: Any) -> np.ndarray:
        out = self._out(X)
        if self.task_ == "classification":
            return self.classes_[np.argmax(out, axis=1)]
        return out

    def predict_proba(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "model_")
        if self.task_ != "classification":
            raise AttributeError("predict_proba is only available for classification")
        return self._out(X)

    def score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        check_is_fitted(self, "model_")
        if self.task_ == "classification":
            return ClassifierMixin.score(self, X, y, sample_weight)
        return RegressorMixin.score(self, X, y, sample_weight)
