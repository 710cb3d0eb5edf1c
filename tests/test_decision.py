"""The decision step: re-rank a spec shortlist by what the models do on the user's rows."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from learndock.package import load_learnware, pack, write_package
from learndock.reuse import AutoReuser, Decision, DecisionStep, decide
from learndock.search.result import MixtureMatch, SearchResult, SingleMatch
from learndock.spec import RKMETableSpec


def _learnware(tmp: Path, model, X, task, name, kernel):
    labels = getattr(model, "classes_", None)
    n_out = len(labels) if labels is not None else 1
    sem = {
        "name": name, "description": f"test learnware {name}", "data_type": "Table",
        "task_type": task, "library_type": "Scikit-learn", "scenarios": ["Education"],
        "license": "MIT",
        "input": {"dimension": X.shape[1],
                  "descriptions": {i: f"feature {i}" for i in range(X.shape[1])}},
        "output": {"dimension": n_out, "descriptions": {i: f"out {i}" for i in range(n_out)}},
    }
    spec = RKMETableSpec.fit(X, 20, kernel=kernel, random_state=0)
    write_package(tmp / name, model, name=name, semantic=sem, spec=spec)
    pack(tmp / name, tmp / f"{name}.zip")
    return load_learnware(tmp / f"{name}.zip")


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """Learnwares on class subsets of digits; one ('weak') trained on a few noisy rows."""
    tmp = tmp_path_factory.mktemp("decide")
    X, y = load_digits(return_X_y=True)
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.4, random_state=0, stratify=y)
    kernel = RKMETableSpec.fit(Xtr, 10).kernel
    lws = {}
    for s in [(0, 1, 2, 3), (4, 5, 6, 7), (0, 1, 8, 9), (2, 3, 4, 5)]:
        m = np.isin(ytr, s)
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(Xtr[m],
                                                                                      ytr[m])
        lws["".join(map(str, s))] = _learnware(tmp, model, Xtr[m], "Classification",
                                               "d" + "".join(map(str, s)), kernel)
    # Same classes as '0123' but trained on 12 rows with shuffled labels: a bad model whose
    # spec looks like the good one's.
    m = np.flatnonzero(np.isin(ytr, (0, 1, 2, 3)))[:12]
    bad_y = np.random.default_rng(0).permutation(ytr[m])
    model = LogisticRegression(max_iter=2000).fit(Xtr[m], bad_y)
    lws["weak"] = _learnware(tmp, model, Xtr[m], "Classification", "dweak", kernel)
    return lws, Xte, yte


def test_decision_demotes_a_bad_model_the_spec_ranked_first(digits):
    lws, X, y = digits
    m = np.isin(y, (0, 1, 2, 3))
    Xu, yu = X[m], y[m]
    # Spec order puts the weak learnware first; its models' outputs give it away.
    short = [lws["weak"], lws["0123"], lws["0189"], lws["2345"]]
    step = DecisionStep(short, scores=[0.9, 0.8, 0.5, 0.5]).fit(Xu)
    accs = [np.mean(lw.predict(Xu) == yu) for lw in short]
    assert int(np.argmax(accs)) == 1
    assert step.order_[0] == 1  # the truly best, found without labels
    d = step.decision_
    assert d.best.name == "d0123" and d.best.spec_rank == 2 and d.best.rank == 1
    assert "moved up from spec rank 2" in d.best.reason
    weak = next(r for r in d.ranking if r.name == "dweak")
    assert weak.agreement < d.best.agreement
    assert d.best.coverage == pytest.approx(1.0)
    assert d.recommendation == "single" and d.choice == "single:1"


def test_decision_recommends_an_ensemble_when_no_single_knows_the_labels(digits):
    lws, X, y = digits
    m = np.isin(y, (0, 1, 2, 3, 4, 5, 6, 7))
    Xu, yu = X[m], y[m]
    short = [lws["0123"], lws["2345"], lws["4567"], lws["0189"]]
    ref = [lws["0123"], lws["4567"]]
    step = DecisionStep(short, reference=ref, reference_weights=[0.5, 0.5],
                        reference_ids=["a", "b"]).fit(Xu)
    d = step.decision_
    assert d.recommendation == "ensemble" and d.ensemble == ["d0123", "d4567"]
    assert d.ensemble_ids == ["a", "b"]
    single_acc = max(np.mean(lw.predict(Xu) == yu) for lw in short)
    ens_acc = np.mean(step.reuser().fit(Xu).predict(Xu) == yu)
    assert ens_acc > single_acc + 0.2  # each single knows at most half the classes
    # JSON-able, with the reasons.
    blob = json.loads(json.dumps(d.to_dict()))
    assert blob["recommendation"] == "ensemble" and len(blob["ranking"]) == 4
    assert blob["ranking"][0]["reason"]


def test_decision_without_reference_uses_the_shortlist_ensemble(digits):
    lws, X, y = digits
    m = np.isin(y, (4, 5, 6, 7))
    short = [lws["2345"], lws["4567"], lws["0123"]]
    d = decide(short, X[m], ids=["x", "y", "z"])
    assert isinstance(d, Decision)
    assert d.best.name == "d4567" and d.best.learnware_id == "y"
    assert d.order[0] == 1 and sorted(d.order) == [0, 1, 2]


def test_decision_is_deterministic_and_criteria_differ(digits):
    lws, X, y = digits
    short = [lws["weak"], lws["0123"], lws["2345"]]
    m = np.isin(y, (0, 1, 2, 3))
    a = decide(short, X[m]).to_dict()
    b = decide(short, X[m]).to_dict()
    assert a == b
    spec_only = decide(short, X[m], criterion="spec")
    assert spec_only.order == [0, 1, 2]  # spec order kept when ranking by spec


def test_decision_with_labels_validates_among_singles_mixture_and_own(digits):
    lws, X, y = digits
    m = np.isin(y, (0, 1, 2, 3))
    Xu, yu = X[m], y[m]
    short = [lws["weak"], lws["0123"], lws["2345"]]
    rng = np.random.default_rng(0)
    lab = rng.choice(len(yu), 40, replace=False)
    step = DecisionStep(short, random_state=0).fit(Xu[lab], yu[lab])
    d = step.decision_
    assert d.n_labels == 40 and d.cv_results is not None
    assert "own_model" in d.cv_results and "averaging" in d.cv_results
    assert {"single:0", "single:1", "single:2"} <= set(d.cv_results)
    assert d.cv_results["single:1"]["mean"] > d.cv_results["single:0"]["mean"]
    assert d.choice in ("single:1", "own_model")
    rest = np.setdiff1d(np.arange(len(yu)), lab)
    assert np.mean(step.reuser().predict(Xu[rest]) == yu[rest]) > 0.9


def test_decision_regression_prefers_the_model_near_the_consensus(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 3))
    y = X @ np.array([1.0, -2.0, 0.5])
    lws = []
    for i, noise in enumerate([3.0, 0.0, 0.1, 0.2]):
        yi = y + noise * rng.normal(size=300) + (4.0 if noise == 3.0 else 0.0)
        lws.append(_learnware(tmp_path, LinearRegression().fit(X, yi), X, "Regression",
                              f"r{i}", None))
    d = decide(lws, X[:100], criterion="agreement")
    assert d.ranking[-1].name == "r0"  # the biased model is furthest from the consensus
    assert d.best.coverage is None
    # Default for regression: spec order kept, the average recommended.
    d = decide(lws, X[:100])
    assert d.criterion == "spec" and d.order == [0, 1, 2, 3]
    assert d.recommendation == "ensemble" and d.ensemble == ["r0", "r1", "r2", "r3"]


def test_decision_input_errors(digits):
    lws, X, _ = digits
    short = [lws["0123"], lws["2345"]]
    with pytest.raises(ValueError, match="criterion"):
        DecisionStep(short, criterion="vibes").fit(X)
    with pytest.raises(ValueError, match="scores has 1 entries"):
        DecisionStep(short, scores=[1.0]).fit(X)
    with pytest.raises(ValueError, match="features"):
        DecisionStep(short).fit(X[:, :10])
    with pytest.raises(ValueError, match="non-empty"):
        DecisionStep([]).fit(X)
    with pytest.raises(ValueError, match="rows but y has"):
        DecisionStep(short).fit(X[:20], np.zeros(5))
    with pytest.raises(ValueError, match="coverage_target"):
        DecisionStep(short, coverage_target=0).fit(X)
    assert clone(DecisionStep(short)).get_params()["learnwares"][0] is short[0]


def test_auto_reuser_label_free_mode(digits):
    lws, X, y = digits
    m = np.isin(y, (0, 1, 2, 3))
    auto = AutoReuser([lws["weak"], lws["0123"], lws["2345"]]).fit(X[m])
    assert auto.choice_ == "single:1" and auto.cv_results_ is None
    assert auto.decision_.best.name == "d0123"
    assert np.mean(auto.predict(X[m]) == y[m]) > 0.9
    assert "no labels" in auto.report() and "<- chosen" in auto.report()


def test_search_result_decide_and_serialise(digits):
    lws, X, y = digits
    m = np.isin(y, (0, 1, 2, 3))
    res = SearchResult(
        single=[SingleMatch("id-w", "dweak", 1, score=0.9), SingleMatch("id-g", "d0123", 1,
                                                                       score=0.8)],
        mixture=MixtureMatch(["id-w", "id-g"], ["dweak", "d0123"], [0.5, 0.5], 0.1, 0.9, 0.2,
                             0.1, False),
    )
    assert "decision" not in res.to_dict()
    d = res.decide([lws["weak"], lws["0123"]], X[m])
    assert res.decision is d and d.best.learnware_id == "id-g"
    out = json.loads(json.dumps(res.to_dict()))
    assert out["decision"]["ranking"][0]["learnware_id"] == "id-g"
    assert set(out) >= {"single", "mixture", "explanation", "timings_ms"}
    # With the mixture's learnwares: the reference is the mixture, its ids in the reasons.
    d = res.decide([lws["weak"], lws["0123"]], X[m], mixture_learnwares=[lws["weak"],
                                                                          lws["0123"]])
    assert d.best.learnware_id == "id-g"
    with pytest.raises(ValueError, match="mixture_learnwares"):
        res.decide([lws["weak"]], X[m], mixture_learnwares=[lws["weak"]])
    with pytest.raises(ValueError, match="mixture member"):
        res.decide([lws["weak"]], X[m], mixture_learnwares=[lws["0123"], lws["weak"]])
    with pytest.raises(ValueError, match="order of result.single"):
        res.decide([lws["0123"], lws["weak"]], X[m])
    with pytest.raises(ValueError, match="loaded learnwares"):
        res.decide([], X[m])
