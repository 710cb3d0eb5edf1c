"""The fast RKME table fit: numpy k-means++, the active-set simplex QP, convergence, lazy imports.

Speed itself is measured by ``python -m benchmarks.spec_speed`` (BENCHMARKS.md); these tests
check the pieces it relies on and that the fit still finds good specs.
"""

from __future__ import annotations

import json
import subprocess
import sys

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from learndock.spec import RKMETableSpec
from learndock.spec.kmeans import kmeans_plusplus
from learndock.spec.qp import simplex_qp
from learndock.spec.simplex import simplex_qp_active_set


# ---------------------------------------------------------------------- k-means++
def _blobs(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = np.array([[0.0, 0.0], [20.0, 0.0], [0.0, 20.0], [20.0, 20.0]])
    labels = rng.integers(0, 4, 800)
    return centres[labels] + rng.normal(scale=0.5, size=(800, 2)), labels


def test_kmeans_plusplus_picks_one_row_per_separated_blob():
    X, labels = _blobs()
    for seed in range(5):
        C = kmeans_plusplus(X, 4, random_state=seed)
        rows = [int(np.flatnonzero(np.equal(X, c).all(axis=1))[0]) for c in C]  # picks are rows
        assert sorted(labels[rows].tolist()) == [0, 1, 2, 3]


def test_kmeans_plusplus_is_seeded_and_checks_its_input():
    X, _ = _blobs(1)
    a = kmeans_plusplus(X, 10, random_state=3)
    assert np.array_equal(a, kmeans_plusplus(X, 10, random_state=3))
    assert not np.array_equal(a, kmeans_plusplus(X, 10, random_state=4))
    assert len({tuple(r) for r in a}) == 10  # distinct rows
    with pytest.raises(ValueError, match="n_clusters"):
        kmeans_plusplus(X[:5], 6)
    with pytest.raises(ValueError, match="2-D"):
        kmeans_plusplus(np.zeros(5), 1)
    # all rows equal: still k picks, no division by a zero potential
    assert kmeans_plusplus(np.ones((6, 2)), 3).shape == (3, 2)


def test_kmeans_plusplus_potential_beats_random_rows():
    X, _ = _blobs(2)
    X = np.vstack([X, np.random.default_rng(0).normal(scale=8, size=(400, 2)) + 10])

    def potential(C):
        return ((X[:, None, :] - C[None]) ** 2).sum(-1).min(axis=1).sum()

    pp = np.median([potential(kmeans_plusplus(X, 12, random_state=s)) for s in range(5)])
    rnd = np.median([potential(X[np.random.default_rng(s).choice(len(X), 12, replace=False)])
                     for s in range(5)])
    assert pp < 0.7 * rnd


# ---------------------------------------------------------------------- simplex QP
def _qp(G, h, w):
    return float(w @ G @ w - 2 * h @ w)


@settings(max_examples=60, deadline=None)
@given(
    st.integers(2, 25).flatmap(
        lambda k: st.tuples(
            hnp.arrays(np.float64, (k, k + 2), elements=st.floats(-3, 3, allow_subnormal=False)),
            hnp.arrays(np.float64, (k,), elements=st.floats(-3, 3, allow_subnormal=False)),
        )
    )
)
def test_active_set_matches_the_interior_point_solver(args):
    A, h = args
    G = A @ A.T  # PSD, often singular
    w = simplex_qp_active_set(G, h)
    assert np.all(w >= 0) and w.sum() == pytest.approx(1.0, abs=1e-9)
    ref = simplex_qp(G, h)
    scale = 1.0 + np.abs(G).max() + np.abs(h).max()
    assert _qp(G, h, w) <= _qp(G, h, ref) + 1e-7 * scale
    # a warm start from any feasible point reaches the same optimum
    w2 = simplex_qp_active_set(G, h, start=np.random.default_rng(0).dirichlet(np.ones(len(h))))
    assert _qp(G, h, w2) == pytest.approx(_qp(G, h, w), abs=1e-7 * scale)


def test_active_set_known_solution_and_checks():
    G = np.eye(3)
    h = np.array([1.0, 0.0, -1.0])
    # min |w|^2 - 2 h.w on the simplex: the vertex e_1 (KKT: 2 w - 2 h + nu >= 0, = 0 on w > 0)
    w = simplex_qp_active_set(G, h)
    np.testing.assert_allclose(w, [1.0, 0.0, 0.0], atol=1e-9)  # up to the 1e-10 ridge
    np.testing.assert_allclose(simplex_qp_active_set(G, np.zeros(3)), [1 / 3] * 3, atol=1e-12)
    assert simplex_qp_active_set(np.ones((1, 1)), np.ones(1)).tolist() == [1.0]
    with pytest.raises(ValueError, match="shapes"):
        simplex_qp_active_set(np.eye(3), np.ones(2))


# ---------------------------------------------------------------------- the fit
def test_fit_converges_by_its_rule_and_beats_its_start(digits):
    X = digits[0]
    spec = RKMETableSpec.fit(X, 50, random_state=0)
    info = spec.fit_info
    assert info["converged"] is True and 1 <= info["rounds"] < 20
    hist = info["mmd2_history"]
    assert hist[-1] < 0.5 * hist[0]  # the optimisation, not the k-means++ start, makes the spec
    rows = X[np.random.default_rng(0).choice(len(X), 50, replace=False)]
    random_rows = RKMETableSpec(rows, np.full(50, 1 / 50), spec.kernel).mmd2_to_data(X)
    assert spec.mmd2_to_data(X) < 0.25 * random_rows


def test_fit_respects_a_tighter_tolerance(digits):
    X = digits[0]
    loose = RKMETableSpec.fit(X, 30, random_state=0, tol=10.0)
    tight = RKMETableSpec.fit(X, 30, random_state=0, tol=1e-2)
    assert loose.fit_info["rounds"] < tight.fit_info["rounds"]
    assert tight.mmd2_to_data(X) < loose.mmd2_to_data(X)


def test_large_table_reports_its_sample_and_solves_beta_on_all_rows():
    rng = np.random.default_rng(1)
    X = np.vstack([rng.normal(size=(6000, 3)), rng.normal(size=(2000, 3)) + 4.0])
    spec = RKMETableSpec.fit(X, 20, random_state=0)
    assert spec.fit_info["optimisation_rows"] == 2000
    # the weights follow the 3:1 mass of the two blobs
    near_second = np.linalg.norm(spec.z - 4.0, axis=1) < np.linalg.norm(spec.z, axis=1)
    assert spec.beta[near_second].sum() == pytest.approx(0.25, abs=0.05)


def test_spec_table_imports_only_numpy_code():
    """`learndock spec table` must start fast: fitting a table spec may not import scipy's
    optimiser, scikit-learn, clarabel, tqdm, torch or pydantic (each costs 0.1-2 s)."""
    code = (
        "import sys, json, numpy as np\n"
        "from learndock.spec import RKMETableSpec\n"
        "RKMETableSpec.fit(np.random.default_rng(0).normal(size=(300, 4)), 10)\n"
        "heavy = ('scipy', 'sklearn', 'clarabel', 'tqdm', 'torch', 'pydantic')\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules} & set(heavy))))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(r.stdout) == []


def test_spec_table_process_loads_no_other_command_module(tmp_path):
    """`learndock spec table` registers only the commands of `learndock.cli.main`: importing
    the server, client and market command modules would cost ~0.1 s of a 0.6 s budget."""
    X = np.random.default_rng(0).normal(size=(300, 4))
    np.save(tmp_path / "x.npy", X)
    out = tmp_path / "spec.json"
    code = (
        "import sys, json\n"
        "from learndock.cli.main import main\n"
        f"sys.argv = ['learndock', 'spec', 'table', {str(tmp_path / 'x.npy')!r}, '-o', "
        f"{str(out)!r}, '-k', '10', '--json']\n"
        "try:\n"
        "    main()\n"
        "except SystemExit as exc:\n"
        "    assert not exc.code, exc.code\n"
        "mods = ('client_cmd', 'server_cmd', 'market_cmd', 'reuse_cmd', 'init_cmd')\n"
        "print(json.dumps([m for m in mods if 'learndock.cli.' + m in sys.modules]))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(r.stdout.strip().splitlines()[-1]) == []
    spec = RKMETableSpec.load(out)
    assert spec.n_points == 10 and spec.fit_info["converged"] is True
