"""Hostile packages that hide bytecode (a ``__pycache__`` pyc with an unchecked hash, a loose
``.pyc`` without source) or look for the host's environment variables."""

from __future__ import annotations

import importlib.util
import json
import os
import py_compile
import secrets

from hostile.jail_packages import dock_home, hostile_package, open_runtime, results
from learndock.package.runtime import import_package_class

__all__ = ["dock_home"]

SHIPPED = """
WHO = "source"
try:
    from . import helper
    HELPER = helper.WHO
except ImportError:
    HELPER = "missing"
attempt("who", lambda: (WHO, HELPER))
"""

HIDDEN = """
import os
WHO = "bytecode"
HELPER = "bytecode"
def attempt(*a):
    pass
with open(os.path.join(os.environ.get("HOME", "/tmp"), "pyc-ran"), "w") as f:
    f.write("the hidden bytecode ran")

class Model:
    def predict(self, X):
        import numpy as np
        return np.ones(len(X))
"""


def _plant(pkg, tmp_path):
    evil = tmp_path / "evil.py"
    evil.write_text(HIDDEN)
    cached = importlib.util.cache_from_source(str(pkg / "model.py"))
    py_compile.compile(str(evil), cfile=cached, doraise=True,
                       invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
    (tmp_path / "helper.py").write_text('WHO = "loose pyc"\n')
    py_compile.compile(str(tmp_path / "helper.py"), cfile=str(pkg / "helper.pyc"), doraise=True,
                       invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)


def test_planted_bytecode_never_runs_in_the_jail(tmp_path, dock_home, gauss_spec, monkeypatch):
    pkg = hostile_package(tmp_path / "pkg", gauss_spec, SHIPPED)
    _plant(pkg, tmp_path)
    # control: a plain import (what trust_remote_code does, in this process) runs the pyc
    monkeypatch.setenv("HOME", str(tmp_path))
    cls = import_package_class(pkg, "model.py", "Model")
    assert (tmp_path / "pyc-ran").exists()
    assert cls().predict([[0.0] * 5]).tolist() == [1.0]
    (tmp_path / "pyc-ran").unlink()

    rt = open_runtime(pkg)
    try:
        assert rt.predict(gauss_spec.herd(2, random_state=0)).tolist() == [0.0, 0.0]
        assert results(rt)["who"] == ["ok", "('source', 'missing')"]
        assert not (rt.dirs.scratch / "pyc-ran").exists()
        assert not (rt.dirs.pkg / "__pycache__").exists()  # not even copied
        assert list(rt.dirs.scratch.rglob("*.pyc")) == []  # nor written
    finally:
        rt.close()


def test_host_environment_variables_are_not_visible(tmp_path, dock_home, gauss_spec,
                                                    monkeypatch):
    token = secrets.token_hex(12)
    monkeypatch.setenv("LEARNDOCK_TEST_SECRET", token)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", token)
    assert os.environ["LEARNDOCK_TEST_SECRET"] == token
    pkg = hostile_package(tmp_path / "pkg", gauss_spec, """
    attempt("environ", lambda: json.dumps(dict(os.environ)))
    attempt("pid 1 environ", lambda: read("/proc/1/environ"))
    attempt("parent environ", lambda: read(f"/proc/{os.getppid()}/environ"))
    attempt("self environ", lambda: read("/proc/self/environ"))
    """)
    rt = open_runtime(pkg)
    try:
        res = results(rt)
    finally:
        rt.close()
    assert token not in str(res)
    assert os.environ["LEARNDOCK_TEST_SECRET"] == token  # the dock's own env is untouched
    env = json.loads(eval(res["environ"][1]))  # noqa: S307 -- the repr of a JSON string
    assert set(env) <= {
        "PWD", "PATH", "HOME", "TMPDIR", "LANG", "PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX",
        "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "HF_HUB_OFFLINE",
    }, env
    assert env["HOME"] == "/scratch" and env["PWD"] == "/pkg"
    for name in ("pid 1 environ", "parent environ", "self environ"):  # bwrap's own: PATH only
        assert res[name][0] == "failed" or "LEARNDOCK" not in res[name][1], res[name]
