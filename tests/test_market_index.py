"""The island index: catches up from the change log instead of reloading, keeps large islands
in an HNSW graph (usearch) that is saved and reopened, applies tag filters itself, and several
processes sharing one database see a write from the first search after it commits."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

import learndock.market.index as index_module
from learndock.market import Market
from learndock.market import schema as t
from market_helpers import (
    child_env,
    class_rows,
    digits_package,
    search_ids,
    shared_kernel,
    user_spec,
)

pytest_plugins = ["market_helpers"]

SETS = [(0, 1, 2), (2, 3, 4), (5, 6), (7, 8, 9), (1, 4, 7)]


def _events(market: Market, key: str) -> list[str]:
    return [e for k, e in market.index.events if k == key]


def _query(classes: tuple[int, ...] = (5, 6)):
    return user_spec(class_rows(classes, train=False)[0], kernel=shared_kernel())


def test_writes_are_applied_from_the_log_without_a_reload(market: Market, tmp_path: Path) -> None:
    a = market.add(digits_package(tmp_path, (0, 1, 2)))
    key = a.island
    assert search_ids(market, spec=_query()) == [a.learnware_id]
    assert _events(market, key) == ["built"]
    b = market.add(digits_package(tmp_path, (5, 6)))
    assert search_ids(market, spec=_query())[0] == b.learnware_id
    v2 = market.update(a.learnware_id, digits_package(tmp_path, (7, 8, 9)))
    assert v2.version == 2
    found = search_ids(market, spec=_query((7, 8, 9)))
    assert found[0] == a.learnware_id and len(found) == 2  # the old version's row is gone
    market.delete(b.learnware_id)
    assert search_ids(market, spec=_query()) == [a.learnware_id]
    assert _events(market, key) == ["built", "caught-up", "caught-up", "caught-up"]
    with market.engine.connect() as conn:
        log = conn.execute(select(t.change_log.c.op, t.change_log.c.learnware_id)
                           .order_by(t.change_log.c.seq)).all()
    assert [tuple(r) for r in log] == [
        ("add", a.learnware_id), ("add", b.learnware_id), ("remove", a.learnware_id),
        ("add", a.learnware_id), ("remove", b.learnware_id)]
    view = market.index.cache[key]
    assert view.size == 1 and view.spec_row_ids.size == 1


@pytest.fixture
def ann_market(tmp_path: Path, db_url: str | None, digits_zips: dict) -> Market:
    """Every island in an HNSW graph (ann_min_rows=1)."""
    m = Market(tmp_path / "ann-home", database_url=db_url, ann_min_rows=1)
    for classes in SETS:
        assert m.add(digits_zips[classes]).accepted
    yield m
    m.close()


def test_graph_search_matches_the_exact_ranking(ann_market: Market, tmp_path: Path,
                                                digits_zips: dict,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(index_module, "EXACT_MAX_ROWS", 0)  # small sets too go through it
    # built from the database in batches of 2 rows, straight into a graph
    monkeypatch.setattr(index_module, "BUILD_BATCH", 2)
    ann_market.index.cache.clear()
    exact = Market(tmp_path / "exact-home")
    for classes in SETS:
        exact.add(digits_zips[classes])
    for classes in SETS:
        q = _query(classes)
        got = ann_market.search(spec=q)
        want = exact.search(spec=q)
        assert [s.name for s in got.single] == [s.name for s in want.single]
        assert [s.mmd for s in got.single] == pytest.approx([s.mmd for s in want.single])
        assert any("graph search" in e for e in got.explanation), got.explanation
    exact.close()
    (view,) = ann_market.index.cache.values()
    assert view.ann is not None and view.vectors is None and len(view.ann) == len(SETS)


def test_deletes_leave_tombstones_in_the_graph_until_it_is_mostly_dead(
        ann_market: Market, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(index_module, "EXACT_MAX_ROWS", 0)  # every search through the graph
    key = ann_market.islands()[0].key
    ids = search_ids(ann_market, spec=_query())
    assert len(ids) == len(SETS)
    ann_market.delete(ids[0])
    got = search_ids(ann_market, spec=_query())
    assert ids[0] not in got and set(got) == set(ids[1:])
    view = ann_market.index.cache[key]
    # the removed row is hidden by the alive mask, not removed from the graph
    assert len(view.ann) == len(SETS) and view.n_alive == len(SETS) - 1
    assert _events(ann_market, key)[-1] == "caught-up"
    for lid in ids[1:3]:
        ann_market.delete(lid)  # 3 of 5 gone: more tombstones than live rows
    got = search_ids(ann_market, spec=_query())
    assert set(got) == set(ids[3:])
    view = ann_market.index.cache[key]
    assert _events(ann_market, key)[-1] == "built" and len(view.ann) == len(SETS) - 3


def test_tag_filters_apply_inside_the_index(ann_market: Market, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    reg = ann_market.add(digits_package(tmp_path, (5, 6), name="apache-56",
                                        license="Apache-2.0", scenarios=("Financial",)))
    monkeypatch.setattr(index_module, "EXACT_MAX_ROWS", 0)  # force the graph + post-filter path
    res = ann_market.search({"license": ["Apache-2.0"]}, spec=_query())
    assert [s.learnware_id for s in res.single] == [reg.learnware_id]
    assert any("1 pass the tag filters" in e and "graph search" in e for e in res.explanation)
    res = ann_market.search({"task_type": ["Classification"], "scenarios": ["Education"]},
                            spec=_query())
    assert reg.learnware_id not in {s.learnware_id for s in res.single}
    assert len(res.single) == len(SETS)
    assert not ann_market.search({"input_dimension": 3}, spec=_query()).single
    assert not ann_market.search({"output_dimension": 17}, spec=_query()).single


def test_graph_is_saved_reopened_and_caught_up(ann_market: Market, tmp_path: Path,
                                               digits_zips: dict) -> None:
    key = ann_market.islands()[0].key
    first = search_ids(ann_market, spec=_query())
    home, url = ann_market.settings.home, ann_market.url
    ann_market.close()
    files = sorted(p.suffix for p in (home / "index").iterdir())
    assert files == [".npz", ".usearch"]
    # another process writes while this one is down
    with Market(home, database_url=None if url.startswith("sqlite") else url) as other:
        other.index.directory = None  # it does not touch the saved graph
        late = other.add(digits_package(tmp_path, (5, 6), name="late-56"))
    with Market(home, database_url=None if url.startswith("sqlite") else url,
                ann_min_rows=1) as again:
        got = search_ids(again, spec=_query())
        assert _events(again, key) == ["restored"]
        assert late.learnware_id in got and set(first) <= set(got)
    # a damaged graph file is rebuilt from the database
    for p in (home / "index").glob("*.usearch"):
        p.write_bytes(b"not a graph")
    with Market(home, database_url=None if url.startswith("sqlite") else url,
                ann_min_rows=1) as third:
        assert set(search_ids(third, spec=_query())) == set(got)
        assert _events(third, key) == ["built"]


def test_a_kernel_revision_rebuilds_the_view(market: Market, tmp_path: Path) -> None:
    from learndock.spec.kernels import GaussianKernel

    a = market.add(digits_package(tmp_path, (5, 6)))
    search_ids(market, spec=_query())
    market.revise_kernel(a.island, GaussianKernel(shared_kernel().gamma * 2,
                                                  shared_kernel().scale))
    assert search_ids(market, spec=_query()) == [a.learnware_id]
    assert _events(market, a.island) == ["built", "built"]
    assert market.index.cache[a.island].kernel_version == 2


# ---------------------------------------------------------------------- several processes
SEARCHER = textwrap.dedent("""
    import json, sys
    sys.path.insert(0, sys.argv[3])
    from market_helpers import class_rows, shared_kernel, user_spec
    from learndock.market import Market
    m = Market(sys.argv[1], database_url=sys.argv[2])
    q = user_spec(class_rows((5, 6), train=False)[0], kernel=shared_kernel())
    for line in sys.stdin:
        res = m.search(spec=q, top_k=50)
        print(json.dumps({"ids": [s.learnware_id for s in res.single],
                          "events": [e for _, e in m.index.events]}), flush=True)
""")


@pytest.mark.integration
def test_processes_sharing_postgresql_see_a_burst_of_writes(
        tmp_path: Path, digits_zips: dict) -> None:
    from market_helpers import fresh_pg_database, pg_unreachable_reason, pg_url

    if (why := pg_unreachable_reason()) is not None:
        pytest.skip(why)
    with fresh_pg_database() as dbname:
        url = pg_url(dbname)
        writer = Market(tmp_path / "writer", database_url=url)
        for classes in SETS[:2]:
            writer.add(digits_zips[classes])
        tests_dir = str(Path(__file__).parent)
        searchers = [subprocess.Popen(
            [sys.executable, "-c", SEARCHER, str(tmp_path / f"s{i}"), url, tests_dir],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            env=child_env()) for i in range(2)]

        def ask(p: subprocess.Popen) -> dict:
            p.stdin.write("search\n")
            p.stdin.flush()
            return json.loads(p.stdout.readline())

        try:
            for p in searchers:  # warm: each has built its view
                assert ask(p)["events"] == ["built"]
            burst = [writer.add(digits_package(tmp_path, (5, 6), name=f"burst-{i}")).learnware_id
                     for i in range(4)]
            writer.delete(burst[0])
            for p in searchers:  # the first search after the commits sees all of them
                out = ask(p)
                assert set(burst[1:]) <= set(out["ids"]) and burst[0] not in out["ids"]
                assert out["events"] == ["built", "caught-up"]
        finally:
            for p in searchers:
                p.stdin.close()
                p.wait(timeout=60)
            writer.close()


def test_views_use_ascending_row_ids(market: Market, tmp_path: Path) -> None:
    for classes in SETS[:3]:
        market.add(digits_package(tmp_path, classes))
    search_ids(market, spec=_query())
    (view,) = market.index.cache.values()
    assert np.all(np.diff(view.ids.view) > 0)


def test_bulk_load_publishes_and_running_indexes_catch_up(market: Market, tmp_path: Path) -> None:
    import json as _json

    from learndock.market.market import BulkItem
    from learndock.package.manifest import Manifest
    from learndock.spec import RKMETableSpec

    a = market.add(digits_package(tmp_path, (0, 1, 2)))
    search_ids(market, spec=_query())  # a warm index, as a running server has
    v = market.versions(a.learnware_id)[0]
    with market.engine.connect() as conn:
        row = conn.execute(select(t.versions.c.manifest_json, t.versions.c.blob_sha256,
                                  t.versions.c.size_bytes)
                           .where(t.versions.c.learnware_id == a.learnware_id)).one()
    base = Manifest.parse(_json.loads(row.manifest_json))
    rng = np.random.default_rng(0)
    items = []
    for i, classes in enumerate([(5, 6), (7, 8, 9)] * 30):
        X = class_rows(classes, train=True)[0]
        X = X[rng.choice(len(X), 120, replace=False)]
        spec = RKMETableSpec.fit(X, 10, kernel=shared_kernel(), max_iter=1, random_state=i)
        name = f"bulk-{i}-{''.join(map(str, classes))}"
        doc = base.to_dict()
        doc["name"] = name
        doc["semantic"]["name"] = f"Bulk learnware {name}"
        m = Manifest.parse(doc)
        items.append(BulkItem(m, [spec], row.blob_sha256, row.size_bytes, v.package_sha256,
                              {"checks": []}, owner="migration"))
    ids = market.bulk_load(items, batch_size=25, progress=False)
    assert len(ids) == 60 and len(market) == 61
    found = market.search(spec=_query(), top_k=61)
    assert len(found.single) == 61
    top_names = [s.name for s in found.single[:30]]
    assert all(n.endswith("-56") for n in top_names), top_names
    assert _events(market, a.island) == ["built", "caught-up"]
    assert market.get(ids[0]).owner == "migration"
    assert ids[7] in search_ids(market, {"text": "bulk-7-56"}, top_k=61)  # full-text rows exist
    with market.engine.connect() as conn:
        n_log = conn.execute(select(t.change_log.c.seq)
                             .where(t.change_log.c.op == "add")).all()
    assert len(n_log) == 61
