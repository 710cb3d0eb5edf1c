"""README's Quick tour runs as written: its code blocks, in order, in an empty folder.

The bash blocks run in one ``bash -eo pipefail`` (the environment's ``bin`` first on PATH, as
after ``. .venv/bin/activate``); the Python blocks run after them in the same folder. A fresh
``LEARNDOCK_HOME`` and ``XDG_CONFIG_HOME`` keep it off the user's market and saved logins.
(plan-notes section 7: this covers the Quick tour, not the two set-up commands at the top.)
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.integration  # about a minute: a dozen learndock processes


def tour_blocks() -> list[tuple[str, str]]:
    """(language, code) of each fenced block in the Quick tour section."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Quick tour\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^```(\w+)\n(.*?)^```", section, flags=re.S | re.M)


def test_the_tour_has_both_journeys() -> None:
    blocks = tour_blocks()
    assert [lang for lang, _ in blocks] == ["bash", "bash", "bash", "python"]
    commands = " ".join(code for lang, code in blocks if lang == "bash")
    for step in ("learndock init", "learndock check", "learndock pack", "learndock upload",
                 "learndock spec table", "learndock search", "learndock reuse"):
        assert step in commands, step


def test_the_tour_runs_as_written(tmp_path: Path) -> None:
    env = {**os.environ, "LEARNDOCK_HOME": str(tmp_path / "home"),
           "XDG_CONFIG_HOME": str(tmp_path / "config"),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("LEARNDOCK_CONFIG", None)
    work = tmp_path / "tour"
    work.mkdir()
    blocks = tour_blocks()
    script = "\n".join(code for lang, code in blocks if lang == "bash")
    res = subprocess.run(["bash", "-eo", "pipefail", "-c", script], cwd=work, env=env,
                         capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, f"{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    assert "Traceback" not in res.stderr
    # what the user got: one prediction per row of user.csv, mostly right
    from sklearn.datasets import load_digits

    d = load_digits(as_frame=True).frame
    truth = d[d.target >= 5].iloc[1::2]["target"].to_numpy()
    for name in ("predictions.csv", "predictions_cv.csv"):
        pred = pd.read_csv(work / name)["prediction"].to_numpy()
        assert pred.shape == truth.shape and np.mean(pred == truth) > 0.85, name
    assert "digits-5-9" in res.stdout  # the search found the 5-9 developer's learnware

    for lang, code in blocks:
        if lang == "python":
            py = subprocess.run([sys.executable, "-c", code], cwd=work, env=env,
                                capture_output=True, text=True, timeout=600)
            assert py.returncode == 0, py.stderr[-3000:]
            assert py.stdout.startswith("digits-5-9"), py.stdout
