"""The hostile corpus: every attack is refused, with a clear message, cheaply, leaving nothing.

For each zip of :mod:`hostile.caps_packages`, through every entry point (``check_package``,
``load_learnware``, ``learndock check``): the rejection names what is wrong (a substring of the
expected message, including the ``LEARNDOCK_ZIP_*`` cap where one governs it), allocates little
(tracemalloc peak and RSS growth under 200 MB -- no timing asserts) and writes nothing outside
a private temporary directory, which is gone afterwards.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import textwrap
import tracemalloc
from pathlib import Path

import pytest
from typer.testing import CliRunner

from helpers import normalise
from hostile.caps_packages import CASES, control_image_zip, control_zip
from learndock.cli import main as cli_main
from learndock.cli.main import app
from learndock.errors import LearndockError
from learndock.package import check_package, load_learnware, package_digest

MB = 1024 * 1024
MAX_ALLOC = 200 * MB
ARCHIVE_CASES = {
    "aggregate-ratio", "pyc-entry", "pyo-entry", "pycache-dir", "so-entry", "so-versioned-entry",
    "pyd-entry", "dll-entry", "dylib-entry", "long-name-5000", "long-component-300",
    "control-char-name", "unknown-compression-method", "overlapping-entries",
    "overlapping-entries-bomb", "too-many-entries", "traversal", "absolute-path", "symlink",
    "duplicate-name", "duplicate-name-case", "encrypted-entry", "git-debris",
}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict[str, Path]:
    """Every hostile zip, built once (lazily: a dict filled on first use)."""
    return {}


@pytest.fixture
def hostile_zip(request, corpus, tmp_path_factory) -> tuple[Path, tuple[str, ...]]:
    name = request.param
    builder, expected = CASES[name]
    if name not in corpus:
        corpus[name] = builder(tmp_path_factory.mktemp(name))
    return corpus[name], expected


@pytest.fixture
def jail(tmp_path, monkeypatch) -> tuple[Path, Path]:
    """A private temp dir (where extraction goes) and a private cwd; both must stay empty."""
    tmp, cwd = tmp_path / "tmp", tmp_path / "cwd"
    tmp.mkdir()
    cwd.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    monkeypatch.chdir(cwd)
    return tmp, cwd


def _assert_clean(jail: tuple[Path, Path]) -> None:
    for d in jail:
        assert list(d.iterdir()) == [], f"left behind in {d}: {list(d.iterdir())}"
    assert not (jail[0].parent / "evil.txt").exists()


class _Meter:
    """Peak Python/numpy allocation (tracemalloc) and growth of the process's peak RSS."""

    def __enter__(self) -> _Meter:
        self.rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        tracemalloc.start()
        return self

    def __exit__(self, *exc: object) -> None:
        _, self.peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        self.rss_growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - self.rss0

    def assert_small(self) -> None:
        assert self.peak < MAX_ALLOC, f"allocated {self.peak / MB:.0f} MB"
        assert self.rss_growth < MAX_ALLOC, f"peak RSS grew {self.rss_growth / MB:.0f} MB"


CASE_PARAMS = [pytest.param(name, id=name) for name in CASES]


@pytest.mark.parametrize("hostile_zip", CASE_PARAMS, indirect=True)
def test_check_package_rejects_with_clear_message(hostile_zip, jail):
    path, expected = hostile_zip
    with _Meter() as meter:
        report = check_package(path)
    meter.assert_small()
    assert not report.ok
    failed = [i for i in report.items if not i.ok]
    assert len(failed) == 1, report.text()
    for part in expected:
        assert part in failed[0].message, report.text()
    assert report.digest is None  # never digested, never accepted
    _assert_clean(jail)


@pytest.mark.parametrize("hostile_zip", CASE_PARAMS, indirect=True)
def test_load_learnware_raises_learndock_error(hostile_zip, jail):
    path, expected = hostile_zip
    with _Meter() as meter, pytest.raises(LearndockError) as exc:
        load_learnware(path)
    meter.assert_small()
    for part in expected:
        assert part in str(exc.value)
    _assert_clean(jail)


@pytest.mark.parametrize("hostile_zip", CASE_PARAMS, indirect=True)
def test_cli_check_prints_reason_and_exits_1(hostile_zip, jail, monkeypatch):
    monkeypatch.setattr(cli_main.console, "width", 10_000)
    monkeypatch.setattr(cli_main.err, "width", 10_000)
    path, expected = hostile_zip
    res = CliRunner().invoke(app, ["check", str(path)])
    assert res.exit_code == 1, res.output
    assert res.exception is None or isinstance(res.exception, SystemExit)
    out = normalise(res.output)
    assert "Traceback" not in out and "rejected" in out
    for part in expected:
        assert normalise(part) in out
    _assert_clean(jail)


@pytest.mark.parametrize(
    "hostile_zip", [pytest.param(n, id=n) for n in sorted(ARCHIVE_CASES)], indirect=True
)
def test_digest_refuses_rather_than_skips(hostile_zip, jail):
    path, expected = hostile_zip
    with pytest.raises(LearndockError) as exc:
        package_digest(path)
    for part in expected:
        assert part in str(exc.value)


def test_control_packages_pass(tmp_path, jail):
    """The base packages without their hostile feature pass archive, manifest and spec checks."""
    for z in (control_zip(tmp_path), control_image_zip(tmp_path)):
        report = check_package(z, run_model=False)
        assert report.ok, report.text()
        assert {"archive", "manifest and specs"} <= {i.name for i in report.items}
        assert all(i.ok for i in report.items), report.text()
    _assert_clean(jail)


@pytest.mark.parametrize("case", ["corrupt-deflate", "long-name-5000", "spec-k-200000"])
def test_real_cli_no_traceback(case, tmp_path):
    """The installed entry point (not CliRunner): a clear error line, exit status 1."""
    path = CASES[case][0](tmp_path)
    env_tmp = tmp_path / "tmp"
    env_tmp.mkdir()
    res = subprocess.run(
        [sys.executable, "-c", "from learndock.cli.main import main; main()", "check",
         str(path)],
        capture_output=True, text=True, timeout=120, env={"TMPDIR": str(env_tmp),
                                                          "COLUMNS": "10000", "PATH": ""},
    )
    out = normalise(res.stdout + res.stderr)
    assert res.returncode == 1, out
    assert "Traceback" not in out and "rejected" in out
    for part in CASES[case][1]:
        assert normalise(part) in out
    assert list(env_tmp.iterdir()) == []


def test_whole_corpus_in_a_fresh_process_stays_small(tmp_path, corpus, tmp_path_factory):
    """Peak RSS of a fresh interpreter that rejects every hostile zip in turn: the C side
    (zlib, libyaml, numpy) included, which tracemalloc does not see."""
    paths = {}
    for name, (builder, _) in CASES.items():
        if name not in corpus:
            corpus[name] = builder(tmp_path_factory.mktemp(name))
        paths[name] = str(corpus[name])
    control = str(control_zip(tmp_path))
    script = textwrap.dedent(
        """
        import json, resource, sys
        from learndock.package import check_package
        paths, control = json.loads(sys.argv[1]), sys.argv[2]
        assert check_package(control, run_model=False).ok  # warm up: every lazy import
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        out = {}
        for name, p in paths.items():
            out[name] = not check_package(p).ok
        grow = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base
        print(json.dumps({"rejected": out, "growth_kb": grow}))
        """
    )
    res = subprocess.run(
        [sys.executable, "-c", script, json.dumps(paths), control],
        capture_output=True, text=True, timeout=300, env={"TMPDIR": str(tmp_path), "PATH": ""},
    )
    assert res.returncode == 0, res.stderr[-3000:]
    result = json.loads(res.stdout.strip().splitlines()[-1])
    assert all(result["rejected"].values()), result
    assert result["growth_kb"] * 1024 < MAX_ALLOC, f"peak RSS grew {result['growth_kb'] // 1024} MB"


def test_spec_at_both_size_caps_is_refused_before_arrays() -> None:
    """K and d may each sit at their cap, but not both: K x d is capped on its own."""
    from learndock.config import ArchiveLimits
    from learndock.errors import SpecError
    from learndock.spec.io import stat_spec_from_dict

    limits = ArchiveLimits(max_spec_values=1_000)
    k, d = 100, 20  # 2,000 numbers: each size alone is within its cap
    doc = {
        "type": "rkme-table",
        "z": [[0.0] * d for _ in range(k)],
        "beta": [1.0 / k] * k,
        "kernel": {"type": "gaussian", "gamma": 0.05, "scale": [1.0] * d},
    }
    with pytest.raises(SpecError, match="LEARNDOCK_ZIP_MAX_SPEC_VALUES"):
        stat_spec_from_dict(doc, limits)
