"""The RKME table fit's stopping rule and staged optimisation sample (issue #15).

Quality, not speed: every assertion is on MMD^2, the fit's diagnostics or determinism; times are
measured by ``python -m benchmarks.spec_speed``.
"""

from __future__ import annotations

import numpy as np
import pytest

import learndock.spec.table as table
from learndock.spec import RKMETableSpec


def _mixture(n: int, seed: int = 0) -> np.ndarray:
    """A 5-d mixture with unequal, anisotropic components (no point set matches it exactly)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=3.0, size=(6, 5))
    comp = rng.choice(6, size=n, p=[0.3, 0.2, 0.2, 0.15, 0.1, 0.05])
    return centres[comp] + rng.normal(size=(n, 5)) * rng.uniform(0.3, 1.5, size=(6, 5))[comp]


def test_stage_sizes():
    assert table._stage_sizes(1_500, 2_000, 32_000) == [1_500]  # small: all rows, one stage
    assert table._stage_sizes(10_000, 2_000, 32_000) == [2_000]  # a stage may cost ~1 pass
    assert table._stage_sizes(1_000_000, 2_000, 32_000) == [2_000, 8_000]
    assert table._stage_sizes(10**8, 2_000, 32_000) == [2_000, 8_000, 32_000]  # the cap


def test_fit_with_all_rows_gets_close_to_a_long_fit(digits):
    """m = n: the rule stops within a few per cent of what 10x tighter, longer fits reach, on
    every seed (it used to stop at 2x on two seeds in five: a point that drifted off the data
    got an unbounded mean-shift step, which capped every other point's step)."""
    X = digits[0][:900]
    long = RKMETableSpec.fit(X, 40, random_state=0, tol=1e-4, max_iter=200).mmd2_to_data(X)
    for seed in range(4):
        spec = RKMETableSpec.fit(X, 40, random_state=seed)
        assert spec.fit_info["converged"] is True
        assert spec.fit_info["optimisation_rows"] == 900
        assert spec.mmd2_to_data(X) <= 1.10 * long


def test_staged_sample_is_no_worse_than_its_first_stage(monkeypatch):
    X = _mixture(24_000)
    monkeypatch.setattr(table, "STAGE_ROWS_DIVISOR", 2)  # let a small table have stages
    one = RKMETableSpec.fit(X, 12, random_state=0, opt_rows=300, max_opt_rows=300)
    staged = RKMETableSpec.fit(X, 12, random_state=0, opt_rows=300)
    info = staged.fit_info
    assert [s["rows"] for s in info["stages"]] == [300, 1_200, 4_800]
    assert info["optimisation_rows"] == 4_800
    assert info["converged"] is True
    assert all(s["stop"] in ("resolution", "no descent") for s in info["stages"])
    assert all(s["gain_threshold"] == pytest.approx(0.02 / s["rows"]) for s in info["stages"])
    assert info["rounds"] == sum(s["rounds"] for s in info["stages"])
    assert info["evaluations"] == sum(s["evaluations"] for s in info["stages"]) + 1  # + beta
    assert len(info["mmd2_history"]) == info["rounds"] + 1
    assert [s["rows"] for s in one.fit_info["stages"]] == [300]
    a, b = (s.mmd2_to_data(X, max_exact=3_000) for s in (one, staged))
    assert b <= a  # a larger sample never fits the data worse ...
    assert b < 0.9 * a  # ... and here it fits it clearly better (300 rows overfit)


def test_converged_only_when_the_rule_stopped_the_last_stage(monkeypatch):
    X = _mixture(4_000, seed=1)
    monkeypatch.setattr(table, "STAGE_ROWS_DIVISOR", 2)
    capped = RKMETableSpec.fit(X, 10, random_state=0, opt_rows=250, max_iter=1, tol=0.0)
    assert capped.fit_info["converged"] is False
    assert len(capped.fit_info["stages"]) == 1  # the round limit ends the fit, not the stage
    assert capped.fit_info["stages"][0]["stop"] == "max_iter"
    done = RKMETableSpec.fit(X, 10, random_state=0, opt_rows=250)
    assert done.fit_info["converged"] is True
    assert len(done.fit_info["stages"]) == len(table._stage_sizes(4_000, 250, 32_000))


def test_fit_is_deterministic_for_a_seed(monkeypatch):
    X = _mixture(6_000, seed=2)
    monkeypatch.setattr(table, "STAGE_ROWS_DIVISOR", 2)
    a = RKMETableSpec.fit(X, 10, random_state=7, opt_rows=400)
    b = RKMETableSpec.fit(X, 10, random_state=7, opt_rows=400)
    c = RKMETableSpec.fit(X, 10, random_state=8, opt_rows=400)
    assert len(a.fit_info["stages"]) == 2
    assert a.fingerprint() == b.fingerprint()
    assert a.fit_info["mmd2_history"] == b.fit_info["mmd2_history"]
    assert a.fingerprint() != c.fingerprint()


def test_no_reduced_point_leaves_the_data(digits):
    """Every reduced point keeps data within a couple of kernel widths (the failure mode the
    preconditioner floor prevents: a point pushed off the data, c_j ~ 0, moving further)."""
    X = digits[0]
    for seed in (0, 4):
        spec = RKMETableSpec.fit(X, 100, random_state=seed)
        k = spec.kernel.gram(spec.z, X)
        assert k.max(axis=1).min() > np.exp(-4.0)
