"""A minimal stand-in for the reference engine's ``learnware.model.BaseModel``.

Reference-format packages subclass ``learnware.model.BaseModel`` in their ``__init__.py``.
When the reference engine is not installed, importing such a package would fail; this shim
provides just that base class (shapes + no-op ``fit``/``finetune``). It is installed only when
package code is about to be imported anyway (trusted or sandboxed), never at learndock import.
"""

from __future__ import annotations

import importlib.util
import sys
import types


class BaseModel:
    def __init__(self, input_shape: tuple | None = None, output_shape: tuple | None = None):
        self.input_shape = input_shape
        self.output_shape = output_shape

    def fit(self, X, y):  # noqa: ANN001 - mirrors the reference signature
        pass

    def finetune(self, X, y):  # noqa: ANN001
        pass


def install_reference_shim() -> None:
    if "learnware" in sys.modules or importlib.util.find_spec("learnware") is not None:
        return
    pkg = types.ModuleType("learnware")
    pkg.__path__ = []  # mark as a package
    model = types.ModuleType("learnware.model")
    model.BaseModel = BaseModel
    pkg.model = model
    sys.modules["learnware"] = pkg
    sys.modules["learnware.model"] = model
