"""Safe packing and unpacking of learnware zips.

Uploads are hostile until proven otherwise. Before a byte is written, every entry is checked:
no absolute paths or drive letters, no ``..`` or empty components, no backslashes, no
symlinks, no duplicates (also case-insensitive, which would collide on macOS/Windows), no
encryption, and caps on the number of entries, sizes and compression ratio (zip bombs).
Extraction then re-counts the bytes actually inflated, because zip headers can lie.
Every rejection names the offending entry.
"""

from __future__ import annotations

import hashlib
import os
import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from learndock.config import ArchiveLimits
from learndock.errors import UnsafeArchiveError

#: Files never packed (build debris; they would also change the digest for no reason).
IGNORED_NAMES = {"__pycache__", ".DS_Store", ".git", ".ipynb_checkpoints"}
IGNORED_SUFFIXES = (".pyc", ".pyo")
_FIXED_DATE = (1980, 1, 1, 0, 0, 0)
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Entry:
    name: str
    size: int
    compressed: int
    is_dir: bool


def check_entry_name(name: str) -> str:
    """Return the normalised entry name or raise naming why it is unsafe."""
    if "\x00" in name:
        raise UnsafeArchiveError(f"entry {name!r}: name contains a NUL byte")
    if "\\" in name:
        raise UnsafeArchiveError(f"entry {name!r}: backslashes are not allowed in entry names")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise UnsafeArchiveError(f"entry {name!r}: absolute paths are not allowed")
    stripped = name[:-1] if name.endswith("/") else name
    parts = stripped.split("/")
    if any(p == ".." for p in parts):
        raise UnsafeArchiveError(f"entry {name!r}: '..' components are not allowed")
    if any(p in ("", ".") for p in parts):
        raise UnsafeArchiveError(f"entry {name!r}: empty or '.' path components")
    return name


def _is_symlink(info: zipfile.ZipInfo) -> bool:
    mode = info.external_attr >> 16
    return info.create_system == 3 and stat.S_ISLNK(mode)


def inspect_zip(path: str | Path, limits: ArchiveLimits | None = None) -> list[Entry]:
    """Validate every entry of the zip at ``path`` without extracting anything."""
    limits = limits or ArchiveLimits()
    try:
        zf = zipfile.ZipFile(path)
    except zipfile.BadZipFile as exc:
        raise UnsafeArchiveError(f"not a valid zip file: {exc}") from None
    except FileNotFoundError:
        raise UnsafeArchiveError(f"zip file not found: {path}") from None
    with zf:
        infos = zf.infolist()
        if len(infos) > limits.max_entries:
            raise UnsafeArchiveError(
                f"zip has {len(infos)} entries; the limit is {limits.max_entries}"
            )
        seen: dict[str, str] = {}
        total = 0
        entries = []
        for info in infos:
            name = check_entry_name(info.filename)
            if _is_symlink(info):
                raise UnsafeArchiveError(f"entry {name!r}: symlinks are not allowed")
            if info.flag_bits & 0x1:
                raise UnsafeArchiveError(f"entry {name!r}: encrypted entries are not allowed")
            key = name.rstrip("/").casefold()
            if key in seen:
                raise UnsafeArchiveError(
                    f"entry {name!r}: duplicate of {seen[key]!r} (names must be unique, "
                    "ignoring case)"
                )
            seen[key] = name
            if not info.is_dir():
                if info.file_size > limits.max_file_bytes:
                    raise UnsafeArchiveError(
                        f"entry {name!r}: {info.file_size} bytes uncompressed exceeds the "
                        f"per-file limit of {limits.max_file_bytes}"
                    )
                ratio = info.file_size / max(info.compress_size, 1)
                if info.file_size >= limits.ratio_min_bytes and ratio > limits.max_ratio:
                    raise UnsafeArchiveError(
                        f"entry {name!r}: compression ratio {ratio:.0f}:1 exceeds "
                        f"{limits.max_ratio:.0f}:1 (zip bomb?)"
                    )
                total += info.file_size
                if total > limits.max_total_bytes:
                    raise UnsafeArchiveError(
                        f"entry {name!r}: total uncompressed size exceeds the limit of "
                        f"{limits.max_total_bytes} bytes"
                    )
            entries.append(Entry(name, info.file_size, info.compress_size, info.is_dir()))
        # A directory entry and a file of the same path, or a file used as a parent directory.
        files = {e.name for e in entries if not e.is_dir}
        for e in entries:
            for parent in PurePosixPath(e.name.rstrip("/")).parents:
                if str(parent) != "." and str(parent) in files:
                    raise UnsafeArchiveError(
                        f"entry {e.name!r}: its parent {str(parent)!r} is a file"
                    )
        return entries


def extract_zip(path: str | Path, dest: str | Path, limits: ArchiveLimits | None = None) -> Path:
    """Extract a validated zip into the empty or new directory ``dest``."""
    limits = limits or ArchiveLimits()
    entries = inspect_zip(path, limits)
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    root = dest.resolve()
    total = 0
    with zipfile.ZipFile(path) as zf:
        for e in entries:
            target = (root / e.name).resolve()
            if root not in target.parents and target != root:
                raise UnsafeArchiveError(f"entry {e.name!r}: resolves outside the package")
            if e.is_dir:
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            written = 0
            try:
                with zf.open(e.name) as src, open(target, "xb") as out:
                    while chunk := src.read(_CHUNK):
                        written += len(chunk)
                        total += len(chunk)
                        if written > e.size or written > limits.max_file_bytes:
                            raise UnsafeArchiveError(
                                f"entry {e.name!r}: inflates past its declared size ({e.size} "
                                "bytes); the archive is corrupt or malicious"
                            )
                        if total > limits.max_total_bytes:
                            raise UnsafeArchiveError(
                                f"entry {e.name!r}: total extracted size exceeds the limit of "
                                f"{limits.max_total_bytes} bytes"
                            )
                        out.write(chunk)
            except FileExistsError:
                raise UnsafeArchiveError(f"entry {e.name!r}: duplicate file") from None
            except (zipfile.BadZipFile, EOFError, OSError) as exc:
                if isinstance(exc, UnsafeArchiveError):
                    raise
                raise UnsafeArchiveError(f"entry {e.name!r}: cannot be read: {exc}") from None
    return dest


def iter_package_files(directory: str | Path) -> list[tuple[str, Path]]:
    """Files of a package directory as (posix relative name, path), sorted; rejects symlinks."""
    root = Path(directory)
    if not root.is_dir():
        raise UnsafeArchiveError(f"not a directory: {root}")
    out: list[tuple[str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if d not in IGNORED_NAMES)
        for d in dirnames:
            if (Path(dirpath) / d).is_symlink():
                rel = (Path(dirpath) / d).relative_to(root).as_posix()
                raise UnsafeArchiveError(f"entry {rel!r}: symlinks are not allowed")
        for f in sorted(filenames):
            if f in IGNORED_NAMES or f.endswith(IGNORED_SUFFIXES):
                continue
            p = Path(dirpath) / f
            rel = p.relative_to(root).as_posix()
            if p.is_symlink():
                raise UnsafeArchiveError(f"entry {rel!r}: symlinks are not allowed")
            if not p.is_file():
                raise UnsafeArchiveError(f"entry {rel!r}: not a regular file")
            check_entry_name(rel)
            out.append((rel, p))
    out.sort(key=lambda t: t[0])
    return out


def write_zip(files: list[tuple[str, Path]], out: str | Path, limits: ArchiveLimits) -> Path:
    """Write a deterministic zip (sorted names, fixed timestamps and permissions)."""
    if len(files) > limits.max_entries:
        raise UnsafeArchiveError(f"package has {len(files)} files; the limit is {limits.max_entries}")
    total = sum(p.stat().st_size for _, p in files)
    if total > limits.max_total_bytes:
        raise UnsafeArchiveError(
            f"package holds {total} bytes; the limit is {limits.max_total_bytes}"
        )
    out = Path(out)
    tmp = out.with_name(out.name + ".partial")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, p in sorted(files):
            info = zipfile.ZipInfo(name, date_time=_FIXED_DATE)
            info.external_attr = (stat.S_IFREG | 0o644) << 16
            info.create_system = 3
            info.compress_type = zipfile.ZIP_DEFLATED
            with open(p, "rb") as src, zf.open(info, "w") as dst:
                while chunk := src.read(_CHUNK):
                    dst.write(chunk)
    os.replace(tmp, out)
    return out


def digest_files(named_hashes: list[tuple[str, str]]) -> str:
    """SHA-256 over ``"<sha256>  <name>\\n"`` lines in name order (like ``sha256sum``)."""
    h = hashlib.sha256()
    for name, file_hash in sorted(named_hashes):
        h.update(f"{file_hash}  {name}\n".encode())
    return h.hexdigest()


def _sha256_stream(read) -> str:  # type: ignore[no-untyped-def]
    h = hashlib.sha256()
    while chunk := read(_CHUNK):
        h.update(chunk)
    return h.hexdigest()


def digest_directory(directory: str | Path) -> str:
    """Content digest of a package directory (same value as for its zip, whatever the tool)."""
    pairs = []
    for name, p in iter_package_files(directory):
        with open(p, "rb") as f:
            pairs.append((name, _sha256_stream(f.read)))
    return digest_files(pairs)


def digest_zip(path: str | Path, limits: ArchiveLimits | None = None) -> str:
    """Content digest of a package zip: depends only on file names and contents."""
    entries = inspect_zip(path, limits)
    pairs = []
    with zipfile.ZipFile(path) as zf:
        for e in entries:
            if e.is_dir:
                continue
            parts = e.name.split("/")
            if any(p in IGNORED_NAMES for p in parts) or e.name.endswith(IGNORED_SUFFIXES):
                continue
            with zf.open(e.name) as f:
                pairs.append((e.name, _sha256_stream(f.read)))
    return digest_files(pairs)
