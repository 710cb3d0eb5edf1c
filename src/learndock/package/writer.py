"""Write a learnware package from a fitted scikit-learn model (the developer's side).

``write_package`` stores the model in a code-free format (skops or ONNX), infers the
input/output contract from the estimator (``n_features_in_``, ``classes_``), writes the
statistical spec and a validated manifest -- everything ``learndock pack`` needs.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml

from learndock.errors import PackageError
from learndock.package.manifest import MANIFEST_NAME, Manifest
from learndock.spec.io import StatSpec
from learndock.spec.semantic import DataType, SemanticSpec, TaskType


def _labels(model: Any) -> list[Any] | None:
    classes = getattr(model, "classes_", None)
    if classes is None:
        return None
    arr = np.asarray(classes)
    if arr.dtype.kind in "iub":
        return [int(c) for c in arr]
    if arr.dtype.kind == "f" and np.all(arr == np.round(arr)):
        return [int(c) for c in arr]
    return [str(c) for c in arr]


def write_package(
    directory: str | Path,
    model: Any,
    *,
    name: str,
    semantic: SemanticSpec | dict[str, Any],
    spec: StatSpec,
    model_format: Literal["skops", "onnx"] = "skops",
    version: str = "1.0.0",
    feature_names: list[str] | None = None,
    pip_requirements: list[str] | None = None,
    input_shape: list[int] | None = None,
    labels: list[Any] | None = None,
) -> Manifest:
    """Write a complete package for a fitted estimator into ``directory`` (created if needed).

    ``model`` is a fitted scikit-learn estimator, or (with ``model_format="onnx"``) the bytes
    or path of an ONNX graph exported elsewhere (e.g. a torch network; pass ``labels``; its
    ``probabilities`` output, if any, is used for ``predict_proba``). Image learnwares give
    ``input_shape`` (``[H, W]`` or ``[C, H, W]``); text learnwares take one string per sample.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    prebuilt_onnx = isinstance(model, (bytes, str, Path))
    if not isinstance(semantic, SemanticSpec):
        semantic = _complete_semantic(dict(semantic), name, model, spec, feature_names, labels,
                                      prebuilt_onnx)
    sem = SemanticSpec.parse(semantic) if not isinstance(semantic, SemanticSpec) else semantic
    if sem.data_type is DataType.TABLE:
        d = int(getattr(model, "n_features_in_", spec.dimension))
        if d != spec.dimension:
            raise PackageError(f"model takes {d} features but the spec has {spec.dimension}")
        names = feature_names or [f"f{i}" for i in range(d)]
        input_contract: dict[str, Any] = {
            "shape": [d], "features": [{"name": n, "dtype": "float"} for n in names]}
    elif sem.data_type is DataType.TEXT:
        d, input_contract = 1, {"shape": [1]}
    else:
        if not input_shape:
            raise PackageError("image learnwares need input_shape ([H, W] or [C, H, W])")
        d, input_contract = int(np.prod(input_shape)), {"shape": [int(s) for s in input_shape]}
    if labels is None and sem.task_type is TaskType.CLASSIFICATION and not prebuilt_onnx:
        labels = _labels(model)
    has_proba = labels is not None and (
        prebuilt_onnx or callable(getattr(model, "predict_proba", None)))
    if sem.task_type is TaskType.CLASSIFICATION:
        output: dict[str, Any] = {"kind": "label", "labels": labels}
    elif sem.task_type is TaskType.REGRESSION:
        n_out = int(sem.output.dimension) if sem.output else 1
        output = {"kind": "value", "shape": [] if n_out == 1 else [n_out]}
    else:
        output = {"kind": "embedding", "shape": [sem.output.dimension] if sem.output else []}

    entry: dict[str, Any] = {"format": model_format}
    if model_format == "skops":
        import skops.io as sio

        entry["file"] = "model.skops"
        sio.dump(model, directory / "model.skops")
        reqs = ["scikit-learn", "skops"]
    elif model_format == "onnx":
        entry["file"] = "model.onnx"
        if prebuilt_onnx:
            raw = model if isinstance(model, bytes) else Path(model).read_bytes()
            (directory / "model.onnx").write_bytes(raw)
            outputs = _onnx_output_names(raw)
            has_proba = labels is not None and "probabilities" in outputs
            if labels is not None and "label" not in outputs:
                raise PackageError(f"ONNX classifier needs an output named 'label' (has {outputs})")
        else:
            _write_onnx(model, d, directory / "model.onnx", labels is not None)
        if labels is not None:
            entry["label_output"] = "label"
            entry["proba_output"] = "probabilities" if has_proba else None
        reqs = ["onnxruntime"]
    else:
        raise PackageError(f"unknown model format {model_format!r} (skops or onnx)")
    entry["methods"] = ["predict", "predict_proba"] if has_proba else ["predict"]
    if model_format == "skops" and callable(getattr(model, "partial_fit", None)):
        entry["methods"].append("partial_fit")
    spec.save(directory / "spec.json")
    manifest = Manifest.parse(
        {
            "format_version": 1,
            "name": name,
            "version": version,
            "semantic": sem,
            "model": {k: v for k, v in entry.items() if v is not None},
            "input": input_contract,
            "output": output,
            "stat_specs": [{"type": spec.type_name, "file": "spec.json"}],
            "requirements": {"pip": pip_requirements or reqs},
        }
    )
    (directory / MANIFEST_NAME).write_text(commented_manifest_yaml(manifest), encoding="utf-8")
    return manifest


def _complete_semantic(sem: dict[str, Any], name: str, model: Any, spec: StatSpec,
                       feature_names: list[str] | None, labels: list[Any] | None,
                       prebuilt_onnx: bool) -> dict[str, Any]:
    """Fill what the call already says: the name, and for tables the input descriptions
    (the feature names) and the output dimension (the classes), so a caller writes only the
    tags and the description. Values given are kept."""
    sem.setdefault("name", name)
    if str(sem.get("data_type", "")) in ("Table", str(DataType.TABLE)) and "input" not in sem:
        d = int(getattr(model, "n_features_in_", spec.dimension)) if not prebuilt_onnx else \
            spec.dimension
        names = feature_names or [f"feature {i}" for i in range(d)]
        if len(names) == d:
            sem["input"] = {"dimension": d, "descriptions": dict(enumerate(names))}
    task = str(sem.get("task_type", ""))
    if "output" not in sem:
        if task in ("Classification", str(TaskType.CLASSIFICATION)):
            classes = labels if labels is not None else (
                None if prebuilt_onnx else _labels(model))
            if classes is not None:
                sem["output"] = {"dimension": len(classes),
                                 "descriptions": {i: f"class {c}" for i, c in enumerate(classes)}}
        elif task in ("Regression", str(TaskType.REGRESSION)):
            sem["output"] = {"dimension": 1, "descriptions": {0: "the predicted value"}}
    return sem


#: What each manifest field means: written above it in learnware.yaml, for whoever edits it.
MANIFEST_COMMENTS = {
    "format_version": "Manifest format (learndock reads version 1).",
    "name": "Package name: letters, digits, '.', '_', '-' (at most 128 characters).",
    "version": "Semantic version MAJOR.MINOR.PATCH; a new upload of the same learnware "
               "needs a new version.",
    "semantic": "What the model is for; searched by users. Allowed tag values: `learndock "
                "semantic values`.\n"
                "  name, description: shown and searched (full text, any language)\n"
                "  data_type: Table | Image | Text     task_type: Classification | "
                "Regression | ...\n"
                "  library_type, scenarios (one or more), license: tags users filter on\n"
                "  input: dimension + one description per feature (0-based index -> text); "
                "edit them\n"
                "  output: dimension + descriptions (classes, or the predicted value)",
    "model": "How to load the model. format: skops | onnx (data, never run as code) | python "
             "(code: runs only in the dock's jail); file: the model file in this folder; "
             "methods: what it offers.",
    "input": "What the model reads per sample: shape [d] and the d features (name, dtype: "
             "float | int | bool | category), in column order.",
    "output": "What predict returns: kind label (with the label set) | value (regression) | "
              "embedding; shape [] for one value per sample.",
    "stat_specs": "The statistical spec (RKME) of the training data: a small weighted point "
                  "set; the raw data never leave your machine.",
    "requirements": "Python version and pip packages the model needs to load.",
}


def commented_manifest_yaml(manifest: Manifest) -> str:
    """``learnware.yaml`` with each field explained above it. Fields that only mean something
    for ``python`` models (``module``, ``class_name``, ``kwargs``) are left out of the others."""
    data = manifest.to_dict()
    if manifest.model.format != "python":
        data["model"] = {k: v for k, v in data["model"].items()
                         if k not in ("module", "class_name", "kwargs")}
    parts = [f"# learnware.yaml -- the manifest of the learnware package '{manifest.name}'.\n"
             "# Check it with `learndock check DIR`, zip it with `learndock pack DIR -o X.zip`.\n"]
    for key, value in data.items():
        comment = MANIFEST_COMMENTS.get(key)
        block = yaml.safe_dump({key: value}, sort_keys=False, allow_unicode=True)
        if comment:
            lines = [w for line in comment.split("\n") for w in textwrap.wrap(
                line, 92, subsequent_indent=" " * (len(line) - len(line.lstrip()) + 2))]
            block = "".join(f"# {line}\n" for line in lines) + block
        parts.append(block)
    text = "\n".join(parts)
    if Manifest.from_yaml(text) != manifest:  # the comments must never change the meaning
        raise PackageError("internal error: the commented manifest does not read back the same")
    return text


def _write_onnx(model: Any, d: int, path: Path, classifier: bool) -> None:
    try:
        from skl2onnx import convert_sklearn
        from skl2onnx.common.data_types import FloatTensorType
    except ImportError as exc:  # pragma: no cover - depends on the optional extra
        raise PackageError(
            "ONNX export needs skl2onnx: pip install 'learndock[onnx-export]'"
        ) from exc
    options = {id(model): {"zipmap": False}} if classifier else None
    onx = convert_sklearn(
        model, initial_types=[("input", FloatTensorType([None, d]))], options=options,
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    path.write_bytes(onx.SerializeToString())


def _onnx_output_names(raw: bytes) -> list[str]:
    import onnxruntime as ort

    try:
        sess = ort.InferenceSession(raw, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own types
        raise PackageError(f"not a loadable ONNX model: {exc}") from None
    return [o.name for o in sess.get_outputs()]
