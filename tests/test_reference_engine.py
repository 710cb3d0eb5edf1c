"""Learnwares written by the reference engine itself (PyPI ``learnware`` 0.4.0.post1, in the
test-only ``.venv-ref``; see ``tests/reference_env.py``): its template API zips a pickled
scikit-learn model with its own RKME (table, text; an image spec written by its own ``save``),
learndock imports and checks them in the jail, and predictions of the imported learnwares match
the reference's own loader on the same inputs (exchanged as ``.npy`` files)."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from learndock.package import check_package, load_learnware
from learndock.package.reference import IMPORT_RECORD
from learndock.spec import RKMEImageSpec, RKMETextSpec
from learndock.spec.io import load_stat_spec
from learndock.spec.reference import REFERENCE_TEXT_ENCODER
from reference_env import require_reference_python, run_reference, write_reference_script

pytestmark = pytest.mark.integration

FINANCE = ["stocks rose after strong earnings", "the market closed higher on bank shares",
           "shares of the chip maker fell", "bond yields climbed as inflation data surprised",
           "investors sold tech stocks", "the central bank kept interest rates unchanged"]
SPORT = ["the team won the final in extra time", "the striker scored twice",
         "the coach praised the young goalkeeper", "fans cheered the late winner",
         "the champion defended her title", "the cyclist took the yellow jersey"]
PROBE_TEXTS = ["stocks fell sharply on weak bank earnings", "the striker scored a late goal",
               "words nobody used before", "interest rates and the market", "the final whistle"]


def _semantic(data: str, n_out: int) -> dict:
    sem = {
        "Data": {"Type": "Class", "Values": [data]},
        "Task": {"Type": "Class", "Values": ["Classification"]},
        "Library": {"Type": "Class", "Values": ["Scikit-learn"]},
        "Scenario": {"Type": "Tag", "Values": ["Education"]},
        "License": {"Type": "Class", "Values": ["MIT"]},
        "Name": {"Type": "String", "Values": f"reference template {data.lower()} learnware"},
        "Description": {"Type": "String", "Values": "written by learnware's LearnwareTemplate"},
        "Output": {"Dimension": n_out, "Description": {"0": "the first class"}},
    }
    if data == "Table":
        sem["Input"] = {"Dimension": 64, "Description": {"0": "pixel row 0 col 0 (0-16)"}}
    return sem


SEMANTICS = {"table": _semantic("Table", 10), "text": _semantic("Text", 2),
             "image": _semantic("Image", 10)}


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """The reference's zips and predictions, built once per test session: under pytest-xdist
    the workers share one build (in the session's common temp dir, under a file lock)."""
    python = require_reference_python()
    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent  # common to every worker of this session
    out = shared / "reference-engine-zips"
    with open(shared / "reference-engine-zips.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (out / "done").is_file():
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir()
            _build(python, out, shared / "reference-engine-home")
            (out / "done").write_text("ok")
    return out


def _build(python: Path, out: Path, home: Path) -> None:
    """The reference builds the zips, then predicts with its own loader on inputs we wrote."""
    from sklearn.datasets import load_digits

    script = write_reference_script(out)
    texts = [t + s for t in FINANCE + SPORT for s in ("", " today", " again")]
    labels = [0] * (3 * len(FINANCE)) + [1] * (3 * len(SPORT))
    (out / "texts.json").write_text(json.dumps({"texts": texts, "labels": labels}))
    run_reference(python, script, ["build", str(out)], home)
    X, _ = load_digits(return_X_y=True)
    rng = np.random.default_rng(7)
    inputs = {
        "table": np.vstack([X[1200:1260], rng.uniform(0, 16, size=(10, 64))]),
        "text": np.array(PROBE_TEXTS),
        "image": np.vstack([(X[1200:1260] / 16.0).reshape(-1, 1, 8, 8),
                            rng.random((10, 1, 8, 8))]),
    }
    for kind, x in inputs.items():
        np.save(out / f"x_{kind}.npy", x, allow_pickle=False)
        (out / f"semantic_{kind}.json").write_text(json.dumps(SEMANTICS[kind]))
        run_reference(python, script, ["predict", str(out / f"{kind}.zip"),
                                       str(out / f"semantic_{kind}.json"),
                                       str(out / f"x_{kind}.npy"), str(out / f"pred_{kind}.npy")],
                      home)


@pytest.mark.parametrize("kind", ["table", "text", "image"])
def test_reference_template_zip_passes_the_jailed_check(built, kind):
    report = check_package(built / f"{kind}.zip", sandbox=True, semantic=SEMANTICS[kind])
    assert report.ok, report.text()
    items = {i.name: i.message for i in report.items}
    assert items["isolation"].startswith("bubblewrap")
    assert "!!python/tuple tags: read as lists" in items["reference import"]


@pytest.mark.parametrize("kind", ["table", "text", "image"])
def test_predictions_match_the_reference_loader(built, kind):
    X = np.load(built / f"x_{kind}.npy", allow_pickle=False)
    expected = np.load(built / f"pred_{kind}.npy", allow_pickle=False)
    with load_learnware(built / f"{kind}.zip", semantic=SEMANTICS[kind],
                        runtime="sandbox") as lw:
        ours = lw.predict(X)
        assert lw.model.isolation.startswith("bubblewrap")
    assert ours.shape == expected.shape == (len(X), 2 if kind == "text" else 10)
    np.testing.assert_allclose(ours, expected, rtol=1e-12, atol=1e-12)
    assert len(np.unique(ours.argmax(axis=1))) > 1  # not a constant model


def test_table_spec_is_the_references_and_its_kernel_is_flagged(built):
    with load_learnware(built / "table.zip", semantic=SEMANTICS["table"]) as lw:
        spec = lw.stat_spec
        record = json.loads((lw.root / IMPORT_RECORD).read_text())
        assert lw.manifest.model.kwargs["input_shape"] == [64]
        assert lw.manifest.requirements.pip == ["numpy>=1.20"]
        assert [a["requirement"] for a in record["requirements"]["advisory"]] == [
            "scikit-learn==1.2.2"]
    ref = json.loads((built / "table_stat.json").read_text())
    assert np.allclose(spec.z, np.asarray(ref["z"]))
    assert np.allclose(spec.beta, np.asarray(ref["beta"]) / np.sum(ref["beta"]))
    assert spec.kernel.gamma == ref["gamma"] == 0.1
    assert record["stat_specs"][0]["kernel_health"]["verdict"] == "unrelated"
    # MMD^2 between two reference specs, computed by learndock and by the reference.
    other = load_stat_spec(built / "table_stat_b.json")
    dists = json.loads((built / "dists.json").read_text())
    assert spec.mmd2(other) == pytest.approx(dists["table"], rel=1e-5, abs=1e-9)


def test_text_spec_stays_in_the_reference_encoders_space(built):
    with load_learnware(built / "text.zip", semantic=SEMANTICS["text"]) as lw:
        spec = lw.stat_spec
        assert lw.manifest.input.shape == [1]
    assert isinstance(spec, RKMETextSpec)
    assert spec.encoder_id == f"reference:{REFERENCE_TEXT_ENCODER}"
    assert spec.encoder["language"] == ["en"] and spec.dimension == 384
    # Comparable with another reference text spec: same MMD^2 as the reference computes.
    other = load_stat_spec(built / "text_stat_b.json")
    assert other.encoder_id == spec.encoder_id
    dists = json.loads((built / "dists.json").read_text())
    assert spec.mmd2(other) == pytest.approx(dists["text"], rel=1e-5, abs=1e-9)


def test_image_spec_is_kept_and_flagged(built):
    report = check_package(built / "image.zip", sandbox=True, semantic=SEMANTICS["image"])
    items = {i.name: i.message for i in report.items}
    assert "compared with nothing in learndock" in items["spec note"]
    with load_learnware(built / "image.zip", semantic=SEMANTICS["image"]) as lw:
        spec = lw.stat_spec
        assert lw.manifest.input.shape == [1, 8, 8]  # the template's kwargs, not the spec's
    assert isinstance(spec, RKMEImageSpec)
    assert spec.encoder["comparable"] is False and spec.encoder["sample_shape"] == [1, 32, 32]
    ref = json.loads((built / "image_stat.json").read_text())
    assert np.allclose(spec.z, np.asarray(ref["z"], dtype=np.float32).reshape(12, -1))
