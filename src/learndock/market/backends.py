"""The concrete backends a dock runs on, chosen from settings.

Blob store: ``<home>/blobs`` on local disk, or an S3-compatible bucket. Verification queue:
threads in this process, none (workers elsewhere poll the database), or RQ over Redis. The parts
themselves (``blobstore``, ``s3blobs``, ``verification``, ``redis_queue``) know nothing of
settings; only this module picks among them, so no part imports its alternatives.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from learndock.errors import MarketError
from learndock.market.blobstore import BlobStore, LocalBlobStore
from learndock.market.jobs import DEFAULT_LEASE_S

if TYPE_CHECKING:
    from learndock.config import Settings
    from learndock.market.market import Market
    from learndock.market.verification import VerificationQueue


def open_blob_store(settings: Settings) -> BlobStore:
    """The blob store the settings name: ``<home>/blobs`` by default, or an S3-compatible
    bucket for ``blob_url = s3://bucket/prefix`` (a multi-node dock: every node sees it)."""
    url = settings.blob_url
    if not url:
        return LocalBlobStore(settings.blob_dir)
    parsed = urlsplit(url)
    if parsed.scheme == "file":
        return LocalBlobStore(Path(parsed.path))
    if parsed.scheme != "s3" or not parsed.netloc:
        raise MarketError(
            f"LEARNDOCK_BLOB_URL {url!r} is not understood: use s3://BUCKET/PREFIX or "
            "file:///PATH (or leave it unset for <home>/blobs)"
        )
    from learndock.market.s3blobs import S3BlobStore

    return S3BlobStore(
        parsed.netloc,
        parsed.path.strip("/"),
        endpoint_url=settings.s3_endpoint_url,
        region=settings.s3_region,
        create_bucket=settings.s3_create_bucket,
        part_size=settings.s3_part_size_mb * 1024 * 1024,
        max_attempts=settings.s3_max_attempts,
        connect_timeout=settings.s3_connect_timeout_s,
        read_timeout=settings.s3_read_timeout_s,
        checksums=settings.s3_checksums,
    )


def make_queue(market: Market, *, queue_url: str | None = None,
               queue_name: str = "learndock-verification", workers: int = 1,
               lease_s: float = DEFAULT_LEASE_S, poll_s: float = 2.0,
               job_timeout_s: int = 3600, requeue_after_s: float = 120.0) -> VerificationQueue:
    """The queue an API process uses: :class:`~learndock.market.redis_queue.RedisQueue` for a
    ``redis://`` (or ``rediss://``, ``unix://``) ``queue_url``; else ``workers`` embedded threads
    (:class:`ThreadQueue`), or :class:`NullQueue` for ``workers=0``."""
    if queue_url:
        from learndock.market.redis_queue import RedisQueue

        return RedisQueue(queue_url, queue_name, job_timeout_s=job_timeout_s,
                          requeue_after_s=requeue_after_s)
    from learndock.market.verification import NullQueue, ThreadQueue

    if workers > 0:
        return ThreadQueue(market, workers, lease_s=lease_s, poll_s=poll_s)
    return NullQueue()
