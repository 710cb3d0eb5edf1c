"""The user's query as every part reads it: parsed once, described the same way everywhere."""

from __future__ import annotations

from typing import Any

from learndock.spec.semantic import SemanticQuery

_LISTS = ("data_type", "task_type", "library_type", "scenarios", "license")
_NUMBERS = ("input_dimension", "output_dimension")


def as_query(query: SemanticQuery | dict[str, Any] | None) -> SemanticQuery | None:
    if query is None or isinstance(query, SemanticQuery):
        return query
    return SemanticQuery.parse(query)


def has_tag_filters(q: SemanticQuery | None) -> bool:
    """Does the query restrict any tag (text aside)?"""
    return q is not None and (
        any(getattr(q, n) for n in _LISTS) or any(getattr(q, n) is not None for n in _NUMBERS)
    )


def describe_query(q: SemanticQuery) -> str:
    parts = [f"{n} in {[x.value for x in getattr(q, n)]}" for n in _LISTS if getattr(q, n)]
    parts += [f"{n}={getattr(q, n)}" for n in _NUMBERS if getattr(q, n) is not None]
    return ", ".join(parts) or "no tag filters"
