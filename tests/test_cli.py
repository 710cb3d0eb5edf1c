"""The ``learndock`` command line: spec table, pack, check, digest."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from helpers import OK_ENTRY, make_zip, normalise, write_python_package
from learndock import __version__
from learndock.cli import main as cli_main
from learndock.cli.main import app
from learndock.package import package_digest
from learndock.spec import RKMETableSpec, load_stat_spec

SPEC_FIELDS = {
    "output", "n_samples", "dimension", "n_points", "kernel", "gamma", "fingerprint", "rounds",
    "converged", "imputed_cells",
}


@pytest.fixture(autouse=True)
def wide_console(monkeypatch):
    """Rich wraps at 80 columns off a terminal; keep messages on one line for asserts."""
    monkeypatch.setattr(cli_main.console, "width", 400)
    monkeypatch.setattr(cli_main.err, "width", 400)


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    rng = np.random.default_rng(7)
    data = rng.normal(size=(200, 4)) * np.array([1.0, 3.0, 0.5, 10.0])
    return pd.DataFrame(data, columns=["a", "b", "c", "d"])


def _spec(runner, data: Path, out: Path, *extra: str) -> dict:
    res = runner.invoke(app, ["spec", "table", str(data), "-o", str(out), "-k", "10", "--json",
                              *extra])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def test_version(runner):
    res = runner.invoke(app, ["--version"])
    assert res.exit_code == 0 and __version__ in res.stdout


def test_spec_table_from_csv_npy_and_parquet_agree(runner, table, tmp_path):
    csv, npy, pq = tmp_path / "d.csv", tmp_path / "d.npy", tmp_path / "d.parquet"
    table.to_csv(csv, index=False)
    np.save(npy, table.to_numpy())
    table.to_parquet(pq)
    infos = [_spec(runner, p, tmp_path / f"{p.suffix[1:]}.json") for p in (csv, npy, pq)]
    for info in infos:
        assert set(info) == SPEC_FIELDS
        assert info["n_samples"] == 200 and info["dimension"] == 4 and info["n_points"] == 10
        assert info["gamma"] == 0.25 and info["imputed_cells"] == 0
        assert info["converged"] is True and info["rounds"] >= 1
        spec = load_stat_spec(info["output"])
        assert spec.fingerprint() == info["fingerprint"]
        assert spec.kernel.key() == info["kernel"]
    # same numbers + same seed = same spec, whatever the file format
    assert len({i["fingerprint"] for i in infos}) == 1
    direct = RKMETableSpec.fit(table.to_numpy(), 10, random_state=0)
    assert direct.fingerprint() == infos[0]["fingerprint"]


def test_spec_table_options(runner, table, tmp_path):
    csv = tmp_path / "d.csv"
    table.to_csv(csv, index=False)
    info = _spec(runner, csv, tmp_path / "ab.json", "--columns", "a,b", "--gamma", "0.3",
                 "--scale", "none", "--seed", "3")
    assert info["dimension"] == 2 and info["gamma"] == 0.3
    spec = load_stat_spec(tmp_path / "ab.json")
    assert spec.kernel.scale.tolist() == [1.0, 1.0]
    assert spec.fit_info["random_state"] == 3
    res = runner.invoke(app, ["spec", "table", str(csv), "-o", str(tmp_path / "x.json"),
                              "--columns", "a,zz"])
    assert res.exit_code == 1 and "no columns ['zz']" in normalise(res.stderr)
    res = runner.invoke(app, ["spec", "table", str(csv), "-o", str(tmp_path / "x.json"),
                              "--scale", "huge"])
    assert res.exit_code == 1 and "--scale must be" in normalise(res.stderr)


def test_spec_table_human_output(runner, table, tmp_path):
    csv = tmp_path / "d.csv"
    table.to_csv(csv, index=False)
    res = runner.invoke(app, ["spec", "table", str(csv), "-o", str(tmp_path / "s.json"), "-k", "5"])
    assert res.exit_code == 0, res.output
    assert "fingerprint" in res.stdout and "per-feature kernel scales" in res.stdout


def test_kernel_from_gives_the_same_kernel(runner, table, tmp_path):
    np.save(tmp_path / "a.npy", table.to_numpy())
    np.save(tmp_path / "b.npy", table.to_numpy()[:100] * 7.0 + 1.0)
    a = _spec(runner, tmp_path / "a.npy", tmp_path / "a.json")
    b_own = _spec(runner, tmp_path / "b.npy", tmp_path / "b_own.json")
    b = _spec(runner, tmp_path / "b.npy", tmp_path / "b.json", "--kernel-from",
              str(tmp_path / "a.json"))
    assert b_own["kernel"] != a["kernel"]  # scales were inferred from the other data
    assert b["kernel"] == a["kernel"]
    # and the two specs are now comparable
    sa, sb = load_stat_spec(tmp_path / "a.json"), load_stat_spec(tmp_path / "b.json")
    assert sa.mmd2(sb) > 0


def test_missing_values_on_the_command_line(runner, table, tmp_path):
    df = table.copy()
    df.iloc[3, 1] = np.nan
    df.iloc[9, 2] = np.nan
    csv = tmp_path / "nan.csv"
    df.to_csv(csv, index=False)
    assert _spec(runner, csv, tmp_path / "i.json")["imputed_cells"] == 2
    dropped = _spec(runner, csv, tmp_path / "d.json", "--missing", "drop")
    assert dropped["n_samples"] == 198 and dropped["dropped_rows"] == 2
    assert "imputed_cells" not in dropped  # nothing was imputed
    res = runner.invoke(app, ["spec", "table", str(csv), "-o", str(tmp_path / "e.json"),
                              "--missing", "error"])
    assert res.exit_code == 1
    assert "2 NaN/inf cells" in normalise(res.stderr)
    assert not (tmp_path / "e.json").exists()


def test_non_numeric_column_fails_clearly(runner, table, tmp_path):
    df = table.copy()
    df["city"] = ["Oslo", "Lima"] * 100
    csv = tmp_path / "mixed.csv"
    df.to_csv(csv, index=False)
    res = runner.invoke(app, ["spec", "table", str(csv), "-o", str(tmp_path / "s.json")])
    assert res.exit_code != 0
    msg = normalise(res.stderr)
    assert "non-numeric columns ['city']" in msg and "--columns" in msg
    assert not (tmp_path / "s.json").exists()


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("data.xlsx", b"x", "unsupported data format"),
        ("data.npy", None, "expected a 2-D array"),
        ("missing.csv", "absent", "data file not found"),
    ],
)
def test_bad_data_files(runner, tmp_path, name, content, expected):
    p = tmp_path / name
    if content is None:
        np.save(p, np.arange(5.0))
    elif isinstance(content, bytes):
        p.write_bytes(content)
    res = runner.invoke(app, ["spec", "table", str(p), "-o", str(tmp_path / "s.json")])
    assert res.exit_code == 1
    assert expected in normalise(res.stderr)


def test_pack_check_and_digest(runner, skops_clf_dir, tmp_path):
    out = tmp_path / "pkg.zip"
    res = runner.invoke(app, ["pack", str(skops_clf_dir), "-o", str(out), "--json"])
    assert res.exit_code == 0, res.output
    packed = json.loads(res.stdout)
    assert packed["output"] == str(out) and out.is_file()
    res = runner.invoke(app, ["check", str(out), "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert report["ok"] is True
    assert report["name"] == "digits-lr" and report["version"] == "1.0.0"
    assert report["digest"] == packed["digest"]
    assert all(c["ok"] for c in report["checks"])
    assert [c["name"] for c in report["checks"]] == [
        "archive", "manifest and specs", "statistical spec", "model runs", "probabilities"
    ]
    res = runner.invoke(app, ["check", str(skops_clf_dir)])
    assert res.exit_code == 0 and "accepted" in res.stdout
    res = runner.invoke(app, ["digest", str(out)])
    assert res.exit_code == 0
    assert res.stdout.strip() == packed["digest"] == package_digest(skops_clf_dir)


def test_check_hostile_zip_exits_1_naming_the_entry(runner, tmp_path):
    z = make_zip(tmp_path / "evil.zip", [OK_ENTRY, ("../../escape.py", b"print('hi')")])
    res = runner.invoke(app, ["check", str(z)])
    assert res.exit_code == 1
    out = normalise(res.stdout)
    assert "'../../escape.py': '..' components are not allowed" in out
    assert "rejected" in out
    res = runner.invoke(app, ["check", str(z), "--json"])
    assert res.exit_code == 1
    report = json.loads(res.stdout)
    assert report["ok"] is False and report["digest"] is None
    assert report["checks"][0]["name"] == "archive"
    assert "../../escape.py" in report["checks"][0]["message"]
    res = runner.invoke(app, ["digest", str(z)])
    assert res.exit_code == 1 and "escape.py" in normalise(res.stderr)


def test_pack_failure_exits_1(runner, pkg_copy, tmp_path):
    (pkg_copy / "spec.json").unlink()
    res = runner.invoke(app, ["pack", str(pkg_copy), "-o", str(tmp_path / "x.zip")])
    assert res.exit_code == 1
    assert "'spec.json' listed in the manifest is missing" in normalise(res.stderr)
    assert not (tmp_path / "x.zip").exists()


def test_check_python_package_needs_trust_or_sandbox(runner, tmp_path, digits_spec,
                                                     linear_weights, monkeypatch):
    monkeypatch.setenv("LEARNDOCK_TEST_IMPORTED", "untouched")
    pkg = write_python_package(tmp_path / "py", digits_spec, weights=linear_weights)
    res = runner.invoke(app, ["check", str(pkg)])
    assert res.exit_code == 1
    assert "needs the sandbox or trust_remote_code" in normalise(res.stdout)
    res = runner.invoke(app, ["check", str(pkg), "--sandbox", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["ok"] is True
    res = runner.invoke(app, ["check", str(pkg), "--no-run", "--json"])
    assert res.exit_code == 0
    assert "model runs" not in {c["name"] for c in json.loads(res.stdout)["checks"]}


# ---------------------------------------------------------------------- hostile inputs


def test_check_corrupt_zip_prints_a_clear_error(runner, skops_clf_zip, tmp_path):
    import struct
    import zipfile

    raw = bytearray(skops_clf_zip.read_bytes())
    with zipfile.ZipFile(skops_clf_zip) as zf:
        info = zf.getinfo("spec.json")
    n, m = struct.unpack_from("<2H", raw, info.header_offset + 26)
    start = info.header_offset + 30 + n + m
    for i in range(start + 20, start + 300, 5):
        raw[i] ^= 0xFF
    bad = tmp_path / "corrupt.zip"
    bad.write_bytes(bytes(raw))
    res = runner.invoke(app, ["check", str(bad)])
    assert res.exit_code == 1
    assert res.exception is None or isinstance(res.exception, SystemExit)
    assert "entry 'spec.json': cannot be read" in normalise(res.stdout)
    res = runner.invoke(app, ["digest", str(bad)])
    assert res.exit_code == 1
    assert "entry 'spec.json': cannot be read" in normalise(res.stderr)


def test_check_long_entry_name(runner, tmp_path):
    z = make_zip(tmp_path / "long.zip", [OK_ENTRY, ("x" * 5000, b"1")])
    res = runner.invoke(app, ["check", str(z), "--json"])
    assert res.exit_code == 1
    report = json.loads(res.stdout)
    assert "5000 bytes long; the limit is 1024" in report["checks"][0]["message"]


def test_malformed_semantic_file_is_an_error(runner, skops_clf_zip, tmp_path):
    sem = tmp_path / "sem.json"
    sem.write_bytes(b"\xff\xfe{")
    res = runner.invoke(app, ["check", str(skops_clf_zip), "--semantic", str(sem)])
    assert res.exit_code == 1 and "cannot read semantic spec" in normalise(res.stderr)


@pytest.mark.parametrize(
    ("name", "content", "match"),
    [
        ("d.npy", b"\x93NUMPY\x01\x00v\x00{'descr': '<f8', 'fortran_order': False, "
                  b"'shape': (1000000000000, 2), }" + b" " * 52 + b"\n",
         "header promises 16000000000000 bytes of data but the file holds"),
        ("d.npy", b"\x93NUMPY\x01\x00\x10\x00{'descr': '|O'}  \n", "cannot read as a plain .npy"),
        ("d.csv", b'a,b\n1,"2\n', "cannot read as CSV"),
        ("d.csv", b"", "d.csv is empty"),
        ("d.csv", b"a,b\n\xff\xfe,1\n", "d.csv"),
    ],
)
def test_spec_table_malformed_data_files(runner, tmp_path, name, content, match):
    p = tmp_path / name
    p.write_bytes(content)
    res = runner.invoke(app, ["spec", "table", str(p), "-o", str(tmp_path / "s.json")])
    assert res.exit_code == 1, res.output
    assert res.exception is None or isinstance(res.exception, SystemExit)
    assert match in normalise(res.stderr)
    assert not (tmp_path / "s.json").exists()


def test_kernel_from_a_spec_over_the_user_cap(runner, table, tmp_path):
    csv = tmp_path / "d.csv"
    table.to_csv(csv, index=False)
    big = {"type": "rkme-table", "format_version": 1, "n_samples": 1,
           "kernel": {"type": "gaussian", "gamma": 0.25, "scale": [1.0] * 4},
           "z": np.zeros((20_000, 4)).tolist(), "beta": [1 / 20_000] * 20_000}
    (tmp_path / "big.json").write_text(json.dumps(big))
    res = runner.invoke(app, ["spec", "table", str(csv), "-o", str(tmp_path / "s.json"),
                              "--kernel-from", str(tmp_path / "big.json")])
    assert res.exit_code == 1
    assert "20000 reduced points" in normalise(res.stderr)
    assert "LEARNDOCK_ZIP_MAX_USER_SPEC_POINTS" in normalise(res.stderr)


# ---------------------------------------------------------------------- labels in the data


def test_target_and_drop_leave_columns_out(runner, table, tmp_path):
    df = table.copy()
    df["label"] = np.arange(200) % 3
    df["row_id"] = np.arange(200)
    csv = tmp_path / "labelled.csv"
    df.to_csv(csv, index=False)
    info = _spec(runner, csv, tmp_path / "t.json", "--target", "label", "--drop", "row_id")
    assert info["dimension"] == 4 and info["left_out"] == ["row_id", "label"]
    # the same spec as the features alone
    assert info["fingerprint"] == _spec(runner, csv, tmp_path / "c.json", "--columns",
                                        "a,b,c,d")["fingerprint"]
    # a text label column can be left out too (it would otherwise stop the spec)
    df["label"] = np.where(df["label"] == 0, "cat", "dog")
    df.to_csv(csv, index=False)
    assert _spec(runner, csv, tmp_path / "s.json", "--target", "label", "--drop",
                 "row_id")["dimension"] == 4
    res = runner.invoke(app, ["spec", "table", str(csv), "-o", str(tmp_path / "x.json"),
                              "--target", "nope"])
    assert res.exit_code == 1 and "no columns ['nope'] to leave out" in normalise(res.stderr)


@pytest.mark.parametrize(("column", "values", "why"), [
    ("label", np.linspace(0, 1, 200), "usual name for a label"),
    ("grade", np.arange(200) % 4, "4 distinct integers"),
])
def test_label_like_column_warns(runner, table, tmp_path, column, values, why):
    df = table.copy()
    df[column] = values
    csv = tmp_path / "d.csv"
    df.to_csv(csv, index=False)
    res = runner.invoke(app, ["spec", "table", str(csv), "-o", str(tmp_path / "s.json"),
                              "-k", "5"])
    assert res.exit_code == 0, res.output
    msg = normalise(res.stderr)
    assert f"warning: column '{column}' may be the label" in msg and why in msg
    assert f"--target {column}" in msg
    res = runner.invoke(app, ["spec", "table", str(csv), "-o", str(tmp_path / "s.json"),
                              "-k", "5", "--target", column])
    assert res.exit_code == 0 and "warning" not in res.stderr


def test_plain_features_do_not_warn(runner, table, tmp_path):
    csv = tmp_path / "d.csv"
    df = table.copy()
    df["count"] = np.arange(200) % 50  # integer, but many values: a feature
    df.to_csv(csv, index=False)
    res = runner.invoke(app, ["spec", "table", str(csv), "-o", str(tmp_path / "s.json"),
                              "-k", "5"])
    assert res.exit_code == 0 and res.stderr == ""


def test_unconverged_fit_is_explained(runner, table, tmp_path, monkeypatch):
    import learndock.spec as spec_mod

    real_fit = spec_mod.RKMETableSpec.fit

    def capped(*args, **kwargs):  # one round: the fit stops before it converges
        spec = real_fit(*args, **kwargs)
        spec.fit_info["converged"] = False
        spec.fit_info["mmd2_history"] = [0.5, 0.25]
        return spec

    monkeypatch.setattr(spec_mod.RKMETableSpec, "fit", capped)
    csv = tmp_path / "d.csv"
    table.to_csv(csv, index=False)
    res = runner.invoke(app, ["spec", "table", str(csv), "-o", str(tmp_path / "s.json"),
                              "-k", "5"])
    assert res.exit_code == 0, res.output
    out = normalise(res.stdout)
    assert "converged False: the fit stopped at its round limit while MMD^2 was still " \
           "falling (MMD^2 0.5 -> 0.25)" in out


def test_semantic_values_lists_every_enum(runner):
    from learndock.spec.semantic import DataType, LibraryType, License, Scenario, TaskType

    res = runner.invoke(app, ["semantic", "values", "--json"])
    assert res.exit_code == 0
    vals = json.loads(res.stdout)
    for tag, enum in (("data_type", DataType), ("task_type", TaskType),
                      ("library_type", LibraryType), ("scenarios", Scenario),
                      ("license", License)):
        assert vals[tag] == [m.value for m in enum]
    text = normalise(runner.invoke(app, ["semantic", "values"]).stdout)
    assert "Object Detection" in text and "CC-BY-SA-4.0" in text


def test_option_help_lists_values_without_type_tags(runner):
    from learndock.cli.main import full_app

    full = full_app()
    for argv in (["search", "--help"], ["market", "list", "--help"], ["init", "--help"]):
        res = runner.invoke(full, argv)
        assert res.exit_code == 0, res.output
        text = " ".join(res.stdout.replace("\u2502", " ").split())  # help sits in a box
        assert "Classification, Regression, Feature Extraction" in text
        assert "<bool>" not in text and "<int>" not in text and "<str>" not in text
