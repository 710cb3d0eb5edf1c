"""A user's spec is checked against the caps before any kernel work, and no NaN/inf ever
reaches a search result."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select, update

import learndock.search.statistical as statistical
from learndock.errors import SpecError
from learndock.market import Market
from learndock.market import schema as t
from learndock.spec import GaussianKernel, RKMETableSpec
from learndock.spec.kernels import RandomFourierFeatures
from market_helpers import class_rows, shared_kernel, user_spec

pytest_plugins = ["market_helpers"]


@pytest.fixture(scope="module")
def two(tmp_path_factory: pytest.TempPathFactory, digits_zips: dict) -> Iterator[Market]:
    with Market(tmp_path_factory.mktemp("caps") / "home") as m:
        for classes in ((5, 6), (7, 8, 9)):
            assert m.add(digits_zips[classes]).accepted
        yield m


@pytest.fixture
def no_kernel_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any kernel block, random-feature map or self inner product fails the test."""
    def kernel_work(*a: object, **kw: object) -> None:
        raise AssertionError("kernel work on a spec that should have been refused")

    monkeypatch.setattr(statistical, "sq_dists", kernel_work)
    monkeypatch.setattr(RandomFourierFeatures, "transform", kernel_work)
    monkeypatch.setattr(RKMETableSpec, "self_inner", property(kernel_work))


def _spec(z: np.ndarray, kernel: GaussianKernel) -> RKMETableSpec:
    return RKMETableSpec(z, np.full(len(z), 1.0 / len(z)), kernel)


def test_a_20000_point_user_spec_is_refused_fast(two: Market, no_kernel_work: None) -> None:
    big = _spec(np.random.default_rng(0).normal(size=(20_000, 64)), shared_kernel())
    t0 = time.perf_counter()
    with pytest.raises(SpecError, match="20000 reduced points.*MAX_USER_SPEC_POINTS"):
        two.search(spec=big)
    assert time.perf_counter() - t0 < 2.0


def test_an_oversized_spec_file_is_refused(two: Market, no_kernel_work: None,
                                           tmp_path: Path) -> None:
    kernel = GaussianKernel(0.25, np.ones(4))
    path = _spec(np.random.default_rng(0).normal(size=(20_000, 4)), kernel).save(
        tmp_path / "big.json")
    with pytest.raises(SpecError, match="20000"):
        two.search(spec=path)
    with pytest.raises(SpecError, match="20000"):
        two.search(spec=str(path))


def test_huge_coordinates_are_refused(two: Market, no_kernel_work: None) -> None:
    z = np.random.default_rng(0).normal(size=(10, 64))
    z[3, 7] = 1e200  # finite, but squared distances overflow to inf
    with pytest.raises(SpecError, match="coordinates"):
        two.search(spec=_spec(z, shared_kernel()))


def test_a_kernel_outside_the_gamma_range_is_refused(two: Market, no_kernel_work: None) -> None:
    z = np.random.default_rng(0).normal(size=(10, 64))
    with pytest.raises(SpecError, match="gamma"):
        two.search(spec=_spec(z, GaussianKernel(1e9, shared_kernel().scale)))


def test_non_finite_scores_are_dropped_with_an_explanation(two: Market) -> None:
    ids = {i.name: i.id for i in two.list().items}
    corrupt = ids["digits-789"]
    X, _ = class_rows((5, 6), train=False)
    spec = user_spec(X)
    assert {s.learnware_id for s in two.search(spec=spec).single} == set(ids.values())
    row = t.specs.c.learnware_id == corrupt
    with two.engine.begin() as conn:  # a stored spec whose self inner product is infinite
        (original,) = conn.execute(select(t.specs.c.self_inner).where(row)).one()
        conn.execute(update(t.specs).where(row).values(self_inner=math.inf))
    try:
        res = two.search(spec=spec)
    finally:
        with two.engine.begin() as conn:
            conn.execute(update(t.specs).where(row).values(self_inner=original))
    assert [s.learnware_id for s in res.single] == [ids["digits-56"]]
    assert all(math.isfinite(s.score) and math.isfinite(s.mmd) for s in res.single)
    assert any("dropped 1" in line and "not a finite" in line for line in res.explanation), (
        res.explanation)
    assert res.mixture is None  # one finite candidate left: no mixture to propose
    json.dumps(res.to_dict(), allow_nan=False)
