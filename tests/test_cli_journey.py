"""The developer's and the user's journeys through the command line alone, on a fresh home.

Two developers publish digits classifiers (digits 0-4 and 5-9, scikit-learn's bundled data)
with ``init -> check -> pack -> upload``; a user with unlabelled digits 5-9 goes ``kernel ->
spec -> search -> reuse`` and gets a predictions file. The asserts are on what each step produced: the
manifest, the check verdict, the search ranking and the accuracy of the predictions.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import skops.io as sio
import yaml
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from typer.testing import CliRunner

from learndock.cli import main as cli_main

app = cli_main.full_app()
runner = CliRunner()


def run(*args: str, code: int = 0) -> dict | str:
    res = runner.invoke(app, [str(a) for a in args])
    assert res.exit_code == code, f"{args} -> {res.exit_code}\n{res.stdout}\n{res.stderr}"
    return json.loads(res.stdout) if "--json" in args and code == 0 else res.stdout + res.stderr


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What the people on both sides hold: training CSVs + model files, the user's CSV."""
    w = tmp_path_factory.mktemp("journey")
    d = load_digits(as_frame=True).frame
    low, high = d[d.target < 5], d[d.target >= 5]
    for name, part in (("low", low), ("high", high)):
        train = part.iloc[::2]
        train.to_csv(w / f"dev_{name}.csv", index=False)
        X, y = train.drop(columns="target").to_numpy(), train["target"].to_numpy()
        sio.dump(LogisticRegression(max_iter=3000).fit(X, y), w / f"{name}.skops")
    user = high.iloc[1::2]
    user.drop(columns="target").to_csv(w / "user.csv", index=False)
    user[["target"]].iloc[:40].to_csv(w / "user_labels.csv", index=False)
    np.save(w / "truth.npy", user["target"].to_numpy())
    return w


@pytest.fixture(autouse=True)
def _fresh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEARNDOCK_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))  # no saved dock login
    monkeypatch.chdir(tmp_path)


def test_developer_and_user_journeys(files: Path, tmp_path: Path) -> None:
    # ---- developers: init -> check -> pack -> upload
    ids = {}
    for name, digits in (("low", "0-4"), ("high", "5-9")):
        info = run("init", files / f"{name}.skops", "--data", files / f"dev_{name}.csv",
                   "--target", "target", "--name", f"digits-{digits}",
                   "--description", f"Handwritten digits {digits} from 8x8 pixel intensities.",
                   "--scenario", "Education", "--license", "MIT", "-o", f"pkg-{name}", "--json")
        assert info["features"] == 64 and info["task_type"] == "Classification"
        labels = list(range(0, 5)) if name == "low" else list(range(5, 10))
        assert info["labels"] == labels
        text = (tmp_path / f"pkg-{name}" / "learnware.yaml").read_text()
        assert "# What the model is for" in text and "class_name" not in text
        manifest = yaml.safe_load(text)
        assert manifest["semantic"]["input"]["descriptions"]["0"] == "pixel_0_0"
        assert manifest["semantic"]["scenarios"] == ["Education"]
        assert manifest["model"] == {"format": "skops", "file": "model.skops",
                                     "methods": ["predict", "predict_proba"]}
        report = run("check", f"pkg-{name}", "--json")
        assert report["ok"] is True
        packed = run("pack", f"pkg-{name}", "-o", f"digits-{digits}.zip", "--json")
        up = run("upload", f"digits-{digits}.zip", "--json")
        assert up["status"] == "accepted" and up["url"] is None  # the local market
        assert up["package_sha256"] and packed["digest"] == report["digest"]
        ids[name] = up["learnware_id"]
    listed = run("market", "list", "--json")
    assert {i["id"] for i in listed["items"]} == set(ids.values())

    # ---- user: kernel -> spec -> search -> reuse -> predictions
    (island,) = run("market", "islands", "--json")
    assert island["n_learnwares"] == 2  # both developers' specs share the feature space
    saved = run("market", "kernel", island["key"], "-o", "kernel.json", "--json")
    assert saved["island"] == island["key"]
    assert json.loads(Path("kernel.json").read_text())["kernel"] == island["kernel"]
    spec = run("spec", "table", files / "user.csv", "-o", "user_spec.json",
               "--kernel-from", "kernel.json", "--json")
    assert spec["dimension"] == 64 and spec["n_samples"] == len(np.load(files / "truth.npy"))
    found = run("search", "--spec", "user_spec.json", "--json")
    assert found["single"][0]["learnware_id"] == ids["high"]
    assert found["single"][0]["score"] > found["single"][1]["score"]
    assert not any("rescored" in e for e in found["explanation"])  # fitted with the island's
    text = run("search", "--spec", "user_spec.json", "--text", "handwritten digits")
    assert "match: how well" in " ".join(text.split())

    truth = np.load(files / "truth.npy")
    out = run("reuse", "--spec", "user_spec.json", "--data", files / "user.csv",
              "-o", "predictions.csv", "--json")
    assert out["reuser"].startswith("auto without labels")
    assert out["learnwares"][0]["learnware_id"] == ids["high"]
    pred = pd.read_csv(tmp_path / "predictions.csv")
    assert list(pred.columns) == ["prediction"] and len(pred) == len(truth)
    assert (pred["prediction"].to_numpy() == truth).mean() > 0.9

    # with a few labels, auto compares reusers by cross-validation and says which won
    out = run("reuse", "--data", files / "user.csv", "--labels", files / "user_labels.csv",
              "-o", "predictions_cv.csv", "--proba", "--json")
    assert out["labels"] == 40 and out["reuser"].startswith("auto: ")
    assert set(out["cv_results"]) >= {"own_model", "averaging"}
    pred = pd.read_csv(tmp_path / "predictions_cv.csv")
    assert [f"proba_{c}" for c in range(5, 10)] == list(pred.columns[1:])
    assert (pred["prediction"].to_numpy() == truth).mean() > 0.85

    # the decision step: shortlist both, let the models' outputs on the rows choose
    out = run("reuse", "--data", files / "user.csv", "--decide", "--shortlist", "2",
              "-o", "predictions_decided.csv", "--json")
    assert out["decision"]["ranking"][0]["learnware_id"] == ids["high"]
    pred = pd.read_csv(tmp_path / "predictions_decided.csv")
    assert (pred["prediction"].to_numpy() == truth).mean() > 0.9


def test_reuse_refusals_are_one_line(files: Path, tmp_path: Path) -> None:
    text = run("reuse", "--data", files / "user.csv", "-o", "p.csv", "--reuser",
               "feature-augment", code=1)
    assert "learns from labels: give --labels" in text
    text = run("reuse", "--data", files / "user.csv", "-o", "p.csv", code=1)
    assert "no island of the market takes 64 features" in text  # an empty market
    text = run("init", files / "low.skops", "--data", files / "dev_low.csv", "-o", "x",
               "--description", "d", code=1)
    assert "the model takes 64 features but dev_low.csv has 65" in " ".join(text.split())
