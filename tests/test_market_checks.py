"""Submission checks: broken learnwares are rejected with a report stored with the version;
unreadable packages are refused and nothing is stored. ``python`` models run in the sandbox."""

from __future__ import annotations

import builtins
import shutil
import tempfile
import time
import zipfile
from pathlib import Path

import pytest

from learndock.market import Market, RejectedError
from learndock.package import write_package
from learndock.spec import RKMETableSpec
from market_helpers import (
    BUILTINS_MARK,
    blob_files,
    class_rows,
    digits_model,
    digits_spec,
    python_package,
    row_counts,
    search_ids,
    semantic,
    small_table,
    user_spec,
    wrong_labels_package,
    zip_dir,
)

pytest_plugins = ["market_helpers"]


@pytest.fixture(scope="module")
def sqlite_market(tmp_path_factory: pytest.TempPathFactory):
    """One SQLite market for the module (the checks do not depend on the backend)."""
    home = tmp_path_factory.mktemp("checks") / "home"
    with Market(home) as m:
        yield m


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("check-packages")


def _failed(report: dict) -> list[dict]:
    return [c for c in report["checks"] if not c["ok"]]


def _assert_rejected_and_stored(m: Market, result, check: str, *words: str) -> dict:
    """The version is stored as rejected with a report whose failing check is ``check``."""
    assert result.status == "rejected"
    assert not result.accepted
    vs = m.versions(result.learnware_id)
    assert [(v.number, v.status, v.available) for v in vs] == [(1, "rejected", True)]
    report = vs[0].report
    assert report["ok"] is False
    failed = _failed(report)
    assert [c["name"] for c in failed] == [check], report
    msg = failed[0]["message"].lower()
    for w in words:
        assert w.lower() in msg, msg
    text = result.report.text()
    assert f"[FAIL] {check}" in text and text.endswith("rejected")
    # stored but invisible: not listed (unless asked for), not searchable, no spec rows
    info = m.get(result.learnware_id)
    assert info.status == "rejected" and info.current_version is None
    assert result.learnware_id not in {i.id for i in m.list(page_size=1000).items}
    assert result.learnware_id in {
        i.id for i in m.list(page_size=1000, include_rejected=True).items
    }
    assert result.learnware_id not in search_ids(m, top_k=1000)
    assert result.learnware_id not in search_ids(m, {"text": info.semantic.description})
    assert row_counts(m, result.learnware_id)["specs"] == 0
    assert m.verify() == []
    return report


def test_labels_outside_declared_set_rejected(sqlite_market: Market, work: Path) -> None:
    r = sqlite_market.add(wrong_labels_package(work))
    _assert_rejected_and_stored(sqlite_market, r, "model runs", "outside its declared label set")
    X, _ = class_rows((5, 6), train=False)
    assert r.learnware_id not in search_ids(sqlite_market, spec=user_spec(X))


def test_regressor_returning_nan_rejected(sqlite_market: Market, work: Path) -> None:
    r = sqlite_market.add(python_package(work, "nan"))
    _assert_rejected_and_stored(sqlite_market, r, "model runs", "nan")


def test_python_model_that_raises_rejected(sqlite_market: Market, work: Path) -> None:
    r = sqlite_market.add(python_package(work, "raise"))
    _assert_rejected_and_stored(
        sqlite_market, r, "model runs", "RuntimeError", "deliberate failure inside predict"
    )


def test_python_model_past_the_timeout_rejected(tmp_path: Path, work: Path) -> None:
    with Market(tmp_path / "home", check_timeout=2) as m:
        t0 = time.monotonic()
        r = m.add(python_package(work, "sleep"))
        elapsed = time.monotonic() - t0
        _assert_rejected_and_stored(m, r, "model runs", "timed out after 2 s")
    assert elapsed < 60  # the model sleeps 120 s: it was stopped, not waited for


def test_python_model_opening_a_socket_does_not_hang(tmp_path: Path, work: Path) -> None:
    with Market(tmp_path / "home", check_timeout=10) as m:
        t0 = time.monotonic()
        r = m.add(python_package(work, "network"))
        elapsed = time.monotonic() - t0
        report = _assert_rejected_and_stored(m, r, "model runs")
    # network-isolated sandbox: connect fails at once ("Network is unreachable"); otherwise
    # the blocked connect runs into the check timeout and the sandbox is stopped
    msg = _failed(report)[0]["message"].lower()
    assert "network is unreachable" in msg or "timed out after 10 s" in msg, msg
    assert elapsed < 60


def test_good_python_model_accepted_in_the_sandbox_only(sqlite_market: Market, work: Path) -> None:
    assert not hasattr(builtins, BUILTINS_MARK)
    z = python_package(work, "ok", name="py-fine")
    r = sqlite_market.add(z)
    assert r.accepted, r.report.text()
    checks = {c.name: c for c in r.report.items}
    assert checks["model runs"].ok and "shape [32]" in checks["model runs"].message
    # the model ran (in the sandbox) but its module was never imported here
    assert not hasattr(builtins, BUILTINS_MARK)
    spec = RKMETableSpec.fit(small_table()[:100], 10, kernel=sqlite_market.kernel_for(4))
    assert search_ids(sqlite_market, spec=spec)[0] == r.learnware_id
    assert sqlite_market.versions(r.learnware_id)[0].report["ok"] is True


# ---------------------------------------------------------------------- refused outright


def _assert_refused(m: Market, path: Path, *words: str) -> None:
    home = m.settings.home
    n, counts, blobs = len(m), row_counts(m), blob_files(home)
    with pytest.raises(RejectedError) as exc:
        m.add(path)
    report = exc.value.report
    assert not report.ok
    msg = " ".join(f"{i.name}: {i.message}" for i in report.items if not i.ok).lower()
    for w in words:
        assert w.lower() in msg, msg
    assert "rejected" in str(exc.value)
    assert len(m) == n
    assert row_counts(m) == counts
    assert blob_files(home) == blobs
    assert not list((home / "blobs" / "tmp").glob("*.part"))
    assert m.verify() == []


def test_spec_dimension_mismatch_refused(sqlite_market: Market, work: Path) -> None:
    d = work / "dim-mismatch"
    write_package(
        d, digits_model((7, 8, 9)), name="dim-mismatch",
        semantic=semantic(64, name="dim mismatch", description="Spec of the wrong width.", n_out=3),
        spec=digits_spec((7, 8, 9)),
    )
    X, _ = class_rows((7, 8, 9), train=True)
    RKMETableSpec.fit(X[:, :10], 5, max_iter=1).save(d / "spec.json")  # 10 dims, model takes 64
    z = zip_dir(d, work / "dim-mismatch.zip")
    _assert_refused(sqlite_market, z, "dimension 10")


def test_malformed_zip_refused(sqlite_market: Market, work: Path) -> None:
    z = work / "garbage.zip"
    z.write_bytes(b"PK\x03\x04 this is not really a zip archive" * 10)
    _assert_refused(sqlite_market, z)


def test_truncated_zip_refused(sqlite_market: Market, work: Path, digits_zips: dict) -> None:
    good = digits_zips[(0, 1, 2)].read_bytes()
    z = work / "truncated.zip"
    z.write_bytes(good[: len(good) // 2])
    _assert_refused(sqlite_market, z)


def test_missing_manifest_refused(sqlite_market: Market, work: Path, digits_zips: dict) -> None:
    src = work / "no-manifest-src"
    with zipfile.ZipFile(digits_zips[(2, 3, 4)]) as zf:
        zf.extractall(src)
    z = zip_dir(src, work / "no-manifest.zip", skip=("learnware.yaml",))
    _assert_refused(sqlite_market, z, "learnware.yaml")
    shutil.rmtree(src)


def test_package_directory_with_symlink_refused(
    sqlite_market: Market, work: Path, digits_zips: dict, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    src = work / "symlinked"
    with zipfile.ZipFile(digits_zips[(0, 1, 2)]) as zf:
        zf.extractall(src)
    (src / "passwd").symlink_to("/etc/passwd")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    _assert_refused(sqlite_market, src, "symlink")
    assert list(scratch.iterdir()) == []  # no work directory left behind


def test_missing_package_path_refused(sqlite_market: Market, work: Path) -> None:
    _assert_refused(sqlite_market, work / "does-not-exist.zip", "no package")
