"""The learnware manifest (``learnware.yaml``, ``format_version: 1``).

The manifest says what the package holds and what its model promises: the semantic spec, the
model entry (how to load it, in which format), the input/output contract, the statistical
specs and the runtime requirements. It is plain data, parsed with the safe loader and
validated with pydantic, so reading a manifest can never run code; its size, aliases and
expanded node count are capped before anything is built (:mod:`learndock.package.yamlsafe`).
"""

from __future__ import annotations

import math
import re
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from learndock._validation import parse_model
from learndock.config import ArchiveLimits
from learndock.errors import ManifestError, SpecError, UnsafeArchiveError
from learndock.package.archive import check_entry_name
from learndock.package.yamlsafe import load_yaml
from learndock.spec.semantic import DataType, SemanticSpec, TaskType

MANIFEST_NAME = "learnware.yaml"
FORMAT_VERSION = 1

_SEMVER = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?(?:\+[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?$"
)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_PY_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

ModelFormat = Literal["onnx", "skops", "python"]
FeatureDType = Literal["float", "int", "bool", "category"]
OutputKind = Literal["label", "probabilities", "value", "embedding", "auto"]
STAT_SPEC_TYPES = ("rkme-table", "rkme-image", "rkme-text")
#: The spec type that describes each data type.
SPEC_TYPE_FOR = {DataType.TABLE: "rkme-table", DataType.IMAGE: "rkme-image",
                 DataType.TEXT: "rkme-text"}


def read_capped(path: Path, cap: int, field: str) -> bytes:
    """Read a small text file of a package, refusing it (before reading) past ``cap`` bytes."""
    try:
        size = path.stat().st_size
        if size > cap:
            raise ManifestError(
                f"{path.name} is {size} bytes; the limit is {cap} "
                f"(LEARNDOCK_ZIP_{field.upper()})"
            )
        with open(path, "rb") as f:
            data = f.read(size + 1)
    except OSError as exc:
        raise ManifestError(f"cannot read {path.name}: {exc.strerror or exc}") from None
    if len(data) > size:
        raise ManifestError(f"{path.name} changed while it was read")
    return data


def check_input_shape(raw: Any, limits: ArchiveLimits) -> None:
    """Refuse an ``input.shape`` whose samples are larger than ``max_sample_elements``.

    Runs on the raw manifest data too (before validation), so a hostile shape is refused
    before anything computes with it; the product stops growing as soon as it passes the cap.
    """
    shape = raw.get("shape") if isinstance(raw, dict) else None
    if not isinstance(shape, list) or not all(
        isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in shape
    ):
        return  # validation says what is wrong with it
    cap = limits.max_sample_elements
    n = 1
    for s in shape:
        n *= s
        if n > cap:
            shown = shape if len(shape) <= 8 else [*shape[:8], "..."]
            prod = math.prod(shape) if len(shape) <= 64 else n
            total = f"{prod:,}" if prod < 10**18 else "more than 10^18"
            raise ManifestError(
                f"input.shape {shown} makes one sample {total} elements; the limit is "
                f"{cap:,} (LEARNDOCK_ZIP_MAX_SAMPLE_ELEMENTS)"
            )


def _check_relative(path: str) -> str:
    try:
        check_entry_name(path)  # length, control characters (and the checks below)
    except UnsafeArchiveError as exc:
        raise ValueError(str(exc).removeprefix("entry ")) from None
    p = PurePosixPath(path)
    if not path or path.startswith(("/", "\\")) or "\\" in path or ":" in p.parts[0]:
        raise ValueError(f"'{path}' must be a relative path inside the package (use '/')")
    if any(part in ("..", ".", "") for part in path.split("/")):
        raise ValueError(f"'{path}' must not contain '.', '..' or empty components")
    return path


class Feature(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(min_length=1, max_length=200)
    dtype: FeatureDType = "float"


class InputContract(BaseModel):
    """What the model accepts, per sample. Tables: ``shape == [d]`` and ``d`` named features."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    shape: list[int] = Field(min_length=1)
    features: list[Feature] | None = None

    @field_validator("shape")
    @classmethod
    def _positive(cls, v: list[int]) -> list[int]:
        if any(s <= 0 for s in v):
            raise ValueError(f"every input dimension must be positive, got {v}")
        return v

    @model_validator(mode="after")
    def _features_match(self) -> InputContract:
        if self.features is not None:
            if len(self.shape) != 1 or len(self.features) != self.shape[0]:
                raise ValueError(
                    f"{len(self.features)} features declared for input shape {self.shape}"
                )
            names = [f.name for f in self.features]
            if len(set(names)) != len(names):
                raise ValueError("feature names must be unique")
        return self

    @property
    def size(self) -> int:
        return math.prod(self.shape)


class OutputContract(BaseModel):
    """What ``predict`` returns, per sample; for classification, the label set.

    ``kind``: ``label`` (predict returns one label per row), ``probabilities`` (one column per
    label, rows sum to 1), ``value`` (regression targets), ``embedding`` (features), ``auto``
    (imported reference learnwares, whose convention is only known by running them).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: OutputKind
    shape: list[int] = Field(default_factory=list)
    labels: list[int] | list[str] | None = None

    @model_validator(mode="after")
    def _labels(self) -> OutputContract:
        if self.labels is not None:
            if len(self.labels) < 2:
                raise ValueError("a label set needs at least 2 labels")
            if len(set(self.labels)) != len(self.labels):
                raise ValueError("labels must be unique")
        if self.kind == "probabilities" and self.labels is not None and (
            self.shape != [len(self.labels)]
        ):
            raise ValueError(
                f"probabilities output shape must be [{len(self.labels)}] (one column per "
                f"label), got {self.shape}"
            )
        if self.kind == "label" and self.shape not in ([], [1]):
            raise ValueError(f"label output shape must be [] or [1], got {self.shape}")
        return self

    @property
    def size(self) -> int:
        return math.prod(self.shape) if self.shape else 1


class ModelEntry(BaseModel):
    """How to load the model.

    ``onnx``/``skops``: ``file`` names the model file; loading and predicting run no code from
    the package. ``python``: ``module`` (a file in the package) defines ``class_name``; it runs
    only with ``trust_remote_code=True`` or in the sandbox.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    format: ModelFormat
    file: str | None = None
    module: str = "__init__.py"
    class_name: str = "Model"
    kwargs: dict[str, Any] = Field(default_factory=dict)
    # ONNX output names (defaults: first output is predict; 'probabilities' if present)
    label_output: str | None = None
    proba_output: str | None = None
    methods: list[Literal["predict", "predict_proba", "fit", "finetune", "partial_fit"]] = Field(
        default_factory=lambda: ["predict"]
    )

    @field_validator("file", "module")
    @classmethod
    def _relative(cls, v: str | None) -> str | None:
        return None if v is None else _check_relative(v)

    @field_validator("class_name")
    @classmethod
    def _ident(cls, v: str) -> str:
        if not _PY_IDENT.match(v):
            raise ValueError(f"class_name '{v}' is not a Python identifier")
        return v

    @model_validator(mode="after")
    def _file_needed(self) -> ModelEntry:
        if self.format in ("onnx", "skops") and not self.file:
            raise ValueError(f"{self.format} models need 'file' (the model file in the package)")
        if self.format == "python" and not self.module.endswith(".py"):
            raise ValueError("python models need 'module' to be a .py file")
        return self


class StatSpecEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["rkme-table", "rkme-image", "rkme-text"]
    file: str

    @field_validator("file")
    @classmethod
    def _relative(cls, v: str) -> str:
        return _check_relative(v)


class Requirements(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    python: str = ">=3.10"
    pip: list[str] = Field(default_factory=list)


class Manifest(BaseModel):
    """``learnware.yaml``: validated on construction, with errors naming each field."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    format_version: Literal[1] = 1
    name: str
    version: str = "1.0.0"
    semantic: SemanticSpec
    model: ModelEntry
    input: InputContract
    output: OutputContract
    stat_specs: list[StatSpecEntry] = Field(default_factory=list)
    requirements: Requirements = Field(default_factory=Requirements)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError(
                f"'{v}' is not a valid package name (letters, digits, '.', '_', '-'; "
                "starts with a letter or digit; at most 128 characters)"
            )
        return v

    @field_validator("version")
    @classmethod
    def _semver(cls, v: str) -> str:
        if not _SEMVER.match(v):
            raise ValueError(f"'{v}' is not a semantic version (MAJOR.MINOR.PATCH)")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> Manifest:
        sem = self.semantic
        if sem.data_type is DataType.TABLE:
            if len(self.input.shape) != 1:
                raise ValueError(f"table models take 1-D samples; input.shape is {self.input.shape}")
            if self.input.features is None:
                raise ValueError("table models must declare input.features (names and dtypes)")
        if sem.data_type is DataType.TEXT and self.input.shape != [1]:
            raise ValueError(
                f"text models take one string per sample: input.shape must be [1], got "
                f"{self.input.shape}"
            )
        if sem.data_type is DataType.IMAGE and len(self.input.shape) not in (2, 3):
            raise ValueError(
                f"image models take (H, W) or (C, H, W) samples; input.shape is {self.input.shape}"
            )
        wanted = SPEC_TYPE_FOR.get(sem.data_type)
        for entry in self.stat_specs:
            if wanted is not None and entry.type != wanted:
                raise ValueError(
                    f"a {sem.data_type.value} learnware needs '{wanted}' specs, not '{entry.type}'"
                )
        if sem.input is not None and sem.input.dimension != self.input.size:
            raise ValueError(
                f"semantic input dimension {sem.input.dimension} disagrees with the model's "
                f"input shape {self.input.shape}"
            )
        if sem.task_type is TaskType.CLASSIFICATION:
            if self.output.labels is None:
                raise ValueError("classification models must declare output.labels")
            if sem.output is not None and sem.output.dimension != len(self.output.labels):
                raise ValueError(
                    f"semantic output dimension {sem.output.dimension} disagrees with the "
                    f"{len(self.output.labels)} declared labels"
                )
            if self.output.kind not in ("label", "probabilities", "auto"):
                raise ValueError(
                    "classification output kind must be 'label', 'probabilities' or 'auto'"
                )
        if sem.task_type is TaskType.REGRESSION:
            if self.output.kind not in ("value", "auto"):
                raise ValueError("regression output kind must be 'value'")
            if sem.output is not None and sem.output.dimension != self.output.size:
                raise ValueError(
                    f"semantic output dimension {sem.output.dimension} disagrees with the "
                    f"model's output shape {self.output.shape}"
                )
        files = [s.file for s in self.stat_specs]
        if len(set(files)) != len(files):
            raise ValueError("stat_specs list the same file twice")
        return self

    # ------------------------------------------------------------------ io
    @classmethod
    def parse(cls, data: Any) -> Manifest:
        if isinstance(data, dict) and data.get("format_version") not in (None, FORMAT_VERSION):
            raise ManifestError(
                f"unsupported manifest format_version {data.get('format_version')!r} "
                f"(this learndock reads version {FORMAT_VERSION})"
            )
        if isinstance(data, dict) and isinstance(data.get("semantic"), dict):
            try:
                sem = SemanticSpec.parse(data["semantic"])
            except SpecError as exc:
                raise ManifestError(str(exc).replace("invalid semantic", "invalid manifest "
                                                                         "semantic")) from None
            data = {**data, "semantic": sem}
        return parse_model(cls, data, f"manifest ({MANIFEST_NAME})", ManifestError)

    @classmethod
    def from_yaml(cls, text: str | bytes, limits: ArchiveLimits | None = None) -> Manifest:
        """Parse and validate manifest text from an untrusted source, within ``limits``
        (size, aliases, expanded nodes: :func:`~learndock.package.yamlsafe.load_yaml`; the
        per-sample input size: ``max_sample_elements``)."""
        limits = limits or ArchiveLimits()
        data = load_yaml(text, limits, MANIFEST_NAME)
        if not isinstance(data, dict):
            raise ManifestError(f"{MANIFEST_NAME} must be a mapping at the top level")
        check_input_shape(data.get("input"), limits)
        manifest = cls.parse(data)
        check_input_shape({"shape": manifest.input.shape}, limits)
        return manifest

    @classmethod
    def load(cls, directory: str | Path, limits: ArchiveLimits | None = None) -> Manifest:
        limits = limits or ArchiveLimits()
        path = Path(directory) / MANIFEST_NAME
        if not path.is_file():
            raise ManifestError(f"package has no {MANIFEST_NAME} at its root")
        return cls.from_yaml(read_capped(path, limits.yaml_max_bytes, "yaml_max_bytes"), limits)

    def to_dict(self) -> dict[str, Any]:
        d = self.model_dump(mode="json", exclude_none=True)
        d["semantic"] = self.semantic.to_dict()
        return d

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / MANIFEST_NAME
        path.write_text(self.to_yaml(), encoding="utf-8")
        return path

    @property
    def feature_schema(self) -> list[tuple[str, str]] | None:
        if self.input.features is None:
            return None
        return [(f.name, f.dtype) for f in self.input.features]
