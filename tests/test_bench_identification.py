"""The identification benchmark: its metrics on known inputs, and a small end-to-end run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from benchmarks.identification import bootstrap_ci, hits, summarise

ROOT = Path(__file__).resolve().parents[1]


def test_hits_absolute_and_relative() -> None:
    loss = np.array([[0.10, 0.105, 0.30], [1.00, 1.02, 1.005]])
    # eps = 0.01 absolute: 0.105 is within 0.01 of 0.10; relative 1%: 1.005 within 1% of 1.0.
    np.testing.assert_array_equal(hits(loss, np.array([0.105, 1.02]), False, 0.01), [1.0, 0.0])
    np.testing.assert_array_equal(hits(loss, np.array([0.30, 1.005]), True, 0.01), [0.0, 1.0])


def test_bootstrap_interval_brackets_the_mean_and_is_seeded() -> None:
    v = np.r_[np.ones(30), np.zeros(30)]
    lo, hi = bootstrap_ci(v)
    assert lo < 0.5 < hi and hi - lo < 0.35
    assert bootstrap_ci(v) == (lo, hi)
    assert bootstrap_ci(np.ones(40)) == (1.0, 1.0)


def test_summarise_counts_hits_and_regret() -> None:
    loss = np.array([[0.2, 0.1, 0.3], [0.1, 0.4, 0.2]])
    picks = {"a": [[1, 0, 2], [2, 1, 0]]}  # user 0: oracle first; user 1: oracle third
    out = summarise(loss, picks, relative=False, eps=0.01,
                    extra={"ens": np.array([0.05, 0.1])})
    assert out["a"]["hit1"] == 0.5 and out["a"]["hit5"] == 1.0
    assert out["a"]["regret"] == pytest.approx(0.05) and out["a"]["regret_max"] == pytest.approx(0.1)
    assert out["ens"]["hit1"] == 1.0 and out["ens"]["regret"] == pytest.approx(-0.025)
    assert "hit5" not in out["ens"] and out["_users"] == 2


def test_small_digits_run(tmp_path: Path) -> None:
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "benchmarks.identification", "--scenario", "digits",
           "--learnwares", "8", "--users", "4", "--top-k", "5", "--no-reference",
           "--out", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    res = json.loads((out / "results.json").read_text())
    s = res["digits"]["summary"]
    assert s["_users"] == 4 and s["_top_k"] == 5
    for key in ("spec", "auto", "avg_mixture_uniform", "decision_recommended", "job_soft"):
        assert -1.0 <= s[key]["regret"] <= 1.0
    assert s["oracle"]["regret"] == 0.0
    for key in ("spec", "auto"):
        assert 0.0 <= s[key]["hit1"] <= s[key]["hit5"] <= 1.0
    report = (out / "report.md").read_text()
    assert "spec search top-1 (today)" in report and "oracle single" in report
