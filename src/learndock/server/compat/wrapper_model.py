"""A learndock learnware in the reference format -- the model class the reference engine loads.

The learndock dock writes this file as the ``__init__.py`` of the reference-format zip it serves
for a learnware uploaded in learndock's own format (``/beimingwu/engine/download_learnware``).
The zip holds, besides this file:

- ``learndock/``: the learnware's own package, unchanged (its ``learnware.yaml`` manifest, its
  model file, its statistical specs);
- ``learndock_runtime.json``: what this class needs from that manifest (model format and file,
  input shape, output contract, the skops types the dock accepted);
- ``learndock_model.pkl`` (scikit-learn models only): the same estimator, pickled by the dock,
  for environments without skops;
- ``learnware.yaml``, ``semantic_specification.json`` and ``stat_spec.json`` in the reference's
  layout, and ``requirements.txt``.

It runs in the *client's* environment, where learndock is not installed: it needs only numpy
and the model's own library -- scikit-learn (with skops when available, else the pickle),
onnxruntime for ONNX models, or the package's code for ``python`` models -- and predicts what
learndock's ``Learnware.predict`` predicts for the same inputs. Python 3.8 compatible.
"""

import hashlib
import importlib
import importlib.machinery
import importlib.util
import json
import os
import pickle
import sys
import uuid

import numpy as np
from learnware.model import BaseModel

HERE = os.path.dirname(os.path.abspath(__file__))
CONFIG_FILE = "learndock_runtime.json"


def _config():
    with open(os.path.join(HERE, CONFIG_FILE), encoding="utf-8") as f:
        return json.load(f)


def _package_file(cfg, name):
    return os.path.join(HERE, cfg["package_dir"], name)


def _sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _flat(X):
    """scikit-learn estimators take 2-D tables: image samples as flattened pixels."""
    X = np.asarray(X)
    return X.reshape(X.shape[0], -1) if X.ndim > 2 else X


def _to_numpy(out):
    if hasattr(out, "detach") and hasattr(out, "cpu"):  # a torch tensor
        out = out.detach().cpu().numpy()
    return np.asarray(out)


class _Sklearn:
    """A scikit-learn model: skops when it is installed (it rebuilds only the types the dock
    accepted), else the pickle the dock wrote from the same estimator."""

    def __init__(self, cfg):
        try:
            import skops.io as sio
        except ImportError:
            sio = None
        if sio is not None:
            path = _package_file(cfg, cfg["file"])
            untrusted = set(sio.get_untrusted_types(file=path))
            refused = sorted(untrusted - set(cfg.get("trusted_types") or []))
            if refused:
                raise TypeError(f"skops model has types the dock did not accept: {refused}")
            self.model = sio.load(path, trusted=sorted(untrusted) or None)
            self.loaded_with = "skops"
        else:
            path = os.path.join(HERE, cfg["pickle"])
            if _sha256(path) != cfg["pickle_sha256"]:
                raise ValueError(f"{cfg['pickle']} does not match the hash the dock recorded")
            with open(path, "rb") as f:
                self.model = pickle.load(f)
            self.loaded_with = "pickle"

    def has(self, method):
        return callable(getattr(self.model, method, None))

    def call(self, method, *args):
        return getattr(self.model, method)(*(_flat(a) for a in args))


class _Onnx:
    """An ONNX graph, run by onnxruntime (listed in requirements.txt)."""

    def __init__(self, cfg):
        try:
            import onnxruntime as ort
        except ImportError:
            raise ImportError(
                "this learnware is an ONNX model: install onnxruntime (see requirements.txt, or "
                "load it with runnable_option='conda')"
            ) from None
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(_package_file(cfg, cfg["file"]), sess_options=opts,
                                            providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0]
        names = [o.name for o in self.session.get_outputs()]
        self.outputs = {"predict": cfg.get("label_output") or names[0],
                        "predict_proba": cfg.get("proba_output")}
        self.dtype = {"tensor(float)": np.float32, "tensor(double)": np.float64,
                      "tensor(int64)": np.int64, "tensor(int32)": np.int32}.get(self.input.type,
                                                                              np.float32)
        self.loaded_with = "onnxruntime"

    def has(self, method):
        return self.outputs.get(method) is not None

    def call(self, method, X):
        X = np.asarray(X, dtype=self.dtype)
        rank = len(self.input.shape) if self.input.shape else X.ndim
        if rank == 2 and X.ndim > 2:
            X = X.reshape(X.shape[0], -1)
        elif rank > X.ndim:
            X = X.reshape(X.shape[:1] + (1,) * (rank - X.ndim) + X.shape[1:])
        return self.session.run([self.outputs[method]], {self.input.name: X})[0]


class _Python:
    """The package's own model class (``python`` format), imported from ``learndock/``."""

    def __init__(self, cfg):
        root = os.path.join(HERE, cfg["package_dir"])
        name = "_learndock_pkg_" + uuid.uuid4().hex[:12]
        init = os.path.join(root, "__init__.py")
        if os.path.isfile(init):
            spec = importlib.util.spec_from_file_location(name, init,
                                                          submodule_search_locations=[root])
        else:
            spec = importlib.machinery.ModuleSpec(name, None, is_package=True)
            spec.submodule_search_locations = [root]
        pkg = importlib.util.module_from_spec(spec)
        sys.modules[name] = pkg
        if spec.loader is not None:
            spec.loader.exec_module(pkg)
        module = cfg["module"]
        mod = pkg if module == "__init__.py" else importlib.import_module(
            name + "." + module[:-3].replace("/", "."))
        self.model = getattr(mod, cfg["class_name"])(**(cfg.get("kwargs") or {}))
        self.loaded_with = "python"

    def has(self, method):
        return callable(getattr(self.model, method, None))

    def call(self, method, *args):
        out = getattr(self.model, method)(*args)
        return None if out is None or out is self.model else _to_numpy(out)


RUNTIMES = {"skops": _Sklearn, "onnx": _Onnx, "python": _Python}


class LearndockModel(BaseModel):
    """The learnware's model, with learndock's input/output contract."""

    def __init__(self, **kwargs):
        cfg = _config()
        shape, out = cfg.get("input_shape"), cfg.get("output_shape")
        super().__init__(input_shape=tuple(shape) if shape else None,
                         output_shape=tuple(out) if out else None)
        self.config = cfg
        self.runtime = RUNTIMES[cfg["format"]](cfg)

    # ------------------------------------------------------------------ contract
    def _input(self, X):
        cfg = self.config
        if cfg["data_type"] == "Text":
            texts = [X] if isinstance(X, str) else list(X)
            return np.asarray([str(t) for t in texts], dtype=object)
        arr = np.asarray(X, dtype=np.float64)
        shape = tuple(cfg["input_shape"])
        if cfg["data_type"] == "Table" and arr.ndim == 1 and shape == (arr.size,):
            arr = arr.reshape(1, -1)
        if arr.ndim < 1 or tuple(arr.shape[1:]) != shape:
            raise ValueError(f"expected inputs of shape (n, {', '.join(map(str, shape))}), "
                             f"got {arr.shape}")
        return arr

    def _labels(self, out):
        labels = self.config.get("labels")
        if labels and out.dtype.kind in "fc" and np.all(np.isfinite(out)) \
                and np.all(out == np.round(out)):
            allowed = np.asarray(labels)
            if allowed.dtype.kind in "iu":
                out = out.astype(allowed.dtype)
        return out

    def _output(self, out, n):
        out = _to_numpy(out)
        kind = self.config["output_kind"]
        if kind == "label":
            if out.ndim == 2 and out.shape[1] == 1:
                out = out[:, 0]
            return self._labels(out)
        if kind == "probabilities":
            return out.astype(np.float64)
        if kind == "auto":
            if out.ndim == 1 or (out.ndim == 2 and out.shape[1] == 1):
                out = out.reshape(n)
                return self._labels(out) if self.config.get("labels") else out
            return out
        expected = tuple(self.config.get("value_shape") or ())
        if expected in ((), (1,)):
            expected = ()
        if out.ndim == 2 and expected == () and out.shape[1] == 1:
            out = out[:, 0]
        return out.astype(np.float64)

    # ------------------------------------------------------------------ the model
    def predict(self, X):
        arr = self._input(X)
        return self._output(self.runtime.call("predict", arr), arr.shape[0])

    def predict_proba(self, X):
        """Class probabilities, columns in the order of ``config["labels"]``."""
        labels = self.config.get("labels")
        if not labels:
            raise AttributeError("this learnware is not a classifier")
        arr = self._input(X)
        if self.config["output_kind"] == "probabilities":
            return np.asarray(self.runtime.call("predict", arr), dtype=np.float64)
        if self.runtime.has("predict_proba"):
            return np.asarray(self.runtime.call("predict_proba", arr), dtype=np.float64)
        pred = self.predict(arr).tolist()
        onehot = np.zeros((arr.shape[0], len(labels)))
        onehot[np.arange(arr.shape[0]), [labels.index(v) for v in pred]] = 1.0
        return onehot

    def fit(self, X, y):
        pass

    def finetune(self, X, y):
        for method in ("finetune", "partial_fit"):
            if self.runtime.has(method):
                self.runtime.call(method, self._input(X), np.asarray(y))
                return
