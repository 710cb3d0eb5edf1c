"""``learndock spec table --descriptions`` and ``learndock search`` across feature spaces
(issue #17): the spec keeps what its columns are, search sends them and prints the
learnwares of other feature spaces in their own table."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from hetero_helpers import ISLAND_A, ISLAND_B, island_package, user_data
from learndock.cli import main as cli_main
from learndock.spec import RKMETableSpec
from learndock.spec.table import column_descriptions

pytest_plugins = ["market_helpers"]

app = cli_main.full_app()
runner = CliRunner()


@pytest.fixture(autouse=True)
def _hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEARNDOCK_HETERO_EMBEDDER", "hashing")


def run(*args: str, code: int = 0) -> str:
    res = runner.invoke(app, list(args))
    assert res.exit_code == code, f"{args} -> {res.exit_code}\n{res.output}\n{res.exception!r}"
    return res.output


def test_spec_table_descriptions_then_search(tmp_path: Path) -> None:
    X, names, descs = user_data()
    csv = tmp_path / "user.csv"
    pd.DataFrame(X, columns=names).to_csv(csv, index=False)
    # "name: description" lines, in any order.
    named = tmp_path / "columns.txt"
    named.write_text("# what my columns are\n" + "\n".join(
        f"{n}: {d}" for n, d in reversed(list(zip(names, descs, strict=True)))) + "\n")
    spec_path = tmp_path / "spec.json"
    info = json.loads(run("spec", "table", str(csv), "-o", str(spec_path), "-k", "10",
                          "--descriptions", str(named), "--json"))
    assert info["column_descriptions"] == "from columns.txt"
    spec = RKMETableSpec.load(spec_path)
    assert column_descriptions(spec) == descs
    assert [c["name"] for c in spec.fit_info["columns"]] == names
    # Plain lines in column order give the same; the header names are the default.
    plain = tmp_path / "plain.txt"
    plain.write_text("\n".join(descs))
    run("spec", "table", str(csv), "-o", str(tmp_path / "p.json"), "-k", "10",
        "--descriptions", str(plain), "--json")
    assert column_descriptions(RKMETableSpec.load(tmp_path / "p.json")) == descs
    run("spec", "table", str(csv), "-o", str(tmp_path / "d.json"), "-k", "10", "--json")
    assert column_descriptions(RKMETableSpec.load(tmp_path / "d.json")) == names
    # One-line errors.
    bad = tmp_path / "bad.txt"
    bad.write_text("only one line\n")
    out = run("spec", "table", str(csv), "-o", str(tmp_path / "b.json"), "--descriptions",
              str(bad), code=1)
    assert "1 description line(s) for 5 column(s)" in out and "Traceback" not in out
    out = run("spec", "table", str(csv), "-o", str(tmp_path / "b.json"), "--descriptions",
              str(tmp_path / "missing.txt"), code=1)
    assert "descriptions file not found" in out

    # Two islands in a local market; the user's 5 columns match neither.
    home = tmp_path / "home"
    for isl, name in ((ISLAND_A, "dia-a"), (ISLAND_B, "dia-b")):
        run("upload", str(island_package(tmp_path, isl, 0, name)), "--home", str(home),
            "--json")
    res = json.loads(run("search", "--spec", str(spec_path), "--home", str(home), "--json",
                         "--target-description", "disease progression one year after "
                                                 "baseline"))
    assert res["single"] == []
    assert {c["name"] for c in res["cross_island"]} == {"dia-a", "dia-b"}
    assert all(c["cross_island"] and c["verdict"].endswith("match") for c in res["cross_island"])
    assert {c["name"]: c["shared_features"] for c in res["cross_island"]} == \
        {"dia-a": 3, "dia-b": 4}
    text = run("search", "--spec", str(spec_path), "--home", str(home))
    assert "from other feature spaces" in text and "4/7" in text and "3/7" in text
    assert "cross-island: 2 learnware(s) from 2 other feature space(s)" in text
