"""Semantic specification: round-trips, validation messages, query matching."""

from __future__ import annotations

import copy

import pytest
from pydantic import ValidationError

from helpers import reference_semantic, table_semantic
from learndock.errors import SpecError
from learndock.spec import DataType, Scenario, SemanticQuery, SemanticSpec, TaskType


def test_valid_spec_parses_with_typed_fields():
    spec = SemanticSpec.parse(table_semantic(4, n_out=3))
    assert spec.data_type is DataType.TABLE
    assert spec.task_type is TaskType.CLASSIFICATION
    assert spec.scenarios == [Scenario.EDUCATION, Scenario.COMPUTER]
    assert spec.input.dimension == 4 and spec.input.descriptions[3] == "feature 3"
    assert spec.output.dimension == 3


def test_to_dict_round_trip():
    spec = SemanticSpec.parse(table_semantic(4, n_out=3))
    d = spec.to_dict()
    assert d["data_type"] == "Table" and d["license"] == "MIT"
    again = SemanticSpec.parse(d)
    assert again == spec
    assert again.to_dict() == d


def test_reference_dict_round_trip_and_shape():
    spec = SemanticSpec.parse(table_semantic(3, task="Regression", n_out=1))
    ref = spec.to_reference_dict()
    assert ref["Data"] == {"Type": "Class", "Values": ["Table"]}
    assert ref["Task"] == {"Type": "Class", "Values": ["Regression"]}
    assert ref["Scenario"] == {"Type": "Tag", "Values": ["Education", "Computer"]}
    assert ref["Name"] == {"Type": "String", "Values": spec.name}
    assert ref["Input"] == {
        "Dimension": 3,
        "Description": {"0": "feature 0", "1": "feature 1", "2": "feature 2"},
    }
    assert SemanticSpec.parse(ref) == spec


def test_parse_handwritten_reference_dict():
    spec = SemanticSpec.parse(reference_semantic(5, n_classes=2))
    assert spec.name == "ref digits"
    assert spec.license.value == "Apache-2.0"
    assert spec.input.dimension == 5 and spec.input.descriptions[4] == "pixel 4"
    assert spec.output.dimension == 2
    assert spec.scenarios == [Scenario.EDUCATION]


def test_reference_dict_with_two_data_types_is_rejected():
    ref = reference_semantic(5, n_classes=2)
    ref["Data"]["Values"] = ["Table", "Image"]
    with pytest.raises(SpecError, match="exactly one value"):
        SemanticSpec.parse(ref)


def test_duplicate_scenarios_are_collapsed():
    d = table_semantic(2, n_out=2)
    d["scenarios"] = ["Health", "Health", "Business"]
    assert SemanticSpec.parse(d).scenarios == [Scenario.HEALTH, Scenario.BUSINESS]


def _error(d) -> str:
    with pytest.raises(SpecError) as exc:
        SemanticSpec.parse(d)
    return str(exc.value)


def test_table_without_input_is_rejected():
    d = table_semantic(4, n_out=3)
    del d["input"]
    msg = _error(d)
    assert "input" in msg and "table" in msg.lower()


def test_missing_feature_descriptions_are_named():
    d = table_semantic(5, n_out=3)
    del d["input"]["descriptions"][1]
    del d["input"]["descriptions"][3]
    msg = _error(d)
    assert "missing positions [1, 3]" in msg


def test_classification_without_output_is_rejected():
    d = table_semantic(4, n_out=3)
    del d["output"]
    msg = _error(d)
    assert "Classification" in msg and "output" in msg


def test_regression_without_output_is_rejected():
    d = table_semantic(4, task="Regression", n_out=1)
    del d["output"]
    assert "Regression" in _error(d)


def test_classification_needs_two_classes():
    d = table_semantic(4, n_out=1)
    assert "must be >= 2" in _error(d)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("data_type", "Tabular"),
        ("task_type", "Clustering"),
        ("library_type", "Keras"),
        ("license", "WTFPL"),
        ("scenarios", ["Space"]),
    ],
)
def test_bad_enum_value_names_the_field(field, value):
    d = table_semantic(4, n_out=3)
    d[field] = value
    msg = _error(d)
    assert f"field '{field}" in msg
    assert "Input should be" in msg


def test_description_key_out_of_range_names_field_and_reason():
    d = table_semantic(4, n_out=3)
    d["input"]["descriptions"][7] = "ghost feature"
    msg = _error(d)
    assert "field 'input'" in msg
    assert "[7] are outside [0, 4)" in msg


def test_blank_name_and_empty_scenarios_are_both_reported():
    d = table_semantic(2, n_out=2)
    d["name"] = "   "
    d["scenarios"] = []
    msg = _error(d)
    assert "field 'name': must not be blank" in msg
    assert "field 'scenarios'" in msg


def test_unknown_key_is_rejected():
    d = table_semantic(2, n_out=2)
    d["colour"] = "blue"
    assert "field 'colour'" in _error(d)


def test_non_mapping_is_rejected():
    with pytest.raises(SpecError, match="expected a mapping"):
        SemanticSpec.parse(["Table"])


# ---------------------------------------------------------------------- SemanticQuery


@pytest.fixture
def cls_spec() -> SemanticSpec:
    return SemanticSpec.parse(table_semantic(4, n_out=3))


@pytest.fixture
def reg_spec() -> SemanticSpec:
    d = table_semantic(6, task="Regression", n_out=1, scenarios=("Health",), license="GPL-3.0")
    return SemanticSpec.parse(d)


def test_empty_query_matches_everything(cls_spec, reg_spec):
    q = SemanticQuery()
    assert q.matches(cls_spec) and q.matches(reg_spec)


def test_single_valued_keys_accept_any_of_several_values(cls_spec, reg_spec):
    q = SemanticQuery(task_type=["Classification"])
    assert q.matches(cls_spec) and not q.matches(reg_spec)
    q = SemanticQuery(task_type=["Regression", "Classification"])
    assert q.matches(cls_spec) and q.matches(reg_spec)
    q = SemanticQuery(task_type="Regression")  # a bare value is a one-element list
    assert q.task_type == [TaskType.REGRESSION]
    assert not q.matches(cls_spec) and q.matches(reg_spec)


def test_data_library_and_license_filters(cls_spec, reg_spec):
    assert not SemanticQuery(data_type=["Image"]).matches(cls_spec)
    assert SemanticQuery(data_type=["Table", "Text"]).matches(cls_spec)
    assert not SemanticQuery(library_type=["PyTorch"]).matches(cls_spec)
    assert SemanticQuery(license=["GPL-3.0"]).matches(reg_spec)
    assert not SemanticQuery(license=["GPL-3.0"]).matches(cls_spec)


def test_scenarios_match_on_overlap(cls_spec, reg_spec):
    # cls_spec: Education + Computer; reg_spec: Health
    assert SemanticQuery(scenarios=["Computer", "Nature"]).matches(cls_spec)
    assert not SemanticQuery(scenarios=["Computer", "Nature"]).matches(reg_spec)
    assert SemanticQuery(scenarios=["Health"]).matches(reg_spec)
    assert not SemanticQuery(scenarios=["Nature"]).matches(cls_spec)


def test_dimension_filters(cls_spec, reg_spec):
    assert SemanticQuery(input_dimension=4).matches(cls_spec)
    assert not SemanticQuery(input_dimension=5).matches(cls_spec)
    assert SemanticQuery(output_dimension=3).matches(cls_spec)
    assert not SemanticQuery(output_dimension=3).matches(reg_spec)
    assert SemanticQuery(input_dimension=6, output_dimension=1).matches(reg_spec)


def test_all_filters_must_hold(cls_spec):
    q = SemanticQuery(task_type=["Classification"], scenarios=["Health"])
    assert not q.matches(cls_spec)


def test_query_from_reference_dict(cls_spec, reg_spec):
    ref = {
        "Task": {"Type": "Class", "Values": ["Regression"]},
        "Scenario": {"Type": "Tag", "Values": ["Health", "Nature"]},
        "Name": {"Type": "String", "Values": "diabetes"},
        "Input": {"Dimension": 6},
    }
    q = SemanticQuery.parse(ref)
    assert q.task_type == [TaskType.REGRESSION]
    assert q.input_dimension == 6
    assert q.text == "diabetes"
    assert q.matches(reg_spec) and not q.matches(cls_spec)


def test_query_validation_names_field():
    with pytest.raises(SpecError, match="field 'input_dimension'"):
        SemanticQuery.parse({"input_dimension": 0})


def test_spec_is_immutable(cls_spec):
    d = copy.deepcopy(cls_spec.to_dict())
    with pytest.raises(ValidationError, match="frozen"):
        cls_spec.name = "other"  # type: ignore[misc]
    assert cls_spec.to_dict() == d


def test_huge_table_dimension_is_cheap_to_refuse():
    """A dimension of 10^21 with two descriptions: refused without walking every position."""
    d = table_semantic(2)
    d["input"] = {"dimension": 10**21, "descriptions": {0: "a", 1: "b"}}
    with pytest.raises(SpecError, match=r"missing positions \[2, 3, 4, 5, 6, 7, 8, 9, 10, 11\]\.\.\."):
        SemanticSpec.parse(d)


@pytest.mark.parametrize(
    "bad",
    [{"Input": {"Dimension": "many"}}, {"Input": {"Dimension": float("inf")}},
     {"Input": {"Dimension": 3, "Description": [1, 2]}}, {"Input": {"Dimension": [3]}}],
)
def test_malformed_reference_dicts_are_spec_errors(bad):
    ref = {**reference_semantic(3), **bad}
    with pytest.raises(SpecError, match="reference format"):
        SemanticSpec.parse(ref)
    if "Description" not in bad["Input"]:  # a query reads only the dimension
        with pytest.raises(SpecError):
            SemanticQuery.parse(ref)
