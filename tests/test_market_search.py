"""Search: tag filters, full-text ranking and statistical (RKME) search with mixtures, on a
market of real learnwares (sklearn digits class-subset classifiers and small regressors)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import Ridge

from learndock.market import Market
from learndock.package import pack, write_package
from learndock.spec import RandomConvEncoder, RKMEImageSpec, RKMETableSpec, SemanticQuery
from market_helpers import (
    BACKENDS,
    DIGIT_SETS,
    backend_market,
    class_rows,
    digits_model,
    digits_package,
    search_ids,
    semantic,
    shared_kernel,
    small_spec,
    small_table,
    user_spec,
)

pytest_plugins = ["market_helpers"]

#: (name, description, scenarios, license) of the three 4-feature regressors.
REGRESSORS = [
    ("texas-births", "Predicts the number of births per day in Texas from calendar features.",
     ("Health",), "CC-BY-4.0"),
    ("california-births", "Daily birth counts for California hospitals.",
     ("Health", "Business"), "MIT"),
    ("diabetes-progression", "Disease progression of diabetes patients one year ahead.",
     ("Health",), "Apache-2.0"),
]
#: Tags of the digits classifiers (all Table / Classification).
DIGIT_TAGS = {
    (0, 1, 2): {"scenarios": ("Education",), "license": "MIT"},
    (2, 3, 4): {"scenarios": ("Education",), "license": "MIT"},
    (5, 6): {"scenarios": ("Education", "Computer"), "license": "MIT"},
    (7, 8, 9): {"scenarios": ("Business",), "license": "Apache-2.0"},
    (1, 4, 7): {"scenarios": ("Education",), "license": "MIT", "library": "Others"},
}


def _regressor_zip(w: Path, name: str, description: str, scenarios: tuple, lic: str) -> Path:
    X = small_table()
    model = Ridge().fit(X, X @ np.array([1.0, -2.0, 0.5, 3.0]))
    d = w / name
    sem = semantic(4, name=name, description=description, task="Regression", n_out=1,
                   scenarios=scenarios, license=lic)
    write_package(d, model, name=name, semantic=sem, spec=small_spec())
    pack(d, w / f"{name}.zip")
    return w / f"{name}.zip"


def _image_spec(X: np.ndarray) -> RKMEImageSpec:
    return RKMEImageSpec.fit(X.reshape(-1, 8, 8), 20, encoder=RandomConvEncoder(device="cpu"))


def _image_zip(w: Path) -> Path:
    """The (0, 1, 2) digits classifier on 8x8 images: an Image learnware (its own island)."""
    name = "digits-012-image"
    d = w / name
    X, _ = class_rows((0, 1, 2), train=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        write_package(
            d, digits_model((0, 1, 2)), name=name, spec=_image_spec(X), input_shape=[8, 8],
            semantic=semantic(64, name=name, description="Handwritten digit images, 8x8 pixels.",
                              n_out=3, data_type="Image"),
        )
    pack(d, w / f"{name}.zip")
    return w / f"{name}.zip"


@pytest.fixture(scope="module", params=BACKENDS)
def smarket(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """(market, ids by key): digits classifiers, an Image-typed one and three regressors."""
    w = tmp_path_factory.mktemp(f"search-{request.param}")
    with backend_market(request.param, w / "home") as m:
        ids: dict = {}
        for classes in DIGIT_SETS:
            r = m.add(digits_package(w, classes, **DIGIT_TAGS[classes]))
            assert r.accepted, r.report.text()
            ids[classes] = r.learnware_id
        r = m.add(_image_zip(w))
        assert r.accepted, r.report.text()
        ids["image"] = r.learnware_id
        for name, desc, scen, lic in REGRESSORS:
            r = m.add(_regressor_zip(w, name, desc, scen, lic))
            assert r.accepted, r.report.text()
            ids[name] = r.learnware_id
        yield m, ids


DIGIT_KEYS = list(DIGIT_SETS)
REG_KEYS = [r[0] for r in REGRESSORS]


# ---------------------------------------------------------------------- tags


def test_single_valued_tag_filters(smarket) -> None:
    m, ids = smarket

    def found(q: dict) -> set[str]:
        via_search = set(search_ids(m, q, top_k=100))
        via_list = {i.id for i in m.list(q).items}
        assert via_search == via_list, q
        return via_search

    everything = set(ids.values())
    assert found({}) == everything
    assert found({"data_type": "Image"}) == {ids["image"]}
    assert found({"data_type": "Table"}) == everything - {ids["image"]}
    assert found({"data_type": ["Table", "Image"]}) == everything
    assert found({"task_type": "Regression"}) == {ids[k] for k in REG_KEYS}
    assert found({"task_type": "Classification"}) == {ids[k] for k in DIGIT_KEYS} | {ids["image"]}
    assert found({"library_type": "Others"}) == {ids[(1, 4, 7)]}
    assert found({"library_type": "Scikit-learn", "task_type": "Classification"}) == (
        {ids[k] for k in DIGIT_KEYS if k != (1, 4, 7)} | {ids["image"]}
    )
    assert found({"license": "CC-BY-4.0"}) == {ids["texas-births"]}
    assert found({"license": ["Apache-2.0"]}) == {ids[(7, 8, 9)], ids["diabetes-progression"]}
    assert found({"license": "GPL-3.0"}) == set()
    assert found({"task_type": "Regression", "license": "MIT"}) == {ids["california-births"]}
    # a SemanticQuery object works the same as its dict
    q = SemanticQuery.parse({"task_type": "Regression", "license": "MIT"})
    assert set(search_ids(m, q)) == {ids["california-births"]}


def test_scenarios_overlap_and_input_dimension(smarket) -> None:
    m, ids = smarket

    def found(q: dict) -> set[str]:
        return set(search_ids(m, q, top_k=100))

    assert found({"scenarios": ["Business"]}) == {ids[(7, 8, 9)], ids["california-births"]}
    assert found({"scenarios": ["Computer", "Business"]}) == {
        ids[(5, 6)], ids[(7, 8, 9)], ids["california-births"]
    }
    assert found({"scenarios": "Health"}) == {ids[k] for k in REG_KEYS}
    assert found({"scenarios": ["Traffic"]}) == set()
    assert found({"input_dimension": 4}) == {ids[k] for k in REG_KEYS}
    assert found({"input_dimension": 64, "data_type": "Table"}) == {ids[k] for k in DIGIT_KEYS}
    assert found({"input_dimension": 7}) == set()
    assert found({"output_dimension": 2}) == {ids[(5, 6)]}
    assert found({"input_dimension": 4, "scenarios": ["Business"]}) == {ids["california-births"]}


# ---------------------------------------------------------------------- full text


def test_full_text_ranks_the_matching_description_first(smarket) -> None:
    m, ids = smarket
    res = m.search({"text": "birth counts per day in Texas"})
    ranked = [s.learnware_id for s in res.single]
    assert ranked[0] == ids["texas-births"]
    assert ranked[1] == ids["california-births"]
    assert set(ranked) == {ids["texas-births"], ids["california-births"]}
    assert res.single[0].text_rank > res.single[1].text_rank > 0
    assert any("full-text" in line for line in res.explanation)

    ranked = search_ids(m, {"text": "diabetes patients"})
    assert ranked[0] == ids["diabetes-progression"]
    ranked = search_ids(m, {"text": "handwritten digits 5 and 6"})
    assert ranked[0] in {ids[k] for k in DIGIT_KEYS} | {ids["image"]}
    # text ranks within the tag filters
    assert search_ids(m, {"text": "births in Texas", "license": "MIT"}) == [
        ids["california-births"]
    ]


# ---------------------------------------------------------------------- statistical


@pytest.mark.parametrize("classes", DIGIT_SETS, ids=lambda c: "".join(map(str, c)))
def test_user_finds_the_learnware_of_their_classes_first(smarket, classes) -> None:
    m, ids = smarket
    X, _ = class_rows(classes, train=False)
    res = m.search(spec=user_spec(X))
    assert res.best is not None and res.best.learnware_id == ids[classes]
    found = [s.learnware_id for s in res.single]
    # only the Table island of the shared kernel: the Image-typed and 4-d learnwares are out
    assert set(found) == {ids[k] for k in DIGIT_KEYS}
    scores = [s.score for s in res.single]
    mmds = [s.mmd for s in res.single]
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert mmds == sorted(mmds)
    assert res.single[0].score > 0.9 and res.single[0].score - res.single[1].score > 0.05
    assert all(s.island == res.single[0].island for s in res.single)
    assert all(s.version == 1 for s in res.single)
    # one distribution: a mixture does not help enough to be recommended
    assert res.mixture is not None and res.mixture.recommended is False
    assert res.learnware_ids == [ids[classes]]


def test_filters_restrict_statistical_search(smarket) -> None:
    m, ids = smarket
    X, _ = class_rows((5, 6), train=False)
    spec = user_spec(X)
    assert search_ids(m, {"license": "Apache-2.0"}, spec=spec) == [ids[(7, 8, 9)]]
    assert search_ids(m, {"scenarios": ["Business", "Computer"]}, spec=spec) == [
        ids[(5, 6)], ids[(7, 8, 9)]
    ]
    # an image spec searches the Image island only; a table spec asking for images gets nothing
    X012, _ = class_rows((0, 1, 2), train=False)
    assert search_ids(m, spec=_image_spec(X012)) == [ids["image"]]
    assert search_ids(m, {"data_type": "Image"}, spec=user_spec(X012)) == []
    assert search_ids(m, spec=spec, top_k=2) == search_ids(m, spec=spec)[:2]


def test_kernel_for_returns_the_shared_kernel(smarket) -> None:
    m, _ = smarket
    assert m.kernel_for(64) == shared_kernel()
    assert m.kernel_for(64, data_type="Image") is None  # image specs: the encoder's kernel
    assert m.kernel_for(64, feature_names=[f"f{i}" for i in range(64)]) == shared_kernel()
    assert m.kernel_for(64, feature_names=["other"] * 64) is None
    assert m.kernel_for(5) is None
    islands = {(i.data_type, i.dimension): i.n_learnwares for i in m.islands()}
    assert islands == {("Table", 64): 5, ("Image", 512): 1, ("Table", 4): 3}
    (image_island,) = [i for i in m.islands() if i.data_type == "Image"]
    assert image_island.encoder == RandomConvEncoder().identity


def test_spec_with_another_kernel_is_rescored_under_the_islands(smarket) -> None:
    m, ids = smarket
    X, _ = class_rows((5, 6), train=False)
    own = RKMETableSpec.fit(X, 20, max_iter=3)  # kernel scaled to the user's own data
    assert own.kernel != shared_kernel()
    res = m.search(spec=own)
    # the same point set under the island's kernel: the right learnware still comes first
    assert res.single[0].learnware_id == ids[(5, 6)]
    refit = m.search(spec=RKMETableSpec.fit(X, 20, max_iter=3, kernel=m.kernel_for(64)))
    assert refit.single[0].learnware_id == ids[(5, 6)]
    # the rescored spec's MMD is the one under the island's kernel
    from dataclasses import replace

    island_view = replace(own, kernel=m.kernel_for(64))
    with m.load(ids[(5, 6)]) as lw:
        lw_spec = next(iter(lw.specs.values()))
    assert res.single[0].mmd == pytest.approx(island_view.mmd(lw_spec), rel=1e-6)
    notes = [line for line in res.explanation if "rescored under the island's kernel" in line]
    assert notes and "learndock market kernel" in notes[0], res.explanation
    assert not any("rescored" in line for line in refit.explanation)
    # with no island of that dimension at all, the explanation says so
    res = m.search(spec=RKMETableSpec.fit(small_table()[:, :3], 5, max_iter=1))
    assert res.single == []
    assert any("dimension 3" in line for line in res.explanation), res.explanation


@pytest.mark.parametrize(("major", "minor"), [((5, 6), (7, 8, 9)), ((0, 1, 2), (7, 8, 9))],
                         ids=["56+789", "012+789"])
def test_mixture_of_two_class_sets(smarket, major, minor) -> None:
    m, ids = smarket
    rng = np.random.default_rng(0)
    A, _ = class_rows(major, train=False)
    B, _ = class_rows(minor, train=False)
    n = 150
    n_major = int(0.7 * n)
    X = np.vstack([A[rng.choice(len(A), n_major, replace=False)],
                   B[rng.choice(len(B), n - n_major, replace=False)]])
    res = m.search(spec=user_spec(X))
    mix = res.mixture
    assert mix is not None and mix.recommended, res.explanation
    weights = dict(zip(mix.learnware_ids, mix.weights, strict=True))
    assert ids[major] in weights and ids[minor] in weights
    assert weights[ids[major]] == pytest.approx(0.7, abs=0.15)
    assert weights[ids[minor]] == pytest.approx(0.3, abs=0.15)
    assert mix.learnware_ids[:2] == [ids[major], ids[minor]]
    assert sum(mix.weights) == pytest.approx(1.0, abs=1e-6)
    assert mix.mmd < mix.best_single_mmd and mix.improvement >= 0.2
    assert 0.0 <= mix.score <= 1.0
    assert res.learnware_ids == mix.learnware_ids
    assert any("recommended" in line for line in res.explanation)
    # max_mixture=1: no mixture is proposed
    assert m.search(spec=user_spec(X), max_mixture=1).mixture is None


def test_learnware_spec_with_another_kernel_joins_its_feature_spaces_island(
    market: Market, digits_zips: dict, tmp_path: Path
) -> None:
    a = market.add(digits_zips[(5, 6)])
    c = market.add(digits_zips[(7, 8, 9)])
    X, _ = class_rows((5, 6), train=True)
    own = RKMETableSpec.fit(X, 20, max_iter=3)  # same feature space, kernel of its own data
    assert own.kernel != shared_kernel()
    d = tmp_path / "own-kernel"
    write_package(
        d, digits_model((5, 6)), name="digits-56-own-kernel", spec=own,
        semantic=semantic(64, name="own kernel", description="Fives and sixes.", n_out=2),
    )
    pack(d, tmp_path / "own-kernel.zip")
    b = market.add(tmp_path / "own-kernel.zip")
    assert a.accepted and b.accepted and c.accepted
    assert a.island == b.island == c.island  # one feature space, one island
    # the report tells the developer how the market scores their spec
    notes = [i for i in b.report.items if i.name == "island"]
    assert len(notes) == 1 and notes[0].ok and "rescored under the island's kernel" in \
        notes[0].message
    assert f"learndock market kernel {a.island}" in notes[0].message
    assert market.island_kernel(a.island).kernel == shared_kernel()  # the first spec's kernel

    # a user of either kernel finds both fives-and-sixes learnwares ahead of 7-8-9
    Xu, _ = class_rows((5, 6), train=False)
    for kernel in (shared_kernel(), own.kernel):
        found = search_ids(market, spec=user_spec(Xu, kernel=kernel))
        assert set(found[:2]) == {a.learnware_id, b.learnware_id}, found
        assert found[2] == c.learnware_id
    assert {i.key: i.n_learnwares for i in market.islands()} == {a.island: 3}


def test_market_decide_reranks_the_shortlist_on_the_users_rows(smarket) -> None:
    m, ids = smarket
    X, y = class_rows((7, 8, 9), train=False)
    res = m.search(spec=user_spec(X), top_k=4)
    decision = m.decide(res, X, top_k=4)
    assert res.decision is decision
    assert [r.learnware_id for r in decision.ranking][0] == ids[(7, 8, 9)]
    assert sorted(r.rank for r in decision.ranking) == list(range(1, len(decision.ranking) + 1))
    assert "decision" in res.to_dict()
