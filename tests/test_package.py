"""Package round-trips (skops, ONNX), output contracts, and code-free loading."""

from __future__ import annotations

import operator
import os
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer

from helpers import table_semantic, zip_directory
from learndock.errors import ContractError, PackageError, TrustError
from learndock.package import Manifest, check_package, load_learnware, pack, write_package
from learndock.spec import RKMETableSpec

# ---------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def onnx_clf_zip(tmp_path_factory, digits_clf, digits_spec) -> Path:
    root = tmp_path_factory.mktemp("onnx-clf")
    write_package(
        root / "pkg", digits_clf, name="digits-onnx", semantic=table_semantic(64),
        spec=digits_spec, model_format="onnx",
    )
    pack(root / "pkg", root / "pkg.zip")
    return root / "pkg.zip"


def _regressor_sem() -> dict:
    return table_semantic(10, task="Regression", n_out=1, name="diabetes ridge")


@pytest.fixture(scope="module", params=["skops", "onnx"])
def ridge_zip(request, tmp_path_factory, diabetes_ridge, diabetes_spec) -> Path:
    root = tmp_path_factory.mktemp(f"ridge-{request.param}")
    write_package(
        root / "pkg", diabetes_ridge, name="diabetes-ridge", semantic=_regressor_sem(),
        spec=diabetes_spec, model_format=request.param,
    )
    pack(root / "pkg", root / "pkg.zip")
    return root / "pkg.zip"


# ---------------------------------------------------------------------- round-trips


def test_write_package_manifest(skops_clf_dir, digits_spec):
    m = Manifest.load(skops_clf_dir)
    assert m.name == "digits-lr" and m.version == "1.0.0"
    assert m.model.format == "skops" and m.model.file == "model.skops"
    assert m.model.methods == ["predict", "predict_proba"]
    assert m.input.shape == [64] and len(m.input.features) == 64
    assert m.output.kind == "label" and m.output.labels == list(range(10))
    assert [(s.type, s.file) for s in m.stat_specs] == [("rkme-table", "spec.json")]
    assert m.requirements.pip == ["scikit-learn", "skops"]
    assert Manifest.from_yaml(m.to_yaml()) == m
    assert RKMETableSpec.load(skops_clf_dir / "spec.json").fingerprint() == (
        digits_spec.fingerprint()
    )


def test_skops_classifier_round_trip(skops_clf_zip, digits, digits_clf, digits_spec):
    X, _ = digits
    with load_learnware(skops_clf_zip) as lw:
        assert lw.name == "digits-lr" and lw.labels == list(range(10))
        assert lw.stat_spec.fingerprint() == digits_spec.fingerprint()
        pred = lw.predict(X)
        assert np.array_equal(pred, digits_clf.predict(X))
        proba = lw.predict_proba(X[:50])
        assert proba.shape == (50, 10)
        np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-9)
        np.testing.assert_allclose(proba, digits_clf.predict_proba(X[:50]), rtol=1e-9)
        # a single sample may be given as a 1-D row
        assert lw.predict(X[0]).tolist() == [digits_clf.predict(X[:1])[0]]
        root = lw.root
        assert root.is_dir()
    assert not root.exists()  # the extracted copy is deleted on close


def test_onnx_classifier_round_trip(onnx_clf_zip, digits, digits_clf):
    X, _ = digits
    with load_learnware(onnx_clf_zip) as lw:
        assert lw.manifest.model.format == "onnx"
        pred = lw.predict(X)
        assert pred.dtype.kind == "i"
        agree = np.mean(pred == digits_clf.predict(X))
        assert agree > 0.995  # float32 graph vs float64 sklearn
        proba = lw.predict_proba(X[:100])
        np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-5)
        np.testing.assert_allclose(proba, digits_clf.predict_proba(X[:100]), atol=1e-4)


def test_regressor_round_trip(ridge_zip, diabetes, diabetes_ridge):
    X, _ = diabetes
    with load_learnware(ridge_zip) as lw:
        assert lw.manifest.output.kind == "value"
        pred = lw.predict(X)
        assert pred.shape == (X.shape[0],) and pred.dtype == np.float64
        np.testing.assert_allclose(pred, diabetes_ridge.predict(X), rtol=1e-4, atol=1e-3)
        with pytest.raises(ContractError, match="not a classifier"):
            lw.predict_proba(X)


@pytest.mark.parametrize("width", [10, 65])
def test_wrong_input_width_is_a_contract_error(skops_clf_zip, digits, width):
    X = np.zeros((3, width))
    with load_learnware(skops_clf_zip) as lw, pytest.raises(
        ContractError, match=rf"expects inputs of shape \(n, 64\), got \(3, {width}\)"
    ):
        lw.predict(X)


def test_onnx_wrong_width_and_non_numeric(onnx_clf_zip):
    with load_learnware(onnx_clf_zip) as lw:
        with pytest.raises(ContractError):
            lw.predict(np.zeros((2, 63)))
        with pytest.raises(ContractError, match="numeric"):
            lw.predict([["a"] * 64])


def test_check_package_accepts_good_packages(skops_clf_zip, onnx_clf_zip, ridge_zip):
    for z in (skops_clf_zip, onnx_clf_zip, ridge_zip):
        report = check_package(z)
        assert report.ok, report.text()
        names = [i.name for i in report.items]
        assert names[:4] == ["archive", "manifest and specs", "statistical spec", "model runs"]
        assert report.digest == load_learnware(z).digest


def test_write_package_rejects_spec_of_other_width(digits_clf, diabetes_spec, tmp_path):
    with pytest.raises(PackageError, match="model takes 64 features but the spec has 10"):
        write_package(tmp_path / "p", digits_clf, name="x", semantic=table_semantic(64),
                      spec=diabetes_spec)


# ---------------------------------------------------------------------- output contract


def _lw(skops_clf_zip):
    return load_learnware(skops_clf_zip)


def test_output_contract_checks(skops_clf_zip):
    with _lw(skops_clf_zip) as lw:
        assert lw.check_output(np.array([1, 2, 3]), 3).tolist() == [1, 2, 3]
        assert lw.check_output(np.array([1.0, 2.0]), 2).dtype.kind == "i"
        with pytest.raises(ContractError, match="outside its declared label set"):
            lw.check_output(np.array([1, 42]), 2)
        with pytest.raises(ContractError, match="rows for 3 inputs"):
            lw.check_output(np.array([1, 2]), 3)
        with pytest.raises(ContractError, match="NaN or inf"):
            lw.check_output(np.array([1.0, np.nan]), 2)
        with pytest.raises(ContractError, match="sum to 1"):
            lw._check_proba(np.full((2, 10), 0.5), 2)


# ---------------------------------------------------------------------- no package code runs

EVIL_PY = textwrap.dedent(
    """
    from pathlib import Path
    Path(__file__).resolve().parent.joinpath("{marker}").write_text("package code ran")
    raise RuntimeError("package code must never be imported")
    """
)


@pytest.mark.parametrize("fmt", ["skops", "onnx"])
def test_code_free_formats_never_run_package_code(fmt, tmp_path, digits, digits_clf, digits_spec):
    X, _ = digits
    pkg = tmp_path / "pkg"
    write_package(pkg, digits_clf, name="digits", semantic=table_semantic(64), spec=digits_spec,
                  model_format=fmt)
    for name in ("__init__.py", "model.py", "sitecustomize.py", "learnware.py"):
        (pkg / name).write_text(EVIL_PY.format(marker=f"RAN-{name}"))
    modules_before = set(sys.modules)
    pack(pkg, tmp_path / "pkg.zip")
    for source in (pkg, tmp_path / "pkg.zip"):
        with load_learnware(source) as lw:
            assert np.mean(lw.predict(X[:200]) == digits_clf.predict(X[:200])) > 0.99
            lw.predict_proba(X[:5])
            if source.suffix == ".zip":
                assert not list(lw.root.glob("RAN-*"))
        assert check_package(source).ok
    assert not list(pkg.glob("RAN-*"))
    assert not {m for m in set(sys.modules) - modules_before if m.startswith("_learndock_pkg")}


# ---------------------------------------------------------------------- skops trust


@pytest.fixture(scope="module")
def untrusted_zip(tmp_path_factory, diabetes, diabetes_spec):
    model = make_pipeline(FunctionTransformer(operator.abs), Ridge()).fit(*diabetes)
    root = tmp_path_factory.mktemp("untrusted")
    write_package(root / "pkg", model, name="abs-ridge", semantic=_regressor_sem(),
                  spec=diabetes_spec)
    zip_directory(root / "pkg", root / "pkg.zip")
    return root / "pkg.zip", model


def test_skops_untrusted_type_needs_explicit_trust(untrusted_zip, diabetes):
    z, model = untrusted_zip
    X, _ = diabetes
    with load_learnware(z) as lw, pytest.raises(TrustError, match="_operator.abs"):
        lw.predict(X)
    with load_learnware(z, trusted_types=["_operator.abs"]) as lw:
        np.testing.assert_allclose(lw.predict(X), model.predict(X), rtol=1e-12)
    report = check_package(z)
    assert not report.ok
    assert "not trusted by default" in report.text()


def test_corrupt_skops_file_is_a_package_error(pkg_copy):
    (pkg_copy / "model.skops").write_bytes(b"garbage")
    with load_learnware(pkg_copy) as lw, pytest.raises(PackageError, match="model.skops"):
        lw.predict(np.zeros((1, 64)))


def test_corrupt_onnx_file_is_a_package_error(tmp_path, digits_clf, digits_spec):
    pkg = tmp_path / "pkg"
    write_package(pkg, digits_clf, name="d", semantic=table_semantic(64), spec=digits_spec,
                  model_format="onnx")
    (pkg / "model.onnx").write_bytes(os.urandom(64))
    with load_learnware(pkg) as lw, pytest.raises(PackageError, match="cannot load ONNX"):
        lw.predict(np.zeros((1, 64)))


# ---------------------------------------------------------------------- manifest caps


def _anchored_manifest(skops_clf_dir: Path, kwargs_yaml: str) -> str:
    """The package's manifest with raw YAML (anchors, aliases) as ``model.kwargs``."""
    import yaml

    data = yaml.safe_load((skops_clf_dir / "learnware.yaml").read_text())
    data["model"]["kwargs"] = {"__KW__": 0}
    return yaml.safe_dump(data, sort_keys=False).replace("__KW__: 0", "\n" + kwargs_yaml)


def test_manifest_yaml_caps(skops_clf_dir):
    from learndock.config import ArchiveLimits
    from learndock.errors import ManifestError

    text = (skops_clf_dir / "learnware.yaml").read_text()
    m = Manifest.from_yaml(text)
    with pytest.raises(ManifestError, match=r"is \d+ bytes; the limit is 100 \(LEARNDOCK_ZIP_YAML_MAX_BYTES\)"):
        Manifest.from_yaml(text, ArchiveLimits(yaml_max_bytes=100))
    with pytest.raises(ManifestError, match=r"more than 50 YAML nodes.*LEARNDOCK_ZIP_YAML_MAX_NODES"):
        Manifest.from_yaml(text, ArchiveLimits(yaml_max_nodes=50))
    shared = _anchored_manifest(skops_clf_dir, "    a: &v [1, 2, 3]\n    b: *v\n    c: *v")
    assert Manifest.from_yaml(shared).model.kwargs == {"a": [1, 2, 3], "b": [1, 2, 3],
                                                       "c": [1, 2, 3]}
    with pytest.raises(ManifestError, match=r"more than 1 YAML aliases.*YAML_MAX_ALIASES"):
        Manifest.from_yaml(shared, ArchiveLimits(yaml_max_aliases=1))
    # aliases count what they expand to: each *v adds the 4 nodes of [1, 2, 3]
    from learndock.package.yamlsafe import count_yaml

    plain = _anchored_manifest(skops_clf_dir, "    a: 0")
    n_plain = count_yaml(plain, ArchiveLimits(), "m")
    n_shared = count_yaml(shared, ArchiveLimits(), "m")
    assert n_shared == n_plain - 1 + 4 + 2 * (1 + 4)  # a's list; keys b, c and their lists
    assert m == Manifest.load(skops_clf_dir)


def test_manifest_caps_come_from_the_environment(skops_clf_dir, monkeypatch):
    from learndock.errors import ManifestError

    monkeypatch.setenv("LEARNDOCK_ZIP_YAML_MAX_NODES", "30")
    with pytest.raises(ManifestError, match="more than 30 YAML nodes"):
        load_learnware(skops_clf_dir)


def test_yaml_refusals_before_construction():
    from learndock.config import ArchiveLimits
    from learndock.errors import ManifestError
    from learndock.package.yamlsafe import YAML_MAX_DEPTH, load_yaml

    deep = "[" * (YAML_MAX_DEPTH + 1) + "]" * (YAML_MAX_DEPTH + 1)
    with pytest.raises(ManifestError, match="nests collections more than"):
        load_yaml(deep, ArchiveLimits(), "x.yaml")
    with pytest.raises(ManifestError, match="names no anchor"):
        load_yaml("&a [*a]", ArchiveLimits(), "x.yaml")
    for bad in ("x: 2020-13-45", "a: !!python/name:os.system x", "{[1]: 2}", b"a: \xc3\x28"):
        with pytest.raises(ManifestError, match="not valid YAML"):
            load_yaml(bad, ArchiveLimits(), "x.yaml")


@pytest.mark.parametrize(
    ("shape", "ok"),
    [([3, 1024, 1024], True), ([3, 1024, 1025], False), ([3, 4000, 4000], False),
     ([10**9, 10**9], False)],
)
def test_image_input_shape_cap(shape, ok):
    from learndock.config import ArchiveLimits
    from learndock.errors import ManifestError
    from learndock.package.manifest import check_input_shape

    limits = ArchiveLimits()
    if ok:
        check_input_shape({"shape": shape}, limits)
    else:
        with pytest.raises(ManifestError, match="LEARNDOCK_ZIP_MAX_SAMPLE_ELEMENTS"):
            check_input_shape({"shape": shape}, limits)


def test_image_probe_batch_is_bounded():
    from types import SimpleNamespace

    from learndock.package.build import PROBE_MAX_ELEMENTS, probe_inputs
    from learndock.spec import DataType

    def fake(shape):
        manifest = SimpleNamespace(input=SimpleNamespace(shape=shape, size=int(np.prod(shape))))
        return SimpleNamespace(semantic=SimpleNamespace(data_type=DataType.IMAGE),
                               manifest=manifest)

    X, _ = probe_inputs(fake([3, 32, 32]), 32)
    assert X.shape == (32, 3, 32, 32)
    X, _ = probe_inputs(fake([3, 1024, 1024]), 32)
    assert X.shape[0] == 1 and X.size <= PROBE_MAX_ELEMENTS
    X, _ = probe_inputs(fake([1, 512, 512]), 32)
    assert X.shape[0] == 16 and X.size <= PROBE_MAX_ELEMENTS


def test_pack_applies_the_callers_limits(skops_clf_dir, tmp_path):
    from learndock.config import ArchiveLimits
    from learndock.errors import ManifestError

    with pytest.raises(ManifestError, match="YAML nodes"):
        pack(skops_clf_dir, tmp_path / "x.zip", limits=ArchiveLimits(yaml_max_nodes=40))
    assert not (tmp_path / "x.zip").exists()
