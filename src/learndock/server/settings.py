"""Server settings, in one place: arguments, then environment variables, then a settings file,
then defaults.

The backends of a dock come from here, for the API processes (``learndock serve``) and the
verification workers (``learndock worker``) alike:

- ``LEARNDOCK_DATABASE_URL`` -- metadata (SQLAlchemy URL; default: SQLite in the home);
- ``LEARNDOCK_BLOB_URL`` -- packages (``s3://bucket/prefix`` with ``LEARNDOCK_S3_ENDPOINT_URL``
  and the other ``LEARNDOCK_S3_*`` fields of :class:`learndock.config.Settings`; credentials from
  the standard AWS chain; default: ``<home>/blobs``);
- ``LEARNDOCK_QUEUE_URL`` -- the verification queue (``redis://host:port/db``: RQ over Redis,
  and the API processes run no verification threads; default: threads in the API process);
- everything else ``LEARNDOCK_SERVER_<FIELD>`` (e.g. ``LEARNDOCK_SERVER_LEASE_S``).

A settings file (``--config FILE`` or ``LEARNDOCK_CONFIG=FILE``) holds the same
``LEARNDOCK_*=value`` lines (dotenv format, the format of systemd's ``EnvironmentFile`` and
``docker --env-file``); variables already in the environment win over the file. The market's
own settings (``LEARNDOCK_HOME``, the caps ``LEARNDOCK_ZIP_*``, the jail, the S3 fields) apply as
for the library, so the file feeds them too.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from learndock.config import Settings

if TYPE_CHECKING:
    from learndock.market import Market
    from learndock.market.verification import VerificationQueue

MIB = 1024 * 1024


class ServerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LEARNDOCK_SERVER_", populate_by_name=True)

    home: Path | None = Field(None, description="dock home (default: LEARNDOCK_HOME or "
                                                "~/.learndock); local to each process: upload "
                                                "temp files, caches, the signing key")
    # --- backends (shared by every API process and worker of a dock) ----------------------
    database_url: str | None = Field(
        None, validation_alias=AliasChoices("LEARNDOCK_SERVER_DATABASE_URL",
                                            "LEARNDOCK_DATABASE_URL"),
        description="SQLAlchemy URL (default: SQLite in the home)")
    blob_url: str | None = Field(
        None, validation_alias=AliasChoices("LEARNDOCK_SERVER_BLOB_URL", "LEARNDOCK_BLOB_URL"),
        description="s3://bucket/prefix (LEARNDOCK_S3_* for the endpoint and the rest) or "
                    "file:///path (default: <home>/blobs)")
    queue_url: str | None = Field(
        None, validation_alias=AliasChoices("LEARNDOCK_SERVER_QUEUE_URL", "LEARNDOCK_QUEUE_URL"),
        description="redis://host:port/db: verification jobs go through RQ on that Redis and "
                    "run in `learndock worker` processes (default: threads in this process)")
    queue_name: str = Field(
        "learndock-verification",
        validation_alias=AliasChoices("LEARNDOCK_SERVER_QUEUE_NAME", "LEARNDOCK_QUEUE_NAME"),
        min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_.:-]+$",
        description="the RQ queue's name (one per dock sharing a Redis)")
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
    reap_interval_s: float = Field(10.0, gt=0, description="with a Redis queue: how often each "
                                                           "worker reaps expired leases and "
                                                           "re-sends lost messages")
    requeue_after_s: float = Field(120.0, gt=0, description="with a Redis queue: a queued job "
                                                            "whose message was sent this long "
                                                            "ago is sent again")
    job_timeout_s: int = Field(3600, gt=0, description="with a Redis queue: RQ's hard limit "
                                                       "per job (keep it above the sandbox "
                                                       "timeout)")
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
    #: An upload whose content (package digest) is already a live learnware: ``refuse`` (409
    #: ``duplicate``, naming it) or ``allow`` (store a second copy).
    duplicates: Literal["refuse", "allow"] = "refuse"
    search_per_min: float = Field(600.0, ge=0, description="searches (0: off)")
    search_burst: int = Field(60, ge=1)
    # --- demo -----------------------------------------------------------------------------
    demo: bool = Field(False, description="build the demo market in the background on start")
    demo_quick: bool = Field(False, description="a smaller demo market (16 states)")

    @classmethod
    def load(cls, config: str | Path | None = None, **overrides: Any) -> ServerSettings:
        """Settings from ``overrides``, the environment and the settings file ``config`` (or
        ``LEARNDOCK_CONFIG``), in that order of precedence."""
        path = config or os.environ.get("LEARNDOCK_CONFIG")
        if path:
            apply_config_file(path)
        return cls(**{k: v for k, v in overrides.items() if v is not None})

    def market_settings(self) -> Settings:
        """The library settings of this dock's market (home, database, blob store, jail)."""
        kw: dict[str, Any] = {}
        if self.home is not None:
            kw["home"] = Path(self.home)
        if self.database_url is not None:
            kw["database_url"] = self.database_url
        if self.blob_url is not None:
            kw["blob_url"] = self.blob_url
        return Settings(**kw)

    def open_market(self) -> Market:
        """The market over this dock's database and blob store."""
        from learndock.market import Market
        from learndock.market.backends import open_blob_store

        ms = self.market_settings()
        return Market(ms.home, database_url=ms.database_url, blob_store=open_blob_store(ms),
                      max_attempts=self.max_attempts)

    def open_queue(self, market: Market) -> VerificationQueue:
        """What an API process runs verification with: the Redis queue when ``queue_url`` is
        set (no verification threads here), else ``workers`` threads (or none)."""
        from learndock.market.backends import make_queue

        return make_queue(market, queue_url=self.queue_url, queue_name=self.queue_name,
                          workers=self.workers, lease_s=self.lease_s, poll_s=self.poll_s,
                          job_timeout_s=self.job_timeout_s,
                          requeue_after_s=self.requeue_after_s)

    @property
    def resolved_home(self) -> Path:
        return Path(self.home) if self.home is not None else Settings().home

    @property
    def tmp_dir(self) -> Path:
        return self.resolved_home / "tmp" / "uploads"


# ---------------------------------------------------------------------- settings file
#: Variables a settings file may set (credentials for S3 may come from the file too).
_FILE_PREFIXES = ("LEARNDOCK_", "AWS_")


def apply_config_file(path: str | Path) -> list[str]:
    """Put the ``KEY=value`` lines of a dotenv file into ``os.environ`` where the environment
    does not set them already (so every settings class of this process -- and its children --
    sees them); returns the keys it set. Only ``LEARNDOCK_*`` and ``AWS_*`` keys are allowed."""
    from dotenv import dotenv_values

    p = Path(path).expanduser()
    if not p.is_file():
        raise ValueError(f"settings file {str(p)!r} does not exist")
    values = dotenv_values(p)
    bad = [k for k in values if not k.upper().startswith(_FILE_PREFIXES)]
    if bad:
        raise ValueError(f"settings file {str(p)!r}: {', '.join(sorted(bad))} not allowed "
                         "(only LEARNDOCK_* and AWS_* variables)")
    applied = []
    for key, value in values.items():
        if value is not None and key not in os.environ:
            os.environ[key] = value
            applied.append(key)
    return applied


# ---------------------------------------------------------------------- what is in use
_SECRET_PARAMS = ("password", "passwd", "secret", "token", "key", "credential", "signature")


def redact_url(url: str | None) -> str | None:
    """``url`` with any password (and query values that look secret) replaced by ``***``."""
    if not url:
        return url
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if "@" in netloc:
            userinfo, host = netloc.rsplit("@", 1)
            user = userinfo.split(":", 1)[0]
            netloc = f"{user}:***@{host}" if ":" in userinfo else f"{user}@{host}"
        query = parts.query
        if query:
            pairs = parse_qsl(query, keep_blank_values=True)
            query = urlencode([(k, "***" if any(s in k.lower() for s in _SECRET_PARAMS) else v)
                               for k, v in pairs], safe="/:,*-")
        if netloc == parts.netloc and query == parts.query:
            return url
        # (not urlunsplit: it turns sqlite:////abs/path into sqlite://abs/path)
        return (f"{parts.scheme}://{netloc}{parts.path}" + (f"?{query}" if query else "")
                + (f"#{parts.fragment}" if parts.fragment else ""))
    except ValueError:
        return "<unparsable URL>"


def describe_blob_store(blobs: Any) -> dict[str, Any]:
    from learndock.market.blobstore import LocalBlobStore

    if isinstance(blobs, LocalBlobStore):
        return {"kind": "local", "path": str(blobs.root)}
    bucket = getattr(blobs, "bucket", None)
    if bucket is not None:
        client = getattr(blobs, "client", None)
        endpoint = getattr(getattr(client, "meta", None), "endpoint_url", None)
        return {"kind": "s3", "bucket": bucket, "prefix": getattr(blobs, "prefix", ""),
                "endpoint_url": redact_url(endpoint)}
    return {"kind": type(blobs).__name__}


def describe_backends(market: Market, queue: VerificationQueue | None = None) -> dict[str, Any]:
    """Which database, blob store and queue a process uses (no secrets)."""
    out: dict[str, Any] = {
        "database": {"dialect": market.engine.dialect.name,
                     "url": redact_url(market.engine.url.render_as_string(hide_password=True))},
        "blob_store": describe_blob_store(market.blobs),
    }
    if queue is not None:
        describe = getattr(queue, "describe", None)
        out["queue"] = describe() if callable(describe) else {"kind": getattr(queue, "kind", "?")}
    return out


def backends_line(backends: dict[str, Any]) -> str:
    """One line for a startup banner."""
    db = backends["database"]
    bs = backends["blob_store"]
    where = (f"s3://{bs['bucket']}/{bs.get('prefix', '')} at {bs.get('endpoint_url') or 'AWS'}"
             if bs["kind"] == "s3" else bs.get("path", bs["kind"]))
    q = backends.get("queue") or {}
    queue = (f"{q.get('kind')} {q.get('url', '')} queue {q.get('queue', '')}".strip()
             if q.get("kind") == "redis" else str(q.get("kind", "?")))
    return f"database: {db['url']}  blobs: {where}  queue: {queue}"
