"""The reference dock's own backend test zips (Learnware-LAMDA/Beimingwu ``backend/tests/data``,
Apache-2.0), in ``../shared/fixtures/reference-dock/``: every valid one imports and runs in the
jail; the invalid one, the one without a statistical spec, and the one whose model imports a
sibling module by absolute name are refused, each with its reason.

``test_learnware_multi_import_old.zip`` imports ``from my_module import MyClass``: the reference
dock's own test expects *that* zip to fail verification (``result_code == "FAIL"``) and the
relative-import variant (``test_learnware_multi_import.zip``) to succeed; learndock agrees.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from learndock.package import check_package, load_learnware
from learndock.package.reference import IMPORT_RECORD

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "reference-dock"
pytestmark = pytest.mark.skipif(
    not (FIXTURES / "test_learnware.zip").is_file(),
    reason=f"the reference dock's test zips are not here ({FIXTURES}): they live in the shared "
    "fixtures of this setup, outside the repository",
)

VALID = ["test_learnware.zip", "test_learnware2.zip", "test_learnware_conda.zip",
         "test_learnware_folder.zip", "test_learnware_multi_import.zip"]


@pytest.fixture(scope="module")
def semantic() -> dict:
    """The dock's semantic spec for these zips: describes 2 of the 64 input features."""
    return json.loads((FIXTURES / "semantic_beimingwu.json").read_text())


def _items(report) -> dict[str, tuple[bool, str]]:  # noqa: ANN001
    return {i.name: (i.ok, i.message) for i in report.items}


@pytest.mark.parametrize("name", VALID)
def test_valid_reference_zips_import_and_run_in_the_jail(name, semantic):
    report = check_package(FIXTURES / name, sandbox=True, semantic=semantic)
    assert report.ok, report.text()
    items = _items(report)
    assert items["model runs"][1].startswith("predict on 32 inputs herded from the spec -> "
                                             "shape [32, 10]")
    assert items["isolation"][1].startswith("bubblewrap")
    # The reference's gamma 0.1 on raw pixels: said, not refused.
    assert items["kernel note"][1].startswith("degenerate kernel: under gamma=0.1")
    assert "describes 2 of 64 input features; kept as given" in items["reference import"][1]


@pytest.mark.parametrize("name", VALID)
def test_what_the_import_keeps(name, semantic):
    with load_learnware(FIXTURES / name, semantic=semantic, runtime="sandbox") as lw:
        m = lw.manifest
        assert (m.model.format, m.model.class_name) == ("python", "SVM")
        assert m.input.shape == [64] and m.output.labels == list(range(10))
        # stat.json has no 'type': the yaml's class (RKMEStatSpecification) decides.
        spec = lw.stat_spec
        assert spec.type_name == "rkme-table" and spec.n_points == 100
        assert spec.kernel.gamma == 0.1 and spec.n_samples == 1257
        assert spec.beta.sum() == pytest.approx(1.0)
        # The semantic spec is kept as given: 2 of 64 feature descriptions, none invented.
        assert lw.semantic.origin == "reference"
        assert lw.semantic.input.descriptions == {0: "f0", 1: "f1"}
        assert lw.semantic.output.descriptions == {0: "c0"}
        record = json.loads((lw.root / IMPORT_RECORD).read_text())
        assert record["stat_specs"][0]["class_name"] == "RKMEStatSpecification"
        assert record["stat_specs"][0]["kernel_health"]["verdict"] == "unrelated"
        assert (lw.root / "reference_learnware.yaml").is_file()
        # The SVM's probabilities, from the jail: rows of 10 that sum to 1.
        X = spec.herd(16, random_state=1)
        proba = lw.predict(X)
        assert proba.shape == (16, 10)
        assert np.allclose(proba.sum(axis=1), 1.0)


def test_requirements_of_the_fixtures(semantic):
    with load_learnware(FIXTURES / "test_learnware.zip", semantic=semantic) as lw:
        assert lw.manifest.requirements.pip == ["scikit-learn", "numpy", "scipy"]
        advisory = json.loads((lw.root / IMPORT_RECORD).read_text())["requirements"]["advisory"]
    why = {a["requirement"]: a["why"] for a in advisory}
    assert set(why) == {"joblib==1.3.0", "sqlite", "pywin32"}
    assert why["joblib==1.3.0"].startswith("the dock runs joblib ")
    with load_learnware(FIXTURES / "test_learnware_conda.zip", semantic=semantic) as lw:
        assert lw.manifest.requirements.pip == []
        advisory = json.loads((lw.root / IMPORT_RECORD).read_text())["requirements"]["advisory"]
    assert {a["requirement"] for a in advisory} == {"scikit-learn", "numpy", "scipy",
                                                    "python==3.9", "sqlite", "pywin32"}


def test_folder_zip_is_unwrapped(semantic):
    with load_learnware(FIXTURES / "test_learnware_folder.zip", semantic=semantic) as lw:
        assert (lw.root / "__init__.py").is_file() and (lw.root / "svm.pkl").is_file()
        assert not (lw.root / "learnware_folder").exists()
        notes = json.loads((lw.root / IMPORT_RECORD).read_text())["notes"]
    assert "the zip holds its files under one top folder 'learnware_folder': unwrapped" in notes


def test_invalid_zip_is_refused_with_its_import_reason(semantic):
    report = check_package(FIXTURES / "test_learnware_invalid.zip", sandbox=True,
                           semantic=semantic)
    assert not report.ok
    ok, message = _items(report)["model runs"]
    assert not ok
    assert "ModuleNotFoundError: No module named 'aabbccddee'" in message


def test_zip_without_stat_spec_is_refused(semantic):
    report = check_package(FIXTURES / "test_learnware_no_stat.zip", sandbox=True,
                           semantic=semantic)
    assert not report.ok
    ok, message = _items(report)["manifest and specs"]
    assert not ok
    assert message.startswith("reference package has no statistical specification")


def test_absolute_sibling_import_is_refused_like_the_reference_dock(semantic):
    report = check_package(FIXTURES / "test_learnware_multi_import_old.zip", sandbox=True,
                           semantic=semantic)
    assert not report.ok
    ok, message = _items(report)["model runs"]
    assert not ok
    assert "No module named 'my_module'" in message
    assert "import it relatively (from .my_module import ...)" in message


def test_reference_stat_json_loads_with_the_yaml_class():
    from learndock.spec.io import load_stat_spec

    spec = load_stat_spec(FIXTURES / "stat.json", default_type="RKMEStatSpecification")
    assert spec.z.shape == (100, 64) and spec.kernel.gamma == 0.1
