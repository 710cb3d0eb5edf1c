"""Archive safety (hostile zips), safe extraction, and content digests."""

from __future__ import annotations

import os
import shutil
import struct
import zipfile
from pathlib import Path

import pytest
import yaml

from helpers import OK_ENTRY, make_zip, symlink_info, zip_directory
from learndock.config import ArchiveLimits
from learndock.errors import ManifestError, PackageError, UnsafeArchiveError
from learndock.package import (
    digest_directory,
    digest_zip,
    extract_zip,
    inspect_zip,
    load_learnware,
    pack,
    package_digest,
)

OK = OK_ENTRY


def _files_under(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*")}


@pytest.fixture
def sandbox_dir(tmp_path) -> Path:
    """tmp_path/outer/dest: extraction goes to dest; nothing may appear in outer."""
    outer = tmp_path / "outer"
    outer.mkdir()
    return outer


HOSTILE = [
    pytest.param([OK, ("/etc/evil.txt", b"x")], "/etc/evil.txt", "absolute", id="absolute"),
    pytest.param([OK, ("C:/evil.txt", b"x")], "C:/evil.txt", "absolute", id="drive-letter"),
    pytest.param([OK, ("../evil.txt", b"x")], "../evil.txt", "'..'", id="dotdot"),
    pytest.param([OK, ("a/../../evil.txt", b"x")], "a/../../evil.txt", "'..'", id="dotdot-nested"),
    pytest.param([OK, ("a\\..\\evil.txt", b"x")], "a\\\\..\\\\evil.txt", "backslash", id="backslash"),
    pytest.param([OK, ("a//b.txt", b"x")], "a//b.txt", "empty", id="empty-component"),
    pytest.param([OK, (symlink_info("link"), b"/etc/passwd")], "link", "symlink", id="symlink"),
    pytest.param([OK, ("a.txt", b"1"), ("a.txt", b"2")], "a.txt", "duplicate", id="duplicate"),
    pytest.param([OK, ("a.txt", b"1"), ("A.TXT", b"2")], "A.TXT", "duplicate", id="dup-case"),
    pytest.param([OK, ("x", b"1"), ("x/y.txt", b"2")], "x/y.txt", "is a file", id="file-as-dir"),
]


@pytest.mark.parametrize(("entries", "name", "reason"), HOSTILE)
def test_hostile_entry_is_rejected_naming_it(tmp_path, sandbox_dir, entries, name, reason):
    z = make_zip(tmp_path / "bad.zip", entries)
    with pytest.raises(UnsafeArchiveError) as exc:
        inspect_zip(z)
    msg = str(exc.value)
    assert name in msg and reason in msg
    dest = sandbox_dir / "dest"
    with pytest.raises(UnsafeArchiveError):
        extract_zip(z, dest)
    # nothing was written, neither inside nor outside the target
    assert _files_under(sandbox_dir) <= {"dest"}
    assert not (tmp_path / "evil.txt").exists()
    # and the package loader refuses it the same way
    with pytest.raises(UnsafeArchiveError):
        load_learnware(z)


def test_too_many_entries(tmp_path):
    z = make_zip(tmp_path / "many.zip", [(f"f{i}.txt", b"x") for i in range(6)])
    assert len(inspect_zip(z, ArchiveLimits(max_entries=6))) == 6
    with pytest.raises(UnsafeArchiveError, match="more than 5 entries; the limit is 5 .LEARNDOCK_ZIP_MAX_ENTRIES."):
        inspect_zip(z, ArchiveLimits(max_entries=5))


def test_total_uncompressed_size_over_cap(tmp_path):
    z = make_zip(tmp_path / "big.zip", [("a.bin", os.urandom(600)), ("b.bin", os.urandom(600))])
    inspect_zip(z, ArchiveLimits(max_total_bytes=1200))
    with pytest.raises(UnsafeArchiveError, match="'b.bin': total uncompressed size exceeds"):
        inspect_zip(z, ArchiveLimits(max_total_bytes=1000))


def test_per_file_size_cap(tmp_path):
    z = make_zip(tmp_path / "big.zip", [("a.bin", os.urandom(2000))])
    with pytest.raises(UnsafeArchiveError, match="'a.bin': 2000 bytes uncompressed exceeds"):
        inspect_zip(z, ArchiveLimits(max_file_bytes=1000))


def test_compression_ratio_bomb(tmp_path, sandbox_dir):
    z = make_zip(tmp_path / "bomb.zip", [OK, ("zeros.bin", b"\0" * (5 * 1024 * 1024))])
    assert z.stat().st_size < 50_000
    with pytest.raises(UnsafeArchiveError, match=r"'zeros.bin': compression ratio \d+:1 exceeds 100:1"):
        inspect_zip(z, ArchiveLimits(max_ratio=100, ratio_min_bytes=1024))
    # the default limits catch it too, before anything is inflated to disk
    with pytest.raises(UnsafeArchiveError, match="zip bomb"):
        extract_zip(z, sandbox_dir / "dest")
    assert _files_under(sandbox_dir) <= {"dest"}


def test_small_entries_are_exempt_from_ratio_check(tmp_path):
    z = make_zip(tmp_path / "small.zip", [("zeros.bin", b"\0" * 4096)])
    assert inspect_zip(z, ArchiveLimits(max_ratio=2, ratio_min_bytes=10_000))[0].size == 4096


def _patch_declared_size(path: Path, name: str, new_size: int) -> None:
    """Make the headers claim ``name`` is ``new_size`` bytes (it really is larger)."""
    data = bytearray(path.read_bytes())
    raw = name.encode()
    for sig, size_off, name_len_off, hdr in ((b"PK\x03\x04", 22, 26, 30), (b"PK\x01\x02", 24, 28, 46)):
        pos = 0
        while (pos := data.find(sig, pos)) != -1:
            (n_len,) = struct.unpack_from("<H", data, pos + name_len_off)
            if bytes(data[pos + hdr : pos + hdr + n_len]) == raw:
                struct.pack_into("<I", data, pos + size_off, new_size)
            pos += 4
    path.write_bytes(bytes(data))


def test_entry_inflating_past_declared_size(tmp_path, sandbox_dir):
    z = make_zip(
        tmp_path / "liar.zip", [OK, ("liar.bin", b"A" * 5000)], compression=zipfile.ZIP_STORED
    )
    _patch_declared_size(z, "liar.bin", 10)
    entries = {e.name: e for e in inspect_zip(z)}
    assert entries["liar.bin"].size == 10  # the header lie passes the static checks
    dest = sandbox_dir / "dest"
    with pytest.raises(UnsafeArchiveError, match="'liar.bin'"):
        extract_zip(z, dest)
    # never more than the declared bytes reach the disk
    liar = dest / "liar.bin"
    assert not liar.exists() or liar.stat().st_size <= 10


def test_not_a_zip(tmp_path):
    p = tmp_path / "fake.zip"
    p.write_bytes(b"this is not a zip archive at all")
    with pytest.raises(UnsafeArchiveError, match="not a valid zip"):
        inspect_zip(p)
    with pytest.raises(PackageError, match="not a valid zip"):
        load_learnware(p)
    with pytest.raises(PackageError, match="no package at"):
        load_learnware(tmp_path / "missing.zip")


def test_safe_zip_extracts_only_inside_target(tmp_path, sandbox_dir):
    z = make_zip(tmp_path / "ok.zip", [OK, ("sub/dir/a.txt", b"hello"), ("sub/", b"")])
    dest = extract_zip(z, sandbox_dir / "dest")
    assert (dest / "sub/dir/a.txt").read_bytes() == b"hello"
    assert _files_under(sandbox_dir) == {
        "dest", "dest/learnware.yaml", "dest/sub", "dest/sub/dir", "dest/sub/dir/a.txt"
    }


# ---------------------------------------------------------------------- manifest problems


def test_missing_manifest(tmp_path, skops_clf_dir):
    z = zip_directory(skops_clf_dir, tmp_path / "nomanifest.zip")
    with zipfile.ZipFile(z) as src:
        entries = [(n, src.read(n)) for n in src.namelist() if n != "learnware.yaml"]
    z2 = make_zip(tmp_path / "nomanifest2.zip", entries)
    with pytest.raises(ManifestError, match="no learnware.yaml"):
        load_learnware(z2)


def test_unparsable_yaml_manifest(pkg_copy):
    (pkg_copy / "learnware.yaml").write_text("name: [unclosed\n  model: {\n")
    with pytest.raises(ManifestError, match="not valid YAML"):
        load_learnware(pkg_copy)


def test_manifest_not_a_mapping(pkg_copy):
    (pkg_copy / "learnware.yaml").write_text("- just\n- a list\n")
    with pytest.raises(ManifestError, match="mapping"):
        load_learnware(pkg_copy)


def _edit_manifest(pkg: Path, edit) -> None:
    path = pkg / "learnware.yaml"
    data = yaml.safe_load(path.read_text())
    edit(data)
    path.write_text(yaml.safe_dump(data))


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda d: d.update(version="1.0"), ["field 'version'", "not a semantic version"]),
        (lambda d: d.update(name="bad name!"), ["field 'name'", "not a valid package name"]),
        (lambda d: d["model"].update(format="pickle"), ["field 'model.format'"]),
        (lambda d: d["model"].update(file="../model.skops"), ["field 'model.file'", "'..'"]),
        (lambda d: d["input"].update(shape=[0]), ["field 'input.shape'", "positive"]),
        (lambda d: d.update(format_version=2), ["format_version 2"]),
        (lambda d: d.update(extra_key=1), ["field 'extra_key'"]),
        (lambda d: d["semantic"].update(task_type="Guessing"), ["semantic", "task_type"]),
        (lambda d: d["output"].update(labels=[0, 1]), ["2 declared labels"]),
        (lambda d: d["input"]["features"].pop(), ["63 features declared for input shape [64]"]),
    ],
)
def test_manifest_with_bad_fields_names_the_field(pkg_copy, edit, expected):
    _edit_manifest(pkg_copy, edit)
    with pytest.raises(ManifestError) as exc:
        load_learnware(pkg_copy)
    for part in expected:
        assert part in str(exc.value)


def test_missing_model_file(pkg_copy):
    (pkg_copy / "model.skops").unlink()
    with pytest.raises(PackageError, match="model file 'model.skops' named in learnware.yaml"):
        load_learnware(pkg_copy)


def test_spec_dimension_must_match_input_shape(pkg_copy, gauss_spec):
    gauss_spec.save(pkg_copy / "spec.json")  # 5-D spec in a 64-feature package
    with pytest.raises(PackageError, match="dimension 5 but the declared input shape is \\[64\\]"):
        load_learnware(pkg_copy)


def test_missing_or_broken_spec_file(pkg_copy):
    (pkg_copy / "spec.json").write_text("{oops")
    with pytest.raises(PackageError, match="stat spec 'spec.json'.*not valid JSON"):
        load_learnware(pkg_copy)
    (pkg_copy / "spec.json").unlink()
    with pytest.raises(PackageError, match="'spec.json' listed in the manifest is missing"):
        load_learnware(pkg_copy)


# ---------------------------------------------------------------------- pack


def test_pack_rejects_symlinked_file(pkg_copy, tmp_path):
    (tmp_path / "secret.txt").write_text("secret")
    os.symlink(tmp_path / "secret.txt", pkg_copy / "notes.txt")
    with pytest.raises(UnsafeArchiveError, match="'notes.txt': symlinks are not allowed"):
        pack(pkg_copy, tmp_path / "out.zip")
    assert not (tmp_path / "out.zip").exists()


def test_pack_rejects_symlinked_directory(pkg_copy, tmp_path):
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "f.txt").write_text("x")
    os.symlink(tmp_path / "elsewhere", pkg_copy / "data")
    with pytest.raises(UnsafeArchiveError, match="'data': symlinks are not allowed"):
        pack(pkg_copy, tmp_path / "out.zip")


def test_pack_output_is_deterministic_and_safe(skops_clf_dir, tmp_path):
    d1 = pack(skops_clf_dir, tmp_path / "a.zip")
    d2 = pack(skops_clf_dir, tmp_path / "b.zip")
    assert d1 == d2
    assert (tmp_path / "a.zip").read_bytes() == (tmp_path / "b.zip").read_bytes()
    with zipfile.ZipFile(tmp_path / "a.zip") as zf:
        names = zf.namelist()
        assert names == sorted(names)
        assert {i.date_time for i in zf.infolist()} == {(1980, 1, 1, 0, 0, 0)}
    assert set(names) == {"learnware.yaml", "model.skops", "spec.json"}
    assert not list(tmp_path.glob("*.partial"))


# ---------------------------------------------------------------------- digests


def test_digest_is_the_same_for_directory_and_any_zip_of_it(skops_clf_dir, skops_clf_zip, tmp_path):
    d_dir = digest_directory(skops_clf_dir)
    assert digest_zip(skops_clf_zip) == d_dir
    assert package_digest(skops_clf_zip) == package_digest(skops_clf_dir) == d_dir
    stored_reversed = zip_directory(skops_clf_dir, tmp_path / "rev.zip", reverse=True)
    with zipfile.ZipFile(stored_reversed) as zf:
        assert zf.namelist()[0] != sorted(zf.namelist())[0]
        assert {i.compress_type for i in zf.infolist()} == {zipfile.ZIP_STORED}
    assert stored_reversed.read_bytes() != skops_clf_zip.read_bytes()
    assert digest_zip(stored_reversed) == d_dir
    archived = shutil.make_archive(str(tmp_path / "made"), "zip", root_dir=skops_clf_dir)
    assert digest_zip(archived) == d_dir
    assert load_learnware(archived).digest == d_dir


def test_digest_ignores_build_debris(pkg_copy):
    before = digest_directory(pkg_copy)
    (pkg_copy / "__pycache__").mkdir()
    (pkg_copy / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"\0\1")
    (pkg_copy / ".DS_Store").write_bytes(b"junk")
    assert digest_directory(pkg_copy) == before


def test_digest_changes_when_one_byte_changes(pkg_copy, tmp_path):
    before = digest_directory(pkg_copy)
    p = pkg_copy / "spec.json"
    data = bytearray(p.read_bytes())
    i = data.index(b'"n_samples":1797')
    data[i + len('"n_samples":179')] = ord("8")
    p.write_bytes(bytes(data))
    after = digest_directory(pkg_copy)
    assert after != before
    z = zip_directory(pkg_copy, tmp_path / "changed.zip")
    assert digest_zip(z) == after


def test_digest_depends_on_names(pkg_copy):
    before = digest_directory(pkg_copy)
    (pkg_copy / "notes.txt").write_text("x")
    with_notes = digest_directory(pkg_copy)
    (pkg_copy / "notes.txt").rename(pkg_copy / "notes2.txt")
    assert len({before, with_notes, digest_directory(pkg_copy)}) == 3


# ---------------------------------------------------------------------- caps added by the audit


def test_whole_archive_ratio(tmp_path):
    """Entries each exempt from the per-entry ratio (under ratio_min_bytes) still add up."""
    entries = [(f"z{i}.bin", b"\0" * 4000) for i in range(10)]
    z = make_zip(tmp_path / "agg.zip", entries)
    limits = ArchiveLimits(max_ratio=20, ratio_min_bytes=5000)
    with pytest.raises(UnsafeArchiveError, match=r"for the whole archive \(LEARNDOCK_ZIP_MAX_RATIO"):
        inspect_zip(z, limits)
    assert len(inspect_zip(z, ArchiveLimits(max_ratio=20, ratio_min_bytes=50_000))) == 10


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("model.pyc", "compiled code (.pyc)"),
        ("pkg/m.PYO", "compiled code (.PYO)"),
        ("_x.cpython-311-x86_64-linux-gnu.so", "compiled code (.so)"),
        ("libz.so.1", "compiled code (.so.1)"),
        ("x.pyd", "compiled code (.pyd)"),
        ("x.dll", "compiled code (.dll)"),
        ("x.dylib", "compiled code (.dylib)"),
        ("__pycache__/", "__pycache__"),
        ("a/__pycache__/m.py", "__pycache__"),
        (".DS_Store", "build debris"),
        (".git/HEAD", "build debris"),
    ],
)
def test_compiled_code_and_debris_are_refused_not_skipped(tmp_path, name, reason):
    z = make_zip(tmp_path / "c.zip", [OK, (name, b"\0\1")])
    for fn in (inspect_zip, digest_zip):
        with pytest.raises(UnsafeArchiveError) as exc:
            fn(z)
        assert repr(name) in str(exc.value) and reason in str(exc.value)


def test_source_named_like_compiled_code_is_fine(tmp_path):
    z = make_zip(tmp_path / "ok.zip", [OK, ("so.py", b"x"), ("notes.sorted", b"y"),
                                       ("dll/readme.txt", b"z")])
    assert len(inspect_zip(z)) == 4


def test_pack_refuses_native_library_in_directory(pkg_copy, tmp_path):
    (pkg_copy / "fast.so").write_bytes(b"\x7fELF")
    with pytest.raises(UnsafeArchiveError, match=r"'fast.so': compiled code \(.so\)"):
        pack(pkg_copy, tmp_path / "out.zip")
    with pytest.raises(UnsafeArchiveError, match="compiled code"):
        digest_directory(pkg_copy)


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("a" * 1100, "1100 bytes long; the limit is 1024"),
        ("d/" + "é" * 200, "400 bytes long; the limit is 255 bytes per component"),
        ("a\nb", "control characters"),
        ("a\x7fb", "control characters"),
    ],
)
def test_entry_name_length_and_characters(tmp_path, name, reason):
    z = make_zip(tmp_path / "n.zip", [OK, (name, b"x")])
    with pytest.raises(UnsafeArchiveError, match=reason):
        inspect_zip(z)


def test_corrupt_deflate_stream_names_the_entry(tmp_path, sandbox_dir):
    payload = os.urandom(3000) + b"A" * 3000
    z = make_zip(tmp_path / "c.zip", [OK, ("data.bin", payload)])
    raw = bytearray(z.read_bytes())
    with zipfile.ZipFile(z) as zf:
        info = zf.getinfo("data.bin")
    n, m = struct.unpack_from("<2H", raw, info.header_offset + 26)
    start = info.header_offset + 30 + n + m
    for i in range(start + 5, start + 200, 3):
        raw[i] ^= 0x5A
    z.write_bytes(bytes(raw))
    inspect_zip(z)  # the headers are intact
    for fn in (lambda: extract_zip(z, sandbox_dir / "dest"), lambda: digest_zip(z),
               lambda: load_learnware(z)):
        with pytest.raises(UnsafeArchiveError, match="entry 'data.bin': cannot be read"):
            fn()


def test_too_many_entries_counted_before_zipfile_parses_them(tmp_path, monkeypatch):
    z = make_zip(tmp_path / "many.zip", [(f"f{i}", b"") for i in range(50)],
                 compression=zipfile.ZIP_STORED)

    def refuse(*a, **k):
        raise AssertionError("the central directory was parsed before the count")

    monkeypatch.setattr(zipfile.ZipFile, "_RealGetContents", refuse)
    with pytest.raises(UnsafeArchiveError, match="more than 10 entries"):
        inspect_zip(z, ArchiveLimits(max_entries=10))


def test_hostile_manifest_caps_in_a_zip(tmp_path):
    bomb = "a: &a [x, x, x, x, x, x, x, x]\n" + "\n".join(
        f"b{i}: &b{i} [{', '.join(['*a' if i == 0 else f'*b{i - 1}'] * 8)}]" for i in range(6)
    )
    z = make_zip(tmp_path / "bomb.zip", [("learnware.yaml", bomb.encode())])
    with pytest.raises(ManifestError, match="LEARNDOCK_ZIP_YAML_MAX_NODES"):
        load_learnware(z)
