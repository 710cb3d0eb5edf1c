"""The reference client's chunked upload, staged per account.

The client cuts a zip into 1 MiB chunks and posts each with ``file_hash`` (the MD5 of the whole
zip) and ``chunk_begin`` (its byte offset), then asks the dock to add "the file with this hash".
Here a chunk is appended only at the offset the staged file has reached (a chunk at offset 0
starts the upload over), the staged file is capped at the dock's upload limit, an account has at
most :data:`MAX_OPEN` unfinished uploads (idle ones expire after :data:`STALE_S`), and the hash
the client claims is recomputed before anything is submitted. Staged files live in the dock's
upload temp folder (``bmw-chunks-<account>-<md5>.part``), which the server also sweeps at start.

Every operation on a staged file holds an exclusive ``flock`` on it, and re-checks after locking
that the name still refers to the file it opened -- so several server processes sharing the home
never interleave chunks, and a chunk racing with the final "add" never lands in a claimed file.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from learndock.server.compat.envelope import BAD_PARAMS, RULES, CompatError
from learndock.server.errors import PayloadTooLargeError

MD5 = re.compile(r"^[0-9a-f]{32}$")
PREFIX = "bmw-chunks-"
#: Unfinished uploads an account may have at once.
MAX_OPEN = 4
#: An unfinished upload not appended to for this long is dropped.
STALE_S = 3600.0


def check_hash(file_hash: object) -> str:
    h = str(file_hash or "").strip().lower()
    if not MD5.match(h):
        raise CompatError("file_hash must be the MD5 of the zip (32 hex digits)",
                          ref_code=BAD_PARAMS, status=422)
    return h


class ChunkStore:
    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.dir, self.max_bytes = directory, max_bytes

    def path(self, user_id: str, file_hash: str) -> Path:
        return self.dir / f"{PREFIX}{user_id}-{file_hash}.part"

    @contextlib.contextmanager
    def _locked(self, path: Path, create: bool) -> Iterator[int | None]:
        """An fd of ``path`` under an exclusive lock (None if it does not exist, or stopped
        being that file while we waited for the lock)."""
        flags = os.O_RDWR | (os.O_CREAT if create else 0)
        try:
            fd = os.open(path, flags, 0o600)
        except FileNotFoundError:
            yield None
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            yield fd if same else None
        finally:
            os.close(fd)

    def _expire(self, user_id: str) -> int:
        """Drop the account's idle staged uploads; the number still open."""
        now, n = time.time(), 0
        for p in self.dir.glob(f"{PREFIX}{user_id}-*.part"):
            try:
                if now - p.stat().st_mtime > STALE_S:
                    p.unlink()
                else:
                    n += 1
            except OSError:
                continue
        return n

    def append(self, user_id: str, file_hash: str, begin: int, chunk: Path, size: int) -> int:
        """Append the chunk file at offset ``begin``; returns the staged size."""
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.path(user_id, file_hash)
        if begin == 0 and not path.exists() and self._expire(user_id) >= MAX_OPEN:
            raise CompatError(f"this account has {MAX_OPEN} unfinished uploads; finish or "
                              f"abandon one (unfinished uploads expire after {STALE_S:.0f} s)",
                              ref_code=RULES, status=409)
        with self._locked(path, create=begin == 0) as fd:
            if fd is None:
                raise CompatError(f"no upload of {file_hash} in progress: send its first "
                                  "chunk (chunk_begin 0) first", ref_code=BAD_PARAMS,
                                  status=409)
            if begin == 0:
                os.ftruncate(fd, 0)
            have = os.fstat(fd).st_size
            if begin != have:
                raise CompatError(f"chunk_begin is {begin} but {have} bytes of {file_hash} "
                                  "were received", ref_code=BAD_PARAMS, status=409)
            if have + size > self.max_bytes:
                os.ftruncate(fd, 0)
                path.unlink(missing_ok=True)
                raise PayloadTooLargeError(
                    f"the upload is larger than this dock accepts ({self.max_bytes} bytes; "
                    "LEARNDOCK_SERVER_MAX_UPLOAD_BYTES)", details={"limit": self.max_bytes})
            os.lseek(fd, 0, os.SEEK_END)
            with open(chunk, "rb") as src:
                while block := src.read(1 << 20):
                    view = memoryview(block)
                    while view:
                        view = view[os.write(fd, view):]
            return have + size

    def claim(self, user_id: str, file_hash: str, into: Path) -> Path:
        """Move the staged upload to ``into`` once its MD5 is ``file_hash`` (a staged file
        whose bytes do not match is dropped: the client starts over)."""
        path = self.path(user_id, file_hash)
        with self._locked(path, create=False) as fd:
            if fd is None:
                raise CompatError(f"no upload of {file_hash} was received (send its chunks to "
                                  "/user/chunked_upload first)", ref_code=BAD_PARAMS,
                                  status=409)
            md5 = hashlib.md5(usedforsecurity=False)
            with os.fdopen(os.dup(fd), "rb") as f:
                f.seek(0)
                while block := f.read(1 << 20):
                    md5.update(block)
            if md5.hexdigest() != file_hash:
                path.unlink(missing_ok=True)
                raise CompatError(f"the received bytes have MD5 {md5.hexdigest()}, not "
                                  f"{file_hash}: upload the file again", ref_code=BAD_PARAMS,
                                  status=422)
            into.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.replace(path, into)
            except OSError:
                shutil.copyfile(path, into)
                path.unlink(missing_ok=True)
        return into

    def claimed_path(self) -> Path:
        return self.dir / f"bmw-claimed-{uuid.uuid4().hex}.zip"
