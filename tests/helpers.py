"""Shared builders for the engine tests: semantic specs, packages, zips (importable module)."""

from __future__ import annotations

import json
import stat
import textwrap
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from learndock.package.manifest import Manifest
from learndock.spec import RKMETableSpec

# ---------------------------------------------------------------------- semantic specs


def table_semantic(
    dim: int,
    task: str = "Classification",
    n_out: int = 10,
    *,
    name: str = "digits classifier",
    scenarios: tuple[str, ...] = ("Education", "Computer"),
    license: str = "MIT",
    library: str = "Scikit-learn",
) -> dict[str, Any]:
    """A valid learndock-shape semantic spec dict for a table learnware of ``dim`` features."""
    sem: dict[str, Any] = {
        "name": name,
        "description": f"A {task.lower()} model on {dim} numeric features.",
        "data_type": "Table",
        "task_type": task,
        "library_type": library,
        "scenarios": list(scenarios),
        "license": license,
        "input": {"dimension": dim, "descriptions": {i: f"feature {i}" for i in range(dim)}},
    }
    if task in ("Classification", "Regression"):
        sem["output"] = {
            "dimension": n_out,
            "descriptions": {i: f"output {i}" for i in range(n_out)},
        }
    return sem


def reference_semantic(dim: int, n_classes: int = 10, name: str = "ref digits") -> dict[str, Any]:
    """The reference dock's ``{"Key": {"Type", "Values"}}`` semantic dict (classification)."""
    return {
        "Data": {"Type": "Class", "Values": ["Table"]},
        "Task": {"Type": "Class", "Values": ["Classification"]},
        "Library": {"Type": "Class", "Values": ["Scikit-learn"]},
        "Scenario": {"Type": "Tag", "Values": ["Education"]},
        "License": {"Type": "Class", "Values": ["Apache-2.0"]},
        "Name": {"Type": "String", "Values": name},
        "Description": {"Type": "String", "Values": "A linear digits classifier."},
        "Input": {"Dimension": dim, "Description": {str(i): f"pixel {i}" for i in range(dim)}},
        "Output": {
            "Dimension": n_classes,
            "Description": {str(i): f"digit {i}" for i in range(n_classes)},
        },
    }


# ---------------------------------------------------------------------- zips


def make_zip(
    path: Path,
    entries: list[tuple[str | zipfile.ZipInfo, bytes]],
    compression: int = zipfile.ZIP_DEFLATED,
) -> Path:
    """Write a zip with exactly these entries (duplicates and odd names allowed)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns on duplicate names
        with zipfile.ZipFile(path, "w", compression=compression) as zf:
            for name, data in entries:
                zf.writestr(name, data)
    return path


def symlink_info(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.create_system = 3
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


def zip_directory(directory: Path, out: Path, *, reverse: bool = False,
                  compression: int = zipfile.ZIP_STORED) -> Path:
    """Zip a directory's files with plain zipfile (not learndock's writer)."""
    files = sorted(p for p in directory.rglob("*") if p.is_file())
    if reverse:
        files.reverse()
    with zipfile.ZipFile(out, "w", compression=compression) as zf:
        for p in files:
            zf.write(p, p.relative_to(directory).as_posix())
    return out


# ---------------------------------------------------------------------- python-format packages

#: A linear classifier read from .npy weights; module-level code leaves traces of its import
#: (an env var and a marker file next to the module) so tests can see *where* it ran.
LINEAR_MODEL_PY = textwrap.dedent(
    """
    import os
    import time
    from pathlib import Path

    import numpy as np

    HERE = Path(__file__).resolve().parent
    os.environ["LEARNDOCK_TEST_IMPORTED"] = "imported"
    try:  # the jail mounts the package read-only: only trusted in-process runs leave it
        (HERE / "IMPORTED.marker").write_text(str(os.getpid()))
    except OSError:
        pass


    class Model:
        def __init__(self, sleep_in_init=0.0):
            time.sleep(sleep_in_init)
            self.W = np.load(HERE / "W.npy", allow_pickle=False)
            self.b = np.load(HERE / "b.npy", allow_pickle=False)

        def predict(self, X):
            X = np.asarray(X, dtype=np.float64)
            if X[0, 0] <= -1000:
                raise ValueError("boom from the model")
            if X[0, 0] >= 1000:
                time.sleep(60)
            return np.argmax(X @ self.W + self.b, axis=1)
    """
)

def write_python_package(
    directory: Path,
    spec: RKMETableSpec,
    *,
    source: str = LINEAR_MODEL_PY,
    class_name: str = "Model",
    module: str = "model.py",
    task: str = "Classification",
    n_classes: int = 10,
    weights: tuple[np.ndarray, np.ndarray] | None = None,
    kwargs: dict[str, Any] | None = None,
    name: str = "python-model",
) -> Path:
    """A learndock ``python``-format package (manifest + module + spec [+ weights])."""
    directory.mkdir(parents=True, exist_ok=True)
    d = spec.dimension
    (directory / module).write_text(source, encoding="utf-8")
    if weights is not None:
        np.save(directory / "W.npy", weights[0], allow_pickle=False)
        np.save(directory / "b.npy", weights[1], allow_pickle=False)
    spec.save(directory / "spec.json")
    if task == "Classification":
        output: dict[str, Any] = {"kind": "label", "labels": list(range(n_classes))}
        sem = table_semantic(d, "Classification", n_classes, name=name)
    else:
        output = {"kind": "value", "shape": []}
        sem = table_semantic(d, "Regression", 1, name=name)
    manifest = Manifest.parse(
        {
            "format_version": 1,
            "name": name,
            "semantic": sem,
            "model": {
                "format": "python",
                "module": module,
                "class_name": class_name,
                "kwargs": kwargs or {},
            },
            "input": {"shape": [d], "features": [{"name": f"x{i}"} for i in range(d)]},
            "output": output,
            "stat_specs": [{"type": "rkme-table", "file": "spec.json"}],
        }
    )
    manifest.save(directory)
    return directory


# ---------------------------------------------------------------------- reference packages

REFERENCE_INIT_PY = textwrap.dedent(
    """
    import os

    import numpy as np
    from learnware.model import BaseModel


    class MyModel(BaseModel):
        def __init__(self):
            super().__init__(input_shape=(64,), output_shape=(1,))
            here = os.path.dirname(os.path.abspath(__file__))
            self.W = np.load(os.path.join(here, "weights.npy"), allow_pickle=False)
            self.b = np.load(os.path.join(here, "bias.npy"), allow_pickle=False)

        def fit(self, X, y):
            pass

        def predict(self, X):
            return np.argmax(np.asarray(X) @ self.W + self.b, axis=1)
    """
)

REFERENCE_YAML = {
    "model": {"class_name": "MyModel", "module_path": "__init__.py", "kwargs": {}},
    "stat_specifications": [
        {
            "module_path": "learnware.specification",
            "class_name": "RKMETableSpecification",
            "file_name": "stat_spec.json",
            "kwargs": {},
        }
    ],
}

REFERENCE_REQUIREMENTS = "numpy>=1.20\n# a comment line\nscikit-learn  # inline comment\n-r other.txt\n\n"


def reference_stat_spec_dict(z: np.ndarray, beta: np.ndarray, gamma: float, n: int) -> dict:
    return {
        "z": np.asarray(z).tolist(),
        "beta": np.asarray(beta).tolist(),
        "gamma": gamma,
        "num_points": n,
        "type": "RKMETableSpecification",
    }


def write_reference_dir(
    directory: Path,
    weights: tuple[np.ndarray, np.ndarray],
    stat_spec: dict[str, Any],
    *,
    semantic: dict[str, Any] | None = None,
) -> Path:
    """A package in the reference engine's format (what Beimingwu serves)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "learnware.yaml").write_text(yaml.safe_dump(REFERENCE_YAML), encoding="utf-8")
    (directory / "__init__.py").write_text(REFERENCE_INIT_PY, encoding="utf-8")
    np.save(directory / "weights.npy", weights[0], allow_pickle=False)
    np.save(directory / "bias.npy", weights[1], allow_pickle=False)
    (directory / "stat_spec.json").write_text(
        json.dumps(stat_spec, separators=(",", ":")), encoding="utf-8"
    )
    (directory / "requirements.txt").write_text(REFERENCE_REQUIREMENTS, encoding="utf-8")
    if semantic is not None:
        (directory / "semantic_specification.json").write_text(json.dumps(semantic))
    return directory


def normalise(text: str) -> str:
    """Collapse whitespace (rich wraps long CLI messages)."""
    return " ".join(text.split())


#: A harmless first entry for hand-built zips.
OK_ENTRY = ("learnware.yaml", b"name: x\n")
