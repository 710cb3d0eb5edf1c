"""The image scenario of the experiments package, end to end in its --quick form."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytest.importorskip("torch")
pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("matplotlib")

from learndock.datasets import fashion_mnist  # noqa: E402

if not fashion_mnist.available():
    pytest.skip(f"Fashion-MNIST is not installed ({fashion_mnist.INSTALL_HINT})",
                allow_module_level=True)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, subprocess.CompletedProcess]:
    base = tmp_path_factory.mktemp("bench-image")
    out, cache = base / "out", base / "cache"
    cmd = [sys.executable, "-m", "benchmarks.scenarios.image", "--quick", "--out", str(out),
           "--cache", str(cache), "--no-progress"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return out, json.loads((out / "results.json").read_text()), proc


def test_files_written(quick_run) -> None:
    out, res, proc = quick_run
    report = (out / "report.md").read_text()
    assert "Image scenario (Fashion-MNIST)" in report
    png = out / "fashion_mnist.png"
    head = png.read_bytes()[:16]
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR"
    assert png.stat().st_size > 5_000
    assert "](fashion_mnist.png)" in report
    section = (out / "BENCHMARKS-section.md").read_text()
    assert section.startswith("### Image scenario")
    assert "](benchmarks/results/image/fashion_mnist.png)" in section
    assert res["machine"]["usable_cores"] >= 1 and res["settings"]["quick"] is True
    assert res["reference"]["run"] is False and "not run side by side" in res["reference"]["why"]
    assert "Mean in market (single)" in proc.stdout  # the report is printed too


def test_rows_are_consistent(quick_run) -> None:
    _, res, _ = quick_run
    s, summ = res["settings"], res["summary"]
    assert summ["users"] == s["users"]
    for row in ("mean", "oracle", "top1", "job", "avg"):
        assert math.isfinite(summ[row]) and 0.0 <= summ[row] <= 1.0
    # The oracle is the best single learnware for every user: it bounds the single rows.
    assert summ["oracle"] <= summ["mean"] + 1e-12
    assert summ["oracle"] <= summ["top1"] + 1e-12
    assert summ["regret"] >= -1e-12
    assert summ["regret"] == pytest.approx(summ["top1"] - summ["oracle"], abs=1e-9)
    for rate in ("hit1", "hit5", "top1_covers_majors", "mixture_recommended"):
        assert 0.0 <= summ[rate] <= 1.0
    assert summ["hit1"] <= summ["hit5"]
    for u in res["users"]:
        assert sorted(u["ranking"]) == list(range(s["learnwares"]))  # every learnware, once
        assert 1 <= len(u["mixture"]) <= max(s["max_mixture"], s["fallback_top"])
        assert sum(u["mixture_weights"]) == pytest.approx(1.0)
        assert all(0.0 <= e <= 1.0 for e in u["err"])
    # every learnware was trained and checked; the cached-embedding spec is the real one
    assert len(res["learnwares"]) == s["learnwares"]
    assert all(lw["own_test_accuracy"] > 0.4 for lw in res["learnwares"])
    assert all(m < 1e-9 for m in res["build"]["end_to_end_mmd2"])
    assert res["build"]["memo_fallbacks"] == 0
    t = res["timings"]
    assert t["search_median"] > 0 and t["user_spec_fit_median"] > 0
    assert t["learnware_spec_fit_median"] > 0 and t["encode_ms_per_image"] > 0


def test_label_curves(quick_run) -> None:
    _, res, _ = quick_run
    n = len(res["settings"]["n_labels"])
    for name in ("own", "pruning", "augment"):
        curve = res["curves"][name]
        assert len(curve["mean"]) == n
        assert all(math.isfinite(v) and 0.0 <= v <= 1.0 for v in curve["mean"])
    with_curves = [u for u in res["users"] if "curves" in u]
    assert len(with_curves) == res["settings"]["curve_users"]
    for key in ("top1", "oracle"):
        assert 0.0 <= res["test_lines"][key] <= 1.0
    assert res["test_lines"]["oracle"] <= res["test_lines"]["top1"] + 1e-12
