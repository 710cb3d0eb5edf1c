"""A minimal stand-in for the reference engine's ``learnware`` package, for model code.

Reference-format packages subclass the reference's model base class in their ``__init__.py``:
``from learnware.model import BaseModel`` (older zips, the dock's own test data) or
``from learnware.model.base import BaseModel`` (the reference's template,
``learnware.tests.templates``). When the reference engine is not installed -- in the dock's
environment and in the jail -- such a package could not even be imported. This module provides
exactly what model code imports, and nothing that computes anything:

- ``learnware`` (a package), ``learnware.model``: ``BaseModel``, ``TorchModel``;
- ``learnware.model.base``: ``BaseModel`` (stores ``input_shape``/``output_shape``; ``fit``,
  ``finetune`` and ``get_model`` do nothing, like the reference's);
- ``learnware.model.torch_model``: ``TorchModel`` (holds an ``nn.Module``; torch is imported
  by the package's own code, never here).

Any other ``learnware.*`` import (``learnware.specification``, ``learnware.market``, ...) fails
with a ModuleNotFoundError that says what the stand-in provides. It is installed only when
package code is about to be imported anyway (trusted, or in the sandbox worker, which loads this
file by path without importing the rest of learndock), never at learndock import, and never
over a real ``learnware`` installation.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
import types
from typing import Any

#: The modules the stand-in provides (and nothing else under ``learnware.``).
PROVIDED = ("learnware", "learnware.model", "learnware.model.base", "learnware.model.torch_model")


class BaseModel:
    """The reference's model contract: shapes of one sample in, one sample out."""

    def __init__(self, input_shape: tuple | None = None, output_shape: tuple | None = None):
        self.input_shape = input_shape
        self.output_shape = output_shape

    def predict(self, X):  # noqa: ANN001, ANN201 -- mirrors the reference signature
        raise NotImplementedError(f"{type(self).__name__} does not implement predict")

    def fit(self, X, y):  # noqa: ANN001, ANN201
        pass

    def finetune(self, X, y):  # noqa: ANN001, ANN201
        pass

    def get_model(self):  # noqa: ANN201
        return None


class TorchModel:
    """The reference's wrapper of an ``nn.Module`` (no torch import here)."""

    def __init__(self, model: Any, input_shape: tuple | None = None,
                 output_shape: tuple | None = None):
        self._model = model
        self.input_shape = input_shape
        self.output_shape = output_shape

    @property
    def nn_model(self) -> Any:
        return self._model

    def predict(self, X):  # noqa: ANN001, ANN201
        raise NotImplementedError(f"{type(self).__name__} does not implement predict")

    def fit(self, X, y):  # noqa: ANN001, ANN201
        pass

    def finetune(self, X, y):  # noqa: ANN001, ANN201
        pass


# Pickles and reprs name the reference's modules, which the stand-in registers.
BaseModel.__module__ = "learnware.model.base"
TorchModel.__module__ = "learnware.model.torch_model"


class _StandInFinder(importlib.abc.MetaPathFinder):
    """Refuses ``learnware.*`` modules the stand-in does not provide, with a clear message
    (instead of a bare "No module named ...")."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> None:
        if fullname.startswith("learnware.") and fullname not in PROVIDED:
            raise ModuleNotFoundError(
                f"No module named {fullname!r}: the reference engine ('learnware') is not "
                "installed here; learndock's stand-in provides only learnware.model "
                "(BaseModel, TorchModel), learnware.model.base and learnware.model.torch_model",
                name=fullname,
            )
        return None


def _module(name: str, doc: str, package: bool = False, **attrs: Any) -> types.ModuleType:
    mod = types.ModuleType(name, doc)
    if package:
        mod.__path__ = []  # a package: its submodules are the registered ones
    mod.__dict__.update(attrs)
    return mod


def reference_installed() -> bool:
    """True when a real ``learnware`` package is importable (then it is used, not the shim)."""
    existing = sys.modules.get("learnware")
    if existing is not None:
        return not getattr(existing, "__learndock_stand_in__", False)
    return importlib.util.find_spec("learnware") is not None


def install_reference_shim() -> None:
    """Register the stand-in modules (idempotent; a no-op where the reference is installed)."""
    if reference_installed():
        return
    if sys.modules.get("learnware.model.base") is not None:
        return  # already installed
    doc = "learndock's stand-in for the reference engine (see learndock.package.compat)"
    base = _module("learnware.model.base", doc, BaseModel=BaseModel)
    torch_model = _module("learnware.model.torch_model", doc, TorchModel=TorchModel)
    model = _module("learnware.model", doc, package=True, BaseModel=BaseModel,
                    TorchModel=TorchModel, base=base, torch_model=torch_model,
                    __all__=["BaseModel", "TorchModel"])
    pkg = _module("learnware", doc, package=True, model=model, __learndock_stand_in__=True)
    sys.modules.update({"learnware": pkg, "learnware.model": model,
                        "learnware.model.base": base, "learnware.model.torch_model": torch_model})
    if not any(isinstance(f, _StandInFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _StandInFinder())
