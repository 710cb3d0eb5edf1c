"""Builders and fixtures for the market tests (``tests/test_market_*.py``).

Test modules load this file as a pytest plugin (``pytest_plugins = ["market_helpers"]``), so
its fixtures are available without importing them by name. It depends only on learndock and
scikit-learn, not on ``conftest.py``/``helpers.py``.

Backends: the ``db_url`` fixture is parametrised over SQLite (``None``: the market's default
database in its home) and the real PostgreSQL server on 127.0.0.1:5432 (trust auth, user
``postgres``; ``LEARNDOCK_TEST_PG_PORT`` overrides the port) -- one fresh database per test
module (``learndock_test_<uuid8>``, dropped at teardown) and an emptied ``public`` schema per
test. PostgreSQL cases carry the ``postgres`` mark and skip, saying why, only if the server is
unreachable.

Holds no test assertions of its own (PYTEST_DONT_REWRITE: the test modules import it before
pytest registers it as a plugin).
"""

from __future__ import annotations

import contextlib
import functools
import os
import subprocess
import sys
import textwrap
import uuid
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sqlalchemy import func, select

from learndock.market import Market
from learndock.market import schema as t
from learndock.package import pack, write_package
from learndock.spec import GaussianKernel, RKMETableSpec
from learndock.spec.kernels import default_gamma, infer_scale

PG_HOST = "127.0.0.1"
PG_PORT = int(os.environ.get("LEARNDOCK_TEST_PG_PORT", "5432"))  # override to test the skips
PG_ADMIN_DSN = f"host={PG_HOST} port={PG_PORT} user=postgres dbname=postgres connect_timeout=3"

#: The class subsets of the digits learnwares (one learnware per subset).
DIGIT_SETS: tuple[tuple[int, ...], ...] = ((0, 1, 2), (2, 3, 4), (5, 6), (7, 8, 9), (1, 4, 7))

#: Added to child processes' environment: single-threaded BLAS (OpenBLAS threading on a small,
#: busy machine makes these tiny fits and predictions ~10-30x slower).
CHILD_ENV_EXTRA = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


# ---------------------------------------------------------------------- BLAS threads


@pytest.fixture(autouse=True, scope="module")
def _market_single_thread_blas(request: pytest.FixtureRequest) -> Iterator[None]:
    """Run the market test modules with one BLAS thread (only those modules)."""
    if not request.module.__name__.startswith("test_market_"):
        yield
        return
    with one_blas_thread():
        yield


# ---------------------------------------------------------------------- PostgreSQL


@functools.lru_cache(maxsize=1)
def pg_unreachable_reason() -> str | None:
    """``None`` if the PostgreSQL server answers, else why not (for the skip message)."""
    try:
        import psycopg
    except ImportError as exc:  # pragma: no cover - psycopg is a test dependency
        return f"psycopg is not installed ({exc})"
    try:
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
            conn.execute("SELECT 1")
    except Exception as exc:  # noqa: BLE001 -- any failure means: no server to test against
        return f"PostgreSQL at {PG_HOST}:{PG_PORT} is unreachable: {' '.join(str(exc).split())}"
    return None


def pg_url(dbname: str) -> str:
    return f"postgresql+psycopg://postgres@{PG_HOST}:{PG_PORT}/{dbname}"


@contextlib.contextmanager
def fresh_pg_database() -> Iterator[str]:
    """Create ``learndock_test_<uuid8>`` on the server; yields its name; drops it after.

    Skips the calling test if the server is unreachable.
    """
    reason = pg_unreachable_reason()
    if reason:
        pytest.skip(reason)
    import psycopg

    name = f"learndock_test_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def pg_database() -> Iterator[str]:
    """A fresh PostgreSQL database for this test module (its name)."""
    with fresh_pg_database() as name:
        yield name


def pg_schema_url(dbname: str, schema: str) -> str:
    """Create ``schema`` in ``dbname``; the URL of a market living in that schema only."""
    import psycopg

    dsn = f"host={PG_HOST} port={PG_PORT} user=postgres dbname={dbname} connect_timeout=3"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    return f"{pg_url(dbname)}?options=-csearch_path%3D{schema}"


def reset_pg_schema(dbname: str) -> None:
    """Empty the database (every test starts from a schema-less database)."""
    import psycopg

    dsn = f"host={PG_HOST} port={PG_PORT} user=postgres dbname={dbname} connect_timeout=3"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DROP SCHEMA IF EXISTS public CASCADE")
        conn.execute("CREATE SCHEMA public")


BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest) -> str | None:
    """``None`` (SQLite in the market's home) or the URL of an emptied PostgreSQL database."""
    if request.param == "sqlite":
        return None
    name = request.getfixturevalue("pg_database")
    reset_pg_schema(name)
    return pg_url(name)


@contextlib.contextmanager
def backend_market(backend: str, home: Path) -> Iterator[Market]:
    """A market in ``home`` on SQLite, or on a fresh PostgreSQL database (dropped after)."""
    with contextlib.ExitStack() as stack:
        url = pg_url(stack.enter_context(fresh_pg_database())) if backend == "postgres" else None
        yield stack.enter_context(Market(home, database_url=url))


@pytest.fixture
def market_home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def market(market_home: Path, db_url: str | None) -> Iterator[Market]:
    m = Market(market_home, database_url=db_url)
    try:
        yield m
    finally:
        m.close()


# ---------------------------------------------------------------------- digits data


@functools.lru_cache(maxsize=1)
def digits() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(X / 16, y, is_train): a fixed, per-class 70/30 split of sklearn's digits."""
    X, y = load_digits(return_X_y=True)
    rng = np.random.default_rng(0)
    train = np.zeros(len(y), dtype=bool)
    for c in range(10):
        idx = np.flatnonzero(y == c)
        rng.shuffle(idx)
        train[idx[: int(round(0.7 * len(idx)))]] = True
    return X / 16.0, y, train


def class_rows(classes: tuple[int, ...] | list[int], train: bool) -> tuple[np.ndarray, np.ndarray]:
    X, y, is_train = digits()
    m = np.isin(y, list(classes)) & (is_train if train else ~is_train)
    return X[m], y[m]


@functools.lru_cache(maxsize=1)
def shared_kernel() -> GaussianKernel:
    """The one kernel every digits spec (learnwares' and users') is built with.

    It is the kernel ``RKMETableSpec.fit(all_X, ...)`` picks (gamma 1/d, per-feature scale
    from the data), built directly so no throw-away spec is fitted.
    """
    X, _, _ = digits()
    return GaussianKernel(default_gamma(X.shape[1]), infer_scale(X))


#: Small, quick specs: K = 20 points and a few optimisation rounds.
SPEC_K = 20
SPEC_ROUNDS = 5


def one_blas_thread() -> Any:
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1)


@functools.cache
def digits_spec(classes: tuple[int, ...]) -> RKMETableSpec:
    X, _ = class_rows(classes, train=True)
    with one_blas_thread():
        return RKMETableSpec.fit(X, SPEC_K, kernel=shared_kernel(), max_iter=SPEC_ROUNDS,
                                 random_state=0)


def user_spec(X: np.ndarray, kernel: GaussianKernel | None = None) -> RKMETableSpec:
    with one_blas_thread():
        return RKMETableSpec.fit(X, SPEC_K, kernel=kernel or shared_kernel(),
                                 max_iter=SPEC_ROUNDS, random_state=0)


@functools.cache
def digits_model(classes: tuple[int, ...]) -> LogisticRegression:
    X, y = class_rows(classes, train=True)
    with warnings.catch_warnings(), one_blas_thread():
        warnings.simplefilter("ignore")
        return LogisticRegression(max_iter=200).fit(X, y)


def semantic(
    dim: int,
    *,
    name: str,
    description: str,
    task: str = "Classification",
    n_out: int | None = None,
    data_type: str = "Table",
    library: str = "Scikit-learn",
    scenarios: tuple[str, ...] = ("Education",),
    license: str = "MIT",
) -> dict[str, Any]:
    sem: dict[str, Any] = {
        "name": name,
        "description": description,
        "data_type": data_type,
        "task_type": task,
        "library_type": library,
        "scenarios": list(scenarios),
        "license": license,
        "input": {"dimension": dim, "descriptions": {i: f"feature {i}" for i in range(dim)}},
    }
    if n_out is not None:
        sem["output"] = {"dimension": n_out, "descriptions": {i: f"output {i}" for i in range(n_out)}}
    return sem


def digits_package(
    workdir: Path,
    classes: tuple[int, ...],
    *,
    name: str | None = None,
    description: str | None = None,
    version: str = "1.0.0",
    title: str | None = None,
    **sem: Any,
) -> Path:
    """A packed (zip) digits learnware for ``classes``; returns the zip path. ``title`` (the
    semantic spec's name, any text) defaults to the package ``name``."""
    name = name or "digits-" + "".join(map(str, classes))
    description = description or f"Recognises handwritten digits {', '.join(map(str, classes))}."
    d = workdir / f"{name}-{version}-{uuid.uuid4().hex[:6]}"
    write_package(
        d,
        digits_model(classes),
        name=name,
        version=version,
        semantic=semantic(64, name=title or name, description=description, n_out=len(classes),
                          **sem),
        spec=digits_spec(classes),
    )
    out = d.parent / f"{d.name}.zip"
    pack(d, out)
    return out


@pytest.fixture(scope="session")
def digits_zips(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[int, ...], Path]:
    """One packed digits learnware per class subset in :data:`DIGIT_SETS` (built once)."""
    w = tmp_path_factory.mktemp("market-digits")
    with one_blas_thread():
        return {s: digits_package(w, s) for s in DIGIT_SETS}


def edit_manifest(package_dir: Path, change: Any) -> None:
    """Apply ``change(manifest_dict)`` to ``learnware.yaml`` in place (no validation)."""
    path = package_dir / "learnware.yaml"
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    change(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")


def wrong_labels_package(workdir: Path, name: str = "wrong-labels") -> Path:
    """A packed (5, 6) classifier whose manifest declares labels [0, 1]: its predictions fall
    outside the declared label set, so the market's checks reject it."""
    d = workdir / f"{name}-{uuid.uuid4().hex[:6]}"
    write_package(
        d, digits_model((5, 6)), name=name, spec=digits_spec((5, 6)),
        semantic=semantic(64, name=name, description="Claims labels 0 and 1.", n_out=2),
    )

    def relabel(manifest: dict) -> None:
        manifest["output"]["labels"] = [0, 1]  # the model predicts 5 and 6

    edit_manifest(d, relabel)
    out = d.parent / f"{d.name}.zip"
    pack(d, out)
    return out


def zip_dir(directory: Path, out: Path, skip: tuple[str, ...] = ()) -> Path:
    """Zip a directory with plain zipfile (no validation, unlike ``pack``)."""
    with zipfile.ZipFile(out, "w") as zf:
        for p in sorted(directory.rglob("*")):
            if p.is_file() and p.name not in skip:
                zf.write(p, p.relative_to(directory).as_posix())
    return out


# ---------------------------------------------------------------------- python-format models

#: A regression model run only in the market's sandbox. Its import marks ``builtins`` so the
#: tests can prove the test process never imported it; ``mode`` picks a (mis)behaviour.
PYTHON_MODEL_SOURCE = textwrap.dedent(
    """
    import builtins
    import socket
    import time

    import numpy as np

    builtins.LEARNDOCK_MARKET_TEST_IMPORTED = True


    class Model:
        def __init__(self, mode="ok"):
            self.mode = mode

        def predict(self, X):
            X = np.asarray(X, dtype=np.float64)
            if self.mode == "nan":
                return np.full(len(X), np.nan)
            if self.mode == "raise":
                raise RuntimeError("deliberate failure inside predict")
            if self.mode == "sleep":
                time.sleep(120)
            if self.mode == "network":
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                s.connect(("10.255.255.1", 9))  # no timeout: would hang on an open network
                s.close()
            return X.sum(axis=1)
    """
)

BUILTINS_MARK = "LEARNDOCK_MARKET_TEST_IMPORTED"


@functools.lru_cache(maxsize=1)
def small_table() -> np.ndarray:
    return np.random.default_rng(1).normal(size=(200, 4))


@functools.lru_cache(maxsize=1)
def small_spec() -> RKMETableSpec:
    with one_blas_thread():
        return RKMETableSpec.fit(small_table(), 10, random_state=0)


def python_package(workdir: Path, mode: str, *, name: str | None = None) -> Path:
    """A packed ``python``-format regression learnware whose model behaves as ``mode``."""
    name = name or f"py-{mode}"
    d = workdir / f"{name}-{uuid.uuid4().hex[:6]}"
    d.mkdir(parents=True)
    (d / "model.py").write_text(PYTHON_MODEL_SOURCE, encoding="utf-8")
    spec = small_spec()
    spec.save(d / "spec.json")
    manifest = {
        "format_version": 1,
        "name": name,
        "version": "1.0.0",
        "semantic": semantic(
            4, name=name, description=f"A python regression model ({mode}).",
            task="Regression", n_out=1, library="Others",
        ),
        "model": {"format": "python", "module": "model.py", "class_name": "Model",
                  "kwargs": {"mode": mode}},
        "input": {"shape": [4], "features": [{"name": f"x{i}"} for i in range(4)]},
        "output": {"kind": "value", "shape": []},
        "stat_specs": [{"type": "rkme-table", "file": "spec.json"}],
    }
    (d / "learnware.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False), encoding="utf-8")
    out = d.parent / f"{d.name}.zip"
    pack(d, out)
    return out


# ---------------------------------------------------------------------- store inspection


def blob_files(home: Path) -> set[str]:
    """SHA-256 names of the blob files on disk under ``home/blobs`` (temp files excluded)."""
    root = home / "blobs"
    return {p.name for p in root.glob("??/??/*") if p.is_file() and len(p.name) == 64}


def referenced_blobs(market: Market) -> set[str]:
    with market.engine.connect() as conn:
        return {
            r[0]
            for r in conn.execute(
                select(t.versions.c.blob_sha256).where(t.versions.c.blob_sha256.is_not(None))
            )
        }


def row_counts(market: Market, learnware_id: str | None = None) -> dict[str, int]:
    """Rows in the learnwares/versions/specs tables (for one learnware, or all)."""
    out = {}
    with market.engine.connect() as conn:
        for name, table, col in (
            ("learnwares", t.learnwares, t.learnwares.c.id),
            ("versions", t.versions, t.versions.c.learnware_id),
            ("specs", t.specs, t.specs.c.learnware_id),
        ):
            q = select(func.count()).select_from(table)
            if learnware_id is not None:
                q = q.where(col == learnware_id)
            out[name] = int(conn.execute(q).scalar_one())
    return out


def learnware_ids_by_name(market: Market, name: str) -> list[str]:
    with market.engine.connect() as conn:
        return list(
            conn.execute(select(t.learnwares.c.id).where(t.learnwares.c.name == name)).scalars()
        )


def search_ids(market: Market, query: Any = None, spec: Any = None, **kw: Any) -> list[str]:
    return [s.learnware_id for s in market.search(query, spec=spec, **kw).single]


# ---------------------------------------------------------------------- child processes


def child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEARNDOCK_")}
    env.update(CHILD_ENV_EXTRA)
    env.update(extra)
    return env


def spawn_child(code: str, *args: str, **env: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        env=child_env(**env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
