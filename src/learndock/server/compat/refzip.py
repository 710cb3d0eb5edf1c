"""A stored learnware as a reference-format zip, for the reference client's ``load_learnware``.

The reference client extracts the zip, reads ``learnware.yaml`` with ``yaml.safe_load`` (so no
``!!python/tuple`` tags), takes the learnware id from its ``id`` and the semantic specification
from the file its ``semantic_specification.file_name`` names, builds each listed statistical
spec by importing ``module_path``/``class_name`` and ``load``-ing ``file_name``, and imports the
model class from ``model.module_path`` in its own environment. Two layouts are served:

- **Reference uploads** (a ``python`` model converted from the reference format): the original
  files come back, with the original ``learnware.yaml`` rewritten as plain YAML (tuples read as
  lists), its stat spec entries normalised to ``learnware.specification`` classes, and ``id`` and
  ``semantic_specification`` added; learndock's conversion files (its manifest, converted specs,
  import record) are left out.
- **learndock packages** (skops, ONNX, ``python``): the package goes in unchanged under
  ``learndock/`` and :mod:`learndock.server.compat.wrapper_model` becomes ``__init__.py``; a
  table spec is written in the reference's RKME format (``stat_spec.json``), and a scikit-learn
  model is also pickled (``learndock_model.pkl``) for clients without skops. Image and text
  specs of learndock live in its encoders' spaces, which the reference cannot compute: no stat
  spec is listed for them (the model still loads and predicts).

Built zips are cached under ``<home>/cache/beimingwu`` by (learnware id, package sha256, layout
version); each cached zip's own sha256 is kept beside it and checked before it is served (a
mismatch rebuilds it). The cache is bounded (oldest first out).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pickle
import shutil
import tempfile
import threading
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from learndock.config import ArchiveLimits
from learndock.package.learnware import Learnware, load_learnware
from learndock.package.manifest import MANIFEST_NAME, read_capped
from learndock.package.reference import (
    CONVERTED_PREFIX,
    DEFAULT_SPEC_FILE,
    IMPORT_RECORD,
    ORIGINAL_YAML,
    REFERENCE_SPEC_CLASSES,
)
from learndock.package.yamlsafe import load_yaml
from learndock.spec.semantic import DataType, SemanticSpec
from learndock.spec.table import RKMETableSpec

#: Version of the served layout: part of the cache key (a new layout rebuilds every zip).
LAYOUT_VERSION = 1
SEMANTIC_FILE = "semantic_specification.json"
PACKAGE_DIR = "learndock"
PICKLE_FILE = "learndock_model.pkl"
RUNTIME_FILE = "learndock_runtime.json"
WRAPPER_CLASS = "LearndockModel"
#: The model class's source (never imported here: it imports the reference's ``learnware``).
WRAPPER_SOURCE = Path(__file__).with_name("wrapper_model.py")
#: Cached zips kept at most (bytes, all together).
DEFAULT_CACHE_BYTES = 4 * 1024**3
_FIXED_TIME = (2020, 1, 1, 0, 0, 0)
#: A half-written build older than this was left by a killed process.
STALE_BUILD_S = 3600.0


# ---------------------------------------------------------------------- pieces
def reference_semantic(sem: SemanticSpec) -> dict[str, Any]:
    """The reference's semantic dict, with the ``Model`` key its client-side checker requires
    of table and image learnwares (learndock has no model-type vocabulary: ``Others``)."""
    out = sem.to_reference_dict()
    out["Model"] = {"Type": "Optional", "Values": ["Others"]}
    return out


def reference_table_spec(spec: RKMETableSpec) -> tuple[dict[str, Any], bool]:
    """An RKME table spec as the reference's ``RKMETableSpecification`` JSON, and whether the
    conversion is exact. The reference's kernel is ``exp(-gamma ||x - y||^2)`` on raw features;
    learndock's divides each feature by its ``scale`` first. With one scale for every feature
    the two agree exactly (``gamma / scale^2``); otherwise ``gamma * mean(1 / scale^2)`` is used,
    the same kernel on average over features (the exact spec is in ``learndock/``)."""
    inv = 1.0 / np.square(spec.kernel.scale)
    exact = bool(np.all(inv == inv[0]))
    gamma = float(spec.kernel.gamma * (inv[0] if exact else inv.mean()))
    return {"type": "RKMETableSpecification", "gamma": gamma, "num_points": int(spec.n_samples),
            "z": spec.z.tolist(), "beta": spec.beta.tolist()}, exact


def _yaml(data: dict[str, Any]) -> str:
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=1, ensure_ascii=False), encoding="utf-8")


def _copy_tree(src: Path, dst: Path, skip: set[str]) -> None:
    for p in sorted(src.rglob("*")):
        rel = p.relative_to(src).as_posix()
        if rel in skip or "__pycache__" in p.parts or p.is_symlink():
            continue
        if p.is_dir():
            (dst / rel).mkdir(parents=True, exist_ok=True)
        elif p.is_file():
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(p, dst / rel)


def _zip_dir(src: Path, out: Path) -> None:
    """A deterministic zip of ``src`` (sorted names, fixed times)."""
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for p in sorted(src.rglob("*")):
            if p.is_file() and not p.is_symlink():
                info = zipfile.ZipInfo(p.relative_to(src).as_posix(), _FIXED_TIME)
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = 0o644 << 16
                with open(p, "rb") as f, zf.open(info, "w") as dst:
                    shutil.copyfileobj(f, dst, 1 << 20)


# ---------------------------------------------------------------------- layouts
def _reference_layout(lw: Learnware, learnware_id: str, stage: Path,
                       limits: ArchiveLimits) -> None:
    """A converted reference upload, back in its own layout."""
    root = lw.root
    generated = {MANIFEST_NAME, ORIGINAL_YAML, IMPORT_RECORD, SEMANTIC_FILE}
    generated |= {p.name for p in root.glob(f"{CONVERTED_PREFIX}*.json")}
    _copy_tree(root, stage, generated)
    original = load_yaml(read_capped(root / ORIGINAL_YAML, limits.yaml_max_bytes,
                                     "yaml_max_bytes"), limits, ORIGINAL_YAML)
    original = original if isinstance(original, dict) else {}
    model = dict(original.get("model") or {})
    model["class_name"] = str(model.get("class_name") or "Model")
    model["module_path"] = str(model.get("module_path") or "__init__.py")
    model["kwargs"] = dict(model.get("kwargs") or {})
    specs = []
    for e in original.get("stat_specifications") or [
            {"class_name": "RKMETableSpecification", "file_name": DEFAULT_SPEC_FILE}]:
        cls = str(e.get("class_name", ""))
        if cls in REFERENCE_SPEC_CLASSES:  # the import refused any other
            specs.append({"module_path": "learnware.specification", "class_name": cls,
                          "file_name": str(e.get("file_name", DEFAULT_SPEC_FILE)),
                          "kwargs": dict(e.get("kwargs") or {})})
    manifest: dict[str, Any] = {"id": learnware_id}
    if original.get("name"):
        manifest["name"] = str(original["name"])
    manifest.update({"model": model, "stat_specifications": specs,
                     "semantic_specification": {"file_name": SEMANTIC_FILE}})
    (stage / MANIFEST_NAME).write_text(_yaml(manifest), encoding="utf-8")
    _write_json(stage / SEMANTIC_FILE, reference_semantic(lw.semantic))


def _runtime_config(lw: Learnware) -> dict[str, Any]:
    m = lw.manifest
    out = m.output
    if out.kind == "label":
        output_shape: list[int] | None = [1]
    elif out.kind == "probabilities":
        output_shape = [len(out.labels or [])]
    elif out.kind == "auto":
        output_shape = None
    else:
        output_shape = list(out.shape) or [1]
    return {
        "format": m.model.format,
        "package_dir": PACKAGE_DIR,
        "file": m.model.file,
        "module": m.model.module,
        "class_name": m.model.class_name,
        "kwargs": m.model.kwargs,
        "label_output": m.model.label_output,
        "proba_output": m.model.proba_output,
        "data_type": m.semantic.data_type.value,
        "input_shape": None if m.semantic.data_type is DataType.TEXT else list(m.input.shape),
        "output_kind": out.kind,
        "labels": out.labels,
        "value_shape": list(out.shape),
        "output_shape": output_shape,
        "learnware": {"name": m.name, "version": m.version, "digest": lw.digest},
    }


def _wrapped_layout(lw: Learnware, learnware_id: str, stage: Path) -> None:
    """A learndock package inside a reference-format learnware."""
    m = lw.manifest
    _copy_tree(lw.root, stage / PACKAGE_DIR, set())
    cfg = _runtime_config(lw)
    notes = []
    requirements = ["numpy"]
    if m.model.format == "skops":
        import sklearn
        import skops
        import skops.io as sio

        from learndock.package.runtime import SkopsRuntime

        path = lw.root / str(m.model.file)
        model = SkopsRuntime(path).model  # the dock's own trust policy (as Market.load)
        with open(stage / PICKLE_FILE, "wb") as f:
            pickle.dump(model, f, protocol=4)
        cfg.update(trusted_types=sorted(sio.get_untrusted_types(file=str(path))),
                   pickle=PICKLE_FILE,
                   pickle_sha256=hashlib.sha256((stage / PICKLE_FILE).read_bytes()).hexdigest(),
                   sklearn_version=sklearn.__version__)
        requirements += [f"scikit-learn=={sklearn.__version__}", f"skops>={skops.__version__}"]
        notes.append(f"scikit-learn model: loaded with skops when installed, else from "
                     f"{PICKLE_FILE} (written with scikit-learn {sklearn.__version__})")
    elif m.model.format == "onnx":
        requirements.append("onnxruntime")
        notes.append("ONNX model: needs onnxruntime in the loading environment")
    else:
        requirements += [r for r in m.requirements.pip if r not in requirements]
    stat_entries = []
    table = next((s for s in lw.specs.values() if s.type_name == "rkme-table"), None)
    if table is not None:
        data, exact = reference_table_spec(table)
        _write_json(stage / DEFAULT_SPEC_FILE, data)
        stat_entries.append({"module_path": "learnware.specification",
                             "class_name": "RKMETableSpecification",
                             "file_name": DEFAULT_SPEC_FILE, "kwargs": {}})
        if not exact:
            notes.append("stat_spec.json: learndock's per-feature kernel scales replaced by one "
                         "gamma (approximate); the exact spec is under learndock/")
    elif lw.specs:
        notes.append("no reference stat spec: learndock's image/text specs live in its "
                     "encoders' spaces, which the reference cannot compute")
    cfg["notes"] = notes
    _write_json(stage / RUNTIME_FILE, cfg)
    shutil.copyfile(WRAPPER_SOURCE, stage / "__init__.py")
    (stage / "requirements.txt").write_text("\n".join(requirements) + "\n", encoding="utf-8")
    manifest = {
        "id": learnware_id,
        "name": m.name,
        "model": {"class_name": WRAPPER_CLASS, "module_path": "__init__.py", "kwargs": {}},
        "stat_specifications": stat_entries,
        "semantic_specification": {"file_name": SEMANTIC_FILE},
    }
    (stage / MANIFEST_NAME).write_text(_yaml(manifest), encoding="utf-8")
    _write_json(stage / SEMANTIC_FILE, reference_semantic(m.semantic))


def is_reference_upload(lw: Learnware) -> bool:
    return lw.manifest.model.format == "python" and (lw.root / ORIGINAL_YAML).is_file()


def build_reference_zip(package: Path, learnware_id: str, out: Path,
                        limits: ArchiveLimits | None = None) -> Path:
    """Write the reference-format zip of a (verified) learndock package to ``out``."""
    limits = limits or ArchiveLimits()
    stage = Path(tempfile.mkdtemp(prefix="learndock-refzip-"))
    try:
        with load_learnware(package, limits=limits) as lw:
            if is_reference_upload(lw):
                _reference_layout(lw, learnware_id, stage, limits)
            else:
                _wrapped_layout(lw, learnware_id, stage)
        _zip_dir(stage, out)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return out


# ---------------------------------------------------------------------- cache
def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def _link_or_copy(src: Path, dest: Path) -> None:
    try:
        os.link(src, dest)
    except OSError:
        shutil.copyfile(src, dest)


class ReferenceZips:
    """Reference-format zips of stored packages, built once per (learnware, package)."""

    def __init__(self, directory: Path, limits: ArchiveLimits | None = None,
                 max_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        self.dir, self.limits, self.max_bytes = directory, limits or ArchiveLimits(), max_bytes
        #: Builds of one key are serialised (keys hashed onto a fixed set of locks).
        self._locks = [threading.Lock() for _ in range(64)]

    def _key(self, learnware_id: str, package_sha256: str) -> str:
        return f"{learnware_id}-{package_sha256[:40]}-l{LAYOUT_VERSION}"

    def serve(self, package: Path, package_sha256: str, learnware_id: str, dest: Path) -> Path:
        """Put the learnware's reference zip at ``dest`` (a private link or copy of the cached
        one; built from ``package`` -- whose bytes the caller verified -- on a miss)."""
        key = self._key(learnware_id, package_sha256)
        lock = self._locks[int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) % 64]
        with lock:
            zip_path, sha_path = self.dir / f"{key}.zip", self.dir / f"{key}.sha256"
            try:
                if _file_sha256(zip_path) == sha_path.read_text().strip():
                    _link_or_copy(zip_path, dest)
                    with contextlib.suppress(OSError):
                        os.utime(zip_path)
                    return dest
            except OSError:
                pass  # not cached (or half written): build it
            self.dir.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".build-", suffix=".zip", dir=self.dir)
            os.close(fd)
            try:
                build_reference_zip(package, learnware_id, Path(tmp), self.limits)
                digest = _file_sha256(Path(tmp))
                _link_or_copy(Path(tmp), dest)
                os.replace(tmp, zip_path)
                sha_tmp = self.dir / f".{key}.sha256.tmp"
                sha_tmp.write_text(digest + "\n")
                os.replace(sha_tmp, sha_path)
            finally:
                Path(tmp).unlink(missing_ok=True)
        self._evict()
        return dest

    def forget(self, learnware_id: str) -> None:
        """Drop the learnware's cached zips (it was deleted)."""
        for p in self.dir.glob(f"{learnware_id}-*"):
            with contextlib.suppress(OSError):
                p.unlink()

    def _evict(self) -> None:
        """Remove the least recently served zips while the cache is over its size."""
        zips, now = [], time.time()
        for p in self.dir.glob("*.zip"):
            with contextlib.suppress(OSError):
                st = p.stat()
                if p.name.startswith(".") and now - st.st_mtime < STALE_BUILD_S:
                    continue  # a build in progress (an older one was left by a killed process)
                zips.append((st.st_mtime, st.st_size, p))
        total = sum(size for _, size, _ in zips)
        for _, size, p in sorted(zips):
            if total <= self.max_bytes:
                break
            with contextlib.suppress(OSError):
                p.unlink()
                p.with_suffix(".sha256").unlink(missing_ok=True)
            total -= size
