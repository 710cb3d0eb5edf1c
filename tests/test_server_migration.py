"""Migration 0003 (accounts, tokens, verification jobs, versions.uploaded_by/verified_at):
applied to a market that already holds learnwares, reversible, on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import inspect, select

import learndock.market
from learndock.market import Market
from learndock.market import schema as t
from learndock.package import pack, write_package
from learndock.server.accounts import AccountStore
from learndock.server.security import Passwords
from learndock.spec import RKMETableSpec
from market_helpers import class_rows, digits_model, digits_package, semantic, shared_kernel

pytest_plugins = ["market_helpers"]


def _alembic(m: Market, op: str, revision: str) -> None:
    cfg = Config()
    cfg.set_main_option("script_location",
                        str(Path(learndock.market.__file__).parent / "migrations"))
    with m.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        getattr(command, op)(cfg, revision)


def test_0003_upgrades_and_downgrades_a_market_with_data(
        market: Market, market_home: Path, db_url: str | None, skops_clf_zip: Path) -> None:
    added = market.add(skops_clf_zip, owner="someone")
    sub = market.submit(skops_clf_zip, owner="someone")
    accounts = AccountStore(market.engine, Passwords(1, 1024, 1))
    accounts.create_user("x@example.org", "a long password")
    tables = set(inspect(market.engine).get_table_names())
    assert {"users", "api_tokens", "verification_jobs"} <= tables
    _alembic(market, "downgrade", "0002")
    insp = inspect(market.engine)
    assert not {"users", "api_tokens", "verification_jobs"} & set(insp.get_table_names())
    assert {c["name"] for c in insp.get_columns("versions")}.isdisjoint({"uploaded_by",
                                                                          "verified_at"})
    market.engine.dispose()
    with Market(market_home, database_url=db_url) as again:  # opening migrates to head
        assert again.get(added.learnware_id).current_version == 1
        assert {"users", "api_tokens", "verification_jobs"} <= set(
            inspect(again.engine).get_table_names())
        with again.engine.connect() as conn:
            n = conn.execute(select(t.versions.c.id)
                             .where(t.versions.c.learnware_id == sub.learnware_id)).all()
        assert len(n) == 1
        # A version submitted before the downgrade lost its job: resubmitting works.
        again.submit(skops_clf_zip, owner="someone")
        assert again.jobs.counts()["queued"] == 1
        assert again.verify_pending().status == "accepted"


def test_0004_merges_islands_of_a_feature_space_and_splits_them_back(
        market: Market, market_home: Path, db_url: str | None, tmp_path: Path) -> None:
    """Two learnwares of one feature space fitted with different kernels: one island at head,
    two (one per fitting kernel, each scored under its own) at 0003, one again after."""
    a = market.add(digits_package(tmp_path, (1, 2, 3)))
    X, _ = class_rows((4, 5), train=True)
    own = RKMETableSpec.fit(X, 20, max_iter=3)
    assert own.kernel != shared_kernel()
    d = tmp_path / "own"
    write_package(d, digits_model((4, 5)), name="own", spec=own,
                  semantic=semantic(64, name="own", description="fours and fives", n_out=2))
    pack(d, tmp_path / "own.zip")
    b = market.add(tmp_path / "own.zip")
    assert a.island == b.island
    user = RKMETableSpec.fit(class_rows((4, 5), train=False)[0], 20, max_iter=3,
                             kernel=own.kernel)
    assert market.search(spec=user).single[0].learnware_id == b.learnware_id

    _alembic(market, "downgrade", "0003")
    with market.engine.connect() as conn:
        islands = conn.execute(select(t.islands.c.key, t.islands.c.kernel_json)).all()
        rows = conn.execute(select(t.specs.c.learnware_id, t.specs.c.island_key,
                                   t.specs.c.self_inner)).all()
    keys = {k for k, _ in islands}
    assert len(keys) == 2 and all(k.startswith(a.island + ":gauss-") for k in keys)
    by_lw = {lid: (key, si) for lid, key, si in rows}
    assert by_lw[b.learnware_id][0] == f"{a.island}:{own.kernel.key()}"
    assert by_lw[b.learnware_id][1] == pytest.approx(own.self_inner)  # its own kernel again
    assert "kernel_version" not in {c["name"] for c in inspect(market.engine).get_columns("specs")}
    market.engine.dispose()

    with Market(market_home, database_url=db_url) as again:  # opening migrates to head
        (island,) = again.islands()
        assert island.key == a.island and island.n_learnwares == 2
        info = again.island_kernel(island.key)
        assert info.version == 1 and "migration 0004" in info.history[0]["reason"]
        res = again.search(spec=user)
        assert res.single[0].learnware_id == b.learnware_id
        assert {m.learnware_id for m in res.single} == {a.learnware_id, b.learnware_id}
