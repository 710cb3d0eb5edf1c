"""The system space of heterogeneous search (issue #17): every version of the map from island
columns to shared system features (``system_spaces``), the explicit column maps between
islands (``island_bridges``), and ``islands.system_version``: the space version under which an
island's columns joined, i.e. which map makes its specs' projections. Existing markets start
with an empty space; it is built at the first heterogeneous search
(``learndock.market.hetero_store``).

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "system_spaces",
        sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("space_json", sa.Text, nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("embedder", sa.String(200), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_table(
        "island_bridges",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("source_island", sa.String(200), nullable=False),
        sa.Column("target_island", sa.String(200), nullable=False),
        sa.Column("map_version", sa.Integer, nullable=False),
        sa.Column("bridge_json", sa.Text, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.UniqueConstraint("source_island", "target_island", "map_version",
                            name="uq_island_bridges_pair_version"),
    )
    op.add_column("islands", sa.Column("system_version", sa.Integer, nullable=True))


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        # SQLite >= 3.35 drops a plain column in place (a batch copy of the table would trip
        # the foreign keys of the rows pointing at islands).
        op.execute("ALTER TABLE islands DROP COLUMN system_version")
    else:
        op.drop_column("islands", "system_version")
    op.drop_table("island_bridges")
    op.drop_table("system_spaces")
