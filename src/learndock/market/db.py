"""Database plumbing the market's parts share: the engine, migrations and a few row helpers.

Kept apart from the parts themselves so that the store, the catalogue and the island index can
each open connections and read a learnware's row the same way without importing one another.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import create_engine, event, select
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError, OperationalError

from learndock.errors import MarketError, NotFoundError
from learndock.market import schema as t
from learndock.spec.semantic import Scenario

T = TypeVar("T")

#: One bit per scenario: a learnware's scenarios are one integer column, a filter one ``&``.
SCENARIO_BITS = {s: 1 << i for i, s in enumerate(Scenario)}


def make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite gets WAL and long busy timeouts (several processes write)."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 60})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=60000")
            cur.close()

        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://"):]
    return create_engine(url, pool_pre_ping=True)


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest Alembic revision (safe to call often, and concurrently)."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    for attempt in range(5):
        try:
            with engine.begin() as conn:
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, "head")
            return
        except (OperationalError, IntegrityError) as exc:
            # Two processes creating the same fresh database: the loser retries and finds
            # the schema in place.
            if attempt == 4:
                raise MarketError(f"cannot migrate the market database: {exc}") from exc
            time.sleep(0.2 * (attempt + 1))
        except Exception as exc:  # ProgrammingError on PostgreSQL duplicate tables
            if "already exists" in str(exc) and attempt < 4:
                time.sleep(0.2 * (attempt + 1))
                continue
            raise


def live_row(conn: Connection, learnware_id: str) -> Any:
    """The learnware's row, or NotFoundError if there is none or it was deleted."""
    row = conn.execute(
        select(t.learnwares).where(t.learnwares.c.id == learnware_id)
    ).mappings().first()
    if row is None or row["deleted_at"] is not None:
        raise NotFoundError(f"no learnware {learnware_id!r}")
    return row


def new_id() -> str:
    """A random id: never a counter, so ids say nothing about order or market size."""
    return uuid.uuid4().hex[:16]


def fts_rowid(learnware_id: str) -> int:
    """The SQLite full-text row of a learnware is keyed by a rowid derived from its id: FTS5
    cannot index an equality on another column, so a delete by id would scan every row."""
    try:
        return int(learnware_id, 16) >> 1 if len(learnware_id) <= 16 else _hashed(learnware_id)
    except ValueError:
        return _hashed(learnware_id)


def _hashed(text: str) -> int:
    import hashlib

    return int(hashlib.sha256(text.encode()).hexdigest()[:15], 16)


def scenario_mask(scenarios: list[Scenario]) -> int:
    m = 0
    for s in scenarios:
        m |= SCENARIO_BITS[s]
    return m


def encoder_id(kernel_json: str) -> str | None:
    """The encoder id an image/text island stored with its kernel (None for tables)."""
    return (json.loads(kernel_json).get("encoder") or {}).get("id")


def write_txn(engine: Engine, fn: Callable[[Connection], T], *, attempts: int = 8) -> T:
    """Run ``fn(conn)`` in one write transaction; retried (from the start, ``fn`` again) when
    SQLite reports a lock it could not wait out or PostgreSQL a deadlock. ``fn`` must be
    idempotent up to its own effects in the database (which a failed try rolled back)."""
    for attempt in range(attempts):
        try:
            with engine.begin() as conn:
                return fn(conn)
        except OperationalError as exc:
            msg = str(exc)
            if ("locked" not in msg and "deadlock" not in msg) or attempt == attempts - 1:
                raise
            time.sleep(0.05 * (attempt + 1))
    raise MarketError("could not write to the market database")  # pragma: no cover
