"""Migration 0003 (accounts, tokens, verification jobs, versions.uploaded_by/verified_at):
applied to a market that already holds learnwares, reversible, on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import inspect, select

import learndock.market
from learndock.market import Market
from learndock.market import schema as t
from learndock.server.accounts import AccountStore
from learndock.server.security import Passwords

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
