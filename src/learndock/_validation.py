"""Turn pydantic validation errors into one readable message that names each field."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from learndock.errors import LearndockError

M = TypeVar("M", bound=BaseModel)


def describe_validation_error(err: ValidationError, what: str) -> str:
    lines = [f"invalid {what}:"]
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(root)"
        msg = e["msg"].removeprefix("Value error, ")
        lines.append(f"  - field '{loc}': {msg}")
    return "\n".join(lines)


def parse_model(model: type[M], data: Any, what: str, error: type[LearndockError]) -> M:
    """Validate ``data`` as ``model``; raise ``error`` with a per-field message on failure."""
    if isinstance(data, model):
        return data
    if not isinstance(data, dict):
        raise error(f"invalid {what}: expected a mapping, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise error(describe_validation_error(exc, what)) from None
