"""Full-text index for every language.

SQLite: the FTS5 table is rebuilt with the ``unicode61 remove_diacritics 2`` tokenizer (was
``porter unicode61``: English stemming) and refilled from the searchable learnwares, with
Han/kana characters set apart (see :mod:`learndock.search.text`). PostgreSQL: the expression
index moves from the ``english`` configuration to ``simple`` over the same document.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

from learndock.search.text import PG_DOCUMENT, fts_text

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_SEARCHABLE = (
    "SELECT id, title, description FROM learnwares "
    "WHERE deleted_at IS NULL AND current_version_id IS NOT NULL"
)


def _rebuild_sqlite_fts(tokenize: str, transform: bool) -> None:
    op.execute("DROP TABLE IF EXISTS learnware_fts")
    op.execute(
        "CREATE VIRTUAL TABLE learnware_fts USING fts5("
        f"learnware_id UNINDEXED, title, description, tokenize='{tokenize}')"
    )
    bind = op.get_bind()
    rows = bind.execute(sa.text(_SEARCHABLE)).all()
    if rows:
        f = fts_text if transform else str
        bind.execute(
            sa.text("INSERT INTO learnware_fts (learnware_id, title, description) "
                    "VALUES (:i, :t, :d)"),
            [{"i": i, "t": f(title), "d": f(desc)} for i, title, desc in rows],
        )


def _reindex(sqlite_tokenize: str, transform: bool, pg_document: str) -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        _rebuild_sqlite_fts(sqlite_tokenize, transform)
    elif dialect == "postgresql":
        op.execute("DROP INDEX IF EXISTS ix_learnwares_fts")
        op.execute(f"CREATE INDEX ix_learnwares_fts ON learnwares USING gin ({pg_document})")


def upgrade() -> None:
    _reindex("unicode61 remove_diacritics 2", True, PG_DOCUMENT)


def downgrade() -> None:
    _reindex("porter unicode61", False, "to_tsvector('english', title || ' ' || description)")
