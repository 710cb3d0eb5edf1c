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

import yaml

from learndock.errors import ManifestError, PackageError, SpecError
from learndock.package.manifest import MANIFEST_NAME, Manifest
from learndock.spec.io import load_stat_spec
from learndock.spec.semantic import DataType, SemanticSpec, TaskType

_SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # C speed, same safety

REFERENCE_SPEC_CLASSES = {"RKMETableSpecification": "rkme-table", "RKMEStatSpecification": "rkme-table"}
CONVERTED_PREFIX = "learndock_spec_"


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.load(path.read_bytes(), Loader=_SafeLoader)
    except yaml.YAMLError as exc:
        raise ManifestError(f"{path.name} is not valid YAML: {exc}") from None


def is_reference_dir(root: Path) -> bool:
    """True when ``root/learnware.yaml`` is in the reference format (not ours)."""
    path = root / MANIFEST_NAME
    if not path.is_file():
        return False
    data = _read_yaml(path)
    if not isinstance(data, dict) or "format_version" in data:
        return False
    model = data.get("model")
    return "stat_specifications" in data or (isinstance(model, dict) and "class_name" in model)


def _requirements(root: Path) -> list[str]:
    req = root / "requirements.txt"
    if req.is_file():
        lines = req.read_text(encoding="utf-8", errors="replace").splitlines()
        return [ln.split("#", 1)[0].strip() for ln in lines if ln.split("#", 1)[0].strip()
                and not ln.strip().startswith("-")]
    env = root / "environment.yaml"
    if not env.is_file():
        env = root / "environment.yml"
    if env.is_file():
        data = _read_yaml(env) or {}
        pip: list[str] = []
        for dep in data.get("dependencies", []) or []:
            if isinstance(dep, dict) and isinstance(dep.get("pip"), list):
                pip.extend(str(p) for p in dep["pip"])
        return pip
    return []


def _semantic(root: Path, data: dict[str, Any], semantic: Any) -> SemanticSpec:
    if semantic is not None:
        return SemanticSpec.parse(semantic)
    candidates = []
    sem_entry = data.get("semantic_specification")
    if isinstance(sem_entry, dict) and sem_entry.get("file_name"):
        candidates.append(str(sem_entry["file_name"]))
    candidates += ["semantic_specification.json", "semantic_spec.json"]
    for name in candidates:
        p = (root / name).resolve()
        if root.resolve() in p.parents and p.is_file():
            try:
                return SemanticSpec.parse(json.loads(p.read_text(encoding="utf-8")))
            except json.JSONDecodeError as exc:
                raise ManifestError(f"{name} is not valid JSON: {exc}") from None
    raise ManifestError(
        "reference package carries no semantic specification; pass one (semantic=... or "
        "--semantic FILE)"
    )


def convert_reference_dir(root: Path, semantic: Any = None, version: str = "1.0.0") -> Manifest:
    """Rewrite ``root`` (a private copy) as a learndock package; returns the new manifest."""
    data = _read_yaml(root / MANIFEST_NAME)
    if not isinstance(data, dict):
        raise ManifestError(f"{MANIFEST_NAME} must be a mapping")
    model = data.get("model") or {}
    if not isinstance(model, dict):
        raise ManifestError("reference 'model' entry must be a mapping")
    sem = _semantic(root, data, semantic)
    spec_entries = data.get("stat_specifications") or [
        {"class_name": "RKMETableSpecification", "file_name": "stat_spec.json"}
    ]
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
        src = (root / fname).resolve()
        if root.resolve() not in src.parents or not src.is_file():
            raise PackageError(f"reference stat spec file {fname!r} is missing")
        try:
            spec = load_stat_spec(src)
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
            "requirements": {"python": ">=3.8", "pip": _requirements(root)},
        }
    )
    (root / MANIFEST_NAME).rename(root / "reference_learnware.yaml")
    manifest.save(root)
    return manifest
