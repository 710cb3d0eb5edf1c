"""Configuration in one place.

Settings come from arguments, then ``LEARNDOCK_*`` environment variables, then defaults.
Nothing here mutates global state at import time. Every cap that protects the dock from a
hostile upload or query lives in :class:`ArchiveLimits` (one object travels through the readers),
every knob of the jail in :class:`Settings`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ArchiveLimits(BaseSettings):
    """Caps checked *before* work: zips, manifests, specs and user queries.

    Environment variables: ``LEARNDOCK_ZIP_<FIELD>`` (e.g. ``LEARNDOCK_ZIP_MAX_SPEC_POINTS``).
    The defaults are generous for honest learnwares and small enough that the dock never
    allocates more than a few hundred MB on behalf of one upload or one search.
    """

    model_config = SettingsConfigDict(env_prefix="LEARNDOCK_ZIP_")

    # --- the zip ------------------------------------------------------------------------
    max_entries: int = Field(10_000, gt=0, description="most entries a package may hold")
    max_total_bytes: int = Field(
        2 * 1024**3, gt=0, description="most uncompressed bytes in a package"
    )
    max_file_bytes: int = Field(1024**3, gt=0, description="most uncompressed bytes in one entry")
    max_ratio: float = Field(
        200.0, gt=1, description="highest uncompressed/compressed ratio for an entry, and for "
        "the whole archive"
    )
    ratio_min_bytes: int = Field(
        1024 * 1024,
        ge=0,
        description="entries (and archives) smaller than this are exempt from the ratio check",
    )
    # --- the manifest (learnware.yaml) ---------------------------------------------------
    yaml_max_bytes: int = Field(256 * 1024, gt=0, description="largest learnware.yaml")
    yaml_max_nodes: int = Field(
        20_000, gt=0, description="most YAML nodes (scalars, lists, maps) in a manifest"
    )
    yaml_max_aliases: int = Field(
        64, ge=0, description="most alias references (*name) in a manifest"
    )
    # --- statistical specs (uploaded and user specs) ------------------------------------
    max_spec_points: int = Field(
        5_000, gt=0, description="most reduced-set points K in an uploaded spec"
    )
    max_spec_dimension: int = Field(
        4_096, gt=0, description="largest spec dimension d (embedding size for images/texts)"
    )
    max_user_spec_points: int = Field(
        5_000, gt=0, description="most reduced-set points K in a spec sent to search"
    )
    max_spec_values: int = Field(
        2_000_000,
        gt=0,
        description="most numbers K x d in one spec's reduced set (16 MB as float64): K and d "
        "may not both sit at their caps",
    )
    max_abs_coordinate: float = Field(
        1e8, gt=0, description="largest |z| coordinate a spec may hold"
    )
    min_gamma: float = Field(1e-12, gt=0, description="smallest kernel gamma accepted")
    max_gamma: float = Field(1e6, gt=0, description="largest kernel gamma accepted")
    # --- model inputs -------------------------------------------------------------------
    max_sample_elements: int = Field(
        3 * 1024 * 1024,
        gt=0,
        description="most elements in one input sample (product of input.shape): an image "
        "manifest cannot make the dock allocate more than a probe batch of this size",
    )


class Settings(BaseSettings):
    """Dock-wide settings (``LEARNDOCK_HOME``, ``LEARNDOCK_DATABASE_URL``, ...)."""

    model_config = SettingsConfigDict(env_prefix="LEARNDOCK_")

    home: Path = Field(default_factory=lambda: Path.home() / ".learndock")
    database_url: str | None = None
    sandbox_timeout_s: float = 60.0
    sandbox_memory_mb: int = 4096
    #: Most processes (and threads) the whole jailed tree may hold at once.
    sandbox_pids_max: int = 64
    #: Which jail runs uploaded code: ``auto`` (bubblewrap + cgroups where the host allows,
    #: refuse otherwise), ``bwrap`` (require it), ``none`` (no jail: only rlimits, a private
    #: network namespace where possible; an explicit operator opt-out, logged on every check).
    jail: Literal["auto", "bwrap", "none"] = "auto"
    #: Where packages live: None = ``<home>/blobs`` on local disk, or ``s3://bucket/prefix`` on
    #: an S3-compatible store (credentials from the standard AWS chain: ``AWS_ACCESS_KEY_ID``,
    #: ``AWS_SECRET_ACCESS_KEY``, ``AWS_PROFILE``, an instance role; never a setting here).
    blob_url: str | None = None
    s3_endpoint_url: str | None = None  # MinIO, Ceph, moto...; None = AWS
    s3_region: str | None = None
    s3_create_bucket: bool = True
    s3_part_size_mb: int = Field(8, ge=5)
    s3_max_attempts: int = Field(5, ge=1)
    s3_connect_timeout_s: float = 5.0
    s3_read_timeout_s: float = 60.0
    s3_checksums: bool = True
    #: Islands with at least this many searchable specs keep their random-feature vectors in
    #: an HNSW graph (usearch) instead of a matrix ranked exactly.
    ann_min_rows: int = Field(20_000, ge=1)
    #: The graph's vector precision: f32, or f16 / i8 to halve / quarter its memory.
    ann_dtype: Literal["f32", "f16", "i8"] = "f32"
    #: ``auto``: the market revises an island's kernel as it grows (at 8, 16, ... 1024 specs;
    #: see ``learndock.market.kernels``); ``off``: an island keeps its first kernel unless an
    #: operator revises it (``Market.revise_kernel``, ``POST /api/v1/admin/islands/{key}/
    #: revise-kernel``).
    kernel_revision: Literal["auto", "off"] = "auto"
    #: Column-description embedder of the system space (heterogeneous search across islands):
    #: ``auto`` = MiniLM when the ``text`` extra is installed, else a hashing stand-in that
    #: matches only near-identical wording; ``minilm`` requires it; ``hashing`` never loads a
    #: model. A stored space built with another embedder is rebuilt as a new version.
    hetero_embedder: Literal["auto", "minilm", "hashing"] = "auto"

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.home / 'market.db').as_posix()}"

    @property
    def blob_dir(self) -> Path:
        return self.home / "blobs"

    @property
    def index_dir(self) -> Path:
        """Where island indexes (HNSW graphs) are saved between runs (rebuilt when missing)."""
        return self.home / "index"

    @property
    def cache_dir(self) -> Path:
        return self.home / "cache"
