"""Configuration in one place.

Settings come from arguments, then ``LEARNDOCK_*`` environment variables, then defaults.
Nothing here mutates global state at import time.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ArchiveLimits(BaseSettings):
    """Caps that protect the dock against hostile zips (bombs, floods of entries)."""

    model_config = SettingsConfigDict(env_prefix="LEARNDOCK_ZIP_")

    max_entries: int = Field(10_000, gt=0, description="most entries a package may hold")
    max_total_bytes: int = Field(
        2 * 1024**3, gt=0, description="most uncompressed bytes in a package"
    )
    max_file_bytes: int = Field(1024**3, gt=0, description="most uncompressed bytes in one entry")
    max_ratio: float = Field(
        200.0, gt=1, description="highest uncompressed/compressed ratio for an entry"
    )
    ratio_min_bytes: int = Field(
        1024 * 1024,
        ge=0,
        description="entries smaller than this are exempt from the ratio check",
    )


class Settings(BaseSettings):
    """Dock-wide settings (``LEARNDOCK_HOME``, ``LEARNDOCK_DATABASE_URL``, ...)."""

    model_config = SettingsConfigDict(env_prefix="LEARNDOCK_")

    home: Path = Field(default_factory=lambda: Path.home() / ".learndock")
    database_url: str | None = None
    sandbox_timeout_s: float = 60.0
    sandbox_memory_mb: int = 4096

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.home / 'market.db').as_posix()}"

    @property
    def blob_dir(self) -> Path:
        return self.home / "blobs"

    @property
    def cache_dir(self) -> Path:
        return self.home / "cache"
