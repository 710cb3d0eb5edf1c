"""Every way an add can fail leaves nothing behind: no ``learndock-add-*`` temp directory, no
row, and at most a blob that ``sweep`` removes. A package that cannot be read (a spec over the
caps, a check that runs out of memory) is refused; a readable one that fails a check is stored
as rejected."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import Ridge

import learndock.market.intake as intake
from learndock.errors import SpecError
from learndock.market import Market, RejectedError
from learndock.package import write_package
from market_helpers import (
    blob_files,
    row_counts,
    semantic,
    small_spec,
    small_table,
    wrong_labels_package,
    zip_dir,
)

pytest_plugins = ["market_helpers"]

NOTHING = {"learnwares": 0, "versions": 0, "specs": 0}


@pytest.fixture
def private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A temp directory of this test's own: every tempfile.mkdtemp of the add lands there."""
    d = tmp_path / "tmp"
    d.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(d))
    return d


@pytest.fixture
def m(tmp_path: Path) -> Iterator[Market]:
    with Market(tmp_path / "home") as market:
        yield market


def _leftovers(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir()
                  if p.name.startswith(("learndock-add-", "learndock-pkg-", "learndock-load-")))


def _assert_nothing_stored(m: Market, tmp_path: Path) -> None:
    assert row_counts(m) == NOTHING
    assert len(m) == 0 and m.list(include_rejected=True).total == 0
    assert m.verify() == []
    m.sweep(grace_seconds=0)
    assert blob_files(tmp_path / "home") == set()


def _oversized_spec_zip(w: Path, n_points: int) -> Path:
    """A 4-feature regressor whose spec JSON (written by hand, past any writer-side check)
    holds ``n_points`` reduced points."""
    X = small_table()
    d = w / "big-spec"
    write_package(d, Ridge().fit(X, X.sum(axis=1)), name="big-spec", spec=small_spec(),
                  semantic=semantic(4, name="big-spec", description="Too many points.",
                                    task="Regression", n_out=1))
    doc = json.loads((d / "spec.json").read_text(encoding="utf-8"))
    rng = np.random.default_rng(0)
    doc["z"] = rng.normal(size=(n_points, 4)).tolist()
    doc["beta"] = np.full(n_points, 1.0 / n_points).tolist()
    (d / "spec.json").write_text(json.dumps(doc), encoding="utf-8")
    return zip_dir(d, w / "big-spec.zip")


def test_spec_over_the_point_cap_is_refused(m: Market, private_tmp: Path, tmp_path: Path) -> None:
    assert m.limits.max_spec_points == 5_000
    with pytest.raises(RejectedError) as err:
        m.add(_oversized_spec_zip(tmp_path, 6_000))
    text = err.value.report.text()
    assert "6000" in text and "limit" in text, text
    assert _leftovers(private_tmp) == []
    _assert_nothing_stored(m, tmp_path)


def _raise(exc: BaseException):  # noqa: ANN202
    def fail(*a: object, **kw: object) -> None:
        raise exc

    return fail


#: (what fails, the error it raises, what add raises, a pattern its message matches)
FAILURES = {
    "checks run out of memory": ("check_package", MemoryError(), RejectedError, "MemoryError"),
    "spec loader refuses after the checks": (
        "load_learnware", SpecError("spec has 9999 reduced points"), RejectedError, "9999"),
    "bug in the checks": ("check_package", RuntimeError("a bug"), RuntimeError, "a bug"),
    "disk full writing the blob": (
        "put_file", OSError(28, "No space left on device"), OSError, "No space"),
    "failure inside the transaction": ("_set_fts", MemoryError(), MemoryError, None),
}


@pytest.mark.parametrize("case", list(FAILURES))
def test_a_failure_anywhere_in_add_leaves_nothing(
    case: str, m: Market, digits_zips: dict, private_tmp: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    where, error, raised, message = FAILURES[case]
    owner = {"put_file": m.blobs, "_set_fts": m.store}.get(where, intake)
    monkeypatch.setattr(owner, where, _raise(error))
    with pytest.raises(raised, match=message):
        m.add(digits_zips[(5, 6)])
    assert _leftovers(private_tmp) == []
    _assert_nothing_stored(m, tmp_path)  # an orphan blob, if any, goes with the sweep


def test_readable_package_failing_a_check_is_stored_as_rejected(
    m: Market, private_tmp: Path, tmp_path: Path
) -> None:
    r = m.add(wrong_labels_package(tmp_path))
    assert r.status == "rejected" and not r.accepted
    assert row_counts(m) == {"learnwares": 1, "versions": 1, "specs": 0}
    assert _leftovers(private_tmp) == []
    assert m.verify() == []
