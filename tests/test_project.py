"""Project-level promises: README commands and CI stay in step; the demo runs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"```bash\n(.*?)\n```", text, re.S)
    assert block, "README must open with a bash block of two commands"
    return [ln for ln in block.group(1).splitlines() if ln.strip()]


def test_readme_opens_with_two_commands() -> None:
    cmds = _readme_commands()
    assert len(cmds) == 2
    assert "learndock serve --demo" in cmds[0]
    assert "pytest" in cmds[1]


def test_ci_runs_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert _readme_commands()[1] in ci.splitlines()


def test_ci_treats_no_tests_as_failure() -> None:
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert '"$rc" -eq 5' in ci


@pytest.mark.slow
def test_quick_demo_runs(tmp_path) -> None:
    from learndock.demo import run_demo

    results = run_demo(tmp_path, quick=True)
    births = results["birthdays"].summary()
    assert births["top-1 reuse"] < births["mean in market"]
    digits = results["digits"].summary()
    assert digits["averaging (mixture)"] < digits["mean in market"]
