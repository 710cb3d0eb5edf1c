"""Model runtimes: how each model format is loaded and called.

``onnx`` and ``skops`` models are data: onnxruntime executes a graph of standard operators and
skops.io rebuilds only allow-listed types, so neither runs code from the package. The
``python`` format is code; :class:`PythonRuntime` imports it in this process and therefore
insists on ``trust_remote_code=True``. :mod:`learndock.sandbox` runs it in a subprocess instead.
"""

from __future__ import annotations

import importlib.util
import sys
import uuid
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from learndock.errors import ContractError, PackageError, TrustError
from learndock.package.manifest import Manifest


class ModelRuntime(Protocol):
    """What the Learnware wrapper needs from a loaded model."""

    def predict(self, X: np.ndarray) -> np.ndarray: ...

    def has(self, method: str) -> bool: ...

    def call(self, method: str, *args: np.ndarray) -> Any: ...


class OnnxRuntime:
    """Runs an ONNX graph with onnxruntime on the CPU."""

    def __init__(self, path: Path, manifest: Manifest) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        # No memory arena: with it a session keeps the peak of its largest call (~1 GB after
        # 10,000 images) for as long as the learnware stays loaded.
        opts.enable_cpu_mem_arena = False
        try:
            self.session = ort.InferenceSession(
                str(path), sess_options=opts, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own exception types
            raise PackageError(f"cannot load ONNX model {path.name}: {exc}") from None
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise PackageError(f"ONNX model must take exactly one input, it takes {len(inputs)}")
        self.input = inputs[0]
        names = [o.name for o in self.session.get_outputs()]
        entry = manifest.model
        self.label_output = entry.label_output or names[0]
        self.proba_output = entry.proba_output or (
            "probabilities" if "probabilities" in names else None
        )
        for n in (self.label_output, self.proba_output):
            if n is not None and n not in names:
                raise PackageError(f"ONNX model has no output named {n!r} (outputs: {names})")
        self._dtype = {
            "tensor(float)": np.float32,
            "tensor(double)": np.float64,
            "tensor(int64)": np.int64,
            "tensor(int32)": np.int32,
        }.get(self.input.type, np.float32)

    def _run(self, name: str, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=self._dtype)
        rank = len(self.input.shape) if self.input.shape else X.ndim
        if rank == 2 and X.ndim > 2:
            X = X.reshape(X.shape[0], -1)  # a graph over flattened pixels (e.g. skl2onnx)
        elif rank > X.ndim:
            X = X.reshape(X.shape[:1] + (1,) * (rank - X.ndim) + X.shape[1:])  # add channel
        out = self.session.run([name], {self.input.name: X})[0]
        return np.asarray(out)

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self._run(self.label_output, X)

    def has(self, method: str) -> bool:
        return method == "predict" or (method == "predict_proba" and self.proba_output is not None)

    def call(self, method: str, *args: np.ndarray) -> Any:
        if method == "predict":
            return self.predict(args[0])
        if method == "predict_proba" and self.proba_output is not None:
            return self._run(self.proba_output, args[0])
        raise ContractError(f"ONNX model does not support {method!r}")


#: scikit-learn's own array-holding tree classes. skops does not trust them by default, but
#: they are classes of the installed scikit-learn (never code from the package) rebuilt from
#: arrays; tree ensembles are among the most common tabular learnwares, so the dock trusts them.
REVIEWED_SKLEARN_TYPES = (
    "sklearn.tree._tree.Tree",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
)


class SkopsRuntime:
    """A scikit-learn model stored with skops.io; only trusted types are rebuilt.

    Trusted: skops' defaults, :data:`REVIEWED_SKLEARN_TYPES` and whatever the caller passes in
    ``trusted_types`` -- never a list taken from the package itself.
    """

    def __init__(self, path: Path, trusted_types: list[str] | None = None) -> None:
        import skops.io as sio

        try:
            untrusted = sio.get_untrusted_types(file=str(path))
        except Exception as exc:
            raise PackageError(f"cannot read skops model {path.name}: {exc}") from None
        allowed = set(trusted_types or []) | set(REVIEWED_SKLEARN_TYPES)
        refused = sorted(set(untrusted) - allowed)
        if refused:
            raise TrustError(
                f"skops model {path.name} contains types that are not trusted by default: "
                f"{refused}. Review them and pass trusted_types=[...] to load it."
            )
        try:
            self.model = sio.load(str(path), trusted=sorted(allowed & set(untrusted)) or None)
        except Exception as exc:
            raise PackageError(f"cannot load skops model {path.name}: {exc}") from None

    def predict(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(self.model.predict(_flat(X)))

    def has(self, method: str) -> bool:
        return callable(getattr(self.model, method, None))

    def call(self, method: str, *args: np.ndarray) -> Any:
        fn = getattr(self.model, method, None)
        if not callable(fn):
            raise ContractError(f"model does not support {method!r}")
        return fn(*(_flat(a) for a in args))


def _flat(X: np.ndarray) -> np.ndarray:
    """scikit-learn estimators take 2-D tables: image samples are passed as flattened pixels."""
    X = np.asarray(X)
    return X.reshape(X.shape[0], -1) if X.ndim > 2 else X


def import_package_class(root: Path, module: str, class_name: str) -> type:
    """Import ``class_name`` from ``module`` inside package dir ``root`` under a unique name.

    The directory is loaded as a fresh package (so relative imports work and two learnwares
    with the same module names never shadow each other); nothing is added to ``sys.path``.
    """
    from learndock.package.compat import install_reference_shim

    install_reference_shim()
    pkg_name = f"_learndock_pkg_{uuid.uuid4().hex[:12]}"
    init = root / "__init__.py"
    if init.is_file():
        spec = importlib.util.spec_from_file_location(
            pkg_name, init, submodule_search_locations=[str(root)]
        )
    else:
        spec = importlib.machinery.ModuleSpec(pkg_name, None, is_package=True)
        spec.submodule_search_locations = [str(root)]
    if spec is None:
        raise PackageError(f"cannot import package at {root}")
    pkg = importlib.util.module_from_spec(spec)
    sys.modules[pkg_name] = pkg
    if spec.loader is not None:
        spec.loader.exec_module(pkg)
    if module == "__init__.py":
        mod = pkg
    else:
        sub = module[:-3].replace("/", ".")
        mod = importlib.import_module(f"{pkg_name}.{sub}")
    cls = getattr(mod, class_name, None)
    if not isinstance(cls, type):
        raise PackageError(f"{module} defines no class {class_name!r}")
    return cls


class PythonRuntime:
    """Imports and instantiates the package's model class in this process (trusted only)."""

    def __init__(self, root: Path, manifest: Manifest, trust_remote_code: bool = False) -> None:
        if not trust_remote_code:
            raise TrustError(
                f"learnware {manifest.name!r} is a 'python' model: loading it runs code from "
                "the package. Pass trust_remote_code=True if you trust its author, or run it "
                "in the sandbox (runtime='sandbox')."
            )
        entry = manifest.model
        cls = import_package_class(root, entry.module, entry.class_name)
        try:
            self.model = cls(**entry.kwargs)
        except Exception as exc:
            raise PackageError(f"{entry.class_name}(**kwargs) failed: {exc!r}") from exc

    def predict(self, X: np.ndarray) -> np.ndarray:
        return _to_numpy(self.model.predict(X))

    def has(self, method: str) -> bool:
        return callable(getattr(self.model, method, None))

    def call(self, method: str, *args: np.ndarray) -> Any:
        fn = getattr(self.model, method, None)
        if not callable(fn):
            raise ContractError(f"model does not support {method!r}")
        out = fn(*args)
        return None if out is None or out is self.model else _to_numpy(out)


def _to_numpy(out: Any) -> np.ndarray:
    if hasattr(out, "detach") and hasattr(out, "cpu"):  # torch tensors, without importing torch
        out = out.detach().cpu().numpy()
    return np.asarray(out)
