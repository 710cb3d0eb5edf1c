"""The text scenario's --quick variant end to end (fixture embeddings: no encoder run)."""

from __future__ import annotations

import json

from benchmarks.scenarios import text
from benchmarks.scenarios.common import is_png


def test_text_scenario_quick(tmp_path) -> None:
    out, cache = tmp_path / "out", tmp_path / "cache"
    assert text.main(["--quick", "--no-reference", "--no-progress", "--out", str(out),
                      "--cache", str(cache)]) == 0
    res = json.loads((out / "results.json").read_text())
    rows = res["summary"]["rows"]
    oracle = rows["Best in market (single, oracle)"][0]
    assert oracle >= rows["Mean in market (single)"][0]
    assert oracle >= rows["Top-1 reuse (single)"][0]
    ident = res["summary"]["identification"]
    assert 0.0 <= ident["hit@1"] <= ident["hit@5"] <= 1.0 and ident["regret"] >= 0.0
    # the quick market has a learnware covering every user's topics: search must find it
    assert ident["hit@1"] == 1.0
    assert len(res["users"]) == 4 and len(res["learnwares"]) == 4
    assert "## Text scenario" in (out / "report.md").read_text()
    assert is_png(out / "text_labeled_curves.png")
