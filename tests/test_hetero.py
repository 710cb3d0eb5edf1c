"""Heterogeneous learnwares: system space, bridges, search and reuse (no MiniLM needed).

Column descriptions are embedded with the dependency-free ``HashingEmbedder`` here, so
columns match only when worded alike; renamed columns are in ``test_hetero_minilm.py``.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.exceptions import NotFittedError

from learndock.errors import ContractError, SpecError
from learndock.hetero import (
    Bridge,
    BridgePair,
    HashingEmbedder,
    HeteroCandidate,
    HeteroFinetuneReuser,
    HeteroMapReuser,
    SystemSpace,
    column_importance,
    hetero_search,
)
from learndock.hetero.columns import normalise_description
from learndock.spec import RKMETableSpec

DESC = ["departure delay (minutes)", "distance (miles)", "departs from Newark",
        "scheduled departure hour"]


def table(n: int = 1500, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    delay = rng.gamma(2.0, 10.0, n) - 5
    dist = rng.uniform(200, 2500, n)
    ewr = rng.binomial(1, 0.35, n).astype(float)
    hour = np.clip(6 + 0.004 * dist + rng.normal(0, 2, n), 5, 23)  # depends on distance
    X = np.column_stack([delay, dist, ewr, hour])
    y = 0.9 * delay + 0.002 * dist + 4 * ewr + 0.8 * (hour - 14) + rng.normal(0, 2, n)
    return X, y


class LW:
    """A minimal learnware: a model and its spec (the reusers take any such object)."""

    def __init__(self, X: np.ndarray, y: np.ndarray, k: int = 40) -> None:
        self.model = HistGradientBoostingRegressor(max_iter=60, random_state=0).fit(X, y)
        self.stat_spec = RKMETableSpec.fit(X, k, random_state=0)
        self.labels = None

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.model.predict(X)


@pytest.fixture(scope="module")
def market() -> dict:
    X, y = table()
    lw = LW(X, y)
    space = SystemSpace(HashingEmbedder())
    space.add_island("flights/a", DESC, [lw.stat_spec])
    return {"X": X, "y": y, "lw": lw, "space": space}


def test_description_normalisation() -> None:
    assert normalise_description("Day of week  (Mon)") == "day of week (monday)"
    assert normalise_description("block time (min)") == "block time (minutes)"


def test_versioning_bumps_only_on_change(market: dict) -> None:
    X, lw = market["X"], market["lw"]
    space = SystemSpace(HashingEmbedder())
    assert space.version == 0
    assert space.add_island("a", DESC, [lw.stat_spec]) is True
    assert space.version == 1 and len(space.features) == 4
    before = json.dumps(space.to_dict()["features"], sort_keys=True)
    fp = space.fingerprint()
    assert space.add_island("a", DESC, [lw.stat_spec]) is False  # known island: no change
    assert space.version == 1 and space.fingerprint() == fp
    with pytest.raises(SpecError, match="other column descriptions"):
        space.add_island("a", DESC[::-1], [lw.stat_spec])
    spec_b = RKMETableSpec.fit(X[:, [3, 0]], 30, random_state=0)
    assert space.add_island("b", [DESC[3], DESC[0]], [spec_b]) is True
    assert space.version == 2
    assert len(space.features) == 4  # both columns joined existing features
    # append-only: the first island's members and standardisations did not change
    after = space.to_dict()["features"]
    for f_before, f_after in zip(json.loads(before), after, strict=True):
        assert f_before["members"][0] == f_after["members"][0]
        assert f_before["loc"] == f_after["loc"] and f_before["scale"] == f_after["scale"]


def test_reordered_and_rescaled_columns_bridge_correctly(market: dict) -> None:
    X, space = market["X"], market["space"]
    # the user's columns: reordered, distance in thousands of miles, no delay column
    Xu = np.column_stack([X[:, 3], X[:, 2], X[:, 1] / 1000.0])
    descs = [DESC[3], DESC[2], DESC[1]]
    matches = space.match(descs, RKMETableSpec.fit(Xu, 40, random_state=0))
    br = space.bridge_columns(matches, "flights/a")
    assert {(p.source, p.target) for p in br.pairs} == {(0, 3), (1, 2), (2, 1)}
    assert br.missing == [0] and br.unused == [] and br.coverage == pytest.approx(0.75)
    pair = next(p for p in br.pairs if p.target == 1)
    assert pair.scale == pytest.approx(1000.0, rel=0.1)  # thousands of miles -> miles
    assert next(m for m in matches if m.column == 2).unit_map == "rescaled"
    assert next(m for m in matches if m.column == 0).unit_map == "shared-units"
    mapped = br.transform(Xu[:5])
    assert np.isnan(mapped[:, 0]).all()
    np.testing.assert_allclose(mapped[:, 3], X[:5, 3])
    np.testing.assert_allclose(mapped[:, 1], X[:5, 1], rtol=0.2)


def test_serialisation_round_trip(market: dict) -> None:
    space = market["space"]
    text = space.to_json()
    back = SystemSpace.from_json(text, HashingEmbedder())
    assert back.fingerprint() == space.fingerprint() and back.version == space.version
    assert back.to_json() == text
    X = market["X"]
    spec = RKMETableSpec.fit(X[:, [1, 3]], 30, random_state=0)
    a = space.match([DESC[1], DESC[3]], spec)
    b = back.match([DESC[1], DESC[3]], spec)
    assert a == b
    br = space.bridge_columns(a, "flights/a")
    assert Bridge.from_dict(json.loads(json.dumps(br.to_dict()))) == br
    with pytest.raises(SpecError, match="format marker"):
        SystemSpace.from_dict({"features": []})
    with pytest.raises(SpecError, match="built with"):
        SystemSpace.from_json(text, HashingEmbedder(dimension=64))


def test_deterministic(market: dict) -> None:
    lw = market["lw"]
    fps = []
    for _ in range(2):
        sp = SystemSpace(HashingEmbedder())
        sp.add_island("x", DESC, [lw.stat_spec])
        fps.append(sp.fingerprint())
    assert fps[0] == fps[1]


def test_bridge_validation() -> None:
    with pytest.raises(SpecError, match="at most once"):
        Bridge("u", "t", 2, 2, (BridgePair(0, 0, 0, 1, 0, 1), BridgePair(1, 0, 1, 1, 0, 1)), 1)
    with pytest.raises(SpecError, match="outside"):
        Bridge("u", "t", 1, 2, (BridgePair(3, 0, 0, 1, 0, 1),), 1)
    br = Bridge("u", "t", 2, 3, (BridgePair(1, 2, 0, 2.0, 1.0, 0.9),), 1)
    np.testing.assert_allclose(br.transform([[0.0, 1.0]])[0, 2], 3.0)
    with pytest.raises(ValueError, match="source columns"):
        br.transform(np.ones((2, 3)))
    with pytest.raises(SpecError, match="format marker"):
        Bridge.from_dict({"pairs": []})


def user_view(X: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """A user with hour, Newark flag and distance -- no departure delay column."""
    return np.column_stack([X[:, 3], X[:, 2], X[:, 1]]), [DESC[3], DESC[2], DESC[1]]


def test_label_free_reuser_beats_mean_prediction(market: dict) -> None:
    space, lw = market["space"], market["lw"]
    X, y = table(800, seed=1)  # later data of the same kind
    Xu, descs = user_view(X)
    X2, y2 = table(800, seed=2)
    Xu2, _ = user_view(X2)
    # the user's delay column is missing: a strong input, so give the model less of it
    full = np.column_stack([X[:, 0], X[:, 1], X[:, 2], X[:, 3]])
    assert full.shape == X.shape
    br = space.bridge_columns(space.match(descs, RKMETableSpec.fit(Xu, 40)), "flights/a")
    rmse_mean = float(np.std(y2))
    for imputation in ("draws", "mean"):
        r = HeteroMapReuser(lw, br, imputation=imputation, task="regression").fit(Xu)
        rmse = float(np.sqrt(np.mean((r.predict(Xu2) - y2) ** 2)))
        assert rmse < 0.97 * rmse_mean, (imputation, rmse, rmse_mean)
    # with every column shared it is the learnware itself
    br_all = space.bridge_columns(space.match(DESC, RKMETableSpec.fit(X, 40)), "flights/a")
    r = HeteroMapReuser(lw, br_all, task="regression").fit(X)
    np.testing.assert_allclose(r.predict(X2), lw.predict(X2))


def test_label_free_reuser_imputes_a_correlated_column() -> None:
    rng = np.random.default_rng(3)
    a = rng.normal(size=2000)
    b = a + 0.1 * rng.normal(size=2000)  # the user lacks b, which a determines
    X = np.column_stack([a, b])
    y = 3 * b
    lw = LW(X, y, k=60)
    space = SystemSpace(HashingEmbedder())
    space.add_island("i", ["signal a", "signal b"], [lw.stat_spec])
    Xu = a[:, None]
    br = space.bridge_columns(space.match(["signal a"], RKMETableSpec.fit(Xu, 40)), "i")
    r = HeteroMapReuser(lw, br, task="regression").fit(Xu)
    rmse = float(np.sqrt(np.mean((r.predict(Xu) - y) ** 2)))
    assert rmse < 0.35 * float(np.std(y))


def test_reuser_validation(market: dict) -> None:
    space, lw = market["space"], market["lw"]
    Xu, descs = user_view(market["X"])
    br = space.bridge_columns(space.match(descs, RKMETableSpec.fit(Xu, 30)), "flights/a")
    with pytest.raises(NotFittedError):
        HeteroMapReuser(lw, br, task="regression").predict(Xu)
    with pytest.raises(ValueError, match="bridge maps 3"):
        HeteroMapReuser(lw, br, task="regression").fit(Xu[:, :2])
    with pytest.raises(ValueError, match="imputation"):
        HeteroMapReuser(lw, br, imputation="zeros", task="regression").fit(Xu)
    with pytest.raises(TypeError, match="Bridge"):
        HeteroMapReuser(lw, "nope", task="regression").fit(Xu)
    with pytest.raises(ContractError, match="cannot tell"):
        HeteroMapReuser(lw, br).fit(Xu)  # no semantic spec: task must be given
    bad = Bridge("u", "t", 3, 2, (), 1)
    with pytest.raises(ContractError, match="targets 2 columns"):
        HeteroMapReuser(lw, bad, task="regression").fit(Xu)
    r = HeteroMapReuser(lw, br.to_dict(), task="regression").fit(Xu)  # a stored bridge
    with pytest.raises(ValueError, match="expecting 3 features"):
        r.predict(Xu[:, :2])
    with pytest.raises(AttributeError, match="classification"):
        r.predict_proba(Xu)
    Xn = Xu[:10].copy()
    Xn[0, 1] = np.nan
    assert np.isfinite(r.predict(Xn)).all()  # NaN cells take the column mean
    assert clone(r).get_params()["imputation"] == "draws"


def test_finetune_reuser(market: dict) -> None:
    space, lw = market["space"], market["lw"]
    X, y = table(900, seed=4)
    Xu, descs = user_view(X)
    br = space.bridge_columns(space.match(descs, RKMETableSpec.fit(Xu, 40)), "flights/a")
    lab, test = np.arange(40), np.arange(300, 900)
    ft = HeteroFinetuneReuser(lw, br, task="regression").fit(Xu[lab], y[lab])
    assert ft.choice_ == "blend" and sum(ft.weights_.values()) == pytest.approx(1.0)
    sel = HeteroFinetuneReuser(lw, br, task="regression", blend=False).fit(Xu[lab], y[lab])
    assert sel.choice_ in ("mapped", "calibrated", "stacked", "augment", "own")
    assert set(ft.cv_scores_) == {"mapped", "calibrated", "stacked", "augment", "own"}
    from learndock.reuse import own_model

    own = own_model("regression").fit(Xu[lab], y[lab])

    def rmse(p: np.ndarray) -> float:
        return float(np.sqrt(np.mean((p - y[test]) ** 2)))

    assert rmse(ft.predict(Xu[test])) < 1.1 * rmse(own.predict(Xu[test]))
    assert ft.score(Xu[test], y[test]) > 0.0
    with pytest.raises(ValueError, match="needs labels"):
        HeteroFinetuneReuser(lw, br, task="regression").fit(Xu, None)
    with pytest.raises(ValueError, match="one label per row"):
        HeteroFinetuneReuser(lw, br, task="regression").fit(Xu[:10], y[:9])
    with pytest.raises(ValueError, match="unknown candidates"):
        HeteroFinetuneReuser(lw, br, task="regression", candidates=("magic",)).fit(
            Xu[lab], y[lab])
    two = HeteroFinetuneReuser(lw, br, task="regression").fit(Xu[:3], y[:3])
    assert two.choice_ == "mapped"  # too few labels to compare: keep the learnware


def test_search_scores_and_negative_control(market: dict) -> None:
    space, lw = market["space"], market["lw"]
    X, _ = table(800, seed=5)
    Xu, descs = user_view(X)
    cand = HeteroCandidate("lw-1", "flights/a", lw.stat_spec, DESC, "arrival delay (minutes)",
                           column_importance(lw.predict, lw.stat_spec))
    spec = RKMETableSpec.fit(Xu, 40)
    same = hetero_search(spec, descs, [cand], space, target_description="arrival delay "
                         "(minutes)")[0]
    assert same.cross_island and same.shared == 3 and same.bridge.missing == [0]
    assert 0 < same.coverage < 1 and 0.5 < same.similarity <= 1
    assert same.score == pytest.approx(same.similarity * same.coverage * 1.0)
    assert same.map_version == space.version
    json.dumps(same.to_dict())
    # negative control 1: another task on the same columns -> the target says "poor"
    other = hetero_search(spec, descs, [cand], space,
                          target_description="number of births per day")[0]
    assert other.verdict == "poor match" and other.score < same.score
    # negative control 2: a table whose columns share nothing with the learnware's
    rng = np.random.default_rng(0)
    Z = rng.normal(size=(500, 2))
    none = hetero_search(RKMETableSpec.fit(Z, 30), ["petal width", "sepal length"], [cand],
                         space)[0]
    assert none.verdict == "poor match" and none.shared == 0 and none.score == 0.0
    with pytest.raises(SpecError, match="not in the system space"):
        hetero_search(spec, descs, [("x", "nowhere", lw.stat_spec)], space)
    with pytest.raises(SpecError, match="one description per column"):
        hetero_search(spec, descs[:2], [cand], space)


def test_importance_finds_the_used_columns(market: dict) -> None:
    lw = market["lw"]
    imp = column_importance(lw.predict, lw.stat_spec)
    assert imp.shape == (4,) and imp.sum() == pytest.approx(1.0)
    assert int(np.argmax(imp)) == 0  # departure delay drives the target


def test_with_a_real_learnware_package(tmp_path, market: dict) -> None:
    from learndock.package import write_package
    from learndock.package.learnware import load_learnware

    X, y = market["X"], market["y"]
    lw = market["lw"]
    write_package(tmp_path / "pkg", lw.model, name="delays", spec=lw.stat_spec,
                  feature_names=["delay", "distance", "ewr", "hour"],
                  semantic={"description": "Arrival delay from schedule.",
                            "data_type": "Table", "task_type": "Regression",
                            "scenarios": ["Traffic"],
                            "input": {"dimension": 4, "descriptions": dict(enumerate(DESC))},
                            "output": {"dimension": 1,
                                       "descriptions": {0: "arrival delay (minutes)"}}})
    real = load_learnware(tmp_path / "pkg")
    Xu, descs = user_view(X)
    br = market["space"].bridge_columns(market["space"].match(descs, RKMETableSpec.fit(Xu, 30)),
                                        "flights/a")
    r = HeteroMapReuser(real, br).fit(Xu)  # task read from the semantic spec
    assert r.task_ == "regression"
    assert r.predict(Xu[:20]).shape == (20,)
    assert np.isfinite(r.score(Xu[:200], y[:200]))


class CLW:
    """A minimal classification learnware (labels 0/1)."""

    def __init__(self, X: np.ndarray, y: np.ndarray) -> None:
        from sklearn.ensemble import HistGradientBoostingClassifier

        self.model = HistGradientBoostingClassifier(max_iter=40, random_state=0).fit(X, y)
        self.stat_spec = RKMETableSpec.fit(X, 40, random_state=0)
        self.labels = [0, 1]

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.model.predict(X)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return self.model.predict_proba(X)


def test_classification_reusers() -> None:
    rng = np.random.default_rng(7)
    X = rng.normal(size=(1200, 3))
    y = (X[:, 0] + 0.5 * X[:, 1] > 0).astype(int)
    lw = CLW(X, y)
    space = SystemSpace(HashingEmbedder())
    space.add_island("c", ["signal one", "signal two", "noise"], [lw.stat_spec])
    Xu = X[:, [1, 0]]  # the user lacks the noise column, order swapped
    br = space.bridge_columns(space.match(["signal two", "signal one"],
                                         RKMETableSpec.fit(Xu, 40)), "c")
    r = HeteroMapReuser(lw, br, task="classification").fit(Xu)
    proba = r.predict_proba(Xu)
    assert proba.shape == (1200, 2) and np.allclose(proba.sum(axis=1), 1.0)
    assert r.score(Xu, y) > 0.9
    ft = HeteroFinetuneReuser(lw, br, task="classification").fit(Xu[:60], y[:60])
    assert ft.choice_ in ("mapped", "stacked", "own") and ft.score(Xu[600:], y[600:]) > 0.85
    assert ft.predict_proba(Xu[:5]).shape == (5, 2)
