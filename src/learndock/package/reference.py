"""Import of the reference dock's learnware zips.

A reference package has a ``learnware.yaml`` with ``model: {class_name, module_path, kwargs}``
and ``stat_specifications: [{module_path, class_name, file_name, kwargs}]``, the model class in
``__init__.py``, the spec JSON (``stat_spec.json`` by default) and ``requirements.txt`` or
``environment.yaml``. The reference *imports* whatever ``module_path``/``class_name`` say; we
only read them as strings: spec classes are mapped by name to our loaders, and the model
becomes a ``python``-format entry that runs only with explicit trust or in the sandbox.

What real reference zips need, and how each is read:

- ``learnware.yaml`` written by the reference's template carries ``!!python/tuple`` tags
  (``input_shape: !!python/tuple [64]``): read as lists by the capped safe loader; every other
  ``!!python/...`` tag is refused (:mod:`learndock.package.yamlsafe`).
- A spec JSON without a ``type`` field (older reference specs) takes the class the yaml names
  (``RKMEStatSpecification`` is the legacy name of ``RKMETableSpecification``).
- Reference image and text RKMEs are kept in their own spaces (:mod:`learndock.spec.reference`).
- The semantic spec may describe only some input features: kept as given
  (``SemanticSpec.origin == "reference"``), nothing is invented.
- ``requirements.txt``/``environment.yaml``: see :func:`read_requirements`.
- Files under one top folder are unwrapped when the zip is extracted
  (:func:`learndock.package.learnware.open_package_dir`).

Everything the conversion decided is written to ``reference_import.json`` in the converted
package (and summarised by ``check_package``), next to the original ``learnware.yaml`` kept as
``reference_learnware.yaml``.
"""

from __future__ import annotations

import ast
import importlib.metadata
import json
import re
import sys
from pathlib import Path
from typing import Any

from learndock.config import ArchiveLimits
from learndock.errors import ManifestError, PackageError, SandboxError, SpecError
from learndock.package.manifest import MANIFEST_NAME, Manifest, check_input_shape, read_capped
from learndock.package.yamlsafe import load_yaml
from learndock.spec.health import kernel_health
from learndock.spec.io import load_stat_spec
from learndock.spec.reference import REFERENCE_SPEC_KINDS, is_comparable
from learndock.spec.semantic import REFERENCE_ORIGIN, DataType, SemanticSpec, TaskType

#: Reference spec class name -> our spec type (kept under its old name for callers).
REFERENCE_SPEC_CLASSES = REFERENCE_SPEC_KINDS
CONVERTED_PREFIX = "learndock_spec_"
#: The original manifest, kept for provenance next to the converted one.
ORIGINAL_YAML = "reference_learnware.yaml"
#: What the conversion decided (notes, advisory requirements, spec diagnostics).
IMPORT_RECORD = "reference_import.json"
IMPORT_RECORD_FORMAT = "learndock-reference-import"
DEFAULT_SPEC_FILE = "stat_spec.json"
#: Largest model source file read to find its declared shapes (larger: not inferred).
MAX_SOURCE_BYTES = 1 << 20
#: Requirement lines recorded one by one (beyond: counted).
MAX_RECORDED_REQUIREMENTS = 64


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


def _inside(root: Path, name: str) -> Path | None:
    """``root/name`` if it is a regular file inside ``root``, else None (never raises)."""
    try:
        p = (root / name).resolve()
        return p if root.resolve() in p.parents and p.is_file() else None
    except (OSError, ValueError):  # a name too long for the file system, a NUL byte
        return None


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


# ---------------------------------------------------------------------- requirements


def _classify(line: str, source: str) -> tuple[str | None, dict[str, str] | None]:
    """One requirement line -> (a line for requirements.pip, or an advisory record)."""
    from learndock.sandbox.envs import parse_requirements

    def advisory(why: str) -> tuple[None, dict[str, str]]:
        return None, {"requirement": line[:200], "source": source, "why": why}

    try:
        reqs = parse_requirements([line])
    except SandboxError as exc:
        return advisory(f"not a plain requirement the dock can install ({exc})")
    if not reqs:
        return None, None
    req = reqs[0]
    if req.marker is not None and not req.marker.evaluate():
        return advisory(f"not for this platform (marker {req.marker})")
    if req.extras:
        return advisory("has extras, which the dock cannot check against its environment")
    try:
        have = importlib.metadata.version(req.name)
    except importlib.metadata.PackageNotFoundError:
        return advisory("not installed in the dock's environment")
    if req.specifier and not req.specifier.contains(have, prereleases=True):
        return advisory(f"the dock runs {req.name} {have}, outside {req.specifier}")
    return str(req), None


def read_requirements(root: Path, limits: ArchiveLimits) -> tuple[list[str], list[dict[str, str]]]:
    """The reference package's requirements as (requirements.pip, advisory records).

    Reference requirement files are written for the reference's conda/docker environments and
    routinely name packages that are not on PyPI (``sqlite``), not for Linux (``pywin32``), or
    pins the dock cannot build offline (``joblib==1.3.0``). So a requirement is *binding* (kept
    in ``requirements.pip``) only when the dock's own environment already satisfies it -- the
    package then runs on that environment, in the jail. Every other line (not installed here, a
    different pinned version, a pip option, a URL, a conda package, a Python version) is
    recorded as *advisory*, with why, in ``reference_import.json``: the jailed check then shows
    whether the model really runs with the dock's packages, and if it does not, its report
    says which import failed. Nothing is installed on a reference package's behalf.
    """
    pip: list[str] = []
    advisory: list[dict[str, str]] = []

    def take(line: str, source: str) -> None:
        keep, note = _classify(line, source)
        if keep is not None and keep not in pip:
            pip.append(keep)
        if note is not None:
            advisory.append(note)

    req = root / "requirements.txt"
    if req.is_file():
        raw = read_capped(req, limits.yaml_max_bytes, "yaml_max_bytes")
        for ln in raw.decode("utf-8", errors="replace").splitlines():
            line = ln.split("#", 1)[0].strip() if not ln.strip().startswith("-") else ln.strip()
            if line:
                take(line, "requirements.txt")
    for name in ("environment.yaml", "environment.yml"):
        env = root / name
        if not env.is_file():
            continue
        data = _read_yaml(env, limits) or {}
        deps = data.get("dependencies") if isinstance(data, dict) else None
        if deps is not None and not isinstance(deps, list):
            raise ManifestError(f"{env.name}: 'dependencies' must be a list")
        for dep in deps or []:
            if isinstance(dep, dict) and isinstance(dep.get("pip"), list):
                for p in dep["pip"]:
                    take(str(p).strip(), f"{name} (pip)")
            elif isinstance(dep, (str, int, float)):
                text = str(dep).strip()
                if re.match(r"^python\s*([=<>!~]|$)", text):
                    here = ".".join(map(str, sys.version_info[:3]))
                    why = f"a Python version; the dock runs Python {here}"
                else:
                    why = "a conda package; the dock installs no conda packages"
                advisory.append({"requirement": text[:200], "source": name, "why": why})
        break
    if len(pip) > MAX_RECORDED_REQUIREMENTS:
        raise ManifestError(
            f"the reference package lists {len(pip)} requirements; at most "
            f"{MAX_RECORDED_REQUIREMENTS} are accepted"
        )
    if len(advisory) > MAX_RECORDED_REQUIREMENTS:
        extra = len(advisory) - MAX_RECORDED_REQUIREMENTS
        advisory = advisory[:MAX_RECORDED_REQUIREMENTS] + [
            {"requirement": f"... {extra} more", "source": "", "why": "not listed"}
        ]
    return pip, advisory


# ---------------------------------------------------------------------- semantic spec


def _semantic(
    root: Path, data: dict[str, Any], semantic: Any, limits: ArchiveLimits
) -> SemanticSpec:
    if semantic is not None:
        return SemanticSpec.parse(semantic, origin=REFERENCE_ORIGIN)
    candidates = []
    sem_entry = data.get("semantic_specification")
    if isinstance(sem_entry, dict) and sem_entry.get("file_name"):
        candidates.append(str(sem_entry["file_name"]))
    candidates += ["semantic_specification.json", "semantic_spec.json"]
    for name in candidates:
        p = _inside(root, name)
        if p is not None:
            return SemanticSpec.parse(_read_json(p, limits), origin=REFERENCE_ORIGIN)
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


# ---------------------------------------------------------------------- model shapes


def _shape(value: Any) -> list[int] | None:
    if isinstance(value, (list, tuple)) and value and all(
        isinstance(s, int) and not isinstance(s, bool) and 0 < s < 2**31 for s in value
    ):
        return [int(s) for s in value]
    return None


def declared_shapes(source: Path, class_name: str) -> dict[str, list[int]]:
    """``input_shape``/``output_shape`` the model class passes to the reference's
    ``BaseModel.__init__`` as literals (``super().__init__(input_shape=(64,), ...)``), read
    from the source with :mod:`ast` -- never executed. Empty when not found or not literal."""
    try:
        if source.stat().st_size > MAX_SOURCE_BYTES:
            return {}
        tree = ast.parse(source.read_bytes(), filename=source.name)
    except (OSError, SyntaxError, ValueError, RecursionError, MemoryError):
        return {}
    scope: ast.AST = tree
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name == class_name:
            scope = node
            break
    found: dict[str, list[int]] = {}
    for node in ast.walk(scope):
        if not isinstance(node, ast.Call):
            continue
        values = {k.arg: k.value for k in node.keywords if k.arg in ("input_shape", "output_shape")}
        if isinstance(node.func, ast.Attribute) and node.func.attr == "__init__":
            for key, arg in zip(("input_shape", "output_shape"), node.args, strict=False):
                values.setdefault(key, arg)
        for key, expr in values.items():
            try:
                shape = _shape(ast.literal_eval(expr))
            except (ValueError, TypeError, SyntaxError, RecursionError, MemoryError):
                shape = None
            if shape is not None:
                found.setdefault(key, shape)
        if "input_shape" in found:
            break
    return found


def _model_shapes(root: Path, module: str, class_name: str, kwargs: dict[str, Any]
                  ) -> tuple[dict[str, list[int]], str]:
    """The model's declared shapes: its yaml kwargs first (the reference's template), then the
    literal ``BaseModel.__init__`` arguments in its source. Returns (shapes, where from)."""
    shapes = {k: s for k in ("input_shape", "output_shape") if (s := _shape(kwargs.get(k)))}
    if "input_shape" in shapes:
        return shapes, "the model's kwargs in learnware.yaml"
    src = _inside(root, module) if module.endswith(".py") else None
    if src is not None:
        from_source = declared_shapes(src, class_name)
        if "input_shape" in from_source:
            return {**from_source, **shapes}, f"{module} (read, not run)"
    return shapes, ""


# ---------------------------------------------------------------------- specs


def _load_specs(
    root: Path, data: dict[str, Any], limits: ArchiveLimits, notes: list[str]
) -> tuple[list[dict[str, Any]], list[Any], list[dict[str, Any]]]:
    """Load, check and convert every listed spec: (manifest entries, specs, records)."""
    listed = data.get("stat_specifications")
    spec_entries = listed or [{"class_name": "RKMETableSpecification",
                               "file_name": DEFAULT_SPEC_FILE}]
    if not isinstance(spec_entries, list) or not all(isinstance(e, dict) for e in spec_entries):
        raise ManifestError("reference 'stat_specifications' must be a list of mappings")
    if not listed and _inside(root, DEFAULT_SPEC_FILE) is None:
        raise PackageError(
            "reference package has no statistical specification: its learnware.yaml lists no "
            f"stat_specifications and the default file {DEFAULT_SPEC_FILE!r} is missing; a "
            "learnware needs one to be found by search (build it with the reference's "
            "generate_stat_spec or `learndock spec table`)"
        )
    entries, specs, records = [], [], []
    for i, e in enumerate(spec_entries):
        cls = str(e.get("class_name", ""))
        if cls not in REFERENCE_SPEC_KINDS:
            raise ManifestError(
                f"reference stat spec class {cls[:100]!r} is not supported (supported: "
                f"{sorted(REFERENCE_SPEC_KINDS)})"
            )
        fname = str(e.get("file_name", DEFAULT_SPEC_FILE))
        src = _inside(root, fname)
        if src is None:
            raise PackageError(f"reference stat spec file {fname[:200]!r} is missing")
        try:
            spec = load_stat_spec(src, limits, default_type=cls)
        except SpecError as exc:
            raise PackageError(f"reference stat spec {fname!r}: {exc}") from None
        kind = REFERENCE_SPEC_KINDS[cls]
        if spec.type_name != kind:
            raise PackageError(
                f"reference stat spec {fname!r}: learnware.yaml names {cls} but the file holds "
                f"a {spec.type_name} spec"
            )
        if not _has_type_field(src):
            notes.append(f"{fname} has no 'type' field: read as {cls}, the class "
                         "learnware.yaml names")
        if cls == "RKMEStatSpecification":
            notes.append(f"{fname}: RKMEStatSpecification is the reference's older name of "
                         "RKMETableSpecification; read as a table RKME")
        out_name = f"{CONVERTED_PREFIX}{i}.json"
        spec.save(root / out_name)
        record: dict[str, Any] = {"class_name": cls, "file": fname, "converted": out_name,
                                  "type": spec.type_name, "kernel": spec.kernel.to_dict()
                                  if spec.type_name == "rkme-table" else None}
        record["kernel_description"] = (
            f"RBF, gamma={spec.kernel.gamma:g}, no feature scaling (the reference's kernel)"
            if spec.type_name == "rkme-table" else str(getattr(spec, "encoder", {}).get("note")))
        if is_comparable(spec):
            health = kernel_health(spec)
            record["kernel_health"] = health.to_dict()
            if health.degenerate:
                notes.append(
                    f"{fname}: degenerate kernel -- under the reference's gamma "
                    f"{health.gamma:g} its reduced points look {health.verdict} (median kernel "
                    f"value {health.median:.2g}); search scores under this kernel carry no "
                    "signal (stat_specs[].kernel_health has the details)"
                )
        else:
            record["kernel_health"] = None
            notes.append(f"{fname}: {cls} kept for provenance and flagged comparable: false "
                         "(learndock has no CNN-GP kernel; its island holds it alone)")
        if spec.type_name == "rkme-text":
            notes.append(f"{fname}: {cls} kept in the reference encoder's space "
                         f"({spec.encoder['id']}, RBF gamma {spec.kernel.gamma:g}): comparable "
                         "with other reference text specs of that encoder only; learndock "
                         "cannot embed texts in that space")
        entries.append({"type": spec.type_name, "file": out_name})
        specs.append(spec)
        records.append(record)
    return entries, specs, records


def _has_type_field(path: Path) -> bool:
    """Whether the (already loaded, so size-checked) spec file has a ``"type"`` key. Reference
    spec JSON has no other key of that name (their nested ``model_config`` has none)."""
    try:
        return b'"type"' in path.read_bytes()
    except OSError:
        return True


# ---------------------------------------------------------------------- conversion


def _input_shape(
    sem: SemanticSpec, specs: list[Any], shapes: dict[str, list[int]], where: str,
    notes: list[str],
) -> list[int]:
    declared = shapes.get("input_shape")
    if sem.data_type is DataType.TEXT:
        return [1]
    if sem.data_type is DataType.IMAGE:
        if declared is not None:
            return declared
        sample = next((s.encoder.get("sample_shape") for s in specs
                       if isinstance(getattr(s, "encoder", None), dict)
                       and s.encoder.get("sample_shape")), None)
        if sample is None:
            raise ManifestError("cannot tell the image input shape: the model declares no "
                                "input_shape and no reference image spec gives one")
        notes.append(f"input shape {sample} taken from the reference image spec's reduced set; "
                     "the model declares none")
        return [int(s) for s in sample]
    dims = {s.dimension for s in specs if s.type_name == "rkme-table"}
    if sem.input is not None:
        dimension = sem.input.dimension
    elif len(dims) == 1:
        dimension = dims.pop()
    elif declared is not None and len(declared) == 1:
        dimension = declared[0]
    else:
        raise ManifestError("cannot tell the input dimension: give the semantic spec an 'input'")
    if declared is not None and declared != [dimension]:
        raise ManifestError(
            f"the model declares input_shape {declared} (in {where}) but the semantic spec's "
            f"input dimension is {dimension}"
        )
    return [dimension]


def convert_reference_dir(
    root: Path,
    semantic: Any = None,
    version: str = "1.0.0",
    limits: ArchiveLimits | None = None,
    *,
    notes: list[str] | None = None,
) -> Manifest:
    """Rewrite ``root`` (a private copy) as a learndock package; returns the new manifest.

    ``notes``: what was already done to the copy (e.g. a top folder unwrapped), recorded in
    ``reference_import.json`` with the conversion's own notes.
    """
    limits = limits or ArchiveLimits()
    notes = list(notes or [])
    yaml_path = root / MANIFEST_NAME
    data = _read_yaml(yaml_path, limits)
    if not isinstance(data, dict):
        raise ManifestError(f"{MANIFEST_NAME} must be a mapping")
    if b"!!python/tuple" in read_capped(yaml_path, limits.yaml_max_bytes, "yaml_max_bytes"):
        notes.append("learnware.yaml uses !!python/tuple tags: read as lists")
    model = data.get("model") or {}
    if not isinstance(model, dict):
        raise ManifestError("reference 'model' entry must be a mapping")
    kwargs = model.get("kwargs") or {}
    if not isinstance(kwargs, dict):
        raise ManifestError("reference model 'kwargs' must be a mapping")
    try:
        json.dumps(kwargs, allow_nan=False)
    except (TypeError, ValueError):
        raise ManifestError(
            "reference model 'kwargs' must be plain data (strings, numbers, lists, mappings)"
        ) from None
    module = str(model.get("module_path", "__init__.py"))
    class_name = str(model.get("class_name", "Model"))
    sem = _semantic(root, data, semantic, limits)
    if sem.input is not None and sem.input.n_missing:
        given = sem.input.dimension - sem.input.n_missing
        notes.append(f"the semantic spec describes {given} of {sem.input.dimension} input "
                     "features; kept as given (the reference format allows partial "
                     "descriptions; none is invented)")
    entries, specs, records = _load_specs(root, data, limits, notes)
    shapes, where = _model_shapes(root, module, class_name, kwargs)
    shape = _input_shape(sem, specs, shapes, where, notes)
    if sem.data_type is DataType.TABLE:
        _check_dimensions(sem, shape[0], limits)
    else:
        check_input_shape({"shape": shape}, limits)
        _check_dimensions(sem, 1, limits)
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
        features = [{"name": f"f{i}", "dtype": "float"} for i in range(shape[0])]
    pip, advisory = read_requirements(root, limits)
    if advisory:
        notes.append(
            f"{len(advisory)} requirement(s) advisory, not installed: "
            + "; ".join(f"{a['requirement']} ({a['why']})" for a in advisory[:8])
            + ("; ..." if len(advisory) > 8 else "")
        )
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
                "module": module,
                "class_name": class_name,
                "kwargs": kwargs,
                "methods": ["predict", "fit", "finetune"],
            },
            "input": {"shape": shape, "features": features},
            "output": output,
            "stat_specs": entries,
            "requirements": {"python": ">=3.8", "pip": pip},
        }
    )
    record = {
        "format": IMPORT_RECORD_FORMAT,
        "version": 1,
        "original_manifest": ORIGINAL_YAML,
        "model": {"class_name": class_name, "module": module,
                  "declared_shapes": shapes, "shapes_from": where or None},
        "stat_specs": records,
        "requirements": {"pip": pip, "advisory": advisory},
        "notes": notes,
    }
    (root / IMPORT_RECORD).write_text(json.dumps(record, indent=1, allow_nan=False),
                                      encoding="utf-8")
    yaml_path.rename(root / ORIGINAL_YAML)
    manifest.save(root)
    return manifest


def read_import_record(root: Path, limits: ArchiveLimits | None = None) -> dict[str, Any] | None:
    """The ``reference_import.json`` of a converted package, or None (absent or unreadable).

    It is a file of the package: what it says was recorded when the package was converted
    (by this dock or by whoever packed it), so callers show it as such."""
    limits = limits or ArchiveLimits()
    path = _inside(root, IMPORT_RECORD)
    if path is None:
        return None
    try:
        data = _read_json(path, limits)
    except ManifestError:
        return None
    if not isinstance(data, dict) or data.get("format") != IMPORT_RECORD_FORMAT:
        return None
    return data
