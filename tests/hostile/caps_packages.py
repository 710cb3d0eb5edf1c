"""Builders of hostile learnware zips: one per attack the caps must stop.

Every builder writes a zip under ``directory`` and returns its path. The packages are valid
except for their one hostile feature (``base_files`` + :func:`control_zip` show that the same
package without it passes the manifest and spec checks), so a rejection is always due to the
attack, not to some unrelated defect. Models are placeholders: every attack must be refused
before a model is loaded.
"""

from __future__ import annotations

import json
import struct
import warnings
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from helpers import symlink_info, table_semantic

D = 4  # features of the table base package
MIB = 1024 * 1024


# ---------------------------------------------------------------------- base package


def table_spec_dict(
    k: int = 10, d: int = D, *, gamma: float = 0.25, seed: int = 0, z: Any = None,
    beta: Any = None, round_to: int | None = None,
) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    zz = rng.normal(size=(k, d)) if z is None else np.asarray(z, dtype=float)
    if round_to is not None:
        zz = np.round(zz, round_to)
    bb = np.full(k, 1.0 / k) if beta is None else np.asarray(beta, dtype=float)
    return {
        "type": "rkme-table",
        "format_version": 1,
        "n_samples": 100,
        "kernel": {"type": "gaussian", "gamma": gamma, "scale": [1.0] * d},
        "beta": bb.tolist(),
        "z": zz.tolist(),
        "fit_info": {},
    }


def table_manifest(d: int = D) -> dict[str, Any]:
    return {
        "format_version": 1,
        "name": "hostile-table",
        "version": "1.0.0",
        "semantic": table_semantic(d, "Regression", 1, name="hostile table"),
        "model": {"format": "onnx", "file": "model.onnx"},
        "input": {"shape": [d], "features": [{"name": f"x{i}"} for i in range(d)]},
        "output": {"kind": "value", "shape": []},
        "stat_specs": [{"type": "rkme-table", "file": "spec.json"}],
    }


def image_manifest(shape: list[int]) -> dict[str, Any]:
    return {
        "format_version": 1,
        "name": "hostile-image",
        "version": "1.0.0",
        "semantic": {
            "name": "hostile image",
            "description": "An image classifier.",
            "data_type": "Image",
            "task_type": "Classification",
            "library_type": "PyTorch",
            "scenarios": ["Computer"],
            "license": "MIT",
            "output": {"dimension": 2, "descriptions": {0: "a", 1: "b"}},
        },
        "model": {"format": "onnx", "file": "model.onnx"},
        "input": {"shape": shape},
        "output": {"kind": "label", "labels": [0, 1]},
        "stat_specs": [{"type": "rkme-image", "file": "spec.json"}],
    }


def image_spec_dict(k: int = 5, d: int = 16) -> dict[str, Any]:
    z = np.random.default_rng(0).normal(size=(k, d))
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    return {
        "type": "rkme-image",
        "format_version": 1,
        "n_samples": 50,
        "kernel": {"type": "gaussian", "gamma": 4.0, "scale": [1.0] * d},
        "beta": [1.0 / k] * k,
        "z": z.tolist(),
        "fit_info": {},
        "encoder": {"id": "random-conv-test", "name": "random-conv"},
    }


def dump_yaml(data: Any) -> bytes:
    return yaml.safe_dump(data, sort_keys=False).encode()


def base_files(
    manifest: dict[str, Any] | bytes | None = None, spec: dict[str, Any] | bytes | None = None
) -> list[tuple[str | zipfile.ZipInfo, bytes]]:
    m = dump_yaml(table_manifest()) if manifest is None else manifest
    s = table_spec_dict() if spec is None else spec
    return [
        ("learnware.yaml", m if isinstance(m, bytes) else dump_yaml(m)),
        ("model.onnx", b"placeholder: never loaded"),
        ("spec.json", s if isinstance(s, bytes) else json.dumps(s).encode()),
    ]


def write_zip(
    path: Path,
    entries: list[tuple[str | zipfile.ZipInfo, bytes]],
    compression: int = zipfile.ZIP_DEFLATED,
) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # duplicate names
        with zipfile.ZipFile(path, "w", compression=compression) as zf:
            for name, data in entries:
                zf.writestr(name, data)
    return path


def control_zip(directory: Path) -> Path:
    """The base package, unaltered: passes the archive, manifest and spec checks."""
    return write_zip(directory / "control.zip", base_files())


def control_image_zip(directory: Path) -> Path:
    files = [
        ("learnware.yaml", dump_yaml(image_manifest([3, 32, 32]))),
        ("model.onnx", b"placeholder"),
        ("spec.json", json.dumps(image_spec_dict()).encode()),
    ]
    return write_zip(directory / "control-image.zip", files)


# ---------------------------------------------------------------------- manifests


def _manifest_with_kwargs_yaml(kwargs_yaml: str) -> bytes:
    """The base manifest with ``model.kwargs`` replaced by raw YAML text (anchors allowed)."""
    m = table_manifest()
    m["model"]["kwargs"] = {"__KWARGS__": 0}
    text = dump_yaml(m).decode()
    return text.replace("__KWARGS__: 0", "\n" + kwargs_yaml).encode()


def _laughs(levels: int, fan_out: int, indent: str) -> str:
    lines = [f"{indent}l0: &l0 [{', '.join(['lol'] * fan_out)}]"]
    for i in range(1, levels):
        refs = ", ".join([f"*l{i - 1}"] * fan_out)
        lines.append(f"{indent}l{i}: &l{i} [{refs}]")
    return "\n".join(lines)


def alias_bomb_in_kwargs(directory: Path) -> Path:
    """Billion laughs inside ``model.kwargs``: 9 levels x 10 aliases (~10^9 nodes)."""
    text = _manifest_with_kwargs_yaml(_laughs(9, 10, "      "))
    return write_zip(directory / "alias-bomb-kwargs.zip", base_files(manifest=text))


def expanded_bomb_few_aliases(directory: Path) -> Path:
    """Under the alias cap (9 levels x 7 = 63 aliases) but 7^9 = 40 million expanded nodes."""
    text = _manifest_with_kwargs_yaml(_laughs(9, 7, "      "))
    assert text.count(b"*l") == 56  # levels 1..8 use 7 aliases each
    return write_zip(directory / "expanded-bomb.zip", base_files(manifest=text))


def top_level_billion_laughs(directory: Path) -> Path:
    """The classic: the whole document is the bomb."""
    text = (_laughs(9, 10, "") + "\n").encode()
    return write_zip(directory / "billion-laughs.zip", base_files(manifest=text))


def huge_manifest(directory: Path) -> Path:
    """A 400 KB manifest (a long YAML comment: nothing to build, just bytes to read)."""
    text = dump_yaml(table_manifest()) + b"# " + b"x" * (400 * 1024) + b"\n"
    return write_zip(directory / "huge-manifest.zip", base_files(manifest=text))


def many_nodes_manifest(directory: Path) -> Path:
    """No aliases, 50,000 scalars in ``model.kwargs`` (under the byte cap)."""
    m = table_manifest()
    m["model"]["kwargs"] = {"w": [0] * 50_000}
    text = yaml.safe_dump(m, default_flow_style=None, width=10**9).encode()
    return write_zip(directory / "many-nodes.zip", base_files(manifest=text))


def python_object_tag(directory: Path) -> Path:
    text = _manifest_with_kwargs_yaml('      run: !!python/object/apply:os.system ["echo pwned"]')
    return write_zip(directory / "python-tag.zip", base_files(manifest=text))


def image_shape_3x4000x4000(directory: Path) -> Path:
    files = [
        ("learnware.yaml", dump_yaml(image_manifest([3, 4000, 4000]))),
        ("model.onnx", b"placeholder"),
        ("spec.json", json.dumps(image_spec_dict()).encode()),
    ]
    return write_zip(directory / "image-shape.zip", files)


# ---------------------------------------------------------------------- specs


def huge_k_spec(directory: Path) -> Path:
    """K = 200,000 reduced points (incompressible numbers: no zip-bomb ratio to trip on)."""
    spec = table_spec_dict(k=200_000, d=2, round_to=4)
    spec["kernel"]["scale"] = [1.0, 1.0]
    m = table_manifest(2)
    return write_zip(directory / "huge-k.zip", base_files(manifest=m, spec=spec))


def dimension_over_cap(directory: Path) -> Path:
    """A 10-point spec of dimension 5,000 (the cap is 4,096)."""
    return write_zip(
        directory / "dim-over-cap.zip", base_files(spec=table_spec_dict(k=10, d=5000))
    )


def gamma_1e300(directory: Path) -> Path:
    return write_zip(directory / "gamma.zip", base_files(spec=table_spec_dict(gamma=1e300)))


def z_1e200(directory: Path) -> Path:
    z = np.full((10, D), 1e200)
    return write_zip(directory / "z.zip", base_files(spec=table_spec_dict(z=z)))


def zero_weights(directory: Path) -> Path:
    return write_zip(directory / "zero-w.zip", base_files(spec=table_spec_dict(beta=[0.0] * 10)))


def nan_in_spec(directory: Path) -> Path:
    z = np.zeros((10, D))
    z[3, 2] = np.nan
    raw = json.dumps(table_spec_dict(z=z)).encode()  # json writes NaN
    return write_zip(directory / "nan.zip", base_files(spec=raw))


def array_bomb_spec(directory: Path) -> Path:
    """A spec file of a million empty arrays (~3 MB; would be ~60 MB of Python lists)."""
    raw = b'{"type": "rkme-table", "format_version": 1, "z": [' + b"[]," * 999_999 + b"[]]}"
    return write_zip(
        directory / "array-bomb.zip", base_files(spec=raw), compression=zipfile.ZIP_STORED
    )


# ---------------------------------------------------------------------- archives


def aggregate_ratio(directory: Path, n: int = 60) -> Path:
    """``n`` entries of 1 MiB - 1 zeros: each is exempt from the per-entry ratio check (under
    ``ratio_min_bytes``), together they inflate ~60 MB from ~60 KB."""
    block = b"\0" * (MIB - 1)
    entries = base_files() + [(f"data/part{i:03d}.bin", block) for i in range(n)]
    return write_zip(directory / "aggregate.zip", entries)


def compiled_entry(directory: Path, name: str) -> Path:
    safe = name.replace("/", "_")
    return write_zip(directory / f"compiled-{safe}.zip", base_files() + [(name, b"\x00" * 64)])


def corrupt_deflate(directory: Path) -> Path:
    """Flip bytes inside spec.json's compressed data; every header stays intact."""
    path = write_zip(directory / "corrupt.zip", base_files(spec=table_spec_dict(k=200)))
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("spec.json")
    (n, m) = struct.unpack_from("<2H", data, info.header_offset + 26)
    start = info.header_offset + 30 + n + m
    for i in range(start + 10, start + min(info.compress_size - 10, 400), 7):
        data[i] ^= 0xA5
    path.write_bytes(bytes(data))
    return path


def long_name(directory: Path) -> Path:
    """One entry whose name is 5,000 characters (in 50-character components)."""
    name = "/".join(["d" * 49] * 100) + ".txt"
    return write_zip(directory / "long-name.zip", base_files() + [(name, b"x")])


def long_component(directory: Path) -> Path:
    """One path component of 300 bytes (NAME_MAX is 255)."""
    return write_zip(directory / "long-comp.zip", base_files() + [("a" * 300 + ".txt", b"x")])


def control_char_name(directory: Path) -> Path:
    """A newline in a name (would let two packages share a digest line)."""
    return write_zip(directory / "ctrl.zip", base_files() + [("notes\nx.txt", b"x")])


def _patch_entry(path: Path, entry: str, local_off: int, central_off: int, fmt: str,
                 value: int, *, bitwise_or: bool = False) -> Path:
    """Rewrite one field of ``entry``'s local and central headers (at these offsets)."""
    data = bytearray(path.read_bytes())
    raw = entry.encode()
    for sig, off, name_len_off, hdr in ((b"PK\x03\x04", local_off, 26, 30),
                                        (b"PK\x01\x02", central_off, 28, 46)):
        pos = 0
        while (pos := data.find(sig, pos)) != -1:
            (n_len,) = struct.unpack_from("<H", data, pos + name_len_off)
            if bytes(data[pos + hdr: pos + hdr + n_len]) == raw:
                old = struct.unpack_from(fmt, data, pos + off)[0]
                struct.pack_into(fmt, data, pos + off, (old | value) if bitwise_or else value)
            pos += 4
    path.write_bytes(bytes(data))
    return path


def unknown_method(directory: Path) -> Path:
    """An entry whose compression method is 99 (AE-x / unknown to zipfile)."""
    path = write_zip(directory / "method.zip", base_files() + [("blob.bin", b"y" * 100)])
    return _patch_entry(path, "blob.bin", 8, 10, "<H", 99)


def overlapping_entries(
    directory: Path, copies: int = 50, kernel: bytes | None = None, name: str = "overlap.zip"
) -> Path:
    """Fifield-style: many central-directory records point at the same compressed kernel, so
    the same bytes inflate ``copies`` times. Default kernel: 64 KiB of random bytes (every
    ratio looks honest; only the overlap gives it away)."""
    kernel = np.random.default_rng(0).bytes(64 * 1024) if kernel is None else kernel
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    deflated = comp.compress(kernel) + comp.flush()
    crc = zlib.crc32(kernel)
    local = struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, 8, 0, 0x21, crc, len(deflated),
                        len(kernel), len(b"k.bin"), 0) + b"k.bin"
    body = local + deflated
    central = b""
    for i in range(copies):
        entry = f"k{i:03d}.bin".encode()
        central += struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 20, 20, 0, 8, 0, 0x21, crc,
                               len(deflated), len(kernel), len(entry), 0, 0, 0, 0, 0, 0) + entry
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, copies, copies, len(central), len(body), 0)
    path = directory / name
    path.write_bytes(body + central + end)
    return path


def overlapping_bomb(directory: Path) -> Path:
    """The same trick with a 1 MiB kernel of zeros: the whole-archive ratio catches it."""
    return overlapping_entries(directory, 50, b"\0" * (MIB - 1), "overlap-bomb.zip")


def many_aliases(directory: Path) -> Path:
    """70 aliases of one scalar: no expansion to speak of, but over the alias cap (64)."""
    text = _manifest_with_kwargs_yaml("      a: &s 1\n      b: [" + ", ".join(["*s"] * 70) + "]")
    return write_zip(directory / "many-aliases.zip", base_files(manifest=text))


def many_entries(directory: Path, n: int = 12_000) -> Path:
    """More central-directory records than ``max_entries`` (10,000 by default)."""
    return write_zip(
        directory / "many.zip", [(f"f{i}", b"") for i in range(n)], compression=zipfile.ZIP_STORED
    )


def traversal(directory: Path) -> Path:
    return write_zip(directory / "traversal.zip", base_files() + [("../evil.txt", b"x")])


def absolute_path(directory: Path) -> Path:
    return write_zip(directory / "absolute.zip", base_files() + [("/tmp/evil.txt", b"x")])


def symlink_entry(directory: Path) -> Path:
    return write_zip(directory / "symlink.zip", base_files() + [(symlink_info("link"), b"/etc")])


def duplicate_name(directory: Path) -> Path:
    return write_zip(directory / "dup.zip", base_files() + [("spec.json", b"{}")])


def duplicate_case(directory: Path) -> Path:
    return write_zip(directory / "dup-case.zip", base_files() + [("SPEC.JSON", b"{}")])


def encrypted_entry(directory: Path) -> Path:
    """The encryption flag (bit 0) set on one entry (zipfile cannot write it, so patch it)."""
    path = write_zip(directory / "encrypted.zip", base_files() + [("secret.bin", b"x" * 10)])
    return _patch_entry(path, "secret.bin", 6, 8, "<H", 0x1, bitwise_or=True)


def git_debris(directory: Path) -> Path:
    """A python module hidden in ``.git/`` would be extracted but left out of the digest."""
    return write_zip(directory / "git.zip", base_files() + [(".git/model.py", b"import os\n")])


#: name -> (builder, substrings the rejection message must contain)
CASES: dict[str, tuple[Callable[[Path], Path], tuple[str, ...]]] = {
    "alias-bomb-in-kwargs": (
        alias_bomb_in_kwargs, ("20000 YAML nodes", "LEARNDOCK_ZIP_YAML_MAX_NODES", "alias bomb")),
    "many-aliases": (many_aliases, ("more than 64 YAML aliases", "LEARNDOCK_ZIP_YAML_MAX_ALIASES")),
    "expanded-bomb-63-aliases": (
        expanded_bomb_few_aliases, ("20000 YAML nodes", "LEARNDOCK_ZIP_YAML_MAX_NODES")),
    "top-level-billion-laughs": (
        top_level_billion_laughs, ("20000 YAML nodes", "LEARNDOCK_ZIP_YAML_MAX_NODES")),
    "huge-manifest": (huge_manifest, ("learnware.yaml is", "LEARNDOCK_ZIP_YAML_MAX_BYTES")),
    "many-nodes-no-alias": (many_nodes_manifest, ("YAML nodes", "LEARNDOCK_ZIP_YAML_MAX_NODES")),
    "yaml-python-object-tag": (
        python_object_tag, ("Python-specific tags can name code", "python/object/apply")),
    "image-shape-3x4000x4000": (
        image_shape_3x4000x4000,
        ("input.shape [3, 4000, 4000]", "48,000,000", "LEARNDOCK_ZIP_MAX_SAMPLE_ELEMENTS")),
    "spec-k-200000": (
        huge_k_spec, ("200000 reduced points", "limit is 5000", "LEARNDOCK_ZIP_MAX_SPEC_POINTS")),
    "spec-dimension-5000": (
        dimension_over_cap, ("dimension 5000", "LEARNDOCK_ZIP_MAX_SPEC_DIMENSION")),
    "spec-gamma-1e300": (gamma_1e300, ("gamma 1e+300", "LEARNDOCK_ZIP_MAX_GAMMA")),
    "spec-z-1e200": (z_1e200, ("coordinates reach 1e+200", "LEARNDOCK_ZIP_MAX_ABS_COORDINATE")),
    "spec-zero-weights": (zero_weights, ("all weights are zero",)),
    "spec-nan": (nan_in_spec, ("NaN or inf values in its reduced set z",)),
    "spec-array-bomb": (array_bomb_spec, ("1000000 reduced points",)),
    "aggregate-ratio": (
        aggregate_ratio, ("for the whole archive", "LEARNDOCK_ZIP_MAX_RATIO", "zip bomb")),
    "pyc-entry": (
        lambda d: compiled_entry(d, "model.cpython-311.pyc"), ("'model.cpython-311.pyc'",
                                                                "compiled code (.pyc)")),
    "pyo-entry": (lambda d: compiled_entry(d, "m.pyo"), ("'m.pyo'", "compiled code (.pyo)")),
    "pycache-dir": (
        lambda d: compiled_entry(d, "__pycache__/model.py"), ("__pycache__",)),
    "so-entry": (
        lambda d: compiled_entry(d, "lib/_fast.cpython-311-x86_64-linux-gnu.so"),
        ("_fast.cpython-311-x86_64-linux-gnu.so'", "compiled code (.so)")),
    "so-versioned-entry": (lambda d: compiled_entry(d, "libx.so.1.2"), ("compiled code (.so.1.2)",)),
    "pyd-entry": (lambda d: compiled_entry(d, "fast.pyd"), ("compiled code (.pyd)",)),
    "dll-entry": (lambda d: compiled_entry(d, "x.DLL"), ("compiled code (.DLL)",)),
    "dylib-entry": (lambda d: compiled_entry(d, "x.dylib"), ("compiled code (.dylib)",)),
    "corrupt-deflate": (corrupt_deflate, ("'spec.json'", "cannot be read")),
    "long-name-5000": (long_name, ("5003 bytes long", "limit is 1024")),
    "long-component-300": (long_component, ("304 bytes long", "limit is 255")),
    "control-char-name": (control_char_name, ("control characters",)),
    "unknown-compression-method": (unknown_method, ("'blob.bin'", "compression method 99")),
    "overlapping-entries": (overlapping_entries, ("'k000.bin'", "data overlap", "'k001.bin'")),
    "overlapping-entries-bomb": (overlapping_bomb, ("for the whole archive", "zip bomb")),
    "too-many-entries": (many_entries, ("more than 10000 entries", "LEARNDOCK_ZIP_MAX_ENTRIES")),
    "traversal": (traversal, ("'../evil.txt'", "'..' components")),
    "absolute-path": (absolute_path, ("'/tmp/evil.txt'", "absolute paths")),
    "symlink": (symlink_entry, ("'link'", "symlinks are not allowed")),
    "duplicate-name": (duplicate_name, ("'spec.json'", "duplicate")),
    "duplicate-name-case": (duplicate_case, ("'SPEC.JSON'", "duplicate")),
    "encrypted-entry": (encrypted_entry, ("'secret.bin'", "encrypted entries")),
    "git-debris": (git_debris, ("'.git/model.py'", "build debris")),
}
