"""Reusers on real data: each beats 'mean in market'; label alignment; routing; sklearn API."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import (
    check_estimators_unfitted,
    check_get_params_invariance,
    check_no_attributes_set_in_init,
    check_set_params,
)

from learndock.errors import ContractError
from learndock.package import load_learnware, pack, write_package
from learndock.reuse import (
    AutoReuser,
    AveragingReuser,
    EnsemblePruningReuser,
    FeatureAugmentReuser,
    FinetuneReuser,
    JobSelectorReuser,
)
from learndock.spec import RKMETableSpec


def _sem(task: str, d: int, labels: list | None, name: str) -> dict:
    sem = {
        "name": name,
        "description": f"test learnware {name}",
        "data_type": "Table",
        "task_type": task,
        "library_type": "Scikit-learn",
        "scenarios": ["Education"],
        "license": "MIT",
        "input": {"dimension": d, "descriptions": {i: f"feature {i}" for i in range(d)}},
    }
    n_out = len(labels) if labels is not None else 1
    sem["output"] = {"dimension": n_out, "descriptions": {i: f"out {i}" for i in range(n_out)}}
    return sem


def _learnware(tmp: Path, model, X, task, name, kernel, fmt="skops"):
    labels = getattr(model, "classes_", None)
    spec = RKMETableSpec.fit(X, 30, kernel=kernel, random_state=0)
    d = tmp / name
    write_package(d, model, name=name, semantic=_sem(task, X.shape[1], labels, name), spec=spec,
                  model_format=fmt)
    pack(d, tmp / f"{name}.zip")
    return load_learnware(tmp / f"{name}.zip")


@pytest.fixture(scope="module")
def digits_market(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("digits")
    X, y = load_digits(return_X_y=True)
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.4, random_state=0, stratify=y)
    kernel = RKMETableSpec.fit(Xtr, 10).kernel
    subsets = [(0, 1, 2), (3, 4, 5), (6, 7, 8), (2, 3, 9), (1, 5, 7)]
    lws = []
    for s in subsets:
        m = np.isin(ytr, s)
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(Xtr[m], ytr[m])
        lws.append(_learnware(tmp, model, Xtr[m], "Classification", "d" + "".join(map(str, s)),
                              kernel, fmt="onnx" if s == (6, 7, 8) else "skops"))
    return lws, (Xte, yte)


def test_label_alignment_disjoint_sets(digits_market):
    lws, (X, y) = digits_market
    a, b = lws[0], lws[1]  # {0,1,2} and {3,4,5}
    avg = AveragingReuser([a, b]).fit(X)
    assert avg.classes_.tolist() == [0, 1, 2, 3, 4, 5]
    p = avg.predict_proba(X[:50])
    assert p.shape == (50, 6)
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
    # Each learnware's mass lands on its own classes, halved by the averaging.
    pa = a.predict_proba(X[:50])
    np.testing.assert_allclose(p[:, :3], pa / 2, atol=1e-9)
    m = np.isin(y, (0, 1, 2, 3, 4, 5))
    acc = np.mean(avg.predict(X[m]) == y[m])
    assert acc > 0.85  # the reference's column-wise average would mix digit 0 with digit 3


def test_averaging_vote_mode(digits_market):
    lws, (X, y) = digits_market
    m = np.isin(y, (0, 1, 2))
    vote = AveragingReuser([lws[0], lws[3]], mode="vote").fit(X[m])
    assert set(np.unique(vote.predict(X[m]))) <= {0, 1, 2, 3, 9}
    with pytest.raises(ValueError, match="mode"):
        AveragingReuser([lws[0]], mode="median").fit(X)


def test_job_selector_routes_two_distributions(digits_market):
    lws, (X, y) = digits_market
    a, b = lws[0], lws[2]  # {0,1,2} vs {6,7,8}
    js = JobSelectorReuser([a, b]).fit()
    assert js.separability_ > 0.8  # disjoint digit classes: routing is informed
    ma, mb = np.isin(y, (0, 1, 2)), np.isin(y, (6, 7, 8))
    route = js.route(np.vstack([X[ma], X[mb]]))
    truth = np.r_[np.zeros(ma.sum()), np.ones(mb.sum())]
    assert np.mean(route == truth) > 0.9
    pred = js.predict(np.vstack([X[ma], X[mb]]))
    assert np.mean(pred == np.r_[y[ma], y[mb]]) > 0.85


def _mean_in_market(lws, X, y, loss):
    return np.mean([loss(y, lw.predict(X)) for lw in lws])


def test_each_reuser_beats_mean_in_market_on_digits(digits_market):
    lws, (X, y) = digits_market
    classes = (0, 1, 2, 3, 4, 5)
    m = np.isin(y, classes)
    Xu, yu = X[m], y[m]
    err = lambda t, p: float(np.mean(np.asarray(t) != np.asarray(p)))  # noqa: E731
    mean_err = _mean_in_market(lws, Xu, yu, err)
    rng = np.random.default_rng(0)
    lab = rng.choice(len(yu), 60, replace=False)
    rest = np.setdiff1d(np.arange(len(yu)), lab)
    chosen = [lws[0], lws[1]]
    results = {
        "averaging": err(yu, AveragingReuser(chosen).fit(Xu).predict(Xu)),
        "job_selector": err(yu, JobSelectorReuser(chosen).fit(Xu).predict(Xu)),
        "ensemble_pruning": err(yu[rest], EnsemblePruningReuser(lws).fit(Xu[lab], yu[lab])
                                .predict(Xu[rest])),
        "feature_augment": err(yu[rest], FeatureAugmentReuser(chosen).fit(Xu[lab], yu[lab])
                               .predict(Xu[rest])),
        "auto": err(yu[rest], AutoReuser(chosen).fit(Xu[lab], yu[lab]).predict(Xu[rest])),
    }
    for name, e in results.items():
        assert e < mean_err, f"{name}: {e:.3f} not below mean in market {mean_err:.3f}"


def test_ensemble_pruning_selects_relevant(digits_market):
    lws, (X, y) = digits_market
    m = np.isin(y, (3, 4, 5))
    ep = EnsemblePruningReuser(lws).fit(X[m][:60], y[m][:60])
    assert 1 in ep.selected_  # the {3,4,5} learnware
    assert np.isclose(ep.weights_.sum(), 1.0)


@pytest.fixture(scope="module")
def birthdays_market(tmp_path_factory):
    from learndock.datasets.birthdays import SPLIT_YEAR, birthdays_panel

    tmp = tmp_path_factory.mktemp("births")
    panel = birthdays_panel()
    states = ["CA", "TX", "NY", "WY", "VT", "OH"]
    pooled = np.vstack([panel[s].X[panel[s].years < SPLIT_YEAR][::10] for s in states])
    kernel = RKMETableSpec.fit(pooled, 10).kernel
    lws = {}
    for s in states:
        data = panel[s]
        tr = data.years < SPLIT_YEAR
        model = HistGradientBoostingRegressor(max_iter=60, random_state=0).fit(data.X[tr], data.y[tr])
        lws[s] = _learnware(tmp, model, data.X[tr], "Regression", f"births-{s.lower()}", kernel)
    return lws, panel, SPLIT_YEAR


def test_each_reuser_beats_mean_in_market_on_birthdays(birthdays_market):
    lws, panel, split = birthdays_market
    user = panel["CA"]
    te = user.years >= split
    X, y = user.X[te], user.y[te]
    rmse = lambda t, p: float(np.sqrt(np.mean((np.asarray(t) - np.asarray(p)) ** 2)))  # noqa: E731
    all_lws = list(lws.values())
    mean_rmse = _mean_in_market(all_lws, X, y, rmse)
    chosen = [lws["CA"], lws["TX"], lws["NY"]]
    rng = np.random.default_rng(0)
    lab = rng.choice(len(y), 50, replace=False)
    rest = np.setdiff1d(np.arange(len(y)), lab)
    results = {
        "averaging": rmse(y, AveragingReuser(chosen).fit(X).predict(X)),
        "job_selector": rmse(y, JobSelectorReuser(chosen).fit(X).predict(X)),
        "ensemble_pruning": rmse(y[rest], EnsemblePruningReuser(all_lws).fit(X[lab], y[lab])
                                 .predict(X[rest])),
        "feature_augment": rmse(y[rest], FeatureAugmentReuser(chosen).fit(X[lab], y[lab])
                                .predict(X[rest])),
        "auto": rmse(y[rest], AutoReuser(chosen).fit(X[lab], y[lab]).predict(X[rest])),
    }
    for name, e in results.items():
        assert e < mean_rmse, f"{name}: {e:.4f} not below mean in market {mean_rmse:.4f}"


def test_auto_reports_choice(digits_market):
    lws, (X, y) = digits_market
    m = np.isin(y, (0, 1, 2))
    auto = AutoReuser([lws[0], lws[3]]).fit(X[m][:40], y[m][:40])
    assert auto.choice_ in auto.cv_results_
    assert "chosen" in auto.report()
    assert auto.score(X[m][40:], y[m][40:]) > 0.8


def test_finetune_needs_capability(digits_market):
    lws, (X, y) = digits_market
    with pytest.raises(ContractError, match="cannot be fine-tuned"):
        FinetuneReuser(lws[0]).fit(X[:20], y[:20])


def test_finetune_with_partial_fit(tmp_path):
    from sklearn.linear_model import SGDClassifier

    X, y = load_digits(return_X_y=True)
    m = np.isin(y, (0, 1))
    model = SGDClassifier(loss="log_loss", random_state=0).fit(X[m][:20], y[m][:20])
    lw = _learnware(tmp_path, model, X[m], "Classification", "sgd01", None)
    assert lw.supports("partial_fit")
    before = np.mean(lw.predict(X[m][100:]) == y[m][100:])
    ft = FinetuneReuser(lw).fit(X[m][20:100], y[m][20:100])
    after = np.mean(ft.predict(X[m][100:]) == y[m][100:])
    assert after >= before - 0.02 and after > 0.9


def test_input_validation(digits_market):
    lws, (X, _) = digits_market
    avg = AveragingReuser(lws[:2]).fit(X)
    with pytest.raises(ValueError, match="features"):
        avg.predict(X[:, :10])
    with pytest.raises(ValueError, match="non-empty"):
        AveragingReuser([]).fit(X)
    with pytest.raises(ValueError, match="weights"):
        AveragingReuser(lws[:2], weights=[1.0]).fit(X)
    with pytest.raises(TypeError):
        AveragingReuser(["not a learnware"]).fit(X)


REUSERS = [AveragingReuser, JobSelectorReuser, EnsemblePruningReuser, FeatureAugmentReuser,
           AutoReuser]


@pytest.mark.parametrize("cls", REUSERS, ids=lambda c: c.__name__)
def test_sklearn_api_checks(cls, digits_market):
    """The scikit-learn checks that apply to estimators bound to fixed learnwares.

    Not run: the generic data checks (``check_estimator``), because they feed synthetic data of
    arbitrary width and label sets, while a reuser's input width and labels are fixed by its
    learnwares' contracts -- such inputs are rejected with a ContractError/ValueError by design.
    """
    lws, (X, y) = digits_market
    est = cls(lws[:2])
    name = cls.__name__
    check_no_attributes_set_in_init(name, est)
    check_get_params_invariance(name, est)
    check_set_params(name, est)
    check_estimators_unfitted(name, est)
    cloned = clone(est)
    assert cloned.get_params()["learnwares"][0] is lws[0]  # handles are shared, not copied
    m = np.isin(y, (0, 1, 2, 3, 4, 5))
    fitted = cloned.fit(X[m][:60], y[m][:60])
    assert fitted is cloned
    assert fitted.predict(X[m][60:70]).shape == (10,)


def test_auto_single_candidates_and_ensemble(digits_market):
    lws, (X, y) = digits_market
    m = np.isin(y, (3, 4, 5))
    auto = AutoReuser(lws, candidates=("single:0", "single:1", "averaging"), ensemble=[0, 1],
                      ).fit(X[m][:45], y[m][:45])
    assert auto.cv_results_["single:1"]["mean"] > auto.cv_results_["single:0"]["mean"]
    assert auto.choice_ == "single:1"  # the {3,4,5} learnware alone beats the {0,1,2}+{3,4,5} mix
    with pytest.raises(ValueError, match="names no learnware"):
        AutoReuser(lws, candidates=("single:9",)).fit(X[m][:45], y[m][:45])


def test_auto_label_free_classification_picks_the_learnware_that_knows_the_rows(digits_market):
    lws, (X, y) = digits_market
    m = np.isin(y, (6, 7, 8))
    # No labels: the decision step decides, agreeing with the search's mixture (its weights).
    auto = AutoReuser(lws, weights=[0.0, 0.0, 0.7, 0.0, 0.3]).fit(X[m])
    assert auto.cv_results_ is None
    assert auto.decision_.best.name == "d678"
    assert auto.choice_ == "single:2"
    assert np.mean(auto.predict(X[m]) == y[m]) > 0.9


def test_feature_augment_starts_at_the_learnwares_level(birthdays_market):
    """With 10 labels the residual fit stays near the learnwares' mean; the old setting fell
    far behind it (it had to relearn the learnwares' output from 10 rows)."""
    lws, panel, split = birthdays_market
    user = panel["TX"]
    te = user.years >= split
    X, y = user.X[te], user.y[te]
    rmse = lambda t, p: float(np.sqrt(np.mean((np.asarray(t) - np.asarray(p)) ** 2)))  # noqa: E731
    chosen = [lws["TX"], lws["CA"], lws["NY"]]
    # The default base is the learnwares' mean: the fit starts there and moves little.
    base = rmse(y, np.mean([lw.predict(X) for lw in chosen], axis=0))
    new, old = [], []
    for r in range(3):
        perm = np.random.default_rng(r).permutation(len(y))
        lab, rest = perm[:10], perm[10:]
        new.append(rmse(y[rest], FeatureAugmentReuser(chosen).fit(X[lab], y[lab])
                        .predict(X[rest])))
        old.append(rmse(y[rest], FeatureAugmentReuser(chosen, residual=False, output_scale=1.0)
                        .fit(X[lab], y[lab]).predict(X[rest])))
    assert np.mean(new) < base * 1.05
    assert np.mean(new) < np.mean(old)
    with pytest.raises(ValueError, match="base"):
        FeatureAugmentReuser(chosen, base="median").fit(X[:10], y[:10])


def test_job_selector_soft_routing_never_worse_than_hard_on_overlapping_learnwares(
        birthdays_market):
    lws, panel, split = birthdays_market
    user = panel["OH"]
    te = user.years >= split
    X, y = user.X[te], user.y[te]
    rmse = lambda t, p: float(np.sqrt(np.mean((np.asarray(t) - np.asarray(p)) ** 2)))  # noqa: E731
    chosen = [lws["OH"], lws["NY"], lws["TX"]]
    soft = JobSelectorReuser(chosen).fit(X)
    hard = JobSelectorReuser(chosen, routing="hard").fit(X)
    assert 0.0 <= soft.separability_ <= 1.0
    assert rmse(y, soft.predict(X)) <= rmse(y, hard.predict(X)) + 1e-9
    R = soft.route_proba(X[:20])
    np.testing.assert_allclose(R.sum(axis=1), 1.0)
    with pytest.raises(ValueError, match="routing"):
        JobSelectorReuser(chosen, routing="random").fit(X)
