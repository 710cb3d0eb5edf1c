"""The change log: every add/remove of a searchable spec row, in commit order per island; and
SQLite full-text rows keyed by a rowid derived from the learnware id (``db.fts_rowid``), so
replacing or deleting one is an index lookup, not a scan of every row.

Island indexes (``learndock.market.index``) in every process catch up from the last ``seq``
they applied instead of reloading an island after each write. Existing markets start with an
empty log: their indexes are built from the specs table, then follow the log.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "change_log",
        sa.Column("seq", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True,
                  autoincrement=True),
        sa.Column("island_key", sa.String(200), nullable=False),
        sa.Column("op", sa.String(8), nullable=False),
        sa.Column("spec_row_id", sa.Integer, nullable=False),
        sa.Column("learnware_id", sa.String(32), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_index("ix_change_log_island_seq", "change_log", ["island_key", "seq"])
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        from learndock.market.db import fts_rowid

        rows = bind.execute(sa.text("SELECT learnware_id, title, description FROM learnware_fts")
                            ).all()
        bind.execute(sa.text("DELETE FROM learnware_fts"))
        if rows:
            bind.execute(
                sa.text("INSERT INTO learnware_fts (rowid, learnware_id, title, description) "
                        "VALUES (:r, :i, :t, :d)"),
                [{"r": fts_rowid(i), "i": i, "t": t, "d": d} for i, t, d in rows])


def downgrade() -> None:
    op.drop_index("ix_change_log_island_seq", table_name="change_log")
    op.drop_table("change_log")
