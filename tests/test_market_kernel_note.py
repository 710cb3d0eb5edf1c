"""Degenerate kernels: the market does not adopt one for an island, and says when a search's
scores carry little meaning.

The reference engine fixes gamma = 0.1 on raw features; on 8x8 digit pixels (0..16) every two
points then look unrelated and every score is ~0. A first spec fitted that way does not give
its island that kernel: the market uses its default (the reduced set's spread, gamma 1/d), so
the same specs are rescored to meaningful values. A search whose island kernel *is* degenerate
(set by an operator) is still answered, with a warning; a sensible kernel gets none."""

from __future__ import annotations

import numpy as np

from learndock.market import Market
from learndock.package import pack, write_package
from learndock.spec import RKMETableSpec
from learndock.spec.kernels import GaussianKernel
from market_helpers import class_rows, digits_model, semantic, shared_kernel

RAW_PIXELS_GAMMA_01 = GaussianKernel(0.1, np.full(64, 1 / 16))  # X/16 scaled back to 0..16


def _market_with(tmp_path, kernel: GaussianKernel) -> tuple[Market, RKMETableSpec, list[str]]:
    X, _ = class_rows((1, 2, 3), train=True)
    spec = RKMETableSpec.fit(X, 20, kernel=kernel, max_iter=3, random_state=0)
    d = tmp_path / "pkg"
    write_package(d, digits_model((1, 2, 3)), name="digits-123",
                  semantic=semantic(64, name="digits-123", description="digits 1, 2 and 3", n_out=3), spec=spec)
    market = Market(tmp_path / "home")
    pack(d, tmp_path / "p.zip")
    added = market.add(tmp_path / "p.zip")
    assert added.accepted
    notes = [i.message for i in added.report.items if i.name == "island"]
    Xu, _ = class_rows((1, 2), train=False)
    return market, RKMETableSpec.fit(Xu, 20, kernel=kernel, max_iter=3, random_state=0), notes


def test_degenerate_fitting_kernel_is_not_the_islands(tmp_path) -> None:
    market, user, notes = _market_with(tmp_path, RAW_PIXELS_GAMMA_01)
    assert any("degenerate" in n and "refit" in n for n in notes), notes
    with market:
        (island,) = market.islands()
        kernel = market.island_kernel(island.key)
        assert kernel.kernel != RAW_PIXELS_GAMMA_01
        assert kernel.kernel.gamma == 1 / 64
        assert "default" in kernel.history[0]["reason"]
        res = market.search(None, spec=user)
    assert [m.name for m in res.single] == ["digits-123"]
    assert res.single[0].score > 0.5  # rescored: a good match now looks like one
    assert not any("carry little meaning" in e for e in res.explanation), res.explanation


def test_degenerate_island_kernel_is_searched_with_a_warning(tmp_path) -> None:
    market, user, _ = _market_with(tmp_path, RAW_PIXELS_GAMMA_01)
    with market:
        (island,) = market.islands()
        choice = market.revise_kernel(island.key, RAW_PIXELS_GAMMA_01)  # the operator insists
        assert choice.changed and market.island_kernel(island.key).version == 2
        res = market.search(None, spec=user)
    assert [m.name for m in res.single] == ["digits-123"]
    assert res.single[0].score < 0.05  # the symptom: a near-zero score for a good match
    assert any("carry little meaning" in e for e in res.explanation), res.explanation


def test_sensible_kernel_gets_no_warning(tmp_path) -> None:
    market, user, notes = _market_with(tmp_path, shared_kernel())
    assert notes == []
    with market:
        res = market.search(None, spec=user)
    assert [m.name for m in res.single] == ["digits-123"]
    assert res.single[0].score > 0.5
    assert not any("carry little meaning" in e for e in res.explanation), res.explanation
