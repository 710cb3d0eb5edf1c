"""Concurrent writers: two processes adding learnwares to one market at the same time."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from learndock.market import Market
from market_helpers import (
    DIGIT_SETS,
    blob_files,
    class_rows,
    digits_package,
    referenced_blobs,
    row_counts,
    search_ids,
    spawn_child,
    user_spec,
)

pytest_plugins = ["market_helpers"]

#: Opens the market (a fresh one: the two children also race to create the schema), says it is
#: ready, waits for the go signal, adds its packages and prints what it got.
CHILD = """
import json, sys, time
from pathlib import Path
from learndock.market import Market

home, url, ready, go, *zips = sys.argv[1:]
market = Market(home, database_url=url or None)
Path(ready).touch()
deadline = time.time() + 120
while not Path(go).exists():
    if time.time() > deadline:
        sys.exit("no go signal")
    time.sleep(0.01)
out = []
for z in zips:
    t0 = time.time()
    r = market.add(z)
    out.append([r.learnware_id, r.status, r.version, t0, time.time()])
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def ten_zips(tmp_path_factory: pytest.TempPathFactory) -> list[list[Path]]:
    """Two batches of five different packages (names p0-*, p1-*)."""
    w = tmp_path_factory.mktemp("concurrent")
    return [
        [digits_package(w, s, name=f"p{batch}-digits-{''.join(map(str, s))}") for s in DIGIT_SETS]
        for batch in range(2)
    ]


def test_two_processes_add_concurrently(
    tmp_path: Path, market_home: Path, db_url: str | None, ten_zips: list[list[Path]]
) -> None:
    children = []
    results: list[list] = []
    windows = []
    try:
        for batch in range(2):
            ready = tmp_path / f"ready{batch}"
            children.append(
                (
                    ready,
                    spawn_child(
                        CHILD, str(market_home), db_url or "", str(ready), str(tmp_path / "go"),
                        *map(str, ten_zips[batch]),
                    ),
                )
            )
        deadline = time.time() + 180
        while not all(r.exists() for r, _ in children):
            dead = [p for _, p in children if p.poll() is not None]
            assert not dead, dead[0].communicate()
            assert time.time() < deadline, "children did not open the market in time"
            time.sleep(0.02)
        (tmp_path / "go").touch()  # both start adding at the same moment

        for _, p in children:
            out, err = p.communicate(timeout=240)
            assert p.returncode == 0, err[-3000:]
            got = json.loads(out.strip().splitlines()[-1])
            results += got
            windows.append((got[0][3], got[-1][4]))
    finally:
        for _, p in children:  # only after a failure: stop the children we started
            if p.poll() is None:
                p.kill()
                p.wait()

    ids = [r[0] for r in results]
    assert len(ids) == 10
    assert len(set(ids)) == 10
    assert all(status == "accepted" and version == 1 for _, status, version, *_ in results)
    # the two writers really overlapped in time
    assert windows[0][0] < windows[1][1] and windows[1][0] < windows[0][1], windows

    with Market(market_home, database_url=db_url) as m:
        assert m.verify() == []
        assert len(m) == 10
        assert {i.id for i in m.list(page_size=100).items} == set(ids)
        assert row_counts(m) == {"learnwares": 10, "versions": 10, "specs": 10}
        assert blob_files(market_home) == referenced_blobs(m)
        assert len(referenced_blobs(m)) == 10
        assert len(m.islands()) == 1 and m.islands()[0].n_learnwares == 10
        # both copies of the (5, 6) learnware are found, ahead of every other one
        X, _ = class_rows((5, 6), train=False)
        found = search_ids(m, spec=user_spec(X))
        names = {i.id: i.name for i in m.list(page_size=100).items}
        assert {names[i] for i in found[:2]} == {"p0-digits-56", "p1-digits-56"}
        assert len(found) == 10
