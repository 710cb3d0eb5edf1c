"""Database schema (SQLAlchemy Core). Alembic migrations create it; see ``migrations/``.

Tables: ``learnwares`` (one row per learnware, mirrors its current accepted version's tags for
filtering), ``versions`` (immutable, one per upload), ``specs`` (statistical specs with their
binary arrays and random-feature embedding), ``islands`` (comparable feature spaces) and
``blobs`` (the package files in the content-addressed store).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

islands = Table(
    "islands",
    metadata,
    Column("key", String(200), primary_key=True),
    Column("data_type", String(32), nullable=False),
    Column("dimension", Integer, nullable=False),
    Column("schema_hash", String(64), nullable=False),
    Column("kernel_key", String(64), nullable=False),
    Column("kernel_json", Text, nullable=False),
    Column("feature_names_json", Text, nullable=False),
    Column("rff_seed", BigInteger, nullable=False),
    Column("rff_dim", Integer, nullable=False),
    Column("generation", Integer, nullable=False, default=0),
    Column("created_at", Float, nullable=False),
)

learnwares = Table(
    "learnwares",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("owner", String(200), nullable=True),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("deleted_at", Float, nullable=True),
    Column("current_version_id", String(32), nullable=True),
    Column("latest_number", Integer, nullable=False, default=0),
    Column("status", String(16), nullable=False),
    # Tag columns of the current (or, when none is accepted, latest) version, for filtering.
    Column("title", String(200), nullable=False),
    Column("description", Text, nullable=False),
    Column("data_type", String(32), nullable=False),
    Column("task_type", String(32), nullable=False),
    Column("library_type", String(32), nullable=False),
    Column("license", String(32), nullable=False),
    Column("scenario_mask", Integer, nullable=False),
    Column("input_dimension", Integer, nullable=True),
    Column("output_dimension", Integer, nullable=True),
    Column("island_key", String(200), nullable=True),
    Column("download_count", Integer, nullable=False, default=0),
    Column("search_count", Integer, nullable=False, default=0),
)
Index("ix_learnwares_tags", learnwares.c.data_type, learnwares.c.task_type)
Index("ix_learnwares_island", learnwares.c.island_key)

versions = Table(
    "versions",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("learnware_id", String(32), ForeignKey("learnwares.id"), nullable=False),
    Column("number", Integer, nullable=False),
    Column("semver", String(64), nullable=False),
    Column("status", String(16), nullable=False),
    Column("report_json", Text, nullable=False),
    Column("manifest_json", Text, nullable=True),
    Column("package_sha256", String(64), nullable=False),
    Column("content_digest", String(64), nullable=True),
    # NULL once the learnware is deleted: the blob is released.
    Column("blob_sha256", String(64), ForeignKey("blobs.sha256"), nullable=True),
    Column("size_bytes", BigInteger, nullable=False),
    Column("created_at", Float, nullable=False),
    UniqueConstraint("learnware_id", "number", name="uq_versions_number"),
)
Index("ix_versions_blob", versions.c.blob_sha256)

specs = Table(
    "specs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("version_id", String(32), ForeignKey("versions.id"), nullable=False),
    Column("learnware_id", String(32), nullable=False),
    Column("type", String(32), nullable=False),
    Column("island_key", String(200), ForeignKey("islands.key"), nullable=False),
    Column("n_points", Integer, nullable=False),
    Column("dimension", Integer, nullable=False),
    Column("self_inner", Float, nullable=False),
    Column("z", LargeBinary, nullable=False),
    Column("beta", LargeBinary, nullable=False),
    Column("rff", LargeBinary, nullable=False),
)
Index("ix_specs_version", specs.c.version_id)
Index("ix_specs_island", specs.c.island_key)

blobs = Table(
    "blobs",
    metadata,
    Column("sha256", String(64), primary_key=True),
    Column("size_bytes", BigInteger, nullable=False),
    Column("created_at", Float, nullable=False),
)
