"""``python``-format models: trust opt-in, in-process runs, and the subprocess sandbox."""

from __future__ import annotations

import os
import sys
import time

import numpy as np
import pytest

from helpers import LINEAR_MODEL_PY, write_python_package
from learndock.errors import ContractError, PackageError, SandboxError, TrustError
from learndock.package import check_package, load_learnware

ENV = "LEARNDOCK_TEST_IMPORTED"  # set to "imported" by the package's module-level code
MARKER = "IMPORTED.marker"  # written next to the module, holding the importing process id


#: LINEAR_MODEL_PY writes its marker next to its module. In the jail the package is read-only
#: (by design), so the sandboxed variant writes the marker to $HOME, the jail's private scratch.
SANDBOX_MODEL_PY = LINEAR_MODEL_PY.replace(
    '(HERE / "IMPORTED.marker")', '(Path(os.environ["HOME"]) / "IMPORTED.marker")'
)
assert SANDBOX_MODEL_PY != LINEAR_MODEL_PY


def _pkg_modules() -> set[str]:
    return {m for m in sys.modules if m.startswith("_learndock_pkg_")}


@pytest.fixture
def py_pkg(tmp_path, digits_spec, linear_weights):
    return write_python_package(tmp_path / "pypkg", digits_spec, weights=linear_weights)


# ---------------------------------------------------------------------- trust


def test_python_model_refuses_to_run_without_opt_in(py_pkg, digits, monkeypatch):
    monkeypatch.setenv(ENV, "untouched")
    modules = _pkg_modules()
    with load_learnware(py_pkg) as lw:  # reading the manifest and specs runs nothing
        assert lw.manifest.model.format == "python"
        assert lw.stat_spec.dimension == 64
        with pytest.raises(TrustError, match="trust_remote_code=True"):
            lw.predict(digits[0][:5])
    # runtime="trusted" is not an opt-in by itself
    with load_learnware(py_pkg, runtime="trusted") as lw, pytest.raises(TrustError):
        lw.predict(digits[0][:5])
    report = check_package(py_pkg)
    assert not report.ok
    assert "needs the sandbox or trust_remote_code" in report.text()
    assert os.environ[ENV] == "untouched"
    assert not (py_pkg / MARKER).exists()
    assert _pkg_modules() == modules


def test_python_model_runs_with_trust_remote_code(py_pkg, digits, digits_clf, monkeypatch):
    X, _ = digits
    monkeypatch.setenv(ENV, "untouched")
    with load_learnware(py_pkg, trust_remote_code=True) as lw:
        pred = lw.predict(X)
        assert np.array_equal(pred, digits_clf.predict(X))
        # label-only model: predict_proba is the one-hot of the label
        proba = lw.predict_proba(X[:20])
        assert proba.shape == (20, 10)
        assert np.array_equal(proba.argmax(axis=1), pred[:20])
        np.testing.assert_array_equal(proba.sum(axis=1), 1.0)
        with pytest.raises(ContractError, match="expects inputs of shape"):
            lw.predict(X[:, :5])
        with pytest.raises(ContractError, match="no finetune/partial_fit"):
            lw.finetune(X[:5], digits[1][:5])
    # the code really ran in this process
    assert os.environ[ENV] == "imported"
    assert (py_pkg / MARKER).read_text() == str(os.getpid())
    assert check_package(py_pkg, trust_remote_code=True).ok


def test_two_python_learnwares_do_not_shadow_each_other(tmp_path, digits_spec, linear_weights,
                                                       digits, monkeypatch):
    monkeypatch.setenv(ENV, "untouched")
    W, b = linear_weights
    a = write_python_package(tmp_path / "a", digits_spec, weights=(W, b))
    flipped = write_python_package(tmp_path / "b", digits_spec, weights=(W[:, ::-1], b[::-1]))
    X = digits[0][:100]
    with load_learnware(a, trust_remote_code=True) as la, load_learnware(
        flipped, trust_remote_code=True
    ) as lb:
        pa, pb = la.predict(X), lb.predict(X)
    assert np.array_equal(pb, 9 - pa)


def test_python_model_missing_class_is_a_package_error(py_pkg, monkeypatch):
    monkeypatch.setenv(ENV, "untouched")
    text = (py_pkg / "learnware.yaml").read_text().replace("class_name: Model", "class_name: Nope")
    (py_pkg / "learnware.yaml").write_text(text)
    with load_learnware(py_pkg, trust_remote_code=True) as lw, pytest.raises(
        PackageError, match="defines no class 'Nope'"
    ):
        lw.predict(np.zeros((1, 64)))


# ---------------------------------------------------------------------- sandbox


@pytest.fixture(scope="module")
def sandboxed(tmp_path_factory, digits_spec, digits_clf):
    pkg = write_python_package(
        tmp_path_factory.mktemp("sandboxed") / "pkg",
        digits_spec,
        weights=(digits_clf.coef_.T.copy(), digits_clf.intercept_.copy()),
        source=SANDBOX_MODEL_PY,
    )
    lw = load_learnware(pkg, runtime="sandbox", sandbox_timeout=60)
    yield pkg, lw
    lw.close()


def test_sandbox_runs_the_model_in_another_process(sandboxed, digits, digits_clf):
    pkg, lw = sandboxed
    X, _ = digits
    env_before = os.environ.get(ENV)
    modules = _pkg_modules()
    pred = lw.predict(X)
    assert np.array_equal(pred, digits_clf.predict(X))
    runtime = lw.model
    assert runtime.timeout == 60
    assert runtime.proc.pid != os.getpid()
    # the module-level code ran in the jailed worker (its own pid namespace), which could write
    # only to its private scratch dir: not to the package, nor to the dock's copy of it
    assert int((runtime.dirs.scratch / MARKER).read_text()) != os.getpid()
    assert not (pkg / MARKER).exists()
    assert not (runtime.dirs.pkg / MARKER).exists()
    assert runtime.isolation.startswith("bubblewrap ")
    assert os.environ.get(ENV) == env_before != "imported"
    assert _pkg_modules() == modules
    assert lw.supports("predict") and not lw.supports("predict_proba")


def test_sandboxed_model_error_is_reported_and_worker_survives(sandboxed, digits):
    _, lw = sandboxed
    X = digits[0][:4].copy()
    X[0, 0] = -5000.0  # the model raises on this input
    with pytest.raises(SandboxError, match="boom from the model"):
        lw.predict(X)
    assert lw.predict(digits[0][:4]).shape == (4,)


def test_sandboxed_predict_timeout(tmp_path, digits_spec, linear_weights, digits):
    pkg = write_python_package(tmp_path / "pkg", digits_spec, weights=linear_weights,
                               source=SANDBOX_MODEL_PY)
    X = digits[0][:3].copy()
    with load_learnware(pkg, runtime="sandbox", sandbox_timeout=30) as lw:
        assert lw.predict(X).shape == (3,)  # loads the worker under the generous limit
        assert lw.model.timeout == 30
        lw.model.timeout = 1.0
        X[0, 0] = 5000.0  # the model sleeps 60 s on this input
        t0 = time.monotonic()
        with pytest.raises(SandboxError, match=r"timed out after 1 s"):
            lw.predict(X)
        assert time.monotonic() - t0 < 15
        with pytest.raises(SandboxError, match="exited"):
            lw.predict(digits[0][:3])  # the stuck worker was stopped


def test_sandboxed_load_timeout(tmp_path, digits_spec, linear_weights, digits):
    pkg = write_python_package(
        tmp_path / "pkg", digits_spec, weights=linear_weights, kwargs={"sleep_in_init": 60},
        source=SANDBOX_MODEL_PY,
    )
    t0 = time.monotonic()
    with load_learnware(pkg, runtime="sandbox", sandbox_timeout=1.5) as lw, pytest.raises(
        SandboxError, match=r"load/ timed out after 1.5 s"
    ):
        lw.predict(digits[0][:3])
    assert time.monotonic() - t0 < 15
