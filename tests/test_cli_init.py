"""``learndock init``: model file + data sample -> a package folder that checks and packs."""

from __future__ import annotations

import json
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest
import skops.io as sio
import yaml
from sklearn.datasets import load_diabetes, load_iris
from sklearn.linear_model import LogisticRegression, Ridge
from typer.testing import CliRunner

from learndock.cli import init_cmd
from learndock.cli import main as cli_main
from learndock.package import check_package

app = cli_main.full_app()
runner = CliRunner()
FLAGS = ["--description", "Iris species from petal and sepal sizes.", "--scenario", "Nature"]


@pytest.fixture(autouse=True)
def _wide(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(cli_main.console, "width", 400)
    monkeypatch.setattr(cli_main.err, "width", 400)
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="module")
def iris(tmp_path_factory: pytest.TempPathFactory) -> Path:
    w = tmp_path_factory.mktemp("iris")
    frame = load_iris(as_frame=True).frame
    frame.to_csv(w / "iris.csv", index=False)
    X, y = frame.drop(columns="target").to_numpy(), frame["target"].to_numpy()
    model = LogisticRegression(max_iter=1000).fit(X, y)
    sio.dump(model, w / "iris.skops")
    joblib.dump(model, w / "iris.joblib")
    return w


def run(*args: object, code: int = 0, input: str | None = None) -> str:
    res = runner.invoke(app, [str(a) for a in args], input=input)
    assert res.exit_code == code, f"{args} -> {res.exit_code}\n{res.stdout}\n{res.stderr}"
    return " ".join((res.stdout + res.stderr).split())


def test_init_writes_a_package_that_checks_and_packs(iris: Path, tmp_path: Path) -> None:
    out = run("init", iris / "iris.skops", "--data", iris / "iris.csv", "--target", "target",
              "-o", "pkg", "--name", "iris-lr", "--license", "MIT", *FLAGS)
    assert "wrote pkg/" in out and "learndock pack pkg -o iris-lr.zip" in out
    manifest = yaml.safe_load((tmp_path / "pkg" / "learnware.yaml").read_text())
    sem = manifest["semantic"]
    assert (sem["name"], sem["task_type"], sem["license"], sem["scenarios"]) == (
        "iris-lr", "Classification", "MIT", ["Nature"])
    assert sem["input"]["descriptions"]["0"] == "sepal length (cm)"
    assert sem["output"] == {"dimension": 3, "descriptions": {"0": "class 0", "1": "class 1",
                                                            "2": "class 2"}}
    assert manifest["output"]["labels"] == [0, 1, 2]
    assert check_package(tmp_path / "pkg").ok
    run("pack", "pkg", "-o", "iris.zip")
    assert check_package(tmp_path / "iris.zip").ok


def test_init_regression_from_joblib_needs_trust(tmp_path: Path) -> None:
    frame = load_diabetes(as_frame=True).frame
    frame.to_csv(tmp_path / "d.csv", index=False)
    joblib.dump(Ridge().fit(frame.drop(columns="target"), frame["target"]), tmp_path / "r.joblib")
    args = ["init", tmp_path / "r.joblib", "--data", tmp_path / "d.csv", "--target", "target",
            "-o", "reg", "--description", "Disease progression.", "--json"]
    assert "loading a pickle/joblib file runs code" in run(*args, code=1)
    res = runner.invoke(app, [str(a) for a in args] + ["--trust-model"])
    assert res.exit_code == 0, res.output
    info = json.loads(res.stdout)
    assert info["task_type"] == "Regression" and info["features"] == 10
    manifest = yaml.safe_load((tmp_path / "reg" / "learnware.yaml").read_text())
    assert manifest["output"] == {"kind": "value", "shape": []}
    assert check_package(tmp_path / "reg").ok


def test_init_onnx_takes_its_labels_from_the_target_column(iris: Path, tmp_path: Path) -> None:
    pytest.importorskip("skl2onnx")
    from learndock.package import write_package
    from learndock.spec import RKMETableSpec

    frame = pd.read_csv(iris / "iris.csv")
    X = frame.drop(columns="target").to_numpy()
    model = LogisticRegression(max_iter=1000).fit(X, frame["target"])
    write_package(tmp_path / "ref", model, name="ref", model_format="onnx",
                  spec=RKMETableSpec.fit(X, 5, random_state=0),
                  semantic={"description": "x", "data_type": "Table",
                            "task_type": "Classification", "scenarios": ["Nature"]})
    out = run("init", tmp_path / "ref" / "model.onnx", "--data", iris / "iris.csv",
              "--target", "target", "-o", "onnx-pkg", *FLAGS, "--json")
    assert '"labels": [ 0, 1, 2 ]' in out and '"task_type": "Classification"' in out
    manifest = yaml.safe_load((tmp_path / "onnx-pkg" / "learnware.yaml").read_text())
    assert manifest["model"]["format"] == "onnx" and manifest["semantic"]["library_type"] == \
        "Others"
    assert check_package(tmp_path / "onnx-pkg").ok


def test_init_asks_on_a_terminal(iris: Path, tmp_path: Path,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(init_cmd, "_on_terminal", lambda: True)
    # task (default from the model), name, description, scenarios (a wrong one, then two),
    # license
    answers = "\n".join(["", "iris-asked", "Flowers by petal size.", "Garden",
                         "Nature,Education", "Apache-2.0"]) + "\n"
    out = run("init", iris / "iris.skops", "--data", iris / "iris.csv", "--target", "target",
              "-o", "asked", input=answers)
    assert "choose from: Business" in out
    sem = yaml.safe_load((tmp_path / "asked" / "learnware.yaml").read_text())["semantic"]
    assert (sem["name"], sem["description"], sem["scenarios"], sem["license"]) == (
        "iris-asked", "Flowers by petal size.", ["Nature", "Education"], "Apache-2.0")


@pytest.mark.parametrize(("extra", "message"), [
    ([], "the model takes 4 features but iris.csv has 5"),
    (["--target", "target", "--scenario", "Nature"], "give --description"),
    (["--target", "target", *FLAGS, "--license", "WTFPL"], "'WTFPL' is not a license value"),
    (["--target", "target", *FLAGS, "--task", "Clustering"], "not a task_type value"),
])
def test_init_refusals(iris: Path, extra: list[str], message: str) -> None:
    out = run("init", iris / "iris.skops", "--data", iris / "iris.csv", "-o", "x", *extra,
              code=1)
    assert message in out


def test_init_keeps_a_folder_that_has_files(iris: Path, tmp_path: Path) -> None:
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    args = ["init", iris / "iris.skops", "--data", iris / "iris.csv", "--target", "target",
            "-o", "busy", *FLAGS]
    assert "busy is not empty" in run(*args, code=1)
    run(*args, "--force")
    assert (tmp_path / "busy" / "notes.txt").read_text() == "mine"
    assert np.isfinite(json.loads((tmp_path / "busy" / "spec.json").read_text())["beta"]).all()
