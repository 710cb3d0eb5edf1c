"""Import of the reference dock's learnware zips.

A reference package has a ``learnware.yaml`` with ``model: {class_name, module_path, kwargs}``
and ``stat_specifications: [{module_path, class_name, file_name, kwargs}]``, the model class in
``__init__.py``, the spec JSON (``stat_spec.json`` by default) and ``requirements.txt`` or
``environment.yaml``. The reference *imports* whatever ``module_path``/``class_name`` say; we
only read them as strings: spec classes are mapped by name to our loaders, and the model
becomes a ``python``-format entry that runs only with explicit trust or in the sandbox.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from learndock.config import ArchiveLimits
from learndock.errors import ManifestError, PackageError, SpecError
from learndock.package.manifest import MANIFEST_NAME, Manifest, check_input_shape, read_capped
from learndock.package.yamlsafe import load_yaml
from learndock.spec.io import load_stat_spec
from learndock.spec.semantic import DataType, SemanticSpec, TaskType

REFERENCE_SPEC_CLASSES = {"RKMETableSpecification": "rkme-table", "RKMEStatSpecification": "rkme-table"}
CONVERTED_PREFIX = "learndock_spec_"


def _read_yaml(path: Path, limits: ArchiveLimits) -> Any:
    """An uploaded YAML file, within the manifest caps (size, aliases, expanded nodes)."""
    return load_yaml(read_capped(path, limits.yaml_max_bytes, "yaml_max_bytes"), limits, path.name)


def _read_json(path: Path, limits: ArchiveLimits) -> Any:
    """A small uploaded JSON file (semantic spec), capped like a manifest."""
    raw = read_capped(path, limits.yaml_max_bytes, "yaml_max_bytes")
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ManifestError(f"{path.name} is not valid JSON: {exc}") from None


def is_reference_dir(root: Path, limits: ArchiveLimits | None = None) -> bool:
    """True when ``root/learnware.yaml`` is in the reference format (not ours)."""
    path = root / MANIFEST_NAME
    if not path.is_file():
        return False
    data = _read_yaml(path, limits or ArchiveLimits())
    if not isinstance(data, dict) or "format_version" in data:
        return False
    model = data.get("model")
    return "stat_specifications" in data or (isinstance(model, dict) and "class_name" in model)


def _requirements(root: Path, limits: ArchiveLimits) -> list[str]:
    req = root / "requirements.txt"
    if req.is_file():
        raw = read_capped(req, limits.yaml_max_bytes, "yaml_max_bytes")
        lines = raw.decode("utf-8", errors="replace").splitlines()
        return [ln.split("#", 1)[0].strip() for ln in lines if ln.split("#", 1)[0].strip()
                and not ln.strip().startswith("-")]
    env = root / "environment.yaml"
    if not env.is_file():
        env = root / "environment.yml"
    if env.is_file():
        data = _read_yaml(env, limits) or {}
        deps = data.get("dependencies") if isinstance(data, dict) else None
        if deps is not None and not isinstance(deps, list):
            raise ManifestError(f"{env.name}: 'dependencies' must be a list")
        pip: list[str] = []
        for dep in deps or []:
            if isinstance(dep, dict) and isinstance(dep.get("pip"), list):
                pip.extend(str(p) for p in dep["pip"])
        return pip
    return []


def _semantic(
    root: Path, data: dict[str, Any], semantic: Any, limits: ArchiveLimits
) -> SemanticSpec:
    if semantic is not None:
        return SemanticSpec.parse(semantic)
    candidates = []
    sem_entry = data.get("semantic_specification")
    if isinstance(sem_entry, dict) and sem_entry.get("file_name"):
        candidates.append(str(sem_entry["file_name"]))
    candidates += ["semantic_specification.json", "semantic_spec.json"]
    for name in candidates:
        try:
            p = (root / name).resolve()
            found = root.resolve() in p.parents and p.is_file()
        except (OSError, ValueError):  # a name too long for the file system, a NUL byte
            continue
        if found:
            return SemanticSpec.parse(_read_json(p, limits))
    raise ManifestError(
        "reference package carries no semantic specification; pass one (semantic=... or "
        "--semantic FILE)"
    )


def _check_dimensions(sem: SemanticSpec, dimension: int, limits: ArchiveLimits) -> None:
    """The converted manifest lists one feature per input dimension and one label per class:
    refuse sizes past the caps before building those lists."""
    check_input_shape({"shape": [dimension]}, limits)
    n_out = sem.output.dimension if sem.output is not None else 1
    for what, n in (("input features", dimension if sem.data_type is DataType.TABLE else 0),
                    ("output labels", n_out if sem.task_type is TaskType.CLASSIFICATION else 0)):
        if n > limits.yaml_max_nodes:
            raise ManifestError(
                f"reference semantic spec declares {n} {what}; the converted manifest would "
                f"exceed {limits.yaml_max_nodes} YAML nodes (LEARNDOCK_ZIP_YAML_MAX_NODES)"
            )
    if sem.task_type is not TaskType.CLASSIFICATION:
        check_input_shape({"shape": [n_out]}, limits)  # an output row is a sample too


def convert_reference_dir(
    root: Path,
    semantic: Any = None,
    version: str = "1.0.0",
    limits: ArchiveLimits | None = None,
) -> Manifest:
    """Rewrite ``root`` (a private copy) as a learndock package; returns the new manifest."""
    limits = limits or ArchiveLimits()
    data = _read_yaml(root / MANIFEST_NAME, limits)
    if not isinstance(data, dict):
        raise ManifestError(f"{MANIFEST_NAME} must be a mapping")
    model = data.get("model") or {}
    if not isinstance(model, dict):
        raise ManifestError("reference 'model' entry must be a mapping")
    sem = _semantic(root, data, semantic, limits)
    spec_entries = data.get("stat_specifications") or [
        {"class_name": "RKMETableSpecification", "file_name": "stat_spec.json"}
    ]
    if not isinstance(spec_entries, list) or not all(isinstance(e, dict) for e in spec_entries):
        raise ManifestError("reference 'stat_specifications' must be a list of mappings")
    stat_specs = []
    dims = set()
    for i, e in enumerate(spec_entries):
        cls = str(e.get("class_name", ""))
        if cls not in REFERENCE_SPEC_CLASSES:
            raise ManifestError(
                f"reference stat spec class {cls!r} is not supported (supported: "
                f"{sorted(REFERENCE_SPEC_CLASSES)})"
            )
        fname = str(e.get("file_name", "stat_spec.json"))
        try:
            src = (root / fname).resolve()
            found = root.resolve() in src.parents and src.is_file()
        except (OSError, ValueError):  # a name too long for the file system, a NUL byte
            found = False
        if not found:
            raise PackageError(f"reference stat spec file {fname[:200]!r} is missing")
        try:
            spec = load_stat_spec(src, limits)
        except SpecError as exc:
            raise PackageError(f"reference stat spec {fname!r}: {exc}") from None
        out_name = f"{CONVERTED_PREFIX}{i}.json"
        spec.save(root / out_name)
        dims.add(spec.dimension)
        stat_specs.append({"type": REFERENCE_SPEC_CLASSES[cls], "file": out_name})
    if sem.input is not None:
        dimension = sem.input.dimension
    elif len(dims) == 1:
        dimension = dims.pop()
    else:
        raise ManifestError("cannot tell the input dimension: give the semantic spec an 'input'")
    _check_dimensions(sem, dimension, limits)
    output: dict[str, Any]
    if sem.task_type is TaskType.CLASSIFICATION:
        n_classes = sem.output.dimension if sem.output else 2
        # Reference classifiers output labels (shape (1,)) or per-class scores (shape (C,));
        # which one is only known by running the model, hence 'auto'.
        output = {"kind": "auto", "labels": list(range(n_classes))}
    elif sem.task_type is TaskType.REGRESSION:
        dim = sem.output.dimension if sem.output else 1
        output = {"kind": "value", "shape": [] if dim == 1 else [dim]}
    else:
        output = {"kind": "embedding", "shape": [sem.output.dimension] if sem.output else []}
    features = None
    if sem.data_type is DataType.TABLE:
        features = [{"name": f"f{i}", "dtype": "float"} for i in range(dimension)]
    name = str(data.get("name") or sem.name)
    safe = "".join(c if c.isalnum() or c in "._-" else "-" for c in name).strip("-._") or "learnware"
    manifest = Manifest.parse(
        {
            "format_version": 1,
            "name": safe[:128],
            "version": version,
            "semantic": sem,
            "model": {
                "format": "python",
                "module": str(model.get("module_path", "__init__.py")),
                "class_name": str(model.get("class_name", "Model")),
                "kwargs": model.get("kwargs") or {},
                "methods": ["predict", "fit", "finetune"],
            },
            "input": {"shape": [dimension], "features": features},
            "output": output,
            "stat_specs": stat_specs,
            "requirements": {"python": ">=3.8", "pip": _requirements(root, limits)},
        }
    )
    (root / MANIFEST_NAME).rename(root / "reference_learnware.yaml")
    manifest.save(root)
    return manifest
