"""Content-addressed storage for package files.

Blobs are keyed by the SHA-256 of their bytes, so the same package uploaded twice is stored
once and a key always means the same bytes -- which the market checks again on every read
(:func:`hash_blob`), so bytes changed on disk are refused, never handed out. The interface is small and path-free (put, open,
exists, delete, list) so an fsspec/S3 implementation can replace the local one.
"""

from __future__ import annotations

import hashlib
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, Protocol

from learndock.errors import NotFoundError

_CHUNK = 1 << 20


class BlobStore(Protocol):
    def put_file(self, path: str | Path) -> tuple[str, int]: ...

    def open(self, sha256: str) -> BinaryIO: ...

    def local_path(self, sha256: str) -> Path | None: ...

    def exists(self, sha256: str) -> bool: ...

    def delete(self, sha256: str) -> None: ...

    def list(self) -> Iterator[tuple[str, float]]: ...


def copy_hashing(src: BinaryIO, dst: BinaryIO | None = None) -> tuple[str, int]:
    """Stream ``src`` (into ``dst`` if given) in one pass; returns (sha256 hex, size)."""
    h = hashlib.sha256()
    size = 0
    while chunk := src.read(_CHUNK):
        h.update(chunk)
        size += len(chunk)
        if dst is not None:
            dst.write(chunk)
    return h.hexdigest(), size


def sha256_file(path: str | Path) -> tuple[str, int]:
    with open(path, "rb") as f:
        return copy_hashing(f)


def hash_blob(store: BlobStore, sha256: str, dst: BinaryIO | None = None) -> str:
    """The SHA-256 of what the store now holds under ``sha256`` (copied into ``dst`` if given).

    Any store, local or remote: reads go through :meth:`BlobStore.open`. A caller compares the
    result with the key to catch bytes changed on disk after they were stored.
    """
    with store.open(sha256) as src:
        return copy_hashing(src, dst)[0]


def _valid_key(sha256: str) -> str:
    if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
        raise ValueError(f"not a SHA-256 hex key: {sha256!r}")
    return sha256


class LocalBlobStore:
    """Blobs under ``root/ab/cd/<sha256>``; writes go to ``root/tmp`` then ``os.replace``."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        (self.root / "tmp").mkdir(parents=True, exist_ok=True)

    def _path(self, sha256: str) -> Path:
        _valid_key(sha256)
        return self.root / sha256[:2] / sha256[2:4] / sha256

    def put_file(self, path: str | Path) -> tuple[str, int]:
        """Copy ``path`` into the store (hashing while copying); returns (sha256, size)."""
        tmp = self.root / "tmp" / f"{uuid.uuid4().hex}.part"
        try:
            with open(path, "rb") as src, open(tmp, "wb") as dst:
                sha, size = copy_hashing(src, dst)
                dst.flush()
                os.fsync(dst.fileno())
            final = self._path(sha)
            if final.exists():
                tmp.unlink()
                os.utime(final)  # refresh: a sweep must not take a blob an add is about to use
            else:
                final.parent.mkdir(parents=True, exist_ok=True)
                os.replace(tmp, final)
            return sha, size
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def open(self, sha256: str) -> BinaryIO:
        try:
            return open(self._path(sha256), "rb")
        except FileNotFoundError:
            raise NotFoundError(f"blob {sha256} is not in the store") from None

    def local_path(self, sha256: str) -> Path | None:
        p = self._path(sha256)
        return p if p.is_file() else None

    def exists(self, sha256: str) -> bool:
        return self._path(sha256).is_file()

    def delete(self, sha256: str) -> None:
        self._path(sha256).unlink(missing_ok=True)

    def list(self) -> Iterator[tuple[str, float]]:
        for p in self.root.glob("??/??/*"):
            if p.is_file() and len(p.name) == 64:
                yield p.name, p.stat().st_mtime

    def stale_temp_files(self, older_than: float) -> list[Path]:
        cutoff = time.time() - older_than
        return [p for p in (self.root / "tmp").glob("*.part") if p.stat().st_mtime < cutoff]

