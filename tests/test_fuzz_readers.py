"""Property-based fuzzing of every reader that takes hostile input.

Invariant, for each: a valid result or a :class:`learndock.errors.LearndockError` -- never
another exception type, never a hang (each property has a bounded example budget; the file
runs in well under a minute on one core). The conftest profile derandomises hypothesis, so a
run is reproducible.
"""

from __future__ import annotations

import io
import json
import math
import shutil
import uuid
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from hostile.caps_packages import base_files, table_manifest, table_spec_dict, write_zip
from learndock.cli.data import read_images, read_table, read_texts
from learndock.config import ArchiveLimits
from learndock.errors import LearndockError
from learndock.package import check_package, digest_zip, extract_zip, inspect_zip, load_learnware
from learndock.package.manifest import Manifest
from learndock.package.yamlsafe import load_yaml
from learndock.spec.io import load_stat_spec, stat_spec_from_dict
from learndock.spec.table import RKMETableSpec

SMALL = ArchiveLimits(max_ratio=50, ratio_min_bytes=4096, yaml_max_nodes=2000,
                      max_spec_points=64, max_spec_dimension=64)
#: The module-scoped ``work`` directory is shared across examples on purpose.
HC = [HealthCheck.too_slow, HealthCheck.function_scoped_fixture]


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def _fresh(work: Path, suffix: str) -> Path:
    return work / f"{uuid.uuid4().hex}{suffix}"


def _expect_valid_or_ours(fn, *args: Any, **kwargs: Any) -> Any:
    """Call ``fn``; a LearndockError is an acceptable answer, anything else propagates."""
    try:
        return fn(*args, **kwargs)
    except LearndockError as exc:
        assert str(exc), "errors must say something"
        return None


# ---------------------------------------------------------------------- the zip reader

VALID_ZIP = io.BytesIO()
with zipfile.ZipFile(VALID_ZIP, "w", compression=zipfile.ZIP_DEFLATED) as _zf:
    for _name, _data in base_files(spec=table_spec_dict(k=6)):
        _zf.writestr(_name, _data)
VALID_ZIP_BYTES = VALID_ZIP.getvalue()


def _read_zip_everything(path: Path, work: Path) -> None:
    entries = _expect_valid_or_ours(inspect_zip, path, SMALL)
    dest = _fresh(work, "-x")
    try:
        out = _expect_valid_or_ours(extract_zip, path, dest, SMALL)
        if out is not None:
            root = dest.resolve()
            for p in dest.rglob("*"):
                assert root in p.resolve().parents  # nothing outside the target
            assert entries is not None
        _expect_valid_or_ours(digest_zip, path, SMALL)
    finally:
        shutil.rmtree(dest, ignore_errors=True)


@settings(max_examples=300, deadline=None, suppress_health_check=HC)
@given(data=st.binary(max_size=2048))
def test_zip_reader_random_bytes(work, data):
    p = _fresh(work, ".zip")
    p.write_bytes(data)
    _read_zip_everything(p, work)
    p.unlink()


@settings(max_examples=300, deadline=None, suppress_health_check=HC)
@given(data=st.binary(max_size=512))
def test_zip_reader_random_bytes_with_zip_signatures(work, data):
    """Random bytes around an end-of-central-directory record so the parser goes deeper."""
    eocd = b"PK\x05\x06" + data[:18].ljust(18, b"\0")
    p = _fresh(work, ".zip")
    p.write_bytes(b"PK\x03\x04" + data + b"PK\x01\x02" + data[::-1] + eocd)
    _read_zip_everything(p, work)
    p.unlink()


@settings(max_examples=400, deadline=None, suppress_health_check=HC)
@given(
    flips=st.lists(
        st.tuples(st.integers(0, len(VALID_ZIP_BYTES) - 1), st.integers(1, 255)),
        min_size=1, max_size=6,
    ),
    cut=st.one_of(st.none(), st.integers(0, len(VALID_ZIP_BYTES))),
)
def test_mutated_valid_zip(work, flips, cut):
    data = bytearray(VALID_ZIP_BYTES)
    for pos, x in flips:
        data[pos] ^= x
    if cut is not None:
        data = data[:cut]
    p = _fresh(work, ".zip")
    p.write_bytes(bytes(data))
    _read_zip_everything(p, work)
    lw = _expect_valid_or_ours(load_learnware, p, limits=SMALL)
    if lw is not None:
        lw.close()
    report = check_package(p, run_model=False, limits=SMALL)  # never raises on bad packages
    assert report.ok or any(not i.ok for i in report.items)
    p.unlink()


PACKAGE_FILES = dict(base_files(spec=table_spec_dict(k=5)))


@settings(max_examples=300, deadline=None, suppress_health_check=HC)
@given(
    which=st.sampled_from(["learnware.yaml", "spec.json"]),
    flips=st.lists(st.tuples(st.integers(0, 4000), st.integers(1, 255)), min_size=1, max_size=4),
    insert=st.one_of(st.none(), st.tuples(st.integers(0, 4000), st.sampled_from(
        [b"&a ", b"*a", b"[", b"{", b"]", b"NaN", b"1e999", b"-", b"\x00", b"\xff", b'"', b"!!"]))),
)
def test_mutated_package_contents(work, which, flips, insert):
    """Byte flips in the manifest or spec *before* zipping: the readers behind extraction."""
    files = dict(PACKAGE_FILES)
    data = bytearray(files[which])
    for pos, x in flips:
        data[pos % len(data)] ^= x
    if insert is not None:
        pos, token = insert
        data[pos % len(data):pos % len(data)] = token
    files[which] = bytes(data)
    p = _fresh(work, ".zip")
    write_zip(p, list(files.items()), compression=zipfile.ZIP_STORED)
    lw = _expect_valid_or_ours(load_learnware, p, limits=SMALL)
    if lw is not None:
        _check_loaded(lw.stat_spec)
        lw.close()
    p.unlink()


ENTRY_NAME = st.one_of(
    st.text(max_size=40),
    st.text(alphabet="./\\:abc_\x00\n ~$é", max_size=30),
    st.builds(lambda parts: "/".join(parts), st.lists(st.sampled_from(
        ["a", "..", ".", "", "__pycache__", "x.pyc", "lib.so", ".git", "A", "a" * 300]),
        min_size=1, max_size=6)),
)


@settings(max_examples=300, deadline=None, suppress_health_check=HC)
@given(names=st.lists(ENTRY_NAME, min_size=1, max_size=4))
def test_random_entry_names(work, names):
    p = _fresh(work, ".zip")
    try:
        write_zip(p, [("learnware.yaml", b"name: x\n")] + [(n, b"data") for n in names])
    except (UnicodeEncodeError, ValueError, OSError, IndexError):
        assume(False)  # names zipfile itself cannot write
    _read_zip_everything(p, work)
    p.unlink()


# ---------------------------------------------------------------------- the manifest parser

YAML_TOKENS = ["&a ", "*a", "&b ", "*b", "!!python/object:os.system ", "!!binary ", "!!set ",
               "!!timestamp ", "!!omap ", "[", "]", "{", "}", ": ", "- ", "\n", "  ", "? ",
               "<<: *a", "a", "1", "1e999", "-.inf", ".nan", "2020-13-45", "'x'", '"\\x00"',
               "%YAML 1.1\n", "---\n", "...\n", "#c", ",", "|", ">", "~", "null", "0x1F"]


@settings(max_examples=500, deadline=None, suppress_health_check=HC)
@given(text=st.one_of(
    st.text(max_size=300),
    st.lists(st.sampled_from(YAML_TOKENS), max_size=60).map("".join),
))
def test_manifest_parser_random_yaml_text(text):
    for data in (text, text.encode("utf-8", "surrogatepass")):
        _expect_valid_or_ours(Manifest.from_yaml, data, SMALL)
        _expect_valid_or_ours(load_yaml, data, SMALL)


SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
)
TREES = st.recursive(
    SCALARS,
    lambda kids: st.one_of(st.lists(kids, max_size=4),
                           st.dictionaries(st.text(max_size=8), kids, max_size=4)),
    max_leaves=25,
)
MANIFEST_PATHS = [
    (), ("name",), ("version",), ("format_version",), ("semantic",), ("semantic", "input"),
    ("semantic", "data_type"), ("semantic", "input", "dimension"), ("model",),
    ("model", "format"), ("model", "file"), ("model", "kwargs"), ("model", "methods"),
    ("input",), ("input", "shape"), ("input", "features"), ("output",), ("output", "labels"),
    ("output", "kind"), ("output", "shape"), ("stat_specs",), ("requirements",),
]


def _set_path(d: dict[str, Any], path: tuple[str, ...], value: Any) -> Any:
    if not path:
        return value
    node = d
    for key in path[:-1]:
        if not isinstance(node.get(key), dict):
            node[key] = {}
        node = node[key]
    node[path[-1]] = value
    return d


@settings(max_examples=500, deadline=None, suppress_health_check=HC)
@given(path=st.sampled_from(MANIFEST_PATHS), value=TREES)
def test_manifest_parser_mutated_structures(path, value):
    data = _set_path(json.loads(json.dumps(table_manifest())), path, value)
    _expect_valid_or_ours(Manifest.parse, data)
    try:
        text = yaml.safe_dump(data)
    except (yaml.YAMLError, ValueError, TypeError):
        return
    m = _expect_valid_or_ours(Manifest.from_yaml, text, SMALL)
    if m is not None:
        assert Manifest.from_yaml(m.to_yaml(), SMALL) == m  # valid means round-trippable


@settings(max_examples=150, deadline=None, suppress_health_check=HC)
@given(shape=st.lists(st.integers(-3, 10**7), min_size=0, max_size=8))
def test_manifest_input_shape(shape):
    data = table_manifest()
    data["input"] = {"shape": shape}
    data["semantic"] = {**data["semantic"], "data_type": "Image"}
    data["semantic"].pop("input")
    data["stat_specs"] = []
    m = _expect_valid_or_ours(Manifest.from_yaml, yaml.safe_dump(data), SMALL)
    if m is not None:
        assert math.prod(m.input.shape) <= SMALL.max_sample_elements


# ---------------------------------------------------------------------- the spec loader

NUMBERS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 1e-320, 1e200, -1e200, 1e308, 5e-324]),
    st.integers(-(2**64), 2**64),
)
ARRAYS = st.one_of(
    st.lists(st.lists(NUMBERS, min_size=0, max_size=5), min_size=0, max_size=6),
    st.lists(NUMBERS, max_size=6),
    st.lists(st.lists(st.lists(NUMBERS, max_size=3), max_size=3), max_size=3),
    TREES,
)
SPEC_FIELDS = {
    "z": ARRAYS,
    "beta": ARRAYS,
    "kernel": st.one_of(TREES, st.fixed_dictionaries(
        {"type": st.sampled_from(["gaussian", "laplace", 3]), "gamma": NUMBERS,
         "scale": ARRAYS})),
    "type": st.sampled_from(["rkme-table", "rkme-image", "rkme-text", "RKMETableSpecification",
                             "RKMEStatSpecification", "other", None, 7]),
    "format_version": st.sampled_from([1, 2, None, "1", 1.0]),
    "n_samples": st.one_of(NUMBERS, st.text(max_size=5), st.none()),
    "num_points": st.one_of(NUMBERS, st.text(max_size=5)),
    "gamma": NUMBERS,
    "fit_info": TREES,
    "encoder": TREES,
}


def _check_loaded(spec: RKMETableSpec | None) -> None:
    if spec is None:
        return
    assert spec.n_points <= SMALL.max_spec_points and spec.dimension <= SMALL.max_spec_dimension
    assert np.all(np.isfinite(spec.z)) and np.all(spec.beta >= -1e-12)
    assert abs(spec.beta.sum() - 1.0) <= 1e-6
    assert SMALL.min_gamma <= spec.kernel.gamma <= SMALL.max_gamma
    assert np.isfinite(spec.self_inner)


@settings(max_examples=600, deadline=None, suppress_health_check=HC)
@given(
    base=st.sampled_from(["ours", "reference", "image", "empty"]),
    changes=st.dictionaries(st.sampled_from(sorted(SPEC_FIELDS)), st.none(), max_size=4).flatmap(
        lambda keys: st.fixed_dictionaries({k: SPEC_FIELDS[k] for k in keys})),
    drop=st.lists(st.sampled_from(sorted(SPEC_FIELDS)), max_size=2),
)
def test_spec_loader_random_dicts(base, changes, drop):
    if base == "ours":
        d = table_spec_dict(k=4, d=3)
    elif base == "image":
        d = {**table_spec_dict(k=4, d=3), "type": "rkme-image", "encoder": {"id": "e"}}
    elif base == "reference":
        d = {"type": "RKMETableSpecification", "z": np.ones((3, 2)).tolist(),
             "beta": [1.0, 2.0, 1.0], "gamma": 0.1, "num_points": 10}
    else:
        d = {}
    d.update(changes)
    for k in drop:
        d.pop(k, None)
    _check_loaded(_expect_valid_or_ours(stat_spec_from_dict, d, SMALL))
    _check_loaded(_expect_valid_or_ours(stat_spec_from_dict, d, SMALL, user=True))


@settings(max_examples=300, deadline=None, suppress_health_check=HC)
@given(
    k=st.integers(0, 80), d=st.integers(0, 80),
    fill=st.sampled_from([0.0, 1.0, -1.0, np.nan, np.inf, 1e200, 1e-300]),
    beta_fill=st.sampled_from([0.0, 1.0, -1.0, np.nan, np.inf, 1e308]),
    gamma=NUMBERS,
)
def test_spec_loader_shapes_and_numbers(k, d, fill, beta_fill, gamma):
    spec = {"type": "rkme-table", "format_version": 1, "n_samples": 3,
            "kernel": {"type": "gaussian", "gamma": gamma, "scale": [1.0] * d},
            "z": np.full((k, d), fill).tolist(), "beta": np.full(k, beta_fill).tolist()}
    _check_loaded(_expect_valid_or_ours(stat_spec_from_dict, spec, SMALL))


@settings(max_examples=300, deadline=None, suppress_health_check=HC)
@given(raw=st.one_of(
    st.binary(max_size=200),
    st.lists(st.sampled_from(['{', '}', '[', ']', ',', ':', '"z"', '"beta"', '"type"',
                              '"rkme-table"', '1', 'NaN', '-Infinity', '1e999', 'null']),
             max_size=40).map(lambda t: "".join(t).encode()),
    st.integers(1, 5000).map(lambda n: b"[" * n + b"]" * n),
))
def test_spec_file_loader_random_bytes(work, raw):
    p = _fresh(work, ".json")
    p.write_bytes(raw)
    _check_loaded(_expect_valid_or_ours(load_stat_spec, p, SMALL))
    p.unlink()


# ---------------------------------------------------------------------- CLI data readers

CSV_BYTES = st.one_of(
    st.binary(max_size=300),
    st.lists(
        st.lists(st.sampled_from(["1", "2.5", "-3", "nan", "inf", "", "a", '"', "1e999", "x,y",
                                  "\t", "\r", "\x00", "é", "0x1", "True"]), max_size=5)
        .map(",".join), max_size=8,
    ).map(lambda rows: "\n".join(rows).encode("utf-8")),
)


@settings(max_examples=300, deadline=None, suppress_health_check=HC)
@given(raw=CSV_BYTES, suffix=st.sampled_from([".csv", ".tsv", ".txt"]),
       columns=st.one_of(st.none(), st.lists(st.sampled_from(["1", "a", "x"]), max_size=2)))
def test_read_table_random_csv(work, raw, suffix, columns):
    p = _fresh(work, suffix)
    p.write_bytes(raw)
    out = _expect_valid_or_ours(read_table, p, columns or None)
    if out is not None:
        X, names = out
        assert X.ndim == 2 and X.dtype == np.float64 and len(names) == X.shape[1]
    _expect_valid_or_ours(read_texts, p, None)
    p.unlink()


def _npy_with_header(header: str, body: bytes) -> bytes:
    h = header.encode("utf-8")  # read back as latin-1: any bytes are fair game
    pad = (64 - (10 + len(h) + 1) % 64) % 64
    h = h + b" " * pad + b"\n"
    return b"\x93NUMPY\x01\x00" + len(h).to_bytes(2, "little") + h + body


NPY_HEADERS = st.one_of(
    st.builds(
        lambda descr, order, shape: f"{{'descr': {descr!r}, 'fortran_order': {order}, "
                                    f"'shape': {tuple(shape)!r}, }}",
        st.sampled_from(["<f8", "<i4", "|b1", "|O", "<U3", "<c16", "xx", "<f2", "|V8"]),
        st.sampled_from(["False", "True", "1"]),
        st.lists(st.integers(-2, 2**40), max_size=4),
    ),
    st.text(max_size=60),
    st.lists(st.sampled_from(["{", "}", "(", ")", "'descr'", "'shape'", ":", ",", "'<f8'",
                              "2**62", "[", "]", "1", "'fortran_order'", "False"]),
             max_size=20).map("".join),
)


@settings(max_examples=400, deadline=None, suppress_health_check=HC)
@given(header=NPY_HEADERS, body=st.binary(max_size=64), flips=st.lists(
    st.tuples(st.integers(0, 127), st.integers(1, 255)), max_size=3))
def test_npy_readers_random_headers(work, header, body, flips):
    data = bytearray(_npy_with_header(header, body))
    for pos, x in flips:
        if pos < len(data):
            data[pos] ^= x
    p = _fresh(work, ".npy")
    p.write_bytes(bytes(data))
    out = _expect_valid_or_ours(read_table, p)
    if out is not None:
        assert out[0].ndim == 2
    _expect_valid_or_ours(read_images, p)
    p.unlink()


@settings(max_examples=20, deadline=None, suppress_health_check=HC)
@given(arr=st.sampled_from([np.zeros((3, 2)), np.arange(6, dtype=np.int32).reshape(2, 3),
                            np.ones((2, 2, 2), dtype=np.float32), np.array([True, False])]))
def test_npy_readers_accept_plain_arrays(work, arr):
    p = _fresh(work, ".npy")
    np.save(p, arr, allow_pickle=False)
    out = _expect_valid_or_ours(read_table, p)
    assert (out is not None) == (arr.ndim == 2)
    assert read_images(p).shape == arr.shape if arr.ndim >= 2 else True
    p.unlink()

