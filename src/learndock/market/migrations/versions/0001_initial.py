"""Initial schema: islands, learnwares, versions, specs, blobs, full-text index.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "islands",
        sa.Column("key", sa.String(200), primary_key=True),
        sa.Column("data_type", sa.String(32), nullable=False),
        sa.Column("dimension", sa.Integer, nullable=False),
        sa.Column("schema_hash", sa.String(64), nullable=False),
        sa.Column("kernel_key", sa.String(64), nullable=False),
        sa.Column("kernel_json", sa.Text, nullable=False),
        sa.Column("feature_names_json", sa.Text, nullable=False),
        sa.Column("rff_seed", sa.BigInteger, nullable=False),
        sa.Column("rff_dim", sa.Integer, nullable=False),
        sa.Column("generation", sa.Integer, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_table(
        "blobs",
        sa.Column("sha256", sa.String(64), primary_key=True),
        sa.Column("size_bytes", sa.BigInteger, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_table(
        "learnwares",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("owner", sa.String(200), nullable=True),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.Column("deleted_at", sa.Float, nullable=True),
        sa.Column("current_version_id", sa.String(32), nullable=True),
        sa.Column("latest_number", sa.Integer, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("data_type", sa.String(32), nullable=False),
        sa.Column("task_type", sa.String(32), nullable=False),
        sa.Column("library_type", sa.String(32), nullable=False),
        sa.Column("license", sa.String(32), nullable=False),
        sa.Column("scenario_mask", sa.Integer, nullable=False),
        sa.Column("input_dimension", sa.Integer, nullable=True),
        sa.Column("output_dimension", sa.Integer, nullable=True),
        sa.Column("island_key", sa.String(200), nullable=True),
        sa.Column("download_count", sa.Integer, nullable=False),
        sa.Column("search_count", sa.Integer, nullable=False),
    )
    op.create_index("ix_learnwares_tags", "learnwares", ["data_type", "task_type"])
    op.create_index("ix_learnwares_island", "learnwares", ["island_key"])
    op.create_table(
        "versions",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("learnware_id", sa.String(32), sa.ForeignKey("learnwares.id"), nullable=False),
        sa.Column("number", sa.Integer, nullable=False),
        sa.Column("semver", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("report_json", sa.Text, nullable=False),
        sa.Column("manifest_json", sa.Text, nullable=True),
        sa.Column("package_sha256", sa.String(64), nullable=False),
        sa.Column("content_digest", sa.String(64), nullable=True),
        sa.Column("blob_sha256", sa.String(64), sa.ForeignKey("blobs.sha256"), nullable=True),
        sa.Column("size_bytes", sa.BigInteger, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.UniqueConstraint("learnware_id", "number", name="uq_versions_number"),
    )
    op.create_index("ix_versions_blob", "versions", ["blob_sha256"])
    op.create_table(
        "specs",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("version_id", sa.String(32), sa.ForeignKey("versions.id"), nullable=False),
        sa.Column("learnware_id", sa.String(32), nullable=False),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("island_key", sa.String(200), sa.ForeignKey("islands.key"), nullable=False),
        sa.Column("n_points", sa.Integer, nullable=False),
        sa.Column("dimension", sa.Integer, nullable=False),
        sa.Column("self_inner", sa.Float, nullable=False),
        sa.Column("z", sa.LargeBinary, nullable=False),
        sa.Column("beta", sa.LargeBinary, nullable=False),
        sa.Column("rff", sa.LargeBinary, nullable=False),
    )
    op.create_index("ix_specs_version", "specs", ["version_id"])
    op.create_index("ix_specs_island", "specs", ["island_key"])
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        op.execute(
            "CREATE VIRTUAL TABLE learnware_fts USING fts5("
            "learnware_id UNINDEXED, title, description, tokenize='porter unicode61')"
        )
    elif bind.dialect.name == "postgresql":
        op.execute(
            "CREATE INDEX ix_learnwares_fts ON learnwares USING gin "
            "(to_tsvector('english', title || ' ' || description))"
        )


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        op.execute("DROP TABLE IF EXISTS learnware_fts")
    op.drop_table("specs")
    op.drop_table("versions")
    op.drop_table("learnwares")
    op.drop_table("blobs")
    op.drop_table("islands")
