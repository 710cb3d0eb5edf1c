"""S3 (or any S3-compatible service: MinIO, Ceph, moto) as the market's blob store.

:class:`S3BlobStore` implements the :class:`~learndock.market.blobstore.BlobStore` interface of
:class:`~learndock.market.blobstore.LocalBlobStore` with boto3 (an optional dependency:
``pip install 'learndock[s3]'``)::

    market = Market(home, blob_store=S3BlobStore("my-bucket", "dock/prod"))

Key layout: ``<prefix>/sha256/<aa>/<sha256>.zip`` (``aa`` = the key's first two hex digits; no
prefix: ``sha256/<aa>/<sha256>.zip``). Each object carries its SHA-256 as the user metadata
``x-amz-meta-sha256``.

Guarantees (the same as the local store's, as far as S3 allows):

* **content-addressed, idempotent put** -- the file is hashed first (one streaming pass); if the
  key already holds an object of that size and recorded SHA-256 nothing is uploaded, the object is
  only *touched* (copied onto itself, which renews ``LastModified``) so a concurrent
  ``Market.sweep`` does not take a blob an add is about to reference -- the local store's
  ``os.utime``;
* **atomic for readers** -- a single PUT, or a multipart upload (boto3's managed transfer,
  bounded part size and memory) that becomes visible only at ``CompleteMultipartUpload``;
* **verified** -- the bytes are hashed again *as they are sent*: if the file changed after the
  first pass the transfer is failed before it completes (no object appears, a multipart upload is
  aborted) with :class:`S3IntegrityError`. Single-part uploads carry ``ChecksumSHA256`` (S3
  itself refuses a body that does not match), multipart parts carry per-part SHA-256 checksums,
  and a HEAD afterwards checks size and recorded hash;
* reads stream (``open`` returns a read-only, non-seekable buffered reader) and the market
  re-hashes every read (:func:`~learndock.market.blobstore.hash_blob`), so an object changed in
  the bucket is refused, never handed out.

Errors are :class:`S3BlobError` (a :class:`~learndock.errors.MarketError`) naming the bucket, the
key, the operation and the S3 error code -- never a raw botocore traceback:
:class:`S3BlobNotFoundError` (also a :class:`~learndock.errors.NotFoundError`, what the local
store raises for a missing blob), :class:`S3AccessError` (credentials, signature, permission),
:class:`S3BucketMissingError`, :class:`S3UnavailableError` (connection refused, timeouts, a read
cut short) and :class:`S3IntegrityError`. Requests use botocore's ``standard`` retry mode with a
bounded attempt count and explicit connect/read timeouts.

Credentials come from boto3's standard chain (``AWS_ACCESS_KEY_ID`` /
``AWS_SECRET_ACCESS_KEY`` / ``AWS_SESSION_TOKEN``, ``AWS_PROFILE``, the shared config files, an
instance role); pass ``client=`` to use a client configured elsewhere.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from learndock.errors import MarketError, NotFoundError
from learndock.market.blobstore import _CHUNK, _valid_key, sha256_file

MiB = 1024 * 1024
#: S3's smallest part (all parts of a multipart upload but the last).
MIN_PART_SIZE = 5 * MiB
#: The metadata entry (``x-amz-meta-sha256``) that records an object's SHA-256.
SHA_META = "sha256"

_NOT_FOUND = {"NoSuchKey", "404", "NotFound"}
_NO_BUCKET = {"NoSuchBucket"}
_ACCESS = {
    "AccessDenied", "403", "Forbidden", "InvalidAccessKeyId", "SignatureDoesNotMatch",
    "ExpiredToken", "InvalidToken", "TokenRefreshRequired", "AllAccessDisabled",
    "InvalidClientTokenId", "UnrecognizedClientException", "AuthorizationHeaderMalformed",
    "NoCredentials", "PartialCredentials", "CredentialRetrieval",
}


# ---------------------------------------------------------------------- errors


class S3BlobError(MarketError):
    """An S3 request of the blob store failed.

    ``bucket``, ``key`` (None for bucket-level requests), ``operation`` (the S3 API call) and
    ``code`` (S3's error code, e.g. ``AccessDenied``, or the botocore error's class name for
    network failures, e.g. ``EndpointConnectionError``) say which and why.
    """

    def __init__(
        self, message: str, *, bucket: str, key: str | None = None, operation: str = "",
        code: str = "",
    ) -> None:
        self.bucket = bucket
        self.key = key
        self.operation = operation
        self.code = code
        super().__init__(message)

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "S3 request failed"


class S3BlobNotFoundError(S3BlobError, NotFoundError):
    """No object under the blob's key (what ``LocalBlobStore.open`` raises: a NotFoundError)."""


class S3AccessError(S3BlobError):
    """Missing, invalid or expired credentials, a bad signature, or no permission."""


class S3BucketMissingError(S3BlobError):
    """The bucket does not exist (and the store was told not to create it)."""


class S3UnavailableError(S3BlobError):
    """The service could not be reached or stopped answering: connection refused, DNS,
    TLS, timeouts, a response cut short (after the bounded retries)."""


class S3IntegrityError(S3BlobError):
    """Bytes sent or stored do not match the blob's SHA-256 or size."""


# ---------------------------------------------------------------------- helpers


def _b64(sha_hex: str) -> str:
    return base64.b64encode(bytes.fromhex(sha_hex)).decode("ascii")


class _HashingReader:
    """Non-seekable reader over ``f`` that re-hashes what the upload reads and fails the read
    that would hand over bytes differing from ``(sha, size)`` -- before the transfer completes.

    Non-seekable on purpose: boto3's managed transfer then reads it once, front to back.
    """

    def __init__(self, f: BinaryIO, sha: str, size: int, fail: Any) -> None:
        self._f = f
        self._sha = sha
        self._size = size
        self._fail = fail  # fail(message) -> exception to raise
        self._h = hashlib.sha256()
        self._pos = 0
        self._checked = False

    def seekable(self) -> bool:
        return False

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        data = self._f.read(n) if n is not None and n >= 0 else self._f.read()
        self._h.update(data)
        self._pos += len(data)
        if self._pos > self._size:
            raise self._fail(f"the file grew while it was uploaded (more than {self._size} bytes)")
        if not data and n != 0 and self._pos < self._size:
            raise self._fail(
                f"the file shrank while it was uploaded ({self._pos} of {self._size} bytes)"
            )
        if self._pos == self._size and not self._checked:
            self._checked = True
            actual = self._h.hexdigest()
            if actual != self._sha:
                raise self._fail(
                    f"the file changed while it was uploaded: its bytes now hash to {actual}"
                )
        return data


class _S3Reader(io.RawIOBase):
    """Read-only raw stream over a GetObject body; network errors become S3 errors."""

    def __init__(self, body: Any, store: S3BlobStore, key: str) -> None:
        super().__init__()
        self._body = body
        self._store = store
        self._key = key

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        with self._store._errors("GetObject", self._key):
            data = self._body.read(len(b))
        n = len(data)
        b[:n] = data
        return n

    def close(self) -> None:
        if not self.closed:
            with contextlib.suppress(Exception):
                self._body.close()
        super().close()


# ---------------------------------------------------------------------- the store


class S3BlobStore:
    """Content-addressed package blobs in an S3 bucket under ``prefix``.

    ``bucket``, ``prefix``: where (``s3://bucket/prefix/sha256/aa/<sha>.zip``).
    ``endpoint_url``: an S3-compatible service (MinIO, moto, ...); None for AWS.
    ``region``: the client's region (also the new bucket's location).
    ``client``: a ready boto3 S3 client; when given, ``endpoint_url``, ``region``, the retry
    and timeout settings are the caller's (that client's).
    ``create_bucket``: create the bucket on first use if it is missing (else
    :class:`S3BucketMissingError`).
    ``part_size`` / ``multipart_threshold``: files of ``multipart_threshold`` bytes (default:
    ``part_size``) or more go up as multipart uploads of ``part_size`` parts (>= 5 MiB);
    ``max_concurrency`` parts at once, at most ``max_concurrency + 2`` parts in memory.
    ``max_attempts``: total attempts per request (botocore ``standard`` retry mode: exponential
    back-off with jitter, retries throttling, 5xx and connection errors).
    ``connect_timeout`` / ``read_timeout``: seconds per attempt.
    ``list_page_size``: keys per ListObjectsV2 page (S3 caps it at 1000).
    ``addressing_style``: ``path`` or ``virtual`` (botocore's ``auto`` if None).
    ``checksums``: send SHA-256 checksums (S3 verifies them) and ask for them back; turn off
    for S3-compatible services without "flexible checksums" (the streaming re-hash and the
    size/metadata check after the upload stay).
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        client: Any = None,
        create_bucket: bool = True,
        part_size: int = 8 * MiB,
        multipart_threshold: int | None = None,
        max_concurrency: int = 4,
        max_attempts: int = 5,
        connect_timeout: float = 5.0,
        read_timeout: float = 60.0,
        list_page_size: int = 1000,
        addressing_style: str | None = None,
        checksums: bool = True,
    ) -> None:
        if not (3 <= len(bucket) <= 63) or "/" in bucket:
            raise ValueError(f"not an S3 bucket name: {bucket!r}")
        if part_size < MIN_PART_SIZE:
            raise ValueError(f"part_size must be at least {MIN_PART_SIZE} bytes (S3's minimum)")
        if not 1 <= list_page_size <= 1000:
            raise ValueError("list_page_size must be in 1..1000")
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        try:
            import boto3
            from boto3.s3.transfer import TransferConfig
            from botocore.config import Config
        except ImportError as exc:  # pragma: no cover - depends on the installed extras
            raise MarketError(
                f"S3BlobStore needs boto3 ({exc}): pip install 'learndock[s3]'"
            ) from None

        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self._base = f"{self.prefix}/" if self.prefix else ""
        self.create_bucket = create_bucket
        self.part_size = part_size
        self.multipart_threshold = multipart_threshold or part_size
        self.list_page_size = list_page_size
        self.checksums = checksums
        self._own_client = client is None
        if client is None:
            s3_cfg = {"addressing_style": addressing_style} if addressing_style else None
            config = Config(
                region_name=region,
                retries={"mode": "standard", "max_attempts": max_attempts},
                connect_timeout=connect_timeout,
                read_timeout=read_timeout,
                max_pool_connections=max(10, 2 * max_concurrency),
                s3=s3_cfg,
                **({} if checksums else {"request_checksum_calculation": "when_required",
                                         "response_checksum_validation": "when_required"}),
            )
            client = boto3.session.Session().client(
                "s3", endpoint_url=endpoint_url, region_name=region, config=config
            )
        self.client = client
        self._transfer = TransferConfig(
            multipart_threshold=self.multipart_threshold,
            multipart_chunksize=part_size,
            max_concurrency=max_concurrency,
            use_threads=max_concurrency > 1,
        )
        # s3transfer's bound on parts read ahead into memory (boto3's constructor hides it)
        self._transfer.max_in_memory_upload_chunks = max_concurrency + 2
        self._key_re = re.compile(
            re.escape(self._base) + r"sha256/([0-9a-f]{2})/([0-9a-f]{64})\.zip"
        )
        self._bucket_ready = False
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        endpoint = getattr(getattr(self.client, "meta", None), "endpoint_url", None)
        return f"S3BlobStore(s3://{self.bucket}/{self.prefix}, endpoint={endpoint})"

    # ------------------------------------------------------------------ keys
    def key(self, sha256: str) -> str:
        """The object key of a blob: ``<prefix>/sha256/<aa>/<sha256>.zip``."""
        _valid_key(sha256)
        return f"{self._base}sha256/{sha256[:2]}/{sha256}.zip"

    def uri(self, sha256: str) -> str:
        return f"s3://{self.bucket}/{self.key(sha256)}"

    # ------------------------------------------------------------------ errors
    def _error(self, exc: BaseException, operation: str, key: str | None) -> S3BlobError:
        """The S3BlobError (subclass) for a botocore/boto3 exception."""
        from botocore.exceptions import (
            ClientError,
            CredentialRetrievalError,
            HTTPClientError,
            IncompleteReadError,
            NoCredentialsError,
            PartialCredentialsError,
        )
        from botocore.exceptions import ConnectionError as BotoConnectionError

        where = f"s3://{self.bucket}/{key}" if key else f"s3://{self.bucket}"
        endpoint = getattr(getattr(self.client, "meta", None), "endpoint_url", None)
        cls: type[S3BlobError] = S3BlobError
        if isinstance(exc, ClientError):
            err = exc.response.get("Error", {})
            code = str(err.get("Code") or "")
            message = str(err.get("Message") or "")
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in _NO_BUCKET or (key is None and (code in _NOT_FOUND or status == 404)):
                cls = S3BucketMissingError
                hint = "the bucket does not exist"
            elif code in _NOT_FOUND or (status == 404 and key is not None):
                cls = S3BlobNotFoundError
                hint = "no such object"
            elif code in _ACCESS or status == 403:
                cls = S3AccessError
                hint = "access denied: check the credentials (AWS_ACCESS_KEY_ID, " \
                       "AWS_SECRET_ACCESS_KEY, AWS_PROFILE) and the bucket policy"
            elif status is not None and status >= 500:
                cls = S3UnavailableError
                hint = "the service failed (after retries)"
            else:
                hint = "request refused"
            detail = f"{code}: {message}" if message and message != code else code
        elif isinstance(exc, NoCredentialsError | PartialCredentialsError |
                        CredentialRetrievalError):
            cls, code = S3AccessError, type(exc).__name__
            hint = "no usable credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY " \
                   "(or AWS_PROFILE)"
            detail = str(exc)
        elif isinstance(exc, BotoConnectionError | HTTPClientError | IncompleteReadError):
            cls, code = S3UnavailableError, type(exc).__name__
            hint = f"cannot reach the S3 service at {endpoint or 'AWS'}"
            detail = str(exc)
        else:
            code = type(exc).__name__
            hint = "request failed"
            detail = str(exc)
        return cls(
            f"S3 {operation} on {where} failed ({hint}): {detail}",
            bucket=self.bucket, key=key, operation=operation, code=code,
        )

    @contextlib.contextmanager
    def _errors(self, operation: str, key: str | None = None) -> Iterator[None]:
        from boto3.exceptions import Boto3Error
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            yield
        except (ClientError, BotoCoreError, Boto3Error) as exc:
            raise self._error(exc, operation, key) from None

    def _integrity(self, key: str, operation: str, why: str) -> S3IntegrityError:
        return S3IntegrityError(
            f"S3 {operation} of s3://{self.bucket}/{key}: {why}",
            bucket=self.bucket, key=key, operation=operation, code="IntegrityError",
        )

    # ------------------------------------------------------------------ bucket
    def ensure_bucket(self) -> None:
        """Check the bucket once per store; create it if missing and ``create_bucket``."""
        if self._bucket_ready:
            return
        with self._lock:
            if self._bucket_ready:
                return
            try:
                with self._errors("HeadBucket"):
                    self.client.head_bucket(Bucket=self.bucket)
            except S3BucketMissingError as exc:
                if not self.create_bucket:
                    raise S3BucketMissingError(
                        f"{exc} -- create the bucket, or let the store create it "
                        "(create_bucket=True)",
                        bucket=self.bucket, operation=exc.operation, code=exc.code,
                    ) from None
                self._create_bucket()
            self._bucket_ready = True

    def _create_bucket(self) -> None:
        region = self.client.meta.region_name
        kw: dict[str, Any] = {}
        if region and region != "us-east-1":
            kw["CreateBucketConfiguration"] = {"LocationConstraint": region}
        try:
            with self._errors("CreateBucket"):
                self.client.create_bucket(Bucket=self.bucket, **kw)
        except S3BlobError as exc:
            if exc.code != "BucketAlreadyOwnedByYou":  # that one: a racing creator won
                raise

    # ------------------------------------------------------------------ interface
    def _head(self, key: str) -> dict[str, Any] | None:
        """HeadObject (with checksums), or None if there is no such object."""
        try:
            with self._errors("HeadObject", key):
                kw = {"ChecksumMode": "ENABLED"} if self.checksums else {}
                return self.client.head_object(Bucket=self.bucket, Key=key, **kw)
        except S3BlobNotFoundError:
            return None

    def put_file(self, path: str | Path) -> tuple[str, int]:
        """Store the file under its SHA-256 (uploading only if the bucket lacks it); returns
        (sha256, size)."""
        sha, size = sha256_file(path)
        key = self.key(sha)
        self.ensure_bucket()
        head = self._head(key)
        if (
            head is not None
            and int(head.get("ContentLength", -1)) == size
            and head.get("Metadata", {}).get(SHA_META) == sha
        ):
            self._touch(key, head)
            return sha, size
        self._upload(Path(path), key, sha, size)
        self._verify_upload(key, sha, size)
        return sha, size

    def _touch(self, key: str, head: dict[str, Any]) -> None:
        """Renew the object's LastModified (a server-side copy onto itself)."""
        with self._errors("CopyObject", key):
            self.client.copy_object(
                Bucket=self.bucket, Key=key, CopySource={"Bucket": self.bucket, "Key": key},
                Metadata=head.get("Metadata", {}), MetadataDirective="REPLACE",
                ContentType=head.get("ContentType") or "application/zip",
            )

    def _upload(self, path: Path, key: str, sha: str, size: int) -> None:
        extra: dict[str, Any] = {"Metadata": {SHA_META: sha}, "ContentType": "application/zip"}
        single = size < self.multipart_threshold
        if self.checksums and single:
            extra["ChecksumSHA256"] = _b64(sha)  # S3 refuses a body that does not match
        elif self.checksums:
            extra["ChecksumAlgorithm"] = "SHA256"  # per-part checksums
        with open(path, "rb") as f:
            reader = _HashingReader(
                f, sha, size, lambda why: self._integrity(key, "upload", why)
            )
            with self._errors("PutObject" if single else "MultipartUpload", key):
                self.client.upload_fileobj(
                    reader, self.bucket, key, ExtraArgs=extra, Config=self._transfer
                )

    def _verify_upload(self, key: str, sha: str, size: int) -> None:
        head = self._head(key)
        if head is None:
            raise self._integrity(key, "upload", "the object is missing right after its upload")
        got_size = int(head.get("ContentLength", -1))
        if got_size != size:
            raise self._integrity(key, "upload", f"stored {got_size} bytes, sent {size}")
        got_sha = head.get("Metadata", {}).get(SHA_META)
        if got_sha != sha:
            raise self._integrity(key, "upload", f"recorded sha256 {got_sha!r}, sent {sha}")
        checksum = head.get("ChecksumSHA256")
        if (checksum and size < self.multipart_threshold and "-" not in checksum
                and checksum != _b64(sha)):
            raise self._integrity(
                key, "upload", f"S3's ChecksumSHA256 {checksum} does not match {_b64(sha)}"
            )

    def open(self, sha256: str) -> BinaryIO:
        """A streaming, read-only reader of the blob (close it; ``with`` works)."""
        key = self.key(sha256)
        self.ensure_bucket()
        try:
            with self._errors("GetObject", key):
                resp = self.client.get_object(Bucket=self.bucket, Key=key)
        except S3BlobNotFoundError as exc:
            raise S3BlobNotFoundError(
                f"blob {sha256} is not in the store (s3://{self.bucket}/{key})",
                bucket=self.bucket, key=key, operation="GetObject", code=exc.code,
            ) from None
        return io.BufferedReader(_S3Reader(resp["Body"], self, key), _CHUNK)  # type: ignore[return-value]

    def local_path(self, sha256: str) -> Path | None:
        """Always None: S3 blobs have no local path (use ``open``)."""
        _valid_key(sha256)
        return None

    def exists(self, sha256: str) -> bool:
        key = self.key(sha256)
        self.ensure_bucket()
        return self._head(key) is not None

    def delete(self, sha256: str) -> None:
        """Remove the blob; removing a missing one is not an error."""
        key = self.key(sha256)
        self.ensure_bucket()
        with self._errors("DeleteObject", key):
            self.client.delete_object(Bucket=self.bucket, Key=key)

    def list(self) -> Iterator[tuple[str, float]]:
        """(sha256, LastModified as a Unix time) of every blob under the prefix, page by page.
        Objects that do not follow the key layout are skipped."""
        self.ensure_bucket()
        paginator = self.client.get_paginator("list_objects_v2")
        pages = paginator.paginate(
            Bucket=self.bucket, Prefix=f"{self._base}sha256/",
            PaginationConfig={"PageSize": self.list_page_size},
        )
        it = iter(pages)
        while True:
            with self._errors("ListObjectsV2"):
                page = next(it, None)
            if page is None:
                return
            for obj in page.get("Contents", ()):
                m = self._key_re.fullmatch(obj["Key"])
                if m and m.group(2)[:2] == m.group(1):
                    yield m.group(2), obj["LastModified"].timestamp()

    # ------------------------------------------------------------------ maintenance
    def abort_stale_uploads(self, older_than: float) -> int:
        """Abort multipart uploads under the prefix started more than ``older_than`` seconds
        ago (left by crashed writers; their parts cost storage). Returns how many."""
        self.ensure_bucket()
        cutoff = time.time() - older_than
        n = 0
        paginator = self.client.get_paginator("list_multipart_uploads")
        with self._errors("ListMultipartUploads"):
            for page in paginator.paginate(Bucket=self.bucket, Prefix=f"{self._base}sha256/"):
                for up in page.get("Uploads", ()):
                    if up["Initiated"].timestamp() <= cutoff:
                        self.client.abort_multipart_upload(
                            Bucket=self.bucket, Key=up["Key"], UploadId=up["UploadId"]
                        )
                        n += 1
        return n

    def close(self) -> None:
        """Close the HTTP connections of a client this store created."""
        if self._own_client and hasattr(self.client, "close"):
            self.client.close()
