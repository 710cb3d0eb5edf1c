"""kill -9 atomicity: a process killed at any crash point leaves the market consistent.

For every crash point (``LEARNDOCK_CRASH_AT``, see ``learndock.market.faults``) and backend a
child process opens the market and adds (or deletes) a learnware; the point makes it SIGKILL
itself. All children run at once (each in its own store) to keep the module fast; each test
then checks one outcome: the child died by SIGKILL, ``verify()`` finds nothing, the learnware
is either fully there or fully absent, and ``sweep`` leaves no unreferenced blob.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from learndock.errors import NotFoundError
from learndock.market import Market
from market_helpers import (
    blob_files,
    class_rows,
    learnware_ids_by_name,
    pg_schema_url,
    pg_unreachable_reason,
    referenced_blobs,
    row_counts,
    search_ids,
    spawn_child,
    user_spec,
)

pytest_plugins = ["market_helpers"]

ADD_POINTS = ["after-blob", "before-commit", "after-commit"]
DELETE_POINTS = ["delete-before-commit", "delete-after-commit"]
#: Does the operation take effect if the process dies at this point?
COMMITTED = {
    "after-blob": False,
    "before-commit": False,
    "after-commit": True,
    "delete-before-commit": False,
    "delete-after-commit": True,
}

CHILD = """
import sys
from learndock.market import Market

home, url, op, arg = sys.argv[1:5]
market = Market(home, database_url=url or None)
if op == "add":
    market.add(arg)
else:
    market.delete(arg)
print("the crash point did not fire")
"""

BASE = (0, 1, 2)  # in every store before the child runs; the one the delete children delete
NEW = (5, 6)  # what the add children add
NEW_NAME = "digits-56"


@dataclass
class Scenario:
    backend: str
    point: str
    home: Path
    url: str | None
    base_id: str
    base_sha: str
    new_sha: str
    before: dict[str, int]
    proc: subprocess.CompletedProcess | None = None


@pytest.fixture(scope="module")
def crash_outcomes(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, digits_zips: dict
):
    """Run the child of every selected (backend, crash point) test at once; yields
    {(backend, point): Scenario}."""
    from learndock.market.blobstore import sha256_file

    wanted = {
        (item.callspec.params["backend"], item.callspec.params["point"])
        for item in request.session.items
        if item.module is request.module and hasattr(item, "callspec")
    }
    if pg_unreachable_reason():
        wanted = {w for w in wanted if w[0] != "postgres"}
    scenarios: dict[tuple[str, str], Scenario] = {}
    new_sha = sha256_file(digits_zips[NEW])[0]
    # PostgreSQL: one database for the module, one schema per scenario
    pg_db = None
    if any(backend == "postgres" for backend, _ in wanted):
        pg_db = request.getfixturevalue("pg_database")
    for backend, point in sorted(wanted):
        home = tmp_path_factory.mktemp(f"crash-{backend}-{point}") / "home"
        url = None
        if backend == "postgres":
            url = pg_schema_url(pg_db, "crash_" + point.replace("-", "_"))
        with Market(home, database_url=url) as m:
            r = m.add(digits_zips[BASE])
            assert r.accepted, r.report.text()
            before = row_counts(m)
        scenarios[(backend, point)] = Scenario(
            backend, point, home, url, r.learnware_id, r.package_sha256, new_sha, before
        )
    procs: dict[tuple[str, str], subprocess.Popen] = {}
    try:
        for key, sc in scenarios.items():
            op, arg = (
                ("add", str(digits_zips[NEW])) if sc.point in ADD_POINTS else ("delete", sc.base_id)
            )
            procs[key] = spawn_child(
                CHILD, str(sc.home), sc.url or "", op, arg, LEARNDOCK_CRASH_AT=sc.point
            )
        for key, p in procs.items():
            out, err = p.communicate(timeout=180)
            scenarios[key].proc = subprocess.CompletedProcess(p.args, p.returncode, out, err)
    finally:
        for p in procs.values():  # only on a timeout: stop the children we started
            if p.poll() is None:
                p.kill()
                p.wait()
    yield scenarios


def _scenario(crash_outcomes: dict, backend: str, point: str) -> Scenario:
    if backend == "postgres" and (reason := pg_unreachable_reason()):
        pytest.skip(reason)
    return crash_outcomes[(backend, point)]


BACKEND_PARAMS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


def _assert_killed(sc: Scenario) -> None:
    assert sc.proc is not None
    assert sc.proc.returncode == -9, (
        f"child at {sc.point} exited with {sc.proc.returncode}, not SIGKILL\n"
        f"stdout: {sc.proc.stdout}\nstderr: {sc.proc.stderr[-3000:]}"
    )


def _assert_no_stray_blobs_after_sweep(m: Market, sc: Scenario) -> None:
    m.sweep(grace_seconds=0)
    referenced = referenced_blobs(m)
    assert blob_files(sc.home) == referenced
    assert {sha for sha, _ in m.blobs.list()} == referenced
    assert m.verify() == []


def _assert_fully_present(m: Market, lid: str, sha: str, classes: tuple[int, ...]) -> None:
    info = m.get(lid)
    assert info.status == "accepted" and info.current_version == 1
    vs = m.versions(lid)
    assert [(v.number, v.available, v.package_sha256) for v in vs] == [(1, True, sha)]
    assert m.blobs.exists(sha)
    counts = row_counts(m, lid)
    assert counts == {"learnwares": 1, "versions": 1, "specs": 1}
    X, _ = class_rows(classes, train=False)
    assert search_ids(m, spec=user_spec(X))[0] == lid
    assert lid in {i.id for i in m.list().items}


@pytest.mark.parametrize("point", ADD_POINTS)
@pytest.mark.parametrize("backend", BACKEND_PARAMS)
def test_add_killed_at_crash_point(
    crash_outcomes: dict, digits_zips: dict, backend: str, point: str
) -> None:
    sc = _scenario(crash_outcomes, backend, point)
    _assert_killed(sc)
    with Market(sc.home, database_url=sc.url) as m:
        assert m.verify() == []
        new_ids = learnware_ids_by_name(m, NEW_NAME)
        if COMMITTED[point]:
            assert len(new_ids) == 1
            assert len(m) == 2
            _assert_fully_present(m, new_ids[0], sc.new_sha, NEW)
        else:
            # fully absent: nothing in any table, not listed, not searchable
            assert new_ids == []
            assert len(m) == 1
            assert row_counts(m) == sc.before
            X, _ = class_rows(NEW, train=False)
            assert search_ids(m, spec=user_spec(X)) == [sc.base_id]
            assert sc.new_sha not in referenced_blobs(m)
            # the blob was written before the crash and is now an orphan for sweep
            assert sc.new_sha in blob_files(sc.home)
        _assert_fully_present(m, sc.base_id, sc.base_sha, BASE)
        _assert_no_stray_blobs_after_sweep(m, sc)
        if not COMMITTED[point]:
            assert sc.new_sha not in blob_files(sc.home)
            # the market still works after the crash: the same add now goes through
            r = m.add(digits_zips[NEW])
            assert r.accepted and r.package_sha256 == sc.new_sha
            _assert_fully_present(m, r.learnware_id, sc.new_sha, NEW)
            assert m.verify() == []


@pytest.mark.parametrize("point", DELETE_POINTS)
@pytest.mark.parametrize("backend", BACKEND_PARAMS)
def test_delete_killed_at_crash_point(crash_outcomes: dict, backend: str, point: str) -> None:
    sc = _scenario(crash_outcomes, backend, point)
    _assert_killed(sc)
    with Market(sc.home, database_url=sc.url) as m:
        assert m.verify() == []
        if COMMITTED[point]:
            with pytest.raises(NotFoundError):
                m.get(sc.base_id)
            assert len(m) == 0
            assert m.list(include_rejected=True).total == 0
            X, _ = class_rows(BASE, train=False)
            assert search_ids(m, spec=user_spec(X)) == []
            assert search_ids(m, {"text": "handwritten digits"}) == []
            assert referenced_blobs(m) == set()
            # killed between commit and unlink: the released blob is left for sweep
            assert sc.base_sha in blob_files(sc.home)
        else:
            assert len(m) == 1
            assert row_counts(m) == sc.before
            _assert_fully_present(m, sc.base_id, sc.base_sha, BASE)
        _assert_no_stray_blobs_after_sweep(m, sc)
        assert (sc.base_sha in blob_files(sc.home)) is not COMMITTED[point]
