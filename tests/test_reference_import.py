"""Import of the reference dock's learnware packages (yaml + __init__.py + RKME JSON)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from helpers import (
    REFERENCE_YAML,
    normalise,
    reference_semantic,
    reference_stat_spec_dict,
    table_semantic,
    write_reference_dir,
    zip_directory,
)
from learndock.cli.main import app
from learndock.errors import ManifestError, PackageError, TrustError
from learndock.package import check_package, load_learnware, pack
from learndock.spec import RKMETableSpec

GAMMA = 0.05


@pytest.fixture
def ref_stat(digits_spec) -> dict:
    return reference_stat_spec_dict(digits_spec.z, digits_spec.beta, GAMMA, 1797)


@pytest.fixture
def ref_dir(tmp_path, linear_weights, ref_stat) -> Path:
    """Reference package that carries its semantic spec as semantic_specification.json."""
    return write_reference_dir(
        tmp_path / "ref", linear_weights, ref_stat, semantic=reference_semantic(64)
    )


@pytest.fixture
def ref_zip(tmp_path, ref_dir) -> Path:
    return zip_directory(ref_dir, tmp_path / "ref.zip")  # flat, ZIP_STORED, like the reference


def _snapshot(d: Path) -> dict[str, bytes]:
    return {p.relative_to(d).as_posix(): p.read_bytes() for p in d.rglob("*") if p.is_file()}


def test_reference_zip_loads_as_python_format(ref_zip, digits_spec):
    with load_learnware(ref_zip) as lw:
        m = lw.manifest
        assert m.model.format == "python"
        assert (m.model.module, m.model.class_name, m.model.kwargs) == ("__init__.py", "MyModel", {})
        assert m.input.shape == [64]
        assert m.output.kind == "auto" and m.output.labels == list(range(10))
        assert m.requirements.pip == ["numpy>=1.20", "scikit-learn"]
        assert m.semantic.name == "ref digits"
        assert m.semantic.license.value == "Apache-2.0"
        assert [(s.type, s.file) for s in m.stat_specs] == [("rkme-table", "learndock_spec_0.json")]
        spec = lw.stat_spec
        assert isinstance(spec, RKMETableSpec)
        assert spec.kernel.gamma == GAMMA
        assert np.array_equal(spec.kernel.scale, np.ones(64))
        assert np.array_equal(spec.z, digits_spec.z)
        assert spec.n_samples == 1797
        # the original yaml is kept for provenance, next to the converted manifest
        assert (lw.root / "reference_learnware.yaml").is_file()


def test_reference_model_needs_trust(ref_zip, digits):
    with load_learnware(ref_zip) as lw, pytest.raises(TrustError):
        lw.predict(digits[0][:3])


def test_reference_model_predicts_with_trust(ref_zip, digits, digits_clf):
    X, _ = digits
    with load_learnware(ref_zip, trust_remote_code=True) as lw:
        assert np.array_equal(lw.predict(X), digits_clf.predict(X))
        model = lw.model.model
        assert isinstance(model, sys.modules["learnware.model"].BaseModel)
        assert model.input_shape == (64,)
        # labels-only reference classifier: probabilities are the one-hot of the label
        assert np.array_equal(lw.predict_proba(X[:5]).argmax(axis=1), digits_clf.predict(X[:5]))


@pytest.mark.parametrize("shape", ["reference", "learndock"])
def test_semantic_spec_passed_in(tmp_path, linear_weights, ref_stat, digits, digits_clf, shape):
    d = write_reference_dir(tmp_path / "ref", linear_weights, ref_stat)  # no semantic inside
    z = zip_directory(d, tmp_path / "ref.zip")
    with pytest.raises(ManifestError, match="carries no semantic specification"):
        load_learnware(z)
    sem = reference_semantic(64, name="passed in") if shape == "reference" else table_semantic(
        64, name="passed in"
    )
    with load_learnware(z, semantic=sem, trust_remote_code=True) as lw:
        assert lw.semantic.name == "passed in"
        assert np.array_equal(lw.predict(digits[0][:50]), digits_clf.predict(digits[0][:50]))


def test_semantic_file_named_in_yaml(tmp_path, linear_weights, ref_stat):
    d = write_reference_dir(tmp_path / "ref", linear_weights, ref_stat)
    (d / "sem.json").write_text(json.dumps(reference_semantic(64, name="from yaml entry")))
    data = {**REFERENCE_YAML, "semantic_specification": {"file_name": "sem.json"}}
    (d / "learnware.yaml").write_text(yaml.safe_dump(data))
    with load_learnware(d) as lw:
        assert lw.semantic.name == "from yaml entry"


def test_reference_directory_is_not_modified(ref_dir):
    before = _snapshot(ref_dir)
    with load_learnware(ref_dir) as lw:
        assert lw.root != ref_dir
        assert lw.manifest.model.format == "python"
    assert _snapshot(ref_dir) == before


def test_default_stat_spec_when_yaml_lists_none(ref_dir):
    (ref_dir / "learnware.yaml").write_text(yaml.safe_dump({"model": REFERENCE_YAML["model"]}))
    with load_learnware(ref_dir) as lw:
        assert lw.stat_spec.kernel.gamma == GAMMA


@pytest.mark.parametrize("cls", ["HeteroMapTableSpecification", "GenerativeModelSpecification",
                                 "LLMGeneralCapabilitySpecification", "Popen"])
def test_unsupported_reference_spec_class(ref_dir, cls):
    data = json.loads(json.dumps(REFERENCE_YAML))
    data["stat_specifications"][0]["class_name"] = cls
    (ref_dir / "learnware.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(ManifestError, match=f"'{cls}' is not supported"):
        load_learnware(ref_dir)


def test_yaml_class_and_spec_file_must_agree(ref_dir):
    """The yaml names an image spec, the file holds a table spec: refused, naming both."""
    data = json.loads(json.dumps(REFERENCE_YAML))
    data["stat_specifications"][0]["class_name"] = "RKMEImageSpecification"
    (ref_dir / "learnware.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(PackageError, match="names RKMEImageSpecification but the file holds a "
                                           "rkme-table spec"):
        load_learnware(ref_dir)


def test_reference_spec_problems(ref_dir, ref_stat):
    (ref_dir / "stat_spec.json").write_text(json.dumps({**ref_stat, "beta": [-1.0] * 20}))
    with pytest.raises(PackageError, match="negative weights"):
        load_learnware(ref_dir)
    (ref_dir / "stat_spec.json").unlink()
    with pytest.raises(PackageError, match="'stat_spec.json' is missing"):
        load_learnware(ref_dir)


def test_pack_converts_reference_package(ref_dir, tmp_path):
    digest = pack(ref_dir, tmp_path / "converted.zip")
    with load_learnware(tmp_path / "converted.zip") as lw:
        assert lw.digest == digest
        assert lw.manifest.model.format == "python"
    report = check_package(tmp_path / "converted.zip", sandbox=True)
    assert report.ok, report.text()  # the reference model also runs in the sandbox


def test_cli_import_reference_then_check(ref_zip, tmp_path):
    runner = CliRunner()
    out = tmp_path / "imported.zip"
    res = runner.invoke(app, ["import-reference", str(ref_zip), "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert "python-format model" in normalise(res.stdout)
    assert out.is_file()
    res = runner.invoke(app, ["check", str(out), "--trust-remote-code", "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert report["ok"] is True
    assert {c["name"] for c in report["checks"]} >= {"archive", "model runs"}
    res = runner.invoke(app, ["check", str(out)])
    assert res.exit_code == 1
    assert "needs the sandbox or trust_remote_code" in normalise(res.stdout)


def test_cli_import_reference_with_semantic_file(tmp_path, linear_weights, ref_stat):
    d = write_reference_dir(tmp_path / "ref", linear_weights, ref_stat)
    z = zip_directory(d, tmp_path / "ref.zip")
    runner = CliRunner()
    res = runner.invoke(app, ["import-reference", str(z), "-o", str(tmp_path / "o.zip")])
    assert res.exit_code == 1
    assert "carries no semantic specification" in normalise(res.stderr)
    sem = tmp_path / "sem.json"
    sem.write_text(json.dumps(reference_semantic(64)))
    res = runner.invoke(
        app, ["import-reference", str(z), "-o", str(tmp_path / "o.zip"), "--semantic", str(sem)]
    )
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["check", str(tmp_path / "o.zip"), "--trust-remote-code"])
    assert res.exit_code == 0, res.output
    assert "accepted" in res.stdout


# ---------------------------------------------------------------------- hostile reference packages


def test_reference_yaml_alias_bomb_is_refused(ref_dir):
    laughs = ["l0: &l0 [a, a, a, a, a, a, a]"] + [
        f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 7)}]" for i in range(1, 9)
    ]
    text = (ref_dir / "learnware.yaml").read_text() + "\n".join(laughs) + "\n"
    (ref_dir / "learnware.yaml").write_text(text)
    with pytest.raises(ManifestError, match="LEARNDOCK_ZIP_YAML_MAX_NODES"):
        load_learnware(ref_dir)


def test_reference_spec_caps(ref_dir, ref_stat):
    (ref_dir / "stat_spec.json").write_text(json.dumps({**ref_stat, "beta": [0.0] * 20}))
    with pytest.raises(PackageError, match="all weights are zero"):
        load_learnware(ref_dir)
    (ref_dir / "stat_spec.json").write_text(json.dumps({**ref_stat, "gamma": 1e300}))
    with pytest.raises(PackageError, match="LEARNDOCK_ZIP_MAX_GAMMA"):
        load_learnware(ref_dir)


@pytest.mark.parametrize(
    ("yaml_text", "match"),
    [
        ("stat_specifications: oops\nmodel: {class_name: M}\n", "must be a list of mappings"),
        ("stat_specifications: [1, 2]\nmodel: {class_name: M}\n", "must be a list of mappings"),
    ],
)
def test_reference_yaml_with_wrong_types(ref_dir, yaml_text, match):
    (ref_dir / "learnware.yaml").write_text(yaml_text)
    with pytest.raises(ManifestError, match=match):
        load_learnware(ref_dir)


def test_reference_side_files_are_capped(ref_dir):
    (ref_dir / "requirements.txt").unlink()
    (ref_dir / "environment.yaml").write_text("dependencies: 7\n")
    with pytest.raises(ManifestError, match="'dependencies' must be a list"):
        load_learnware(ref_dir)
    (ref_dir / "environment.yaml").unlink()
    (ref_dir / "requirements.txt").write_text("numpy\n" * 60_000)
    with pytest.raises(ManifestError, match="LEARNDOCK_ZIP_YAML_MAX_BYTES"):
        load_learnware(ref_dir)


def test_reference_semantic_with_huge_dimensions(tmp_path, linear_weights, ref_stat):
    from helpers import reference_semantic, write_reference_dir

    sem = reference_semantic(64)
    sem["Output"] = {"Dimension": 10**12, "Description": {}}
    d = write_reference_dir(tmp_path / "ref", linear_weights, ref_stat, semantic=sem)
    with pytest.raises(ManifestError, match="1000000000000 output labels"):
        load_learnware(d)
