"""Database schema (SQLAlchemy Core). Alembic migrations create it; see ``migrations/``.

Tables: ``learnwares`` (one row per learnware, mirrors its current accepted version's tags for
filtering), ``versions`` (immutable, one per upload), ``specs`` (statistical specs with their
binary arrays and random-feature embedding), ``islands`` (comparable feature spaces) and
``blobs`` (the package files in the content-addressed store); for the dock server ``users``,
``api_tokens`` and ``verification_jobs`` (migration 0003); ``change_log`` (0005);
``system_spaces`` and ``island_bridges`` for heterogeneous search (0006).
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
    Column("kernel_version", Integer, nullable=False, default=1),
    # island size (spec rows) when the market last considered revising the kernel
    Column("kernel_checked_n", Integer, nullable=False, default=0),
    # migration 0006: the system-space version under which the island's columns joined the
    # system space (the map that makes its specs' projections); NULL until they join
    Column("system_version", Integer, nullable=True),
)

#: Every kernel an island has had (migration 0004): the current one is islands.kernel_version.
island_kernels = Table(
    "island_kernels",
    metadata,
    Column("island_key", String(200), ForeignKey("islands.key"), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("kernel_key", String(64), nullable=False),
    Column("kernel_json", Text, nullable=False),
    Column("reason", Text, nullable=False),
    Column("n_specs", Integer, nullable=False),
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
Index("ix_learnwares_owner", learnwares.c.owner)  # since 0003

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
    # Since 0003: the account that uploaded the version (server uploads) and when its
    # submission checks finished.
    Column("uploaded_by", String(32), nullable=True),
    Column("verified_at", Float, nullable=True),
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
    # migration 0004: self_inner and rff are under this version of the island's kernel; the
    # kernel the developer fitted with is kept as metadata only
    Column("kernel_version", Integer, nullable=False, default=1),
    Column("fit_kernel_json", Text, nullable=True),
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

# ---------------------------------------------------------------------- the dock (migration 0003)
# Accounts, API tokens and the verification queue live in the market's database, so one
# SQLite file or one PostgreSQL database holds the whole dock and a version, its job and its
# owner change in the same transactions.

users = Table(
    "users",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("email", String(320), nullable=False),  # normalised (trimmed, lower-cased)
    Column("password_hash", String(255), nullable=False),  # argon2id, PHC string
    Column("role", String(16), nullable=False),  # "user" | "admin"
    Column("created_at", Float, nullable=False),
    Column("last_login_at", Float, nullable=True),
    UniqueConstraint("email", name="uq_users_email"),
)

api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("user_id", String(32), ForeignKey("users.id"), nullable=False),
    Column("name", String(100), nullable=False),
    Column("kind", String(16), nullable=False),  # "api" (created by hand) | "login"
    # SHA-256 of the secret: the secret itself is shown once and never stored.
    Column("token_hash", String(64), nullable=False),
    Column("prefix", String(16), nullable=False),  # first characters, to recognise a token
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
    Column("last_used_at", Float, nullable=True),
    Column("revoked_at", Float, nullable=True),
    UniqueConstraint("token_hash", name="uq_api_tokens_hash"),
)
Index("ix_api_tokens_user", api_tokens.c.user_id)

verification_jobs = Table(
    "verification_jobs",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("version_id", String(32), ForeignKey("versions.id"), nullable=False),
    Column("learnware_id", String(32), nullable=False),
    Column("state", String(16), nullable=False),  # queued | running | done | failed | cancelled
    Column("attempts", Integer, nullable=False),
    Column("max_attempts", Integer, nullable=False),
    Column("worker", String(200), nullable=True),  # who holds (or last held) the lease
    Column("lease_token", String(32), nullable=True),  # random per claim: fences stale workers
    Column("claimed_at", Float, nullable=True),
    Column("heartbeat_at", Float, nullable=True),
    Column("lease_expires_at", Float, nullable=True),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("finished_at", Float, nullable=True),
    Column("last_error", Text, nullable=True),
    UniqueConstraint("version_id", name="uq_verification_jobs_version"),
)
Index("ix_verification_jobs_state", verification_jobs.c.state, verification_jobs.c.created_at)


#: Every change of what an island serves (migration 0005): island indexes in any process catch
#: up from the last ``seq`` they applied. Written in the transaction of the change, after the
#: island's row is locked, so within one island ``seq`` follows the commit order.
change_log = Table(
    "change_log",
    metadata,
    Column("seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
           autoincrement=True),
    Column("island_key", String(200), nullable=False),
    Column("op", String(8), nullable=False),  # add | remove
    Column("spec_row_id", Integer, nullable=False),
    Column("learnware_id", String(32), nullable=False),
    Column("created_at", Float, nullable=False),
)
Index("ix_change_log_island_seq", change_log.c.island_key, change_log.c.seq)


# ---------------------------------------------------------------------- heterogeneous search (0006)
#: Every version of the system space (``learndock.hetero.SystemSpace``): append-only, the newest
#: row is current. Written with a plain insert on the version: of two processes that grew the
#: space at once, one insert fails and that process reads the winner's version instead.
system_spaces = Table(
    "system_spaces",
    metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("space_json", Text, nullable=False),
    Column("fingerprint", String(64), nullable=False),
    Column("embedder", String(200), nullable=False),
    Column("created_at", Float, nullable=False),
)

#: The explicit column maps between two islands, one per system-space version that made them.
island_bridges = Table(
    "island_bridges",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("source_island", String(200), nullable=False),
    Column("target_island", String(200), nullable=False),
    Column("map_version", Integer, nullable=False),
    Column("bridge_json", Text, nullable=False),
    Column("created_at", Float, nullable=False),
    UniqueConstraint("source_island", "target_island", "map_version",
                     name="uq_island_bridges_pair_version"),
)
