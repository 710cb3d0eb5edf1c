"""Semantic specification: what a learnware is for, in tags and text.

The vocabulary follows the reference dock (so imported learnwares keep their tags), but the
shape is typed: single-valued keys are single values, scenarios are a non-empty list, and
input/output descriptions carry their dimension. :class:`SemanticQuery` is the user's side:
every key optional, several allowed values per single-valued key.
"""

from __future__ import annotations

from enum import Enum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from learndock._validation import parse_model
from learndock.errors import SpecError


class DataType(str, Enum):
    TABLE = "Table"
    IMAGE = "Image"
    TEXT = "Text"


class TaskType(str, Enum):
    CLASSIFICATION = "Classification"
    REGRESSION = "Regression"
    FEATURE_EXTRACTION = "Feature Extraction"
    SEGMENTATION = "Segmentation"
    OBJECT_DETECTION = "Object Detection"
    OTHERS = "Others"


class LibraryType(str, Enum):
    SCIKIT_LEARN = "Scikit-learn"
    PYTORCH = "PyTorch"
    TENSORFLOW = "TensorFlow"
    OTHERS = "Others"


class Scenario(str, Enum):
    BUSINESS = "Business"
    FINANCIAL = "Financial"
    HEALTH = "Health"
    POLITICS = "Politics"
    COMPUTER = "Computer"
    INTERNET = "Internet"
    TRAFFIC = "Traffic"
    NATURE = "Nature"
    FASHION = "Fashion"
    INDUSTRY = "Industry"
    AGRICULTURE = "Agriculture"
    EDUCATION = "Education"
    ENTERTAINMENT = "Entertainment"
    ARCHITECTURE = "Architecture"
    OTHERS = "Others"


class License(str, Enum):
    MIT = "MIT"
    APACHE_2 = "Apache-2.0"
    BSD_2 = "BSD-2-Clause"
    BSD_3 = "BSD-3-Clause"
    GPL_2 = "GPL-2.0"
    GPL_3 = "GPL-3.0"
    LGPL_21 = "LGPL-2.1"
    LGPL_3 = "LGPL-3.0"
    AGPL_3 = "AGPL-3.0"
    ECL_2 = "ECL-2.0"
    AFL_3 = "AFL-3.0"
    CC_BY_4 = "CC-BY-4.0"
    CC_BY_SA_4 = "CC-BY-SA-4.0"
    OTHERS = "Others"


SUPERVISED_TASKS = (TaskType.CLASSIFICATION, TaskType.REGRESSION)


class FeatureDescriptions(BaseModel):
    """A dimension and a text for (some or all) of its positions, keyed by 0-based index."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dimension: int = Field(gt=0)
    descriptions: dict[int, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _keys_in_range(self) -> FeatureDescriptions:
        bad = sorted(k for k in self.descriptions if not 0 <= k < self.dimension)
        if bad:
            raise ValueError(
                f"description keys {bad} are outside [0, {self.dimension}) for dimension "
                f"{self.dimension}"
            )
        empty = sorted(k for k, v in self.descriptions.items() if not v.strip())
        if empty:
            raise ValueError(f"descriptions for positions {empty} are empty")
        return self

    def missing(self, limit: int | None = None) -> list[int]:
        """Positions without a description (the first ``limit`` of them, if given: cheap
        however large ``dimension`` is)."""
        out: list[int] = []
        for i in range(self.dimension):
            if i not in self.descriptions:
                out.append(i)
                if limit is not None and len(out) >= limit:
                    break
        return out

    @property
    def n_missing(self) -> int:
        return self.dimension - sum(1 for k in self.descriptions if 0 <= k < self.dimension)


#: ``SemanticSpec.origin`` of learnwares imported from the reference dock's format.
REFERENCE_ORIGIN = "reference"


class SemanticSpec(BaseModel):
    """A learnware's semantic specification, validated on construction.

    Table learnwares need a description of every input feature -- except imports from the
    reference dock (``origin="reference"``), whose format lets a developer describe only some
    features: their descriptions are kept as given, none is invented.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, use_enum_values=False)

    name: str = Field(min_length=1, max_length=200)
    description: str = Field(min_length=1, max_length=20_000)
    data_type: DataType
    task_type: TaskType
    library_type: LibraryType = LibraryType.OTHERS
    scenarios: list[Scenario] = Field(min_length=1)
    license: License = License.OTHERS
    input: FeatureDescriptions | None = None
    output: FeatureDescriptions | None = None
    #: Where the spec comes from: None for learndock's own packages, ``"reference"`` for
    #: imports of the reference dock's format (partial input descriptions allowed).
    origin: Literal["reference"] | None = None

    @field_validator("name", "description")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must not be blank")
        return v.strip()

    @field_validator("scenarios")
    @classmethod
    def _unique(cls, v: list[Scenario]) -> list[Scenario]:
        return list(dict.fromkeys(v))

    @model_validator(mode="after")
    def _search_rules(self) -> SemanticSpec:
        if self.data_type is DataType.TABLE:
            if self.input is None:
                raise ValueError("table learnwares need 'input' (dimension and feature descriptions)")
            if self.input.n_missing and self.origin != REFERENCE_ORIGIN:
                missing = self.input.missing(limit=10)
                raise ValueError(
                    f"table learnwares need a description for every input feature; "
                    f"missing positions {missing}{'...' if self.input.n_missing > 10 else ''}"
                )
        if self.task_type in SUPERVISED_TASKS:
            if self.output is None:
                raise ValueError(
                    f"{self.task_type.value} learnwares need 'output' (dimension and descriptions)"
                )
            if self.task_type is TaskType.CLASSIFICATION and self.output.dimension < 2:
                raise ValueError("classification output dimension must be >= 2 (the classes)")
        return self

    @classmethod
    def parse(cls, data: Any, *, origin: str | None = None) -> SemanticSpec:
        """Validate a dict (our format or the reference dock's) into a spec, with clear errors.

        ``origin="reference"`` marks a reference-format import (see the class docstring); it
        applies to a spec given as an object too (a copy is returned)."""
        if isinstance(data, SemanticSpec):
            if origin is None or data.origin == origin:
                return data
            data = data.to_dict()
        if isinstance(data, dict) and _looks_like_reference(data):
            data = _convert(from_reference_dict, data, "semantic specification")
        if origin is not None and isinstance(data, dict):
            data = {**data, "origin": origin}
        return parse_model(cls, data, "semantic specification", SpecError)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)

    def to_reference_dict(self) -> dict[str, Any]:
        """The reference dock's ``{"Key": {"Type", "Values"}}`` shape (for interoperability)."""
        out: dict[str, Any] = {
            "Data": {"Type": "Class", "Values": [self.data_type.value]},
            "Task": {"Type": "Class", "Values": [self.task_type.value]},
            "Library": {"Type": "Class", "Values": [self.library_type.value]},
            "Scenario": {"Type": "Tag", "Values": [s.value for s in self.scenarios]},
            "License": {"Type": "Class", "Values": [self.license.value]},
            "Name": {"Type": "String", "Values": self.name},
            "Description": {"Type": "String", "Values": self.description},
        }
        for key, fd in (("Input", self.input), ("Output", self.output)):
            if fd is not None:
                out[key] = {
                    "Dimension": fd.dimension,
                    "Description": {str(k): v for k, v in sorted(fd.descriptions.items())},
                }
        return out


def _looks_like_reference(data: dict[str, Any]) -> bool:
    return "Data" in data or "Task" in data or "Name" in data


def _convert(fn: Any, data: dict[str, Any], what: str) -> Any:
    """Run a reference-format converter; malformed values become a SpecError."""
    try:
        return fn(data)
    except SpecError:
        raise
    except (TypeError, ValueError, OverflowError, AttributeError) as exc:
        raise SpecError(f"invalid {what} (reference format): {exc}") from None


def _first(values: Any) -> Any:
    if isinstance(values, list):
        if len(values) != 1:
            raise SpecError(f"expected exactly one value, got {values!r}")
        return values[0]
    return values


def from_reference_dict(ref: dict[str, Any]) -> dict[str, Any]:
    """Map the reference dock's semantic-spec dict onto our field names (no validation)."""

    def values(key: str) -> Any:
        entry = ref.get(key)
        if entry is None:
            return None
        return entry.get("Values") if isinstance(entry, dict) else entry

    out: dict[str, Any] = {}
    for key, field in (
        ("Data", "data_type"),
        ("Task", "task_type"),
        ("Library", "library_type"),
        ("License", "license"),
    ):
        v = values(key)
        if v not in (None, [], ""):
            out[field] = _first(v)
    scen = values("Scenario")
    if scen:
        out["scenarios"] = scen if isinstance(scen, list) else [scen]
    for key, field in (("Name", "name"), ("Description", "description")):
        v = values(key)
        if v:
            out[field] = v if isinstance(v, str) else " ".join(map(str, v))
    for key, field in (("Input", "input"), ("Output", "output")):
        fd = ref.get(key)
        if isinstance(fd, dict) and "Dimension" in fd:
            out[field] = {
                "dimension": int(fd["Dimension"]),
                "descriptions": {int(k): str(v) for k, v in (fd.get("Description") or {}).items()},
            }
    return out


class SemanticQuery(BaseModel):
    """What a user asks for. Empty fields do not filter.

    Single-valued keys accept several allowed values (a learnware matches if its value is one
    of them); scenarios match on overlap; ``text`` is ranked full-text over name + description.

    ``input_descriptions`` say what the columns of the user's table spec are, one per column
    in order (as developers describe their inputs); with them, search also ranks learnwares
    of *other* feature spaces (heterogeneous search, ``SearchResult.cross_island``).
    ``target_description`` says what the user wants predicted, so that learnwares of another
    task on the same inputs rank low there.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    data_type: list[DataType] = Field(default_factory=list)
    task_type: list[TaskType] = Field(default_factory=list)
    library_type: list[LibraryType] = Field(default_factory=list)
    scenarios: list[Scenario] = Field(default_factory=list)
    license: list[License] = Field(default_factory=list)
    text: str = ""
    input_dimension: int | None = Field(default=None, gt=0)
    output_dimension: int | None = Field(default=None, gt=0)
    input_descriptions: list[str] = Field(default_factory=list, max_length=4096)
    target_description: str = Field(default="", max_length=1000)

    @field_validator("input_descriptions")
    @classmethod
    def _descriptions(cls, v: list[str]) -> list[str]:
        out = [str(d).strip() for d in v]
        if any(not d for d in out):
            raise ValueError("input descriptions must not be empty")
        if any(len(d) > 1000 for d in out):
            raise ValueError("an input description is longer than 1000 characters")
        return out

    @field_validator("data_type", "task_type", "library_type", "scenarios", "license", mode="before")
    @classmethod
    def _listify(cls, v: Any) -> Any:
        if v is None:
            return []
        if isinstance(v, (str, Enum)):
            return [v]
        return v

    @classmethod
    def parse(cls, data: Any) -> SemanticQuery:
        if isinstance(data, dict) and _looks_like_reference(data):
            data = _convert(from_reference_dict_query, data, "semantic query")
        return parse_model(cls, data, "semantic query", SpecError)

    def matches(self, spec: SemanticSpec) -> bool:
        """Exact tag filter (single-valued keys must match; scenarios must overlap)."""
        if self.data_type and spec.data_type not in self.data_type:
            return False
        if self.task_type and spec.task_type not in self.task_type:
            return False
        if self.library_type and spec.library_type not in self.library_type:
            return False
        if self.license and spec.license not in self.license:
            return False
        if self.scenarios and not set(self.scenarios) & set(spec.scenarios):
            return False
        if self.input_dimension is not None and (
            spec.input is None or spec.input.dimension != self.input_dimension
        ):
            return False
        return not (
            self.output_dimension is not None
            and (spec.output is None or spec.output.dimension != self.output_dimension)
        )


def from_reference_dict_query(ref: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, field in (
        ("Data", "data_type"),
        ("Task", "task_type"),
        ("Library", "library_type"),
        ("License", "license"),
        ("Scenario", "scenarios"),
    ):
        entry = ref.get(key)
        v = entry.get("Values") if isinstance(entry, dict) else entry
        if v:
            out[field] = v if isinstance(v, list) else [v]
    texts = []
    for key in ("Name", "Description"):
        entry = ref.get(key)
        v = entry.get("Values") if isinstance(entry, dict) else entry
        if v:
            texts.append(v if isinstance(v, str) else " ".join(v))
    if texts:
        out["text"] = " ".join(texts)
    inp = ref.get("Input")
    if isinstance(inp, dict) and inp.get("Dimension"):
        out["input_dimension"] = int(inp["Dimension"])
    return out
