"""Safe packing and unpacking of learnware zips.

Uploads are hostile until proven otherwise. Before a byte is written, every entry is checked:
no absolute paths or drive letters, no ``..`` or empty components, no backslashes or control
characters, no over-long names (1024 bytes, 255 per component), no symlinks, no duplicates
(also case-insensitive, which would collide on macOS/Windows), no encryption, no unknown
compression methods, no compiled code (``.pyc``, ``__pycache__``, native libraries) or build
debris, no overlapping entries, and caps (:class:`~learndock.config.ArchiveLimits`) on the
number of entries -- counted before zipfile parses them --, sizes and the compression ratio of
each entry and of the whole archive (zip bombs). Extraction then re-counts the bytes actually
inflated, because zip headers can lie; any read error (corrupt stream, bad CRC, a name the file
system refuses) becomes an :class:`UnsafeArchiveError`. Every rejection names the offending
entry, and the cap that governs it (``LEARNDOCK_ZIP_<FIELD>``).
"""

from __future__ import annotations

import hashlib
import lzma
import os
import re
import stat
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from learndock.config import ArchiveLimits
from learndock.errors import UnsafeArchiveError

#: Files never packed from a directory (build debris; they would also change the digest for
#: no reason). In an uploaded zip they are refused, never skipped: every file of a package is
#: covered by its digest.
IGNORED_NAMES = {"__pycache__", ".DS_Store", ".git", ".ipynb_checkpoints"}
IGNORED_SUFFIXES = (".pyc", ".pyo")
#: Compiled code: bytecode and native libraries. A package ships source only -- compiled code
#: cannot be reviewed, and Python would import it ahead of (or instead of) the source.
COMPILED_CODE = re.compile(r"\.(pyc|pyo|pyd|dll)$|\.(so|dylib)(\.\d+)*$", re.IGNORECASE)
#: Longest entry name (UTF-8 bytes) and longest path component (the usual NAME_MAX).
MAX_NAME_BYTES = 1024
MAX_COMPONENT_BYTES = 255
#: Compression methods zipfile can read; anything else is refused before extraction.
SUPPORTED_METHODS = {
    zipfile.ZIP_STORED: "stored",
    zipfile.ZIP_DEFLATED: "deflate",
    zipfile.ZIP_BZIP2: "bzip2",
    zipfile.ZIP_LZMA: "lzma",
}
#: What reading a hostile zip can raise besides our own errors: corrupt streams, truncated or
#: lying headers, names the file system refuses (ENAMETOOLONG), unknown methods.
READ_ERRORS = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    zlib.error,
    lzma.LZMAError,
    EOFError,
    OSError,
    struct.error,
    NotImplementedError,
    RuntimeError,
    ValueError,
    OverflowError,
    UnicodeError,
)
_FIXED_DATE = (1980, 1, 1, 0, 0, 0)
_CHUNK = 1 << 20
_LOCAL_HEADER = struct.Struct("<4s5H3L2H")  # 30 bytes, see APPNOTE 4.3.7


@dataclass(frozen=True)
class Entry:
    name: str
    size: int
    compressed: int
    is_dir: bool


def _env(field: str) -> str:
    return f"LEARNDOCK_ZIP_{field.upper()}"


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    if isinstance(exc, (zlib.error, lzma.LZMAError)):
        return f"corrupt compressed data ({exc})"
    if isinstance(exc, EOFError):
        return f"compressed data end too early ({exc})" if str(exc) else "truncated data"
    if isinstance(exc, zipfile.BadZipFile) and str(exc):
        return str(exc)
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _shown(name: str) -> str:
    """The entry name for a message (very long names are cut, the point is made anyway)."""
    return repr(name) if len(name) <= 200 else repr(name[:200]) + f"... ({len(name)} characters)"


def check_entry_name(name: str) -> str:
    """Return the normalised entry name or raise naming why it is unsafe."""
    if "\x00" in name:
        raise UnsafeArchiveError(f"entry {_shown(name)}: name contains a NUL byte")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        # A newline in a name would also let two different packages share a digest line.
        raise UnsafeArchiveError(f"entry {_shown(name)}: name contains control characters")
    if "\\" in name:
        raise UnsafeArchiveError(
            f"entry {_shown(name)}: backslashes are not allowed in entry names"
        )
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise UnsafeArchiveError(f"entry {_shown(name)}: absolute paths are not allowed")
    try:
        n_bytes = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        raise UnsafeArchiveError(f"entry {_shown(name)}: name is not valid Unicode") from None
    if n_bytes > MAX_NAME_BYTES:
        raise UnsafeArchiveError(
            f"entry {_shown(name)}: name is {n_bytes} bytes long; the limit is "
            f"{MAX_NAME_BYTES} bytes"
        )
    stripped = name[:-1] if name.endswith("/") else name
    parts = stripped.split("/")
    if any(p == ".." for p in parts):
        raise UnsafeArchiveError(f"entry {_shown(name)}: '..' components are not allowed")
    if any(p in ("", ".") for p in parts):
        raise UnsafeArchiveError(f"entry {_shown(name)}: empty or '.' path components")
    for p in parts:
        if len(p.encode("utf-8")) > MAX_COMPONENT_BYTES:
            raise UnsafeArchiveError(
                f"entry {_shown(name)}: path component {_shown(p)} is "
                f"{len(p.encode('utf-8'))} bytes long; the limit is {MAX_COMPONENT_BYTES} "
                "bytes per component"
            )
    return name


def check_entry_content(name: str) -> None:
    """Refuse compiled code (bytecode, native libraries) and build debris in a package."""
    parts = name.rstrip("/").split("/")
    if "__pycache__" in parts:
        raise UnsafeArchiveError(
            f"entry {_shown(name)}: __pycache__ (compiled bytecode) is not allowed in a "
            "package; ship source files only"
        )
    m = COMPILED_CODE.search(parts[-1]) if not name.endswith("/") else None
    if m:
        raise UnsafeArchiveError(
            f"entry {_shown(name)}: compiled code ({m.group(0)}) is not allowed in a package; "
            "ship source files only"
        )
    debris = next((p for p in parts if p in IGNORED_NAMES), None)
    if debris is not None:
        raise UnsafeArchiveError(
            f"entry {_shown(name)}: {debris!r} is build debris, not part of a package "
            "(`learndock pack` leaves it out)"
        )


def _is_symlink(info: zipfile.ZipInfo) -> bool:
    mode = info.external_attr >> 16
    return info.create_system == 3 and stat.S_ISLNK(mode)


def _precount_entries(path: Path, limits: ArchiveLimits) -> None:
    """Count central-directory records *before* zipfile builds an object for each one.

    A few MB of minimal records would otherwise become millions of ZipInfo objects (hundreds
    of MB) before the entry cap is looked at. Reads only record headers; structural problems
    are left for zipfile to report.
    """
    end_rec = getattr(zipfile, "_EndRecData", None)
    if end_rec is None:  # pragma: no cover -- private API; zipfile still parses correctly
        return
    with open(path, "rb") as fp:
        endrec = end_rec(fp)
        if not endrec:
            return
        size_cd = endrec[zipfile._ECD_SIZE]
        offset_cd = endrec[zipfile._ECD_OFFSET]
        concat = endrec[zipfile._ECD_LOCATION] - size_cd - offset_cd
        if endrec[zipfile._ECD_SIGNATURE] == zipfile.stringEndArchive64:
            concat -= zipfile.sizeEndCentDir64 + zipfile.sizeEndCentDir64Locator
        start = offset_cd + concat
        if start < 0:
            return
        fp.seek(start)
        count, pos = 0, 0
        while pos < size_cd:
            head = fp.read(46)
            if len(head) != 46 or head[:4] != b"PK\x01\x02":
                return
            n, m, k = struct.unpack_from("<3H", head, 28)
            pos += 46 + n + m + k
            fp.seek(n + m + k, os.SEEK_CUR)
            count += 1
            if count > limits.max_entries:
                raise UnsafeArchiveError(
                    f"zip has more than {limits.max_entries} entries; the limit is "
                    f"{limits.max_entries} ({_env('max_entries')})"
                )


def _check_layout(zf: zipfile.ZipFile, infos: list[zipfile.ZipInfo], archive_size: int) -> None:
    """Refuse entries whose data overlap (the same compressed bytes inflated many times: the
    "overlapping files" zip bomb) or run past the central directory."""
    fp = zf.fp
    assert fp is not None
    end_of_data = getattr(zf, "start_dir", archive_size)
    ordered = sorted(infos, key=lambda i: i.header_offset)
    for i, info in enumerate(ordered):
        fp.seek(info.header_offset)
        head = fp.read(_LOCAL_HEADER.size)
        if len(head) != _LOCAL_HEADER.size or head[:4] != b"PK\x03\x04":
            raise UnsafeArchiveError(
                f"entry {_shown(info.filename)}: bad local header (corrupt or crafted archive)"
            )
        fields = _LOCAL_HEADER.unpack(head)
        data_end = info.header_offset + _LOCAL_HEADER.size + fields[9] + fields[10]
        data_end += info.compress_size
        limit = ordered[i + 1].header_offset if i + 1 < len(ordered) else end_of_data
        if data_end > limit:
            raise UnsafeArchiveError(
                f"entry {_shown(info.filename)}: its data overlap "
                + (f"entry {_shown(ordered[i + 1].filename)}" if i + 1 < len(ordered)
                   else "the central directory")
                + " (overlapping entries: corrupt archive or zip bomb)"
            )


def _ratio_message(total: int, compressed: int, limits: ArchiveLimits, when: str) -> str:
    return (
        f"archive: {total} bytes {when} from {compressed} compressed bytes, ratio "
        f"{total / max(compressed, 1):.0f}:1 exceeds {limits.max_ratio:.0f}:1 for the whole "
        f"archive ({_env('max_ratio')}; archives under {limits.ratio_min_bytes} bytes, "
        f"{_env('ratio_min_bytes')}, are exempt) -- zip bomb?"
    )


def inspect_zip(path: str | Path, limits: ArchiveLimits | None = None) -> list[Entry]:
    """Validate every entry of the zip at ``path`` without extracting anything."""
    limits = limits or ArchiveLimits()
    path = Path(path)
    try:
        archive_size = path.stat().st_size
        _precount_entries(path, limits)
        zf = zipfile.ZipFile(path)
    except FileNotFoundError:
        raise UnsafeArchiveError(f"zip file not found: {path}") from None
    except UnsafeArchiveError:
        raise
    except READ_ERRORS as exc:
        raise UnsafeArchiveError(f"not a valid zip file: {_describe(exc)}") from None
    with zf:
        try:
            return _inspect_open(zf, limits, archive_size)
        except UnsafeArchiveError:
            raise
        except READ_ERRORS as exc:
            raise UnsafeArchiveError(f"not a valid zip file: {_describe(exc)}") from None


def _inspect_open(zf: zipfile.ZipFile, limits: ArchiveLimits, archive_size: int) -> list[Entry]:
    infos = zf.infolist()
    if len(infos) > limits.max_entries:
        raise UnsafeArchiveError(
            f"zip has {len(infos)} entries; the limit is {limits.max_entries} "
            f"({_env('max_entries')})"
        )
    seen: dict[str, str] = {}
    total = 0
    compressed = 0
    entries = []
    for info in infos:
        name = check_entry_name(info.filename)
        shown = _shown(name)
        if _is_symlink(info):
            raise UnsafeArchiveError(f"entry {shown}: symlinks are not allowed")
        if info.flag_bits & 0x1:
            raise UnsafeArchiveError(f"entry {shown}: encrypted entries are not allowed")
        check_entry_content(name)
        key = name.rstrip("/").casefold()
        if key in seen:
            raise UnsafeArchiveError(
                f"entry {shown}: duplicate of {_shown(seen[key])} (names must be unique, "
                "ignoring case)"
            )
        seen[key] = name
        if not info.is_dir():
            if info.compress_type not in SUPPORTED_METHODS:
                method = zipfile.compressor_names.get(info.compress_type, "unknown")
                raise UnsafeArchiveError(
                    f"entry {shown}: compression method {info.compress_type} ({method}) is "
                    f"not supported (use {', '.join(SUPPORTED_METHODS.values())})"
                )
            if info.file_size > limits.max_file_bytes:
                raise UnsafeArchiveError(
                    f"entry {shown}: {info.file_size} bytes uncompressed exceeds the "
                    f"per-file limit of {limits.max_file_bytes} ({_env('max_file_bytes')})"
                )
            ratio = info.file_size / max(info.compress_size, 1)
            if info.file_size >= limits.ratio_min_bytes and ratio > limits.max_ratio:
                raise UnsafeArchiveError(
                    f"entry {shown}: compression ratio {ratio:.0f}:1 exceeds "
                    f"{limits.max_ratio:.0f}:1 ({_env('max_ratio')}) -- zip bomb?"
                )
            total += info.file_size
            compressed += info.compress_size
            if total > limits.max_total_bytes:
                raise UnsafeArchiveError(
                    f"entry {shown}: total uncompressed size exceeds the limit of "
                    f"{limits.max_total_bytes} bytes ({_env('max_total_bytes')})"
                )
        entries.append(Entry(name, info.file_size, info.compress_size, info.is_dir()))
    # The whole archive: many entries each just under the per-entry ratio still add up.
    compressed = min(compressed, archive_size)
    if total >= limits.ratio_min_bytes and total / max(compressed, 1) > limits.max_ratio:
        raise UnsafeArchiveError(_ratio_message(total, compressed, limits, "uncompressed"))
    _check_layout(zf, infos, archive_size)
    # A directory entry and a file of the same path, or a file used as a parent directory.
    files = {e.name for e in entries if not e.is_dir}
    for e in entries:
        for parent in PurePosixPath(e.name.rstrip("/")).parents:
            if str(parent) != "." and str(parent) in files:
                raise UnsafeArchiveError(
                    f"entry {_shown(e.name)}: its parent {str(parent)!r} is a file"
                )
    return entries


def extract_zip(path: str | Path, dest: str | Path, limits: ArchiveLimits | None = None) -> Path:
    """Extract a validated zip into the empty or new directory ``dest``.

    Every byte is counted as it is inflated: an entry may not inflate past its declared size,
    nor the archive past ``max_total_bytes`` or ``max_ratio`` times its own size. Any read
    error (corrupt stream, bad CRC, a name the file system refuses) is an
    :class:`UnsafeArchiveError` naming the entry.
    """
    limits = limits or ArchiveLimits()
    path = Path(path)
    entries = inspect_zip(path, limits)
    dest = Path(dest)
    archive_size = max(path.stat().st_size, 1)
    try:
        dest.mkdir(parents=True, exist_ok=True)
        root = dest.resolve()
    except OSError as exc:
        raise UnsafeArchiveError(f"cannot create {dest}: {_describe(exc)}") from None
    total = 0
    current = ""
    try:
        with zipfile.ZipFile(path) as zf:
            for e in entries:
                current = e.name
                target = (root / e.name).resolve()
                if root not in target.parents and target != root:
                    raise UnsafeArchiveError(
                        f"entry {_shown(e.name)}: resolves outside the package"
                    )
                if e.is_dir:
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                try:
                    with open(target, "xb") as out, zf.open(zf.getinfo(e.name)) as src:
                        total = _copy_counted(src, out, e, limits, total, archive_size)
                except FileExistsError:
                    raise UnsafeArchiveError(f"entry {_shown(e.name)}: duplicate file") from None
    except UnsafeArchiveError:
        raise
    except READ_ERRORS as exc:
        where = f"entry {_shown(current)}" if current else "archive"
        raise UnsafeArchiveError(f"{where}: cannot be read: {_describe(exc)}") from None
    return dest


def _copy_counted(
    src: zipfile.ZipExtFile,
    out,  # noqa: ANN001 -- a binary file
    e: Entry,
    limits: ArchiveLimits,
    total: int,
    archive_size: int,
) -> int:
    """Copy one entry, counting what is inflated; returns the running total of the archive."""
    written = 0
    while chunk := src.read(_CHUNK):
        written += len(chunk)
        total += len(chunk)
        if written > e.size or written > limits.max_file_bytes:
            raise UnsafeArchiveError(
                f"entry {_shown(e.name)}: inflates past its declared size ({e.size} bytes); "
                "the archive is corrupt or malicious"
            )
        if total > limits.max_total_bytes:
            raise UnsafeArchiveError(
                f"entry {_shown(e.name)}: total extracted size exceeds the limit of "
                f"{limits.max_total_bytes} bytes ({_env('max_total_bytes')})"
            )
        if total >= limits.ratio_min_bytes and total / archive_size > limits.max_ratio:
            raise UnsafeArchiveError(
                f"entry {_shown(e.name)}: "
                + _ratio_message(total, archive_size, limits, "extracted")
            )
        out.write(chunk)
    return total


def iter_package_files(directory: str | Path) -> list[tuple[str, Path]]:
    """Files of a package directory as (posix relative name, path), sorted.

    Build debris (``__pycache__``, ``.pyc``, ``.git``, ...) is left out; symlinks, unsafe
    names and compiled code (native libraries) are refused.
    """
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
            check_entry_content(rel)
            out.append((rel, p))
    out.sort(key=lambda t: t[0])
    return out


def write_zip(files: list[tuple[str, Path]], out: str | Path, limits: ArchiveLimits) -> Path:
    """Write a deterministic zip (sorted names, fixed timestamps and permissions)."""
    if len(files) > limits.max_entries:
        raise UnsafeArchiveError(
            f"package has {len(files)} files; the limit is {limits.max_entries} "
            f"({_env('max_entries')})"
        )
    total = sum(p.stat().st_size for _, p in files)
    if total > limits.max_total_bytes:
        raise UnsafeArchiveError(
            f"package holds {total} bytes; the limit is {limits.max_total_bytes} "
            f"({_env('max_total_bytes')})"
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
    """Content digest of a package zip: depends only on file names and contents.

    Covers every file entry: anything that would not belong in the digest (bytecode, debris)
    is refused by :func:`inspect_zip`, never skipped.
    """
    entries = inspect_zip(path, limits)
    pairs = []
    current = ""
    try:
        with zipfile.ZipFile(path) as zf:
            for e in entries:
                if e.is_dir:
                    continue
                current = e.name
                with zf.open(zf.getinfo(e.name)) as f:
                    pairs.append((e.name, _sha256_stream(f.read)))
    except READ_ERRORS as exc:
        if isinstance(exc, UnsafeArchiveError):
            raise
        where = f"entry {_shown(current)}" if current else "archive"
        raise UnsafeArchiveError(f"{where}: cannot be read: {_describe(exc)}") from None
    return digest_files(pairs)
