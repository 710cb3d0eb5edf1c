"""Server settings: arguments, then ``LEARNDOCK_SERVER_*`` environment variables, then defaults.

The market's own settings (``LEARNDOCK_HOME``, ``LEARNDOCK_DATABASE_URL``, the caps
``LEARNDOCK_ZIP_*``, the jail) apply as for the library; ``home`` and ``database_url`` here
override them for the server.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from learndock.config import Settings

MIB = 1024 * 1024


class ServerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LEARNDOCK_SERVER_")

    home: Path | None = Field(None, description="dock home (default: LEARNDOCK_HOME or "
                                                "~/.learndock)")
    database_url: str | None = Field(None, description="SQLAlchemy URL (default: SQLite in "
                                                       "the home)")
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    # --- verification ---------------------------------------------------------------------
    workers: int = Field(1, ge=0, le=64, description="verification worker threads in this "
                                                      "process (0: jobs wait for `learndock "
                                                      "worker` elsewhere)")
    lease_s: float = Field(60.0, gt=0, description="a worker's lease on a job; renewed every "
                                                   "third of it while the job runs")
    poll_s: float = Field(2.0, gt=0, description="idle workers look for jobs this often")
    max_attempts: int = Field(3, ge=1, le=20, description="attempts per job before it fails")
    # --- request caps ---------------------------------------------------------------------
    max_upload_bytes: int = Field(1024 * MIB, gt=0, description="largest upload (the zip as "
                                                                "sent), enforced while it streams")
    max_json_bytes: int = Field(1 * MIB, gt=0, description="largest JSON body (search aside)")
    max_search_bytes: int | None = Field(None, gt=0, description="largest search body (default: "
                                                                 "what a spec within the caps "
                                                                 "needs)")
    # --- accounts -------------------------------------------------------------------------
    allow_registration: bool = True
    token_ttl_days: float = Field(90.0, gt=0, description="lifetime of API tokens")
    login_token_ttl_days: float = Field(30.0, gt=0, description="lifetime of login tokens")
    argon2_time_cost: int = Field(3, ge=1)
    argon2_memory_kib: int = Field(65536, ge=8)
    argon2_parallelism: int = Field(4, ge=1)
    # --- rate limits (per minute, per client IP and per account; in this process) ----------
    login_per_min: float = Field(10.0, ge=0, description="logins and registrations (0: off)")
    login_burst: int = Field(10, ge=1)
    upload_per_min: float = Field(30.0, ge=0, description="uploads (0: off)")
    upload_burst: int = Field(10, ge=1)
    search_per_min: float = Field(600.0, ge=0, description="searches (0: off)")
    search_burst: int = Field(60, ge=1)
    # --- demo -----------------------------------------------------------------------------
    demo: bool = Field(False, description="build the demo market in the background on start")
    demo_quick: bool = Field(False, description="a smaller demo market (16 states)")

    @property
    def resolved_home(self) -> Path:
        return Path(self.home) if self.home is not None else Settings().home

    @property
    def tmp_dir(self) -> Path:
        return self.resolved_home / "tmp" / "uploads"
