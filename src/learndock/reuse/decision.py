"""The decision step: after the spec search, choose among its shortlist with the models.

A spec (RKME) tells *where* a learnware has data, not how good its model is there, so the
spec ranking alone rarely puts the user's best learnware first. This step runs where the
user's rows are (never on the server): it runs every shortlisted model on the user's
*unlabeled* rows and prefers the one that agrees most with the search mixture's ensemble
(else the shortlist's) -- the ensemble is on average better than any member, so agreeing with
it is a label-free proxy for accuracy (classification; for regression no such signal beat the
spec order, so it keeps that order and recommends the average). With a few labels it validates
a choice among the shortlist members, their ensemble and the user's own model (through
:class:`~learndock.reuse.AutoReuser`).

Signals measured on ``benchmarks/identification.py`` (see BENCHMARKS.md) decide which ones
rank; the others are still reported per learnware as reasons.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from learndock.reuse.base import (
    aligned_proba,
    check_learnwares,
    data_type_of,
    task_of,
    union_labels,
    validate_X,
)

CRITERIA = ("auto", "agreement", "hard_agreement", "confidence", "coverage", "spec")
WEIGHTINGS = ("uniform", "score")


@dataclass
class LearnwareReason:
    """Why one shortlisted learnware sits where it does (all numbers on the user's rows)."""

    index: int  # position in the shortlist given to the decision step
    name: str
    learnware_id: str | None
    spec_rank: int  # 1-based rank by spec score (shortlist order)
    rank: int  # 1-based rank after the decision step
    spec_score: float | None
    decision_score: float  # what the ranking sorts by (higher is better)
    agreement: float  # cls: mean probability on the ensemble's label; reg: -RMSE to it
    hard_agreement: float | None = None  # cls: share of rows with the ensemble's label
    confidence: float | None = None  # cls: mean max probability
    coverage: float | None = None  # cls: share of rows whose ensemble label it knows
    reason: str = ""


@dataclass
class Decision:
    """The decision step's answer: a re-ranked shortlist, with reasons, and what to reuse.

    ``recommendation`` is ``"single"`` (reuse ``ranking[0]``), ``"ensemble"`` (average the
    learnwares named in ``ensemble`` with equal weights) or, with labels, whatever
    cross-validation chose (``"own_model"`` included); ``choice`` names it as
    :class:`AutoReuser` does.
    """

    ranking: list[LearnwareReason]
    criterion: str
    recommendation: str
    choice: str
    ensemble: list[str] = field(default_factory=list)  # names of the averaged learnwares
    ensemble_ids: list[str | None] = field(default_factory=list)
    n_rows: int = 0
    n_labels: int = 0
    cv_results: dict[str, dict[str, float]] | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def order(self) -> list[int]:
        """Shortlist indices, best first."""
        return [r.index for r in self.ranking]

    @property
    def best(self) -> LearnwareReason:
        return self.ranking[0]

    def to_dict(self) -> dict[str, Any]:
        return {
            "ranking": [asdict(r) for r in self.ranking],
            "criterion": self.criterion,
            "recommendation": self.recommendation,
            "choice": self.choice,
            "ensemble": list(self.ensemble),
            "ensemble_ids": list(self.ensemble_ids),
            "n_rows": self.n_rows,
            "n_labels": self.n_labels,
            "cv_results": self.cv_results,
            "notes": list(self.notes),
        }


def _check_scores(scores: Any, n: int, what: str) -> np.ndarray | None:
    if scores is None:
        return None
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if s.shape[0] != n:
        raise ValueError(f"{what} has {s.shape[0]} entries for {n} learnwares")
    if not np.isfinite(s).all():
        raise ValueError(f"{what} must be finite numbers")
    return s


class DecisionStep(BaseEstimator):
    """Re-rank a spec-search shortlist by what its models do on the user's rows.

    Parameters
    ----------
    learnwares : list of Learnware
        The shortlist, in spec-score order (best first), all of one task and input shape.
    scores : array-like of shape (n_learnwares,), optional
        Their spec scores; used for ``weighting="score"``, the ``"spec"`` criterion and to
        break ties. None: the shortlist order stands for them.
    ids : list of str, optional
        Learnware ids to carry into the reasons.
    reference : list of Learnware, optional
        The ensemble to agree with: the search's mixture (members may lie outside the
        shortlist). Measured on the class-subset market (BENCHMARKS.md), agreeing with the
        mixture's ensemble found the oracle-best learnware for 0.80 of users, the shortlist's
        plain average 0.67, the spec order 0.50. None: the shortlist's ensemble, weighed by
        ``weighting``.
    reference_weights : array-like, optional
        The reference's weights (the mixture weights); None: equal.
    reference_ids : list of str, optional
        The reference learnwares' ids, for the report.
    criterion : {"auto", "agreement", "hard_agreement", "confidence", "coverage", "spec"}
        What ranks the shortlist without labels. ``"agreement"``: classification -- the mean
        probability a learnware gives the ensemble's label on each row (a learnware that does
        not know a label the rows carry scores 0 there); regression -- minus the RMSE between
        its predictions and the ensemble's. ``"auto"`` (default) is what measured best:
        agreement for classification, and the spec order for regression (on Birthdays no
        label-free signal -- distance or correlation to the mean, median or mixture, spread --
        picked the best regressor more often than the spec did; averaging them did better).
    weighting : {"uniform", "score"}
        How the shortlist's ensemble weighs its members: equally, or by spec score.
    coverage_target : float
        Label-free recommendation (classification): reuse the top learnware alone when it knows
        the ensemble's label on at least this share of rows, else an ensemble: the reference
        when given (equal weights), otherwise the fewest top-ranked learnwares that reach the
        target (greedy, at most ``max_ensemble``). Default 1.0: on users that mix classes an
        ensemble beat the oracle single learnware (BENCHMARKS.md).
    max_ensemble : int
        Largest ensemble the greedy label coverage proposes (classification without a
        reference). Regression recommends the average of the whole shortlist.
    cv, random_state :
        With labels, passed on to :class:`AutoReuser` for the validated choice.

    Attributes
    ----------
    decision_ : Decision
    order_ : ndarray of int
        Shortlist indices, best first.
    """

    def __init__(
        self,
        learnwares: Any = None,
        scores: Any = None,
        ids: Sequence[str] | None = None,
        reference: Any = None,
        reference_weights: Any = None,
        reference_ids: Sequence[str] | None = None,
        criterion: str = "auto",
        weighting: str = "uniform",
        coverage_target: float = 1.0,
        max_ensemble: int = 5,
        cv: int = 5,
        random_state: int | None = 0,
    ) -> None:
        self.learnwares = learnwares
        self.scores = scores
        self.ids = ids
        self.reference = reference
        self.reference_weights = reference_weights
        self.reference_ids = reference_ids
        self.criterion = criterion
        self.weighting = weighting
        self.coverage_target = coverage_target
        self.max_ensemble = max_ensemble
        self.cv = cv
        self.random_state = random_state

    # ------------------------------------------------------------------ checks
    def _check_params(self, n: int) -> None:
        if self.criterion not in CRITERIA:
            raise ValueError(f"criterion must be one of {CRITERIA}, got {self.criterion!r}")
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {self.weighting!r}")
        if not 0.0 < float(self.coverage_target) <= 1.0:
            raise ValueError(f"coverage_target must be in (0, 1], got {self.coverage_target!r}")
        if int(self.max_ensemble) < 1:
            raise ValueError(f"max_ensemble must be >= 1, got {self.max_ensemble!r}")
        if self.ids is not None and len(self.ids) != n:
            raise ValueError(f"ids has {len(self.ids)} entries for {n} learnwares")
        if self.reference_ids is not None and (
                self.reference is None or len(self.reference_ids) != len(self.reference)):
            raise ValueError("reference_ids needs one id per reference learnware")

    # ------------------------------------------------------------------ fit
    def fit(self, X: Any, y: Any = None) -> DecisionStep:
        """Rank the shortlist on ``X`` (unlabeled); with ``y``, also validate a choice."""
        self.learnwares_ = check_learnwares(self.learnwares)
        n = len(self.learnwares_)
        self._check_params(n)
        self.task_ = task_of(self.learnwares_)
        self.data_type_ = data_type_of(self.learnwares_)
        scores = _check_scores(self.scores, n, "scores")
        X = validate_X(self, X, reset=True)
        if X.shape[0] == 0:
            raise ValueError("the decision step needs at least one unlabeled row")
        want = tuple(self.learnwares_[0].manifest.input.shape)
        if X.ndim == 2 and len(want) == 1 and X.shape[1] != want[0]:
            raise ValueError(f"X has {X.shape[1]} features, but the learnwares expect {want[0]}")
        self.reference_ = None
        if self.reference is not None:
            self.reference_ = check_learnwares(self.reference)
            if task_of(self.reference_) != self.task_:
                raise ValueError("the reference learnwares solve another task than the "
                                 "shortlist")
            if {tuple(lw.manifest.input.shape) for lw in self.reference_} != {
                    tuple(self.learnwares_[0].manifest.input.shape)}:
                raise ValueError("the reference learnwares take another input shape than the "
                                 "shortlist")
            rw = _check_scores(self.reference_weights, len(self.reference_),
                               "reference_weights")
            w = np.full(len(self.reference_), 1.0) if rw is None else np.clip(rw, 0.0, None)
            if w.sum() <= 0:
                raise ValueError("reference_weights must have a positive sum")
            w = w / w.sum()
        elif scores is None or self.weighting == "uniform":
            w = np.full(n, 1.0 / n)
        else:
            w = np.clip(scores, 0.0, None)
            w = w / w.sum() if w.sum() > 0 else np.full(n, 1.0 / n)
        signals = self._signals(X, w)
        crit = self.criterion
        if crit == "auto":
            crit = "agreement" if self.task_ == "classification" else "spec"
        self.criterion_ = crit
        key = signals[crit]
        # Ties (e.g. identical models) keep the spec order: sort by (-key, spec position).
        order = sorted(range(n), key=lambda i: (-round(float(key[i]), 12), i))
        self.order_ = np.asarray(order, dtype=int)
        ranking = [self._reason(i, r, key, signals, scores) for r, i in enumerate(order)]
        notes: list[str] = []
        recommendation, members = self._label_free_choice(order)
        self.ensemble_ = members
        choice = f"single:{order[0]}" if recommendation == "single" else "averaging"
        cv_results = None
        n_labels = 0
        if y is not None:
            choice, recommendation, cv_results, n_labels = self._validated(X, y, order)
            notes.append(f"chosen by {self.cv}-fold cross-validation on {n_labels} labels")
        else:
            whose = "the search mixture's" if self.reference_ is not None else "the shortlist's"
            notes.append(f"no labels: ranked by agreement of each model with {whose} ensemble "
                         "on your rows" if crit == "agreement"
                         else "no labels: spec order kept (no label-free signal beat it for "
                         "regression); the ensemble is the safer reuse" if crit == "spec"
                         else f"no labels: ranked by {crit}")
        self.decision_ = Decision(
            ranking=ranking, criterion=crit, recommendation=recommendation,
            choice=choice,
            ensemble=[lw.name for lw in self.ensemble_] if recommendation == "ensemble" else [],
            ensemble_ids=[self._id_of(lw) for lw in self.ensemble_]
            if recommendation == "ensemble" else [],
            n_rows=int(X.shape[0]),
            n_labels=n_labels, cv_results=cv_results, notes=notes,
        )
        return self

    def _signals(self, X: np.ndarray, w: np.ndarray) -> dict[str, np.ndarray]:
        n = len(self.learnwares_)
        spec = -np.arange(n, dtype=np.float64)  # shortlist order: best first
        if self.scores is not None:
            spec = np.asarray(self.scores, dtype=np.float64).reshape(-1)
        ref = self.reference_
        if self.task_ == "classification":
            classes = union_labels(self.learnwares_ + (ref or []))
            P = np.stack([aligned_proba(lw, X, classes) for lw in self.learnwares_])
            E = np.tensordot(w, P if ref is None else np.stack(
                [aligned_proba(lw, X, classes) for lw in ref]), axes=1)
            self.classes_ = classes
            e = np.argmax(E, axis=1)
            rows = np.arange(X.shape[0])
            pos = {c: j for j, c in enumerate(classes.tolist())}
            known = np.zeros((n, classes.shape[0]), dtype=bool)
            for i, lw in enumerate(self.learnwares_):
                known[i, [pos[c] for c in lw.labels or []]] = True
            self.ensemble_labels_ = classes[e]
            self.known_ = known
            return {
                "agreement": P[:, rows, e].mean(axis=1),
                "hard_agreement": (np.argmax(P, axis=2) == e[None, :]).mean(axis=1),
                "confidence": P.max(axis=2).mean(axis=1),
                "coverage": known[:, e].mean(axis=1),
                "spec": spec,
            }
        def run(lws: list[Any]) -> np.ndarray:
            return np.stack([np.asarray(lw.predict(X), dtype=np.float64).reshape(X.shape[0])
                             for lw in lws])

        preds = run(self.learnwares_)
        E = np.tensordot(w, preds if ref is None else run(ref), axes=1)
        rmse = np.sqrt(np.mean((preds - E[None, :]) ** 2, axis=1))
        return {"agreement": -rmse, "hard_agreement": -rmse, "confidence": -rmse,
                "coverage": -rmse, "spec": spec}

    def _reason(self, i: int, rank: int, key: np.ndarray, sig: dict[str, np.ndarray],
                scores: np.ndarray | None) -> LearnwareReason:
        lw = self.learnwares_[i]
        cls = self.task_ == "classification"
        r = LearnwareReason(
            index=int(i), name=lw.name,
            learnware_id=None if self.ids is None else str(self.ids[i]),
            spec_rank=int(i) + 1, rank=rank + 1,
            spec_score=None if scores is None else float(scores[i]),
            decision_score=float(key[i]), agreement=float(sig["agreement"][i]),
            hard_agreement=float(sig["hard_agreement"][i]) if cls else None,
            confidence=float(sig["confidence"][i]) if cls else None,
            coverage=float(sig["coverage"][i]) if cls else None,
        )
        move = ("kept its place" if rank == i else
                f"moved {'up' if rank < i else 'down'} from spec rank {i + 1}")
        if cls:
            r.reason = (f"{move}: gives the ensemble's label {r.agreement:.2f} probability on "
                        f"average, agrees on {r.hard_agreement:.0%} of rows, knows the label "
                        f"of {r.coverage:.0%} of rows")
        else:
            r.reason = f"{move}: RMSE {-r.agreement:.4g} from the ensemble's predictions"
        return r

    def _id_of(self, lw: Any) -> str | None:
        """The id given for ``lw`` in ``ids`` or ``reference_ids`` (None if neither has it)."""
        for lws, ids in ((self.learnwares_, self.ids), (self.reference_, self.reference_ids)):
            if ids is None or lws is None:
                continue
            for i, other in enumerate(lws):
                if other is lw:
                    return str(ids[i])
        return None

    def _label_free_choice(self, order: list[int]) -> tuple[str, list[Any]]:
        """The top learnware alone, or an ensemble when it does not know the rows' labels
        (classification) or whenever there are several (regression)."""
        top = [self.learnwares_[order[0]]]
        if self.task_ != "classification":
            # The whole shortlist, equal weights: on Birthdays / flights its average had a
            # mean regret of 0.0016 / 0.62 against 0.0018 / 1.28 for the mixture's average
            # and 0.0063 / 1.89 for the spec top-1 (BENCHMARKS.md).
            return ("ensemble", list(self.learnwares_)) if len(order) > 1 else ("single", top)
        e_known = self.known_[:, np.searchsorted(self.classes_, self.ensemble_labels_)]
        target = float(self.coverage_target)
        if e_known[order[0]].mean() >= target - 1e-12:
            return "single", top
        if self.reference_ is not None and len(self.reference_) > 1:
            return "ensemble", list(self.reference_)
        if len(order) == 1:
            return "single", top
        chosen: list[int] = []
        covered = np.zeros(e_known.shape[1], dtype=bool)
        for _ in range(min(int(self.max_ensemble), len(order))):
            # Most new rows covered; ties go to the better-ranked learnware.
            gain, _, best = max((int((e_known[i] & ~covered).sum()), -k, i)
                                for k, i in enumerate(order) if i not in chosen)
            if gain == 0:
                break
            chosen.append(best)
            covered |= e_known[best]
            if covered.mean() >= target:
                break
        if len(chosen) < 2:
            return "single", top
        return "ensemble", [self.learnwares_[i] for i in chosen]

    def _validated(self, X: np.ndarray, y: Any,
                   order: list[int]) -> tuple[str, str, dict[str, Any], int]:
        from learndock.reuse.auto import AutoReuser

        y = np.asarray(y)
        if y.shape[0] != X.shape[0]:
            raise ValueError(f"X has {X.shape[0]} rows but y has {y.shape[0]}; pass labels "
                             "for the same rows (or y=None)")
        # The pool: the shortlist, then ensemble members from outside it (the mixture's).
        pool = list(self.learnwares_)
        if len(self.ensemble_) > 1:
            ens = self.ensemble_
        elif self.reference_ is not None and len(self.reference_) > 1:
            ens = list(self.reference_)
        else:
            ens = [self.learnwares_[i] for i in order[: min(len(order), 3)]]
        for lw in ens:
            if not any(lw is p for p in pool):
                pool.append(lw)
        members = [next(j for j, p in enumerate(pool) if p is lw) for lw in ens]
        self.ensemble_ = ens
        auto = AutoReuser(
            pool, ensemble=members,
            candidates=("own_model", "averaging",
                        *(f"single:{i}" for i in order[: min(len(order), 5)])),
            cv=self.cv, random_state=self.random_state,
        ).fit(X, y)
        self.reuser_ = auto
        choice = auto.choice_
        rec = "single" if choice.startswith("single:") else (
            "ensemble" if choice == "averaging" else choice)
        return choice, rec, auto.cv_results_, int(y.shape[0])

    # ------------------------------------------------------------------ use
    def reuser(self) -> Any:
        """The label-free recommendation as a data-free estimator (call ``fit(X)`` on it).

        With labels, the validated choice is already fitted in ``reuser_`` (an AutoReuser)."""
        check_is_fitted(self, "decision_")
        from learndock.reuse.datafree import AveragingReuser

        if self.decision_.n_labels:
            return self.reuser_
        if self.decision_.recommendation == "ensemble":
            return AveragingReuser(list(self.ensemble_))
        return AveragingReuser([self.learnwares_[self.decision_.ranking[0].index]])


def decide(learnwares: Sequence[Any], X: Any, y: Any = None, *, scores: Any = None,
           ids: Sequence[str] | None = None, **params: Any) -> Decision:
    """Functional form of :class:`DecisionStep`: ``DecisionStep(...).fit(X, y).decision_``."""
    return DecisionStep(learnwares, scores=scores, ids=ids, **params).fit(X, y).decision_
