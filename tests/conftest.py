"""Shared fixtures: small data sets, fitted specs and models, ready-made packages."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from sklearn.datasets import load_diabetes, load_digits
from sklearn.linear_model import LogisticRegression, Ridge
from threadpoolctl import threadpool_limits

from helpers import table_semantic
from learndock.package import write_package
from learndock.spec import RKMETableSpec

# The tests use small matrices: one BLAS thread is faster, and multi-threaded BLAS spin-waits
# badly when the CPUs are shared (fits ran 20x slower on a busy 2-core box).
threadpool_limits(1)

# Deterministic property tests: fixed example sequence, no example database on disk.
settings.register_profile(
    "learndock",
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=40,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("learndock")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``postgres`` tests are integration tests; ``slow`` ones run only when ``-m`` names them
    (so ``-m "not integration"`` does not bring the slow ones back)."""
    run_slow = "slow" in (config.getoption("markexpr") or "")
    skip_slow = pytest.mark.skip(reason="slow: run with -m slow")
    for item in items:
        if item.get_closest_marker("postgres") is not None:
            item.add_marker(pytest.mark.integration)
        if item.get_closest_marker("slow") is not None and not run_slow:
            item.add_marker(skip_slow)


@pytest.fixture(scope="session")
def digits() -> tuple[np.ndarray, np.ndarray]:
    X, y = load_digits(return_X_y=True)
    return X / 16.0, y


@pytest.fixture(scope="session")
def digits_spec(digits) -> RKMETableSpec:
    return RKMETableSpec.fit(digits[0], 20, random_state=0)


@pytest.fixture(scope="session")
def digits_clf(digits) -> LogisticRegression:
    X, y = digits
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return LogisticRegression(max_iter=300).fit(X, y)


@pytest.fixture(scope="session")
def diabetes() -> tuple[np.ndarray, np.ndarray]:
    return load_diabetes(return_X_y=True)


@pytest.fixture(scope="session")
def diabetes_spec(diabetes) -> RKMETableSpec:
    return RKMETableSpec.fit(diabetes[0], 20, random_state=0)


@pytest.fixture(scope="session")
def diabetes_ridge(diabetes) -> Ridge:
    return Ridge(alpha=0.1).fit(*diabetes)


@pytest.fixture(scope="session")
def gauss() -> np.ndarray:
    """600 x 5 standard normal rows (a distribution with a known shifted twin)."""
    return np.random.default_rng(0).normal(size=(600, 5))


@pytest.fixture(scope="session")
def gauss_spec(gauss) -> RKMETableSpec:
    return RKMETableSpec.fit(gauss, 20, random_state=0)


@pytest.fixture(scope="session")
def skops_clf_dir(tmp_path_factory, digits_clf, digits_spec) -> Path:
    """A skops digits classifier package directory. Read-only: copy it before changing it."""
    d = tmp_path_factory.mktemp("skops-clf") / "pkg"
    write_package(
        d, digits_clf, name="digits-lr", semantic=table_semantic(64), spec=digits_spec
    )
    return d


@pytest.fixture(scope="session")
def skops_clf_zip(tmp_path_factory, skops_clf_dir) -> Path:
    from learndock.package import pack

    out = tmp_path_factory.mktemp("skops-clf-zip") / "digits-lr.zip"
    pack(skops_clf_dir, out)
    return out


@pytest.fixture
def pkg_copy(tmp_path, skops_clf_dir) -> Path:
    """A private, modifiable copy of the skops classifier package."""
    dst = tmp_path / "pkg"
    shutil.copytree(skops_clf_dir, dst)
    return dst


@pytest.fixture
def linear_weights(digits_clf) -> tuple[np.ndarray, np.ndarray]:
    return digits_clf.coef_.T.copy(), digits_clf.intercept_.copy()
