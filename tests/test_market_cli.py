"""``learndock market ...`` end to end through the CLI (``--json`` outputs)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import learndock.cli.market_cmd  # noqa: F401 -- registers the `market` sub-app
from learndock.cli.main import app
from learndock.package import package_digest
from market_helpers import (
    class_rows,
    digits_package,
    user_spec,
    wrong_labels_package,
)

pytest_plugins = ["market_helpers"]

runner = CliRunner()


def cli(home: Path, *args: str, code: int = 0, as_json: bool = True) -> Any:
    argv = ["market", *args, "--home", str(home)] + (["--json"] if as_json else [])
    res = runner.invoke(app, argv)
    assert res.exit_code == code, f"{argv} -> {res.exit_code}\n{res.output}\n{res.exception!r}"
    return json.loads(res.stdout) if as_json else res.output


@pytest.fixture(scope="module")
def cli_zips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    w = tmp_path_factory.mktemp("cli")
    zips = {
        "56": digits_package(w, (5, 6), description="Handwritten fives and sixes."),
        "56v2": digits_package(w, (5, 6), version="2.0.0",
                               description="Handwritten fives and sixes, second edition."),
        "789": digits_package(w, (7, 8, 9), scenarios=("Business",)),
    }
    zips["rejected"] = wrong_labels_package(w)
    zips["garbage"] = w / "garbage.zip"
    zips["garbage"].write_bytes(b"definitely not a zip")
    spec_path = w / "user-spec.json"
    user_spec(class_rows((5, 6), train=False)[0]).save(spec_path)
    zips["user_spec"] = spec_path
    return zips


def test_market_cli_round_trip(tmp_path: Path, cli_zips: dict[str, Path]) -> None:
    home = tmp_path / "home"

    a = cli(home, "add", str(cli_zips["56"]), "--owner", "alice")
    assert a["status"] == "accepted" and a["stored"] is True and a["version"] == 1
    assert a["report"]["ok"] is True and a["island"].startswith("table:d64:")
    b = cli(home, "add", str(cli_zips["789"]))
    lid, other = a["learnware_id"], b["learnware_id"]
    assert lid != other and len(lid) == 16

    listed = cli(home, "list")
    assert listed["total"] == 2 and {i["id"] for i in listed["items"]} == {lid, other}
    assert cli(home, "list", "--task-type", "Regression")["total"] == 0
    business = cli(home, "list", "--scenario", "Business")
    assert [i["id"] for i in business["items"]] == [other]
    page = cli(home, "list", "--page", "1", "--page-size", "1")
    assert page["total"] == 2 and len(page["items"]) == 1

    shown = cli(home, "show", lid)
    assert shown["id"] == lid and shown["owner"] == "alice" and shown["name"] == "digits-56"
    assert shown["semantic"]["description"] == "Handwritten fives and sixes."
    assert shown["current_version"] == 1

    up = cli(home, "add", str(cli_zips["56v2"]), "--update", lid)
    assert (up["learnware_id"], up["version"], up["status"]) == (lid, 2, "accepted")
    vs = cli(home, "versions", lid)
    assert [(v["number"], v["semver"], v["status"], v["available"]) for v in vs] == [
        (1, "1.0.0", "accepted", True), (2, "2.0.0", "accepted", True)
    ]

    hits = cli(home, "search", "--spec", str(cli_zips["user_spec"]))
    assert hits["single"][0]["learnware_id"] == lid
    assert hits["single"][0]["version"] == 2
    assert 0.0 <= hits["single"][0]["score"] <= 1.0
    assert hits["mixture"] is None or hits["mixture"]["recommended"] is False
    hits = cli(home, "search", "--text", "fives and sixes")
    assert hits["single"][0]["learnware_id"] == lid
    hits = cli(home, "search", "--scenario", "Business")
    assert [s["learnware_id"] for s in hits["single"]] == [other]

    isl = cli(home, "islands")
    assert len(isl) == 1 and isl[0]["n_learnwares"] == 2 and isl[0]["dimension"] == 64
    assert isl[0]["kernel"]["type"] == "gaussian"

    out = tmp_path / "v1.zip"
    cli(home, "download", lid, "-o", str(out), "--version", "1", as_json=False)
    assert package_digest(out) == package_digest(cli_zips["56"])

    assert cli(home, "verify") == {"consistent": True, "problems": [], "swept": None}
    swept = cli(home, "verify", "--sweep")
    assert swept["consistent"] is True and swept["swept"] == {"blobs": [], "temp_files": 0}

    assert cli(home, "delete", lid) == {"deleted": lid}
    cli(home, "show", lid, code=1, as_json=False)
    cli(home, "delete", lid, code=1, as_json=False)
    listed = cli(home, "list")
    assert [i["id"] for i in listed["items"]] == [other]
    hits = cli(home, "search", "--spec", str(cli_zips["user_spec"]))
    assert [s["learnware_id"] for s in hits["single"]] == [other]
    assert cli(home, "verify")["consistent"] is True


def test_market_cli_rejections_exit_1(tmp_path: Path, cli_zips: dict[str, Path]) -> None:
    home = tmp_path / "home"
    # readable but broken: stored as rejected, exit 1
    r = cli(home, "add", str(cli_zips["rejected"]), code=1)
    assert r["status"] == "rejected" and r["stored"] is True
    failed = [c for c in r["report"]["checks"] if not c["ok"]]
    assert [c["name"] for c in failed] == ["model runs"]
    assert "label set" in failed[0]["message"]
    vs = cli(home, "versions", r["learnware_id"])
    assert vs[0]["status"] == "rejected" and vs[0]["report"]["ok"] is False
    assert cli(home, "list")["total"] == 0
    assert cli(home, "list", "--include-rejected")["total"] == 1

    # unreadable: refused, nothing stored, exit 1
    g = cli(home, "add", str(cli_zips["garbage"]), code=1)
    assert g["status"] == "rejected" and g["stored"] is False
    assert g["report"]["ok"] is False
    assert cli(home, "list", "--include-rejected")["total"] == 1
    # text mode says why
    text = cli(home, "add", str(cli_zips["garbage"]), code=1, as_json=False)
    assert "FAIL" in text and "rejected" in text
    assert cli(home, "verify")["consistent"] is True

    cli(home, "show", "0123456789abcdef", code=1, as_json=False)
    cli(home, "versions", "0123456789abcdef", code=1, as_json=False)


def test_market_cli_text_output(tmp_path: Path, cli_zips: dict[str, Path]) -> None:
    home = tmp_path / "home"
    out = cli(home, "add", str(cli_zips["789"]), as_json=False)
    assert "accepted" in out
    lid = cli(home, "list")["items"][0]["id"]
    listed = cli(home, "list", as_json=False)
    assert "1 learnware(s)" in listed
    # an 80-column table with the whole id on one line (it is what other commands take)
    assert all(len(line) <= 80 for line in listed.splitlines())
    row = next(line for line in listed.splitlines() if lid in line)
    assert "digits-789" in row and "accepted" in row and "Classification" in row
    shown = cli(home, "show", lid, as_json=False)
    assert "digits-789" in shown
    assert "owner" not in shown and "None" not in shown  # no owner recorded: not shown
    import re

    assert re.search(r"created_at\s+20\d\d-\d\d-\d\d \d\d:\d\d UTC", shown), shown
    assert "store is consistent" in cli(home, "verify", as_json=False)
    assert "table:d64:" in cli(home, "islands", as_json=False)
    # search output explains its numbers
    found = " ".join(cli(home, "search", "--spec", str(cli_zips["user_spec"]), "--text",
                         "digits", as_json=False).split())
    assert lid in found and "match: how well the learnware's training data fit yours" in found
    assert "text: full-text relevance" in found and " 1.00" in found
    assert "e-0" not in found and "-0%" not in found


def test_island_kernel_export_and_fit_with_it(tmp_path: Path, cli_zips: dict[str, Path]) -> None:
    import numpy as np

    from learndock.spec import load_stat_spec

    home = tmp_path / "home"
    cli(home, "add", str(cli_zips["56"]))
    [isl] = cli(home, "islands")
    out = tmp_path / "kernel.json"
    saved = cli(home, "kernel", isl["key"], "-o", str(out))
    assert saved == {"output": str(out), "island": isl["key"], "kernel_version": 1}
    doc = json.loads(out.read_text())
    assert doc["kernel"] == isl["kernel"] and doc["history"][0]["version"] == 1
    # a user's spec, fitted with that kernel from the file or straight from the island
    rows = class_rows((5, 6), train=False)[0]
    np.save(tmp_path / "user.npy", rows)
    specs = []
    for extra in (["--kernel-from", str(out)], ["--island", isl["key"], "--home", str(home)]):
        res = runner.invoke(app, ["spec", "table", str(tmp_path / "user.npy"), "-o",
                                  str(tmp_path / f"u{len(specs)}.json"), "-k", "10", *extra])
        assert res.exit_code == 0, res.output
        specs.append(load_stat_spec(tmp_path / f"u{len(specs)}.json"))
    assert specs[0].kernel.key() == specs[1].kernel.key()
    assert specs[0].kernel.to_dict() == doc["kernel"]
    res = runner.invoke(app, ["market", "kernel", "table:nope", "-o", str(out), "--home",
                              str(home)])
    assert res.exit_code == 1 and "no island 'table:nope'" in res.stderr
