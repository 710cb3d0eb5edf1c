"""The semantic tag vocabulary (data types, tasks, libraries, scenarios, licenses) for the CLI.

The values come from the enums in :mod:`learndock.spec.semantic`, the one source of truth. The
CLI lists them in option help, which typer needs when the command is defined, i.e. at every
start. Importing ``learndock.spec.semantic`` runs ``learndock.spec``'s ``__init__`` (numpy,
scipy, the encoders: over a second), so unless that package is already loaded, the module
file alone is executed under a private name: the same enum definitions, at pydantic's cost.
"""

from __future__ import annotations

import importlib.util
import sys
from functools import cache
from pathlib import Path
from types import ModuleType

#: Tag name -> (enum class name in learndock.spec.semantic, what it tags).
TAGS = {
    "data_type": ("DataType", "what the model reads"),
    "task_type": ("TaskType", "what it does"),
    "library_type": ("LibraryType", "what it was built with"),
    "scenarios": ("Scenario", "where it applies (one or more)"),
    "license": ("License", "how it may be used"),
}


@cache
def _semantic_module() -> ModuleType:
    loaded = sys.modules.get("learndock.spec.semantic")
    if loaded is not None:
        return loaded
    import learndock

    path = Path(learndock.__file__).parent / "spec" / "semantic.py"
    spec = importlib.util.spec_from_file_location("learndock.cli._semantic_enums", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # pydantic resolves annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def values(tag: str) -> list[str]:
    """Allowed values of one tag, in the enum's order."""
    enum = getattr(_semantic_module(), TAGS[tag][0])
    return [m.value for m in enum]


def all_values() -> dict[str, list[str]]:
    return {tag: values(tag) for tag in TAGS}


def choices(tag: str, lead: str = "") -> str:
    """Option help that lists the allowed values."""
    return f"{lead}{' ' if lead else ''}One of: {', '.join(values(tag))}."
