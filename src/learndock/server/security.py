"""Secrets of the dock: password hashing, API tokens, the signing key, rate limits.

- Passwords: argon2id (argon2-cffi), PHC strings; a login for an unknown e-mail still verifies
  against a dummy hash, so timing does not tell which e-mails have accounts.
- API tokens: ``ld_`` + 32 random bytes (URL-safe base64). Only their SHA-256 is stored; a
  request's token is hashed and *looked up* by that hash (a unique index), so no secret is ever
  compared byte by byte and the database never holds a usable token.
- The signing key (for cookie sessions of the web UI, later) is 32 random bytes created on
  first run in ``<home>/secret.key`` with mode 0600; never logged, never a default.
- Rate limits: token buckets in this process (per client IP and per account), which is enough
  for one server process; a multi-process or multi-node dock needs a shared store (Redis).
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import stat
import threading
import time
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from learndock.server.errors import RateLimitedError

log = logging.getLogger("learndock.server")

TOKEN_PREFIX = "ld_"
#: Characters of a token shown in listings (``ld_`` + 6): enough to tell tokens apart.
TOKEN_SHOWN = 9


# ---------------------------------------------------------------------- passwords
class Passwords:
    """argon2id hashing with a constant-time answer for unknown accounts."""

    def __init__(self, time_cost: int = 3, memory_kib: int = 65536, parallelism: int = 4) -> None:
        self.hasher = PasswordHasher(time_cost=time_cost, memory_cost=memory_kib,
                                     parallelism=parallelism)
        self._dummy = self.hasher.hash(secrets.token_urlsafe(16))

    def hash(self, password: str) -> str:
        return self.hasher.hash(password)

    def verify(self, stored: str | None, password: str) -> bool:
        """True if ``password`` matches ``stored`` (None: no such account -- still costs a
        full verification)."""
        try:
            return self.hasher.verify(stored or self._dummy, password) and stored is not None
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, stored: str) -> bool:
        try:
            return self.hasher.check_needs_rehash(stored)
        except InvalidHashError:
            return True


# ---------------------------------------------------------------------- tokens
def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def looks_like_token(token: str) -> bool:
    return token.startswith(TOKEN_PREFIX) and 20 <= len(token) <= 200 and token.isascii() \
        and token.isprintable()


# ---------------------------------------------------------------------- signing key
def ensure_signing_key(home: Path) -> Path:
    """``<home>/secret.key``: created once (32 random bytes, hex) with mode 0600; an existing
    key readable by others is tightened to 0600. Returns its path (never its contents)."""
    home.mkdir(parents=True, exist_ok=True)
    path = home / "secret.key"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            os.chmod(path, 0o600)
            log.warning("%s was readable by others (mode %o); set to 0600", path, mode)
        return path
    try:
        os.write(fd, secrets.token_hex(32).encode() + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    log.info("created a new signing key in %s", path)
    return path


def read_signing_key(home: Path) -> bytes:
    return bytes.fromhex(ensure_signing_key(home).read_text().strip())


# ---------------------------------------------------------------------- rate limits
class RateLimiter:
    """Token buckets keyed by strings (``"login:ip:127.0.0.1"``), in this process.

    ``rate`` tokens per second refill a bucket of ``burst``; a request takes one token or is
    refused with :class:`RateLimitedError` (429, Retry-After). At most ``max_keys`` buckets are
    kept (the least recently used go first), so a flood of distinct keys costs bounded memory.
    """

    def __init__(self, rate_per_s: float, burst: int, *, max_keys: int = 100_000,
                 what: str = "requests") -> None:
        self.rate, self.burst, self.max_keys, self.what = rate_per_s, burst, max_keys, what
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, *keys: str) -> None:
        """Take one token from every bucket named (all or none)."""
        if self.rate <= 0:
            return
        now = time.monotonic()
        with self._lock:
            levels = []
            for key in keys:
                tokens, last = self._buckets.pop(key, (float(self.burst), now))
                tokens = min(float(self.burst), tokens + (now - last) * self.rate)
                levels.append((key, tokens))
            short = [(k, lvl) for k, lvl in levels if lvl < 1.0]
            for key, lvl in levels:
                self._buckets[key] = (lvl if short else lvl - 1.0, now)  # re-insert: LRU order
            while len(self._buckets) > self.max_keys:
                self._buckets.pop(next(iter(self._buckets)))
        if short:
            wait = max((1.0 - lvl) / self.rate for _, lvl in short)
            raise RateLimitedError(f"too many {self.what}; retry in {wait:.0f} s",
                                   retry_after=wait)

    def reset(self) -> None:
        with self._lock:
            self._buckets.clear()
