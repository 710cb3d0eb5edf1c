"""RKME table spec: metric properties, fitting, determinism, serialisation, kernels, QP."""

from __future__ import annotations

import json

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import reference_stat_spec_dict
from learndock.errors import KernelMismatchError, SpecError
from learndock.spec import GaussianKernel, RKMETableSpec, load_stat_spec, stat_spec_from_dict
from learndock.spec.kernels import infer_scale
from learndock.spec.qp import simplex_qp
from learndock.spec.table import _Objective, handle_missing

# ---------------------------------------------------------------------- metric properties


def test_mmd_is_zero_on_itself_and_on_an_equal_copy(gauss_spec):
    assert gauss_spec.mmd2(gauss_spec) == 0.0
    copy = RKMETableSpec(gauss_spec.z.copy(), gauss_spec.beta.copy(), gauss_spec.kernel)
    assert copy is not gauss_spec
    assert copy.mmd2(gauss_spec) == pytest.approx(0.0, abs=1e-12)


def test_spec_is_closer_to_its_data_than_to_shifted_data(gauss_spec, gauss):
    own = gauss_spec.mmd2_to_data(gauss)
    shifted = gauss_spec.mmd2_to_data(gauss + 1.0)
    assert 0.0 <= own < 0.01
    assert shifted > 20 * own


def test_spec_closer_to_fresh_sample_than_to_shifted_sample(gauss_spec):
    fresh = np.random.default_rng(1).normal(size=(600, 5))
    k = gauss_spec.kernel
    s_fresh = RKMETableSpec.fit(fresh, 20, kernel=k, random_state=0)
    s_shift = RKMETableSpec.fit(fresh + 1.0, 20, kernel=k, random_state=0)
    same = gauss_spec.mmd2(s_fresh)
    other = gauss_spec.mmd2(s_shift)
    assert 0.0 <= same < other / 10
    assert other == pytest.approx(s_shift.mmd2(gauss_spec), rel=1e-9)  # symmetric
    assert gauss_spec.similarity(s_fresh) > gauss_spec.similarity(s_shift)


def test_digits_spec_identifies_its_data(digits_spec, digits):
    X = digits[0]
    assert digits_spec.mmd2_to_data(X) < digits_spec.mmd2_to_data(X + 0.5) / 10


def test_similarity_range(gauss_spec, gauss):
    assert gauss_spec.similarity(gauss_spec) == pytest.approx(1.0, abs=1e-12)
    far = RKMETableSpec.fit(gauss + 3.0, 10, kernel=gauss_spec.kernel)
    s = gauss_spec.similarity(far)
    assert 0.0 <= s < 0.5
    assert far.similarity(gauss_spec) == pytest.approx(s, rel=1e-9)


SMALL_KERNEL = GaussianKernel(0.5, np.array([1.0, 2.0, 0.5]))


@st.composite
def small_specs(draw):
    k = draw(st.integers(1, 6))
    z = draw(
        hnp.arrays(np.float64, (k, 3), elements=st.floats(-4, 4, allow_subnormal=False))
    )
    w = draw(hnp.arrays(np.float64, (k,), elements=st.floats(0.05, 1.0)))
    return RKMETableSpec(z, w / w.sum(), SMALL_KERNEL)


@given(small_specs(), small_specs(), small_specs())
def test_mmd_metric_properties(a, b, c):
    ab, ba = a.mmd2(b), b.mmd2(a)
    assert ab >= 0.0
    assert ab == pytest.approx(ba, abs=1e-12)
    twin = RKMETableSpec(a.z.copy(), a.beta.copy(), a.kernel)
    assert a.mmd2(twin) == pytest.approx(0.0, abs=1e-12)
    assert a.mmd(c) <= a.mmd(b) + b.mmd(c) + 1e-6  # triangle inequality
    s = a.similarity(b)
    assert 0.0 <= s <= 1.0
    assert a.similarity(a) == pytest.approx(1.0, abs=1e-12)


@settings(max_examples=12)
@given(
    hnp.arrays(
        np.float64,
        st.tuples(st.integers(8, 40), st.integers(1, 4)),
        elements=st.floats(-10, 10, allow_subnormal=False),
    ),
    st.floats(0.1, 3.0),
)
def test_fitted_specs_on_random_data(X, shift):
    a = RKMETableSpec.fit(X, 6, random_state=0)
    b = RKMETableSpec.fit(X + shift, 6, kernel=a.kernel, random_state=0)
    assert a.n_points == min(6, X.shape[0] // 2)
    assert np.all(a.beta >= 0) and a.beta.sum() == pytest.approx(1.0, abs=1e-9)
    assert a.mmd2(b) >= 0.0
    assert a.mmd2(b) == pytest.approx(b.mmd2(a), abs=1e-12)
    assert a.mmd2_to_data(X) >= 0.0
    assert 0.0 <= a.similarity(b) <= 1.0


# ---------------------------------------------------------------------- determinism, JSON


def test_same_data_and_seed_give_identical_spec(gauss, gauss_spec):
    again = RKMETableSpec.fit(gauss, 20, random_state=0)
    assert np.array_equal(again.z, gauss_spec.z)
    assert np.array_equal(again.beta, gauss_spec.beta)
    assert again.fingerprint() == gauss_spec.fingerprint()
    assert again.to_json() == gauss_spec.to_json()


def test_different_seed_gives_different_spec(gauss, gauss_spec):
    other = RKMETableSpec.fit(gauss, 20, random_state=1)
    assert other.fingerprint() != gauss_spec.fingerprint()
    assert not np.array_equal(other.z, gauss_spec.z)
    # ... but the same kernel, and a spec of the same distribution
    assert other.kernel == gauss_spec.kernel
    assert other.mmd2(gauss_spec) < 0.01


def test_json_round_trip_is_bit_exact(tmp_path, digits_spec):
    path = digits_spec.save(tmp_path / "spec.json")
    loaded = RKMETableSpec.load(path)
    assert loaded.z.tobytes() == digits_spec.z.tobytes()
    assert loaded.beta.tobytes() == digits_spec.beta.tobytes()
    assert loaded.kernel == digits_spec.kernel
    assert loaded.kernel.key() == digits_spec.kernel.key()
    assert loaded.fingerprint() == digits_spec.fingerprint()
    assert loaded.n_samples == digits_spec.n_samples == 1797
    assert loaded.fit_info["converged"] == digits_spec.fit_info["converged"]
    assert loaded.to_json() == digits_spec.to_json()
    # the generic loader gives the same spec
    assert load_stat_spec(path).fingerprint() == digits_spec.fingerprint()
    data = json.loads(path.read_text())
    assert data["type"] == "rkme-table" and data["format_version"] == 1
    assert len(data["z"]) == 20 and len(data["z"][0]) == 64


def test_fingerprint_ignores_fit_info_but_not_numbers(gauss_spec):
    same = RKMETableSpec(gauss_spec.z, gauss_spec.beta, gauss_spec.kernel, fit_info={})
    assert same.fingerprint() == gauss_spec.fingerprint()
    z = gauss_spec.z.copy()
    z[0, 0] = np.nextafter(z[0, 0], np.inf)
    assert RKMETableSpec(z, gauss_spec.beta, gauss_spec.kernel).fingerprint() != (
        gauss_spec.fingerprint()
    )


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda d: d.update(type="rkme-video"), "unknown statistical spec type"),
        (lambda d: d.update(type="rkme-image"), "missing its encoder"),
        (lambda d: d.update(format_version=99), "format_version"),
        (lambda d: d.pop("beta"), "missing field 'beta'"),
        (lambda d: d.update(beta=[0.5, 0.5]), "beta has 2 weights"),
        (lambda d: d["kernel"].update(gamma=-1), "gamma must be a positive"),
    ],
)
def test_malformed_spec_json_is_rejected(gauss_spec, mutate, match):
    d = gauss_spec.to_dict()
    mutate(d)
    with pytest.raises(SpecError, match=match):
        stat_spec_from_dict(d)


def test_load_errors_are_spec_errors(tmp_path):
    with pytest.raises(SpecError, match="not found"):
        load_stat_spec(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(SpecError, match="not valid JSON"):
        RKMETableSpec.load(bad)


def test_constructor_validates_invariants():
    k = GaussianKernel.for_dimension(2)
    with pytest.raises(SpecError, match="sum to 1"):
        RKMETableSpec(np.zeros((2, 2)), np.array([0.5, 0.6]), k)
    with pytest.raises(SpecError, match="NaN or inf"):
        RKMETableSpec(np.array([[np.nan, 0.0]]), np.array([1.0]), k)
    with pytest.raises(SpecError, match="dimension 3"):
        RKMETableSpec(np.zeros((1, 3)), np.array([1.0]), k)


# ---------------------------------------------------------------------- reference JSON


def test_loads_reference_rkme_json(tmp_path, gauss_spec):
    ref = reference_stat_spec_dict(gauss_spec.z, gauss_spec.beta, 0.1, 600)
    path = tmp_path / "stat_spec.json"
    path.write_text(json.dumps(ref, separators=(",", ":")))
    spec = load_stat_spec(path)
    assert isinstance(spec, RKMETableSpec)
    assert spec.kernel.gamma == 0.1
    assert np.array_equal(spec.kernel.scale, np.ones(5))
    assert np.array_equal(spec.z, gauss_spec.z)
    assert np.allclose(spec.beta, gauss_spec.beta, rtol=1e-12, atol=0)
    assert spec.n_samples == 600
    assert spec.fit_info == {"source": "reference"}
    # same numbers, different kernel than ours: comparing them must refuse
    with pytest.raises(KernelMismatchError):
        spec.mmd2(gauss_spec)
    assert RKMETableSpec.load(path).fingerprint() == spec.fingerprint()


def test_reference_json_variants():
    z3 = np.arange(24, dtype=float).reshape(3, 2, 4)  # K x (per-sample shape)
    d = {"z": z3.tolist(), "beta": [1.0, 1.0, 2.0], "gamma": 0.5, "num_points": 9,
         "type": "RKMEStatSpecification"}
    spec = stat_spec_from_dict(d)
    assert spec.z.shape == (3, 8)
    assert spec.beta.tolist() == [0.25, 0.25, 0.5]  # normalised onto the simplex
    assert spec.kernel.gamma == 0.5
    with pytest.raises(SpecError, match="negative weights"):
        stat_spec_from_dict({**d, "beta": [1.0, -0.5, 0.5]})
    with pytest.raises(SpecError, match="missing field 'z'"):
        stat_spec_from_dict({k: v for k, v in d.items() if k != "z"})


# ---------------------------------------------------------------------- kernels


def test_kernel_mismatch_on_different_gamma(gauss):
    a = RKMETableSpec.fit(gauss, 10, gamma=0.2)
    b = RKMETableSpec.fit(gauss, 10, gamma=0.4)
    with pytest.raises(KernelMismatchError, match="kernel parameters differ"):
        a.mmd2(b)
    with pytest.raises(KernelMismatchError):
        a.similarity(b)


def test_kernel_mismatch_on_different_scale(gauss):
    a = RKMETableSpec.fit(gauss, 10, scale=1.0)
    b = RKMETableSpec.fit(gauss, 10, scale=2.0)
    assert a.kernel.gamma == b.kernel.gamma
    with pytest.raises(KernelMismatchError, match="kernel-from"):
        a.mmd2(b)


def test_kernel_mismatch_on_different_dimension(gauss, gauss_spec):
    b = RKMETableSpec.fit(gauss[:, :4], 10)
    with pytest.raises(KernelMismatchError, match=r"dimensions differ \(5 vs 4\)"):
        gauss_spec.inner(b)


def test_shared_kernel_makes_specs_comparable(gauss, gauss_spec):
    b = RKMETableSpec.fit(gauss * 4, 10, kernel=gauss_spec.kernel)
    assert b.kernel.key() == gauss_spec.kernel.key()
    assert gauss_spec.mmd2(b) > 0
    with pytest.raises(SpecError, match="kernel is for dimension 5"):
        RKMETableSpec.fit(gauss[:, :3], 10, kernel=gauss_spec.kernel)


def test_infer_scale_snaps_std_to_the_offset_grid():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(2000, 3)) * np.array([1.0, 10.0, 0.1])
    X[:, 2] = 7.0  # constant column -> scale 1
    s = infer_scale(X)
    np.testing.assert_allclose(s, [2**0.25, 2**3.25, 1.0])
    # every non-binary scale is on the grid 2**(k + 0.25)
    k = np.log2(s[:2]) - 0.25
    np.testing.assert_allclose(k, np.round(k), atol=1e-12)


def _common_features(rng: np.random.Generator, n: int) -> np.ndarray:
    """sin/cos of a uniform angle, day-of-week and month one-hots, a 0/1 flag, a +-1 flag."""
    angle = rng.uniform(0.0, 2 * np.pi, n)
    dow = np.eye(7)[rng.integers(0, 7, n)]
    month = np.eye(12)[rng.integers(0, 12, n)]
    flag = (rng.uniform(size=n) < 0.3).astype(float)
    sign = np.where(rng.uniform(size=n) < 0.8, 1.0, -1.0)
    return np.column_stack([np.sin(angle), np.cos(angle), dow, month, flag, sign])


@pytest.mark.parametrize("n", [300, 2000])
def test_infer_scale_is_stable_on_common_features(n):
    """Equivalent features get the same scale in every sample: the old power-of-two rounding
    flipped at std 1/sqrt(2) (sin/cos of a uniform angle) and near 0.35 (1-in-7 one-hots)."""
    scales = np.array([infer_scale(_common_features(np.random.default_rng(s), n))
                       for s in range(60)])
    assert np.all(scales == scales[0])  # no sample flips any feature
    s = scales[0]
    assert s[0] == s[1] == pytest.approx(2**-0.75)  # sin and cos alike, 0.25 octave from a flip
    assert np.all(s[2:21] == 0.5)  # one-hots: half the 0/1 gap, whatever the frequency
    assert s[21] == 0.5 and s[22] == 1.0  # a 0/1 flag and a +-1 flag: their own units


def test_infer_scale_old_rounding_was_knife_edge():
    """Guard that the test above can fail: the plain power-of-two rounding of the std does
    flip between samples on the same features."""
    flips = set()
    for s in range(60):
        X = _common_features(np.random.default_rng(s), 300)
        flips.add(tuple(np.exp2(np.round(np.log2(X.std(axis=0))))))
    assert len(flips) > 1


# ---------------------------------------------------------------------- data handling


def _with_bad_cells(X):
    X = X.copy()
    X[0, 0] = np.nan
    X[5, 2] = np.nan
    X[7, 1] = np.inf
    X[7, 3] = -np.inf
    return X


def test_missing_impute_keeps_rows_and_counts_cells(gauss):
    spec = RKMETableSpec.fit(_with_bad_cells(gauss), 10)
    assert spec.n_samples == 600
    assert spec.fit_info["imputed_cells"] == 4
    assert spec.fit_info["missing"] == "impute"


def test_missing_impute_uses_column_mean_of_finite_values():
    X = np.array([[1.0, 2.0], [np.nan, 4.0], [3.0, np.inf]])
    out, n = handle_missing(X.copy(), "impute")
    assert n == 2
    assert out.tolist() == [[1.0, 2.0], [2.0, 4.0], [3.0, 3.0]]


def test_missing_drop_removes_rows(gauss):
    spec = RKMETableSpec.fit(_with_bad_cells(gauss), 10, missing="drop")
    assert spec.n_samples == 597


def test_missing_error_raises(gauss):
    with pytest.raises(SpecError, match="4 NaN/inf cells"):
        RKMETableSpec.fit(_with_bad_cells(gauss), 10, missing="error")


def test_all_nan_column_raises(gauss):
    X = gauss.copy()
    X[:, 2] = np.nan
    with pytest.raises(SpecError, match=r"columns \[2\] have no finite value"):
        RKMETableSpec.fit(X, 10)


def test_missing_policy_edge_cases():
    X = np.array([[np.nan, 1.0], [2.0, np.inf]])
    with pytest.raises(SpecError, match="every row"):
        handle_missing(X.copy(), "drop")
    with pytest.raises(SpecError, match="unknown missing-value policy"):
        handle_missing(X.copy(), "zero")


def test_one_dimensional_input_raises_clear_error():
    with pytest.raises(SpecError, match=r"must be 2-D.*reshape\(-1, 1\)"):
        RKMETableSpec.fit(np.arange(50.0))


def test_non_numeric_and_empty_input_raise():
    with pytest.raises(SpecError, match="must be numeric"):
        RKMETableSpec.fit([["a", "b"], ["c", "d"]])
    with pytest.raises(SpecError, match="empty"):
        RKMETableSpec.fit(np.zeros((0, 3)))


def test_mmd2_to_data_checks_width(gauss_spec, gauss):
    with pytest.raises(SpecError, match="4 features but the spec has 5"):
        gauss_spec.mmd2_to_data(gauss[:, :4])


def test_small_n_caps_k_at_half(gauss):
    spec = RKMETableSpec.fit(gauss[:30], 100)
    assert spec.n_points == 15
    assert spec.fit_info["n_points"] == 15
    assert RKMETableSpec.fit(gauss[:1], 5).n_points == 1
    with pytest.raises(SpecError, match="n_points"):
        RKMETableSpec.fit(gauss, 0)


def test_spec_points_are_in_raw_units(gauss):
    # a feature in big units: the reduced set must live where the data live
    X = gauss * np.array([1.0, 1.0, 1000.0, 1.0, 1.0]) + np.array([0, 0, 5000.0, 0, 0])
    spec = RKMETableSpec.fit(X, 10)
    assert spec.kernel.scale[2] == pytest.approx(2**10.25)  # std 1000 on the grid
    assert 3000 < spec.z[:, 2].mean() < 7000
    assert spec.mmd2_to_data(X) < 0.02


# ---------------------------------------------------------------------- herding


def test_herd_shape_and_determinism(digits_spec):
    a = digits_spec.herd(40, random_state=0)
    assert a.shape == (40, 64)
    assert np.array_equal(a, digits_spec.herd(40, random_state=0))
    assert not np.array_equal(a, digits_spec.herd(40, random_state=1))


def test_herded_points_represent_the_spec(gauss_spec):
    h = gauss_spec.herd(60, random_state=0)
    near = gauss_spec.mmd2_to_data(h)
    assert near < gauss_spec.mmd2_to_data(h + 1.0) / 5
    # herded points beat a random draw from a wrong distribution and are not just z
    assert near < gauss_spec.mmd2_to_data(np.random.default_rng(0).normal(size=(60, 5)) * 2)
    with pytest.raises(SpecError):
        gauss_spec.herd(0)


# ---------------------------------------------------------------------- optimisation


def test_z_gradient_is_exact():
    """The analytic gradient of beta'K_zz beta - 2 beta'c must match finite differences
    (guards against the reference's halved repulsion term)."""
    rng = np.random.default_rng(3)
    U = rng.normal(size=(60, 3))
    Z = rng.normal(scale=0.4, size=(6, 3))  # close points: repulsion matters
    beta = rng.dirichlet(np.ones(6))
    gamma = 0.7
    obj = _Objective(U, gamma, batch_rows=17)  # several batches
    f, grad = obj.value_and_grad(Z.ravel(), beta)

    def sqd(A, B):
        return ((A[:, None, :] - B[None, :, :]) ** 2).sum(-1)

    def value(flat):
        z = flat.reshape(Z.shape)
        return beta @ np.exp(-gamma * sqd(z, z)) @ beta - 2 * beta @ np.exp(
            -gamma * sqd(z, U)).mean(axis=1)

    def repulsion_value(flat):
        z = flat.reshape(Z.shape)
        return beta @ np.exp(-gamma * sqd(z, z)) @ beta

    def fd(fn, x, eps=1e-6):
        g = np.zeros_like(x)
        for i in range(x.size):
            e = np.zeros_like(x)
            e[i] = eps
            g[i] = (fn(x + e) - fn(x - e)) / (2 * eps)
        return g

    assert f == pytest.approx(value(Z.ravel()), rel=1e-12)
    numeric = fd(value, Z.ravel())
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-9)
    # a halved repulsion term would be off by far more than the tolerance above
    rep = fd(repulsion_value, Z.ravel())
    assert np.abs(0.5 * rep).max() > 1e-3


def test_fit_info_reports_convergence(gauss_spec, gauss):
    info = gauss_spec.fit_info
    assert info["converged"] is True
    assert info["rounds"] >= 1
    hist = info["mmd2_history"]
    assert len(hist) == info["rounds"] + 1
    assert all(b <= a + 1e-12 for a, b in zip(hist, hist[1:], strict=False))
    assert hist[-1] < hist[0]
    assert hist[-1] == pytest.approx(gauss_spec.mmd2_to_data(gauss), rel=0.05, abs=1e-5)
    capped = RKMETableSpec.fit(gauss, 20, max_iter=1, tol=0.0)
    assert capped.fit_info["converged"] is False
    assert capped.fit_info["rounds"] == 1


def test_large_n_uses_optimisation_sample_and_subsampled_mmd():
    X = np.random.default_rng(5).normal(size=(3000, 4))
    spec = RKMETableSpec.fit(X, 10, random_state=0)
    assert spec.fit_info["optimisation_rows"] == 2000
    exact = spec.mmd2_to_data(X)
    shifted = spec.mmd2_to_data(X + 1.0)
    approx = spec.mmd2_to_data(X, max_exact=1500)
    assert approx != exact  # really subsampled
    # the data-data term is estimated: error O(1/sqrt(max_exact)), small next to real gaps
    assert abs(approx - exact) < 0.01
    assert abs(approx - exact) < 0.05 * shifted
    assert spec.mmd2_to_data(X + 1.0, max_exact=1500) == pytest.approx(shifted, abs=0.01)
    # deterministic per seed
    assert spec.mmd2_to_data(X, max_exact=1500) == approx


# ---------------------------------------------------------------------- simplex QP


def _qp_obj(G, h, w):
    return float(w @ G @ w - 2 * h @ w)


@given(
    st.integers(1, 7).flatmap(
        lambda k: st.tuples(
            hnp.arrays(np.float64, (k, k + 1), elements=st.floats(-2, 2, allow_subnormal=False)),
            hnp.arrays(np.float64, (k,), elements=st.floats(-2, 2, allow_subnormal=False)),
        )
    )
)
def test_simplex_qp_is_feasible_and_beats_every_vertex(args):
    A, h = args
    G = A @ A.T
    k = G.shape[0]
    w = simplex_qp(G, h)
    assert w.shape == (k,)
    assert np.all(w >= 0)
    assert w.sum() == pytest.approx(1.0, abs=1e-9)
    best = _qp_obj(G, h, w)
    tol = 1e-6 * (1 + np.abs(G).max() + np.abs(h).max())
    for i in range(k):
        e = np.zeros(k)
        e[i] = 1.0
        assert best <= _qp_obj(G, h, e) + tol
    assert best <= _qp_obj(G, h, np.full(k, 1.0 / k)) + tol


def test_simplex_qp_known_solution_and_shape_check():
    # min w'Iw - 2 h'w on the simplex with h = (1, 0): w = (1, 0)
    w = simplex_qp(np.eye(2), np.array([1.0, 0.0]))
    np.testing.assert_allclose(w, [1.0, 0.0], atol=1e-6)
    # symmetric problem: the uniform weights
    np.testing.assert_allclose(simplex_qp(np.eye(3), np.zeros(3)), np.full(3, 1 / 3), atol=1e-6)
    with pytest.raises(ValueError, match="shapes do not match"):
        simplex_qp(np.eye(2), np.zeros(3))


# ---------------------------------------------------------------------- caps on loaded specs


def _spec_dict(k: int = 4, d: int = 3, **over) -> dict:
    rng = np.random.default_rng(0)
    out = {"type": "rkme-table", "format_version": 1, "n_samples": 10,
           "kernel": {"type": "gaussian", "gamma": 0.5, "scale": [1.0] * d},
           "z": rng.normal(size=(k, d)).tolist(), "beta": [1.0 / k] * k}
    out.update(over)
    return out


@pytest.mark.parametrize(
    ("beta", "match"),
    [
        ([0.0, 0.0, 0.0, 0.0], "all weights are zero"),
        ([0.5, -0.25, 0.5, 0.25], r"must be non-negative \(smallest is -0.25\)"),
        ([0.5, 0.5, 0.5, 0.5], r"must sum to 1 \(their sum is 2\)"),
        ([0.5, float("nan"), 0.25, 0.25], "NaN or inf values in its weights beta"),
        ([0.5, float("inf"), 0.25, 0.25], "NaN or inf values in its weights beta"),
    ],
)
def test_weight_problems_have_their_own_messages(beta, match):
    with pytest.raises(SpecError, match=match):
        stat_spec_from_dict(_spec_dict(beta=beta))


def test_non_finite_z_is_named():
    z = np.zeros((4, 3))
    z[1, 1] = np.inf
    with pytest.raises(SpecError, match="NaN or inf values in its reduced set z"):
        stat_spec_from_dict(_spec_dict(z=z.tolist()))


def test_point_count_is_checked_before_arrays_are_built():
    """z entries numpy could not even convert: the count is refused first, from the JSON."""
    from learndock.config import ArchiveLimits
    from learndock.spec.io import validate_stat_spec

    with pytest.raises(SpecError, match=r"200000 reduced points; the limit is 5000 \(LEARNDOCK_ZIP_MAX_SPEC_POINTS\)"):
        stat_spec_from_dict(_spec_dict(z=["not a row"] * 200_000))
    user = _spec_dict(k=20_000, d=2)
    with pytest.raises(SpecError, match=r"20000 reduced points.*LEARNDOCK_ZIP_MAX_USER_SPEC_POINTS"):
        stat_spec_from_dict(user, user=True)
    spec = stat_spec_from_dict(user, ArchiveLimits(max_spec_points=20_000))
    with pytest.raises(SpecError, match="LEARNDOCK_ZIP_MAX_USER_SPEC_POINTS"):
        validate_stat_spec(spec, user=True)
    assert validate_stat_spec(spec, ArchiveLimits(max_user_spec_points=20_000), user=True) is spec


@pytest.mark.parametrize(
    ("over", "match"),
    [
        ({"kernel": {"type": "gaussian", "gamma": 1e300, "scale": [1.0] * 3}},
         r"gamma 1e\+300 is outside .*LEARNDOCK_ZIP_MAX_GAMMA"),
        ({"kernel": {"type": "gaussian", "gamma": 1e-300, "scale": [1.0] * 3}},
         r"gamma 1e-300 is outside .*LEARNDOCK_ZIP_MIN_GAMMA"),
        ({"z": np.full((4, 3), 1e200).tolist()},
         r"coordinates reach 1e\+200.*LEARNDOCK_ZIP_MAX_ABS_COORDINATE"),
        ({"kernel": {"type": "gaussian", "gamma": 0.5, "scale": [1e-300] * 3}},
         r"coordinates reach .*LEARNDOCK_ZIP_MAX_ABS_COORDINATE"),
        ({"z": np.zeros((2, 5000)).tolist(), "beta": [0.5, 0.5]},
         r"dimension 5000; the limit is 4096 \(LEARNDOCK_ZIP_MAX_SPEC_DIMENSION\)"),
        ({"n_samples": 1e400}, "n_samples must be a whole number"),
        ({"n_samples": -3}, "n_samples must be non-negative"),
        ({"kernel": [0.5]}, "kernel must be a JSON object"),
        ({"type": ["rkme-table"]}, "unknown statistical spec type list"),
    ],
)
def test_numbers_and_sizes_out_of_bounds(over, match):
    with pytest.raises(SpecError, match=match):
        stat_spec_from_dict(_spec_dict(**over))


def test_reference_specs_get_the_same_checks():
    ref = {"type": "RKMETableSpecification", "z": np.ones((3, 2)).tolist(), "beta": [0, 0, 0],
           "gamma": 0.1, "num_points": 10}
    with pytest.raises(SpecError, match="all weights are zero"):
        stat_spec_from_dict(ref)
    with pytest.raises(SpecError, match="NaN or inf values in its weights"):
        stat_spec_from_dict({**ref, "beta": [1, float("nan"), 1]})
    with pytest.raises(SpecError, match="LEARNDOCK_ZIP_MAX_GAMMA"):
        stat_spec_from_dict({**ref, "beta": [1, 1, 1], "gamma": 1e300})
    with pytest.raises(SpecError, match="LEARNDOCK_ZIP_MAX_SPEC_POINTS"):
        stat_spec_from_dict({**ref, "z": [[0.0]] * 6000, "beta": [1.0] * 6000})
    with pytest.raises(SpecError, match="whole number"):
        stat_spec_from_dict({**ref, "beta": [1, 1, 1], "num_points": float("inf")})


def test_spec_file_caps(tmp_path):
    from learndock.config import ArchiveLimits
    from learndock.spec.io import max_spec_json_bytes

    small = ArchiveLimits(max_spec_points=10, max_spec_dimension=4)
    p = tmp_path / "s.json"
    p.write_bytes(b" " * (max_spec_json_bytes(small) + 1))
    with pytest.raises(SpecError, match=r"bytes; specs within the limits on points and dimension"):
        load_stat_spec(p, small)
    p.write_bytes(b"[" + b"[]," * 5000 + b"[]]")
    with pytest.raises(SpecError, match="JSON values"):
        load_stat_spec(p, small)
    p.write_bytes(b"[" * 100_000 + b"]" * 100_000)
    with pytest.raises(SpecError, match="not valid JSON"):
        load_stat_spec(p)
    with pytest.raises(SpecError, match="cannot read spec file"):
        load_stat_spec(tmp_path)
