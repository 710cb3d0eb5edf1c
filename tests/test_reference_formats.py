"""What real reference learnwares need, without the reference engine installed: YAML tuples,
spec JSON without a type, partial feature descriptions, requirements, a top folder, the model
shim, the reference's image and text specs, and the degenerate-kernel diagnosis."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml

from helpers import (
    REFERENCE_YAML,
    reference_semantic,
    reference_stat_spec_dict,
    table_semantic,
    write_reference_dir,
    zip_directory,
)
from learndock.errors import (
    EncoderMismatchError,
    ManifestError,
    PackageError,
    SpecError,
    UnsafeArchiveError,
)
from learndock.package import check_package, load_learnware, write_package
from learndock.package.reference import (
    IMPORT_RECORD,
    declared_shapes,
    read_import_record,
    read_requirements,
)
from learndock.package.yamlsafe import load_yaml
from learndock.spec import RKMEImageSpec, RKMETableSpec, RKMETextSpec, SemanticSpec
from learndock.spec.health import degenerate_kernel, kernel_health
from learndock.spec.io import load_stat_spec, stat_spec_from_dict
from learndock.spec.kernels import GaussianKernel
from learndock.spec.reference import (
    REFERENCE_TEXT_ENCODER,
    from_reference_image_dict,
    from_reference_text_dict,
    is_comparable,
)

GAMMA = 0.05

#: What the reference's template writes (yaml.dump of tuples).
TEMPLATE_YAML = textwrap.dedent(
    """\
    model:
      class_name: MyModel
      kwargs:
        input_shape: !!python/tuple
        - 64
        output_shape: !!python/tuple
        - 10
    stat_specifications:
    - class_name: RKMETableSpecification
      file_name: stat_spec.json
      kwargs: {}
      module_path: learnware.specification
    """
)

#: The template's model, shortened: it imports the base class from learnware.model.base.
TEMPLATE_INIT_PY = textwrap.dedent(
    """
    import os

    import numpy as np
    from learnware.model.base import BaseModel
    from learnware.model import TorchModel


    class MyModel(BaseModel):
        def __init__(self, input_shape, output_shape):
            super().__init__(input_shape=input_shape, output_shape=output_shape)
            here = os.path.dirname(os.path.abspath(__file__))
            self.W = np.load(os.path.join(here, "weights.npy"), allow_pickle=False)
            self.b = np.load(os.path.join(here, "bias.npy"), allow_pickle=False)
            assert TorchModel is not None

        def predict(self, X):
            assert list(self.input_shape) == [64], self.input_shape
            return np.argmax(np.asarray(X) @ self.W + self.b, axis=1)
    """
)


@pytest.fixture
def ref_stat(digits_spec) -> dict:
    return reference_stat_spec_dict(digits_spec.z, digits_spec.beta, GAMMA, 1797)


@pytest.fixture
def ref_dir(tmp_path, linear_weights, ref_stat) -> Path:
    return write_reference_dir(tmp_path / "ref", linear_weights, ref_stat,
                               semantic=reference_semantic(64))


def _partial_semantic(dim: int = 64, described: int = 2) -> dict:
    sem = reference_semantic(dim)
    sem["Input"]["Description"] = {str(i): f"pixel {i}" for i in range(described)}
    return sem


# ---------------------------------------------------------------------- YAML tags


def test_template_yaml_with_python_tuples_imports_and_runs_in_the_jail(ref_dir, digits,
                                                                       digits_clf, tmp_path):
    (ref_dir / "learnware.yaml").write_text(TEMPLATE_YAML)
    (ref_dir / "__init__.py").write_text(TEMPLATE_INIT_PY)
    with load_learnware(ref_dir) as lw:
        assert lw.manifest.model.kwargs == {"input_shape": [64], "output_shape": [10]}
        assert "!!python/tuple tags: read as lists" in " ".join(
            read_import_record(lw.root)["notes"])
    z = zip_directory(ref_dir, tmp_path / "template.zip")
    report = check_package(z, sandbox=True)
    assert report.ok, report.text()
    with load_learnware(z, runtime="sandbox") as lw:  # learnware.model.base, in the jail
        assert np.array_equal(lw.predict(digits[0][:40]), digits_clf.predict(digits[0][:40]))


@pytest.mark.parametrize(
    "tag",
    [
        "!!python/object/apply:os.mkdir [MARKER]",
        "!!python/object/new:os.mkdir [MARKER]",
        "!!python/name:os.mkdir",
        "!!python/module:os",
        "!!python/object:collections.OrderedDict {}",
    ],
)
def test_code_naming_yaml_tags_are_refused(ref_dir, tmp_path, tag):
    marker = tmp_path / "pwned"
    tag = tag.replace("MARKER", json.dumps(str(marker)))
    (ref_dir / "learnware.yaml").write_text(TEMPLATE_YAML + f"extra: {tag}\n")
    with pytest.raises(ManifestError, match=r"uses the YAML tag '!!python/(object|name|module)"):
        load_learnware(ref_dir)
    assert not marker.exists()
    with pytest.raises(ManifestError, match="Python-specific tags can name code"):
        load_yaml(f"a: {tag}\n")
    assert not marker.exists()


def test_tuple_tag_reads_plain_data_only():
    assert load_yaml("a: !!python/tuple [1, [2, 3], {b: c}]\n") == {"a": [1, [2, 3], {"b": "c"}]}
    assert load_yaml("a: !!set {x: null}\nb: !!binary aGk=\n") == {"a": {"x"}, "b": b"hi"}
    with pytest.raises(ManifestError, match="must tag a sequence"):
        load_yaml("a: !!python/tuple scalar\n")
    with pytest.raises(ManifestError, match="not valid YAML"):
        load_yaml("? !!python/tuple [1, 2]\n: unhashable key\n")


def test_tuple_alias_bomb_still_hits_the_node_cap(ref_dir):
    laughs = ["l0: &l0 !!python/tuple [a, a, a, a, a, a, a]"] + [
        f"l{i}: &l{i} !!python/tuple [{', '.join([f'*l{i - 1}'] * 7)}]" for i in range(1, 9)
    ]
    (ref_dir / "learnware.yaml").write_text(TEMPLATE_YAML + "\n".join(laughs) + "\n")
    with pytest.raises(ManifestError, match="LEARNDOCK_ZIP_YAML_MAX_NODES"):
        load_learnware(ref_dir)


# ---------------------------------------------------------------------- spec JSON and classes


def test_spec_json_without_type_takes_the_yaml_class(ref_dir, ref_stat, digits_spec):
    del ref_stat["type"]
    (ref_dir / "stat_spec.json").write_text(json.dumps(ref_stat))
    data = json.loads(json.dumps(REFERENCE_YAML))
    data["stat_specifications"][0]["class_name"] = "RKMEStatSpecification"
    (ref_dir / "learnware.yaml").write_text(yaml.safe_dump(data))
    with load_learnware(ref_dir) as lw:
        assert lw.stat_spec.kernel.gamma == GAMMA
        assert np.array_equal(lw.stat_spec.z, digits_spec.z)
        notes = " ".join(read_import_record(lw.root)["notes"])
        assert "has no 'type' field: read as RKMEStatSpecification" in notes
        assert "older name of RKMETableSpecification" in notes
    # Without the yaml's help a typeless JSON is still refused, with the known types listed.
    with pytest.raises(SpecError, match="unknown statistical spec type"):
        stat_spec_from_dict(ref_stat)


def test_missing_stat_spec_is_refused_clearly(ref_dir):
    (ref_dir / "stat_spec.json").unlink()
    (ref_dir / "learnware.yaml").write_text(yaml.safe_dump({"model": REFERENCE_YAML["model"]}))
    with pytest.raises(PackageError, match="has no statistical specification: its learnware.yaml "
                                           "lists no stat_specifications"):
        load_learnware(ref_dir)


# ---------------------------------------------------------------------- semantic spec


def test_partial_feature_descriptions_are_kept_as_given(tmp_path, linear_weights, ref_stat):
    d = write_reference_dir(tmp_path / "ref", linear_weights, ref_stat,
                            semantic=_partial_semantic())
    with load_learnware(d) as lw:
        sem = lw.semantic
        assert sem.origin == "reference"
        assert sem.input.descriptions == {0: "pixel 0", 1: "pixel 1"}  # nothing invented
        assert sem.input.n_missing == 62
        assert lw.manifest.input.shape == [64]
        assert "describes 2 of 64 input features; kept as given" in " ".join(
            read_import_record(lw.root)["notes"])
        # What the market stores and parses back (the manifest's semantic dict) stays valid.
        assert SemanticSpec.parse(lw.manifest.to_dict()["semantic"]) == sem
    # Passed in (the Beimingwu upload form), in either shape.
    d2 = write_reference_dir(tmp_path / "ref2", linear_weights, ref_stat)
    with load_learnware(d2, semantic=_partial_semantic(described=1)) as lw:
        assert lw.semantic.input.descriptions == {0: "pixel 0"}


def test_own_packages_keep_the_strict_rule(tmp_path, digits_clf, digits_spec):
    partial = table_semantic(64)
    partial["input"]["descriptions"] = {0: "pixel 0"}
    with pytest.raises(SpecError, match="need a description for every input feature"):
        SemanticSpec.parse(partial)
    with pytest.raises(SpecError, match="need a description for every input feature"):
        write_package(tmp_path / "own", digits_clf, name="own", semantic=partial,
                      spec=digits_spec)
    assert SemanticSpec.parse(table_semantic(64)).origin is None
    assert "origin" not in SemanticSpec.parse(table_semantic(64)).to_dict()


# ---------------------------------------------------------------------- requirements


def test_requirements_bind_only_what_the_dock_satisfies(tmp_path):
    d = tmp_path / "req"
    d.mkdir()
    (d / "requirements.txt").write_text(
        "numpy>=1.20\nscikit-learn  # comment\nnumpy==0.0.1\nsqlite\n"
        "pywin32; sys_platform == 'win32'\ngit+https://example.org/x.git\n-r other.txt\n"
        "scikit-learn[alldeps]\n\n"
    )
    pip, advisory = read_requirements(d, _limits())
    assert pip == ["numpy>=1.20", "scikit-learn"]
    why = {a["requirement"]: a["why"] for a in advisory}
    assert why["numpy==0.0.1"].startswith("the dock runs numpy ")
    assert why["sqlite"] == "not installed in the dock's environment"
    assert why["pywin32; sys_platform == 'win32'"].startswith("not for this platform")
    assert "URLs and paths are not allowed" in why["git+https://example.org/x.git"]
    assert "pip options are not allowed" in why["-r other.txt"]
    assert "extras" in why["scikit-learn[alldeps]"]
    assert {a["source"] for a in advisory} == {"requirements.txt"}


def test_conda_environment_is_advisory(ref_dir):
    (ref_dir / "requirements.txt").unlink()
    (ref_dir / "environment.yaml").write_text(yaml.safe_dump({
        "name": "base", "channels": ["defaults"],
        "dependencies": ["scikit-learn", "python==3.7", {"pip": ["numpy", "nonexistent-pkg"]}],
    }))
    with load_learnware(ref_dir) as lw:
        assert lw.manifest.requirements.pip == ["numpy"]
        advisory = read_import_record(lw.root)["requirements"]["advisory"]
    why = {a["requirement"]: a["why"] for a in advisory}
    assert why["scikit-learn"].startswith("a conda package")
    assert why["python==3.7"].startswith("a Python version; the dock runs Python 3.")
    assert why["nonexistent-pkg"] == "not installed in the dock's environment"


# ---------------------------------------------------------------------- a top folder


def _zip_entries(path: Path, entries: dict[str, Path | bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, src in entries.items():
            zf.writestr(name, src if isinstance(src, bytes) else src.read_bytes())
    return path


def _folder_entries(ref_dir: Path, prefix: str) -> dict[str, Path | bytes]:
    return {f"{prefix}{p.relative_to(ref_dir).as_posix()}": p
            for p in sorted(ref_dir.rglob("*")) if p.is_file()}


def test_single_top_folder_is_unwrapped(ref_dir, tmp_path, digits, digits_clf):
    entries = _folder_entries(ref_dir, "wrapped/")
    entries["wrapped/wrapped/data.txt"] = b"a folder named like its parent"
    z = _zip_entries(tmp_path / "folder.zip", entries)
    with load_learnware(z, trust_remote_code=True) as lw:
        assert (lw.root / "__init__.py").is_file()
        assert (lw.root / "wrapped" / "data.txt").read_bytes().startswith(b"a folder")
        assert not any(p.name.startswith(".learndock-unwrap") for p in lw.root.iterdir())
        assert "one top folder 'wrapped': unwrapped" in " ".join(
            read_import_record(lw.root)["notes"])
        assert np.array_equal(lw.predict(digits[0][:20]), digits_clf.predict(digits[0][:20]))


@pytest.mark.parametrize("extra", [{"README.md": b"beside the folder"},
                                   {"other/x.txt": b"a second folder"}])
def test_folder_is_not_unwrapped_beside_other_entries(ref_dir, tmp_path, extra):
    entries = {**_folder_entries(ref_dir, "wrapped/"), **extra}
    z = _zip_entries(tmp_path / "two.zip", entries)
    with pytest.raises(ManifestError, match="no learnware.yaml at its root"):
        load_learnware(z)


def test_folder_without_manifest_is_not_unwrapped(tmp_path):
    z = _zip_entries(tmp_path / "junk.zip", {"folder/readme.txt": b"no package here"})
    with pytest.raises(ManifestError, match="no learnware.yaml at its root"):
        load_learnware(z)


def test_unsafe_entries_in_a_folder_are_refused_before_unwrapping(ref_dir, tmp_path):
    entries = {**_folder_entries(ref_dir, "wrapped/"), "wrapped/../evil.txt": b"x"}
    z = _zip_entries(tmp_path / "evil.zip", entries)
    with pytest.raises(UnsafeArchiveError, match="'..' components"):
        load_learnware(z)
    assert not (tmp_path / "evil.txt").exists()


# ---------------------------------------------------------------------- the model shim


def test_shim_surface_in_a_fresh_interpreter():
    code = textwrap.dedent(
        """
        from learndock.package.compat import install_reference_shim
        install_reference_shim()
        install_reference_shim()  # idempotent
        from learnware.model import BaseModel, TorchModel
        from learnware.model.base import BaseModel as B2
        from learnware.model.torch_model import TorchModel as T2
        import learnware.model.base
        assert BaseModel is B2 and TorchModel is T2
        m = BaseModel(input_shape=(3,), output_shape=(2,))
        assert (m.input_shape, m.output_shape) == ((3,), (2,))
        assert m.fit(None, None) is None and m.finetune(None, None) is None
        t = TorchModel("net", (1,), (2,))
        assert t.nn_model == "net"
        try:
            import learnware.specification
        except ModuleNotFoundError as exc:
            assert "stand-in provides only learnware.model" in str(exc), exc
        else:
            raise SystemExit("learnware.specification imported")
        print("ok")
        """
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


def test_shim_says_what_it_lacks_in_the_jail(ref_dir, tmp_path):
    init = (ref_dir / "__init__.py").read_text()
    (ref_dir / "__init__.py").write_text(init.replace(
        "from learnware.model import BaseModel",
        "from learnware.model import BaseModel\nfrom learnware.specification import x"))
    report = check_package(zip_directory(ref_dir, tmp_path / "r.zip"), sandbox=True)
    assert not report.ok
    assert "stand-in provides only learnware.model" in report.text()


def test_sibling_module_imported_by_absolute_name_gets_a_hint(ref_dir, tmp_path):
    init = (ref_dir / "__init__.py").read_text()
    (ref_dir / "__init__.py").write_text("from helper_mod import X\n" + init)
    (ref_dir / "helper_mod.py").write_text("X = 1\n")
    report = check_package(zip_directory(ref_dir, tmp_path / "r.zip"), sandbox=True)
    assert not report.ok
    assert "import it relatively (from .helper_mod import ...)" in report.text()
    # Relative imports work.
    (ref_dir / "__init__.py").write_text("from .helper_mod import X\n" + init)
    report = check_package(zip_directory(ref_dir, tmp_path / "r2.zip"), sandbox=True)
    assert report.ok, report.text()


def test_declared_shapes_are_read_not_run(tmp_path):
    src = tmp_path / "m.py"
    src.write_text(textwrap.dedent(
        """
        import os
        os.mkdir("never")
        class Other(BaseModel):
            def __init__(self):
                super().__init__(input_shape=(3,), output_shape=(1,))
        class SVM(BaseModel):
            def __init__(self):
                super(SVM, self).__init__(input_shape=(64,), output_shape=(10,))
        """
    ))
    assert declared_shapes(src, "SVM") == {"input_shape": [64], "output_shape": [10]}
    assert declared_shapes(src, "Other") == {"input_shape": [3], "output_shape": [1]}
    src.write_text("class M:\n    def __init__(self, n):\n        super().__init__(n, None)\n")
    assert declared_shapes(src, "M") == {}
    src.write_text("(" * 100_000)
    assert declared_shapes(src, "M") == {}


def test_declared_input_shape_must_match_the_semantic_spec(ref_dir):
    init = (ref_dir / "__init__.py").read_text()
    (ref_dir / "__init__.py").write_text(init.replace("input_shape=(64,)", "input_shape=(63,)"))
    with pytest.raises(ManifestError, match=r"declares input_shape \[63\] \(in __init__.py"):
        load_learnware(ref_dir)


# ---------------------------------------------------------------------- image and text specs


def _ref_text_dict(seed: int, k: int = 6, dim: int = 384, gamma: float = 0.1) -> dict:
    rng = np.random.default_rng(seed)
    return {"z": rng.normal(size=(k, dim)).tolist(), "beta": (np.ones(k) / k).tolist(),
            "gamma": gamma, "num_points": 50, "type": "RKMETextSpecification",
            "language": ["en", "fr"]}


def _ref_image_dict(seed: int, k: int = 5, shape: tuple = (3, 32, 32)) -> dict:
    rng = np.random.default_rng(seed)
    return {"RKME_IMAGE_VERSION": 1, "msg": None,
            "z": rng.normal(size=(k, *shape)).astype(np.float32).tolist(),
            "beta": (np.ones(k) / k).tolist(), "n_models": 16,
            "model_config": {"k": 2, "mu": 0, "sigma": None, "net_width": 128, "net_depth": 3},
            "type": "RKMEImageSpecification"}


def test_reference_text_spec_lives_in_its_encoders_island(tmp_path):
    a = stat_spec_from_dict(_ref_text_dict(0))
    b = from_reference_text_dict(_ref_text_dict(1))
    assert isinstance(a, RKMETextSpec) and a.type_name == "rkme-text"
    assert a.encoder_id == f"reference:{REFERENCE_TEXT_ENCODER}"
    assert a.encoder["language"] == ["en", "fr"] and a.encoder["can_encode"] is False
    assert a.kernel == GaussianKernel(0.1, np.ones(384)) and is_comparable(a)
    # Comparable with another reference text spec: the reference's own MMD^2 (RBF, gamma 0.1).
    za, zb = np.asarray(a.z), np.asarray(b.z)
    k = lambda x, y: np.exp(-0.1 * ((x[:, None] - y[None]) ** 2).sum(-1))  # noqa: E731
    expected = (a.beta @ k(za, za) @ a.beta + b.beta @ k(zb, zb) @ b.beta
                - 2 * a.beta @ k(za, zb) @ b.beta)
    assert a.mmd2(b) == pytest.approx(expected, rel=1e-9)
    # Never with a spec of learndock's own text encoder.
    ours = RKMETextSpec(a.z, a.beta, a.kernel, encoder={"id": "learndock-minilm-x", "name": "m"})
    with pytest.raises(EncoderMismatchError):
        a.mmd2(ours)
    # The stored (converted) spec keeps its encoder record.
    a.save(tmp_path / "t.json")
    again = load_stat_spec(tmp_path / "t.json")
    assert again.encoder == a.encoder and np.array_equal(again.z, a.z)
    other = from_reference_text_dict(_ref_text_dict(2, dim=128))
    assert other.encoder_id == "reference:unknown-text-encoder-d128"


def test_reference_image_spec_is_kept_and_compared_with_nothing(tmp_path):
    a = stat_spec_from_dict(_ref_image_dict(0))
    b = from_reference_image_dict(_ref_image_dict(1))
    assert isinstance(a, RKMEImageSpec) and a.type_name == "rkme-image"
    assert a.z.shape == (5, 3 * 32 * 32) and a.encoder["sample_shape"] == [3, 32, 32]
    assert a.encoder["comparable"] is False and not is_comparable(a)
    assert "CNN-GP" in a.encoder["reference_kernel"]["name"]
    assert a.encoder_id != b.encoder_id  # an island of its own
    with pytest.raises(EncoderMismatchError):
        a.mmd2(b)
    a.save(tmp_path / "i.json")
    assert load_stat_spec(tmp_path / "i.json").encoder == a.encoder


def test_reference_image_package_imports_and_runs(tmp_path):
    d = tmp_path / "img"
    d.mkdir()
    (d / "__init__.py").write_text(textwrap.dedent(
        """
        import numpy as np
        from learnware.model.base import BaseModel

        class ImgModel(BaseModel):
            def __init__(self):
                super().__init__(input_shape=(3, 16, 16), output_shape=(4,))

            def predict(self, X):
                X = np.asarray(X)
                assert X.shape[1:] == (3, 16, 16), X.shape
                return np.tile(np.array([0.1, 0.2, 0.3, 0.4]), (X.shape[0], 1))
        """
    ))
    (d / "stat_spec.json").write_text(json.dumps(_ref_image_dict(0)))
    (d / "learnware.yaml").write_text(yaml.safe_dump({
        "model": {"class_name": "ImgModel", "kwargs": {}},
        "stat_specifications": [{"module_path": "learnware.specification",
                                 "class_name": "RKMEImageSpecification",
                                 "file_name": "stat_spec.json", "kwargs": {}}]}))
    sem = reference_semantic(1, n_classes=4)
    sem["Data"]["Values"] = ["Image"]
    del sem["Input"]
    report = check_package(zip_directory(d, tmp_path / "img.zip"), sandbox=True, semantic=sem)
    assert report.ok, report.text()
    names = {i.name: i.message for i in report.items}
    assert "compared with nothing in learndock" in names["spec note"]
    assert "kernel note" not in names  # the placeholder kernel is not judged
    with load_learnware(tmp_path / "img.zip", semantic=sem) as lw:
        assert lw.manifest.input.shape == [3, 16, 16]  # from the model's source, not the spec


# ---------------------------------------------------------------------- degenerate kernels


def test_kernel_health_flags_the_references_gamma_on_raw_features(digits):
    X = digits[0] * 16.0  # raw pixels, 0..16
    raw = RKMETableSpec.fit(X, 30, kernel=GaussianKernel(0.1, np.ones(64)), max_iter=2)
    health = kernel_health(raw)
    assert health.verdict == "unrelated" and health.degenerate
    assert health.median < 1e-3 and health.n_points == 30 and health.n_pairs == 435
    assert "look unrelated" in health.explanation
    assert degenerate_kernel(raw) == health.explanation
    # The suggested gamma puts the median pair at e^-1: healthy.
    fixed = RKMETableSpec(raw.z, raw.beta, GaussianKernel(health.suggested_gamma, np.ones(64)))
    assert kernel_health(fixed).verdict == "ok"
    assert kernel_health(fixed).median == pytest.approx(np.exp(-1), rel=1e-6)
    # learndock's default kernel on the same data is fine.
    assert degenerate_kernel(RKMETableSpec.fit(X, 30, max_iter=2)) is None
    # Far too small a gamma: every pair looks identical.
    tiny = RKMETableSpec(raw.z, raw.beta, GaussianKernel(1e-9, np.ones(64)))
    assert kernel_health(tiny).verdict == "identical"
    assert "look identical" in degenerate_kernel(tiny)
    one = RKMETableSpec(raw.z[:1], [1.0], raw.kernel)
    assert kernel_health(one).verdict == "undetermined" and not kernel_health(one).degenerate
    json.dumps(health.to_dict())  # JSON-ready for reports


def test_check_report_carries_the_kernel_note(ref_dir, tmp_path, digits, digits_clf):
    X = digits[0] * 16.0
    spec = RKMETableSpec.fit(X, 20, kernel=GaussianKernel(0.1, np.ones(64)), max_iter=2)
    (ref_dir / "stat_spec.json").write_text(json.dumps(
        reference_stat_spec_dict(spec.z, spec.beta, 0.1, len(X))))
    (ref_dir / "__init__.py").write_text((ref_dir / "__init__.py").read_text().replace(
        "np.asarray(X) @ self.W", "np.asarray(X) / 16.0 @ self.W"))
    report = check_package(zip_directory(ref_dir, tmp_path / "r.zip"), sandbox=True)
    assert report.ok, report.text()  # a note, not a refusal
    names = {i.name: i.message for i in report.items}
    assert names["kernel note"].startswith("degenerate kernel: under gamma=0.1")
    assert "degenerate kernel" in names["reference import"]
    with load_learnware(tmp_path / "r.zip") as lw:
        record = json.loads((lw.root / IMPORT_RECORD).read_text())
    assert record["stat_specs"][0]["kernel_health"]["verdict"] == "unrelated"


def _limits():
    from learndock.config import ArchiveLimits

    return ArchiveLimits()


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        ({"z": [[1.0, 2.0], [3.0]]}, "malformed"),
        ({"beta": [1.0, -1.0, 1.0, 1.0, 1.0]}, "negative weights"),
        ({"z": np.zeros((5, 3, 64, 64)).tolist()}, "LEARNDOCK_ZIP_MAX_SPEC_DIMENSION"),
        ({"z": [[1e300] * 4] * 5}, "LEARNDOCK_ZIP_MAX_ABS_COORDINATE"),
        ({"z": None}, "malformed|must be"),
    ],
)
def test_hostile_reference_image_and_text_specs_are_refused(bad, match):
    for d in (_ref_image_dict(0, shape=(1, 2, 2)), _ref_text_dict(0, k=5, dim=4)):
        with pytest.raises(SpecError, match=match):
            stat_spec_from_dict({**d, **bad})
