"""The dock server: accounts, API tokens, the verification queue; who uploaded each version.

- ``users`` (argon2id password hashes, role ``user``/``admin``), ``api_tokens`` (SHA-256 of the
  secret only, expiry, last use, revocation);
- ``verification_jobs``: one row per submitted version, claimed by a worker under a lease
  (``lease_expires_at``, renewed by heartbeats) so any worker can take over a job whose worker
  died; bounded ``attempts``;
- ``versions.uploaded_by`` and ``versions.verified_at``; an index on ``learnwares.owner``.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("password_hash", sa.String(255), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("last_login_at", sa.Float, nullable=True),
        sa.UniqueConstraint("email", name="uq_users_email"),
    )
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("user_id", sa.String(32), sa.ForeignKey("users.id"), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
        sa.Column("last_used_at", sa.Float, nullable=True),
        sa.Column("revoked_at", sa.Float, nullable=True),
        sa.UniqueConstraint("token_hash", name="uq_api_tokens_hash"),
    )
    op.create_index("ix_api_tokens_user", "api_tokens", ["user_id"])
    op.create_table(
        "verification_jobs",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("version_id", sa.String(32), sa.ForeignKey("versions.id"), nullable=False),
        sa.Column("learnware_id", sa.String(32), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("max_attempts", sa.Integer, nullable=False),
        sa.Column("worker", sa.String(200), nullable=True),
        sa.Column("lease_token", sa.String(32), nullable=True),
        sa.Column("claimed_at", sa.Float, nullable=True),
        sa.Column("heartbeat_at", sa.Float, nullable=True),
        sa.Column("lease_expires_at", sa.Float, nullable=True),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.Column("finished_at", sa.Float, nullable=True),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.UniqueConstraint("version_id", name="uq_verification_jobs_version"),
    )
    op.create_index("ix_verification_jobs_state", "verification_jobs", ["state", "created_at"])
    op.add_column("versions", sa.Column("uploaded_by", sa.String(32), nullable=True))
    op.add_column("versions", sa.Column("verified_at", sa.Float, nullable=True))
    op.create_index("ix_learnwares_owner", "learnwares", ["owner"])


def downgrade() -> None:
    op.drop_index("ix_verification_jobs_state", table_name="verification_jobs")
    op.drop_table("verification_jobs")
    op.drop_index("ix_api_tokens_user", table_name="api_tokens")
    op.drop_table("api_tokens")
    op.drop_table("users")
    op.drop_index("ix_learnwares_owner", table_name="learnwares")
    for column in ("verified_at", "uploaded_by"):
        if op.get_bind().dialect.name == "sqlite":
            # SQLite >= 3.35 drops a plain column in place (a batch copy of the table would
            # trip the foreign keys of specs rows pointing at versions).
            op.execute(f"ALTER TABLE versions DROP COLUMN {column}")
        else:
            op.drop_column("versions", column)
