"""The Learnware object: a manifest, its statistical specs and a lazily loaded model.

``load_learnware`` opens a package directory or zip (zips are checked and extracted safely into
a private temporary directory), validates the manifest and the specs against the declared input
shape, and returns a :class:`Learnware` whose ``predict``/``predict_proba`` enforce the
manifest's input/output contract on every call.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
import weakref
from pathlib import Path
from typing import Any, Literal

import numpy as np

from learndock.config import ArchiveLimits
from learndock.errors import ContractError, PackageError, SpecError
from learndock.package.archive import digest_directory, extract_zip
from learndock.package.manifest import MANIFEST_NAME, Manifest
from learndock.package.runtime import ModelRuntime, OnnxRuntime, PythonRuntime, SkopsRuntime
from learndock.spec.encoders import as_texts
from learndock.spec.io import StatSpec, load_stat_spec
from learndock.spec.semantic import DataType, SemanticSpec

Runtime = Literal["auto", "trusted", "sandbox"]
PROBA_TOL = 1e-3


class Learnware:
    """A loaded learnware package. Create with :func:`load_learnware`."""

    def __init__(
        self,
        root: Path,
        manifest: Manifest,
        specs: dict[str, StatSpec],
        digest: str,
        *,
        trust_remote_code: bool = False,
        runtime: Runtime = "auto",
        trusted_types: list[str] | None = None,
        sandbox_timeout: float | None = None,
        owns_root: bool = False,
    ) -> None:
        self.root = root
        self.manifest = manifest
        self.specs = specs
        self.digest = digest
        self.trust_remote_code = trust_remote_code
        self.runtime_kind = runtime
        self.trusted_types = trusted_types
        self.sandbox_timeout = sandbox_timeout
        self._model: ModelRuntime | None = None
        self._finalizer = (
            weakref.finalize(self, shutil.rmtree, str(root), True) if owns_root else None
        )

    # ------------------------------------------------------------------ metadata
    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def version(self) -> str:
        return self.manifest.version

    @property
    def semantic(self) -> SemanticSpec:
        return self.manifest.semantic

    @property
    def stat_spec(self) -> StatSpec:
        """The learnware's primary statistical spec (the first one listed)."""
        if not self.specs:
            raise SpecError(f"learnware {self.name!r} has no statistical specification")
        return next(iter(self.specs.values()))

    @property
    def labels(self) -> list[Any] | None:
        return self.manifest.output.labels

    def __copy__(self) -> Learnware:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> Learnware:
        # A Learnware is a handle on a loaded model (an ONNX session, a sandbox process):
        # copies share it, which lets scikit-learn clone() reusers that hold learnwares.
        return self

    def __repr__(self) -> str:
        m = self.manifest
        return (
            f"Learnware(name={m.name!r}, version={m.version!r}, model={m.model.format!r}, "
            f"task={m.semantic.task_type.value!r}, digest={self.digest[:12]})"
        )

    # ------------------------------------------------------------------ model
    @property
    def model(self) -> ModelRuntime:
        if self._model is None:
            self._model = self._load_model()
        return self._model

    def _load_model(self) -> ModelRuntime:
        entry = self.manifest.model
        if entry.format == "onnx":
            return OnnxRuntime(self.root / str(entry.file), self.manifest)
        if entry.format == "skops":
            return SkopsRuntime(self.root / str(entry.file), self.trusted_types)
        if self.runtime_kind == "sandbox" or (
            self.runtime_kind == "auto" and not self.trust_remote_code
        ):
            if self.runtime_kind == "auto":
                # Never silently: python code runs only on an explicit choice.
                return PythonRuntime(self.root, self.manifest, trust_remote_code=False)
            from learndock.sandbox import SandboxedRuntime

            return SandboxedRuntime(self.root, self.manifest, timeout=self.sandbox_timeout)
        return PythonRuntime(self.root, self.manifest, trust_remote_code=self.trust_remote_code)

    def close(self) -> None:
        """Stop a sandbox process (if any) and delete the extracted files (for zips)."""
        close = getattr(self._model, "close", None)
        if callable(close):
            close()
        self._model = None
        if self._finalizer is not None:
            self._finalizer()

    def __enter__(self) -> Learnware:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ contract
    def check_input(self, X: Any) -> np.ndarray:
        shape = tuple(self.manifest.input.shape)
        if self.semantic.data_type is DataType.TEXT:
            try:
                return np.asarray(as_texts(X), dtype=object)
            except SpecError as exc:
                raise ContractError(f"input for {self.name!r}: {exc}") from None
        try:
            arr = np.asarray(X, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ContractError(f"input for {self.name!r} must be numeric: {exc}") from None
        if self.semantic.data_type is DataType.TABLE and arr.ndim == 1 and shape == (arr.size,):
            arr = arr.reshape(1, -1)
        if arr.ndim < 1 or tuple(arr.shape[1:]) != shape:
            raise ContractError(
                f"{self.name!r} expects inputs of shape (n, {', '.join(map(str, shape))}), "
                f"got {arr.shape}"
            )
        return arr

    def _check_labels(self, out: np.ndarray) -> np.ndarray:
        labels = self.manifest.output.labels
        if labels is None:
            return out
        allowed = np.asarray(labels)
        if out.dtype.kind in "fc":
            if not np.all(np.isfinite(out)):
                raise ContractError(f"{self.name!r} predicted non-finite labels")
            if np.all(out == np.round(out)) and allowed.dtype.kind in "iu":
                out = out.astype(allowed.dtype)
        bad = ~np.isin(out, allowed)
        if bad.any():
            raise ContractError(
                f"{self.name!r} predicted labels outside its declared label set {labels}: "
                f"{sorted(set(np.asarray(out)[bad].tolist()))[:5]}"
            )
        return out

    def _check_proba(self, out: np.ndarray, n: int) -> np.ndarray:
        labels = self.manifest.output.labels or []
        out = np.asarray(out, dtype=np.float64)
        if out.shape != (n, len(labels)):
            raise ContractError(
                f"{self.name!r} probabilities must have shape ({n}, {len(labels)}), got {out.shape}"
            )
        if not np.all(np.isfinite(out)):
            raise ContractError(f"{self.name!r} returned non-finite probabilities")
        if np.any(out < -PROBA_TOL) or np.any(np.abs(out.sum(axis=1) - 1.0) > PROBA_TOL):
            raise ContractError(f"{self.name!r} probabilities must be in [0, 1] and sum to 1")
        return out

    def check_output(self, out: Any, n: int) -> np.ndarray:
        """Validate a ``predict`` output against the manifest's output contract."""
        out = np.asarray(out)
        oc = self.manifest.output
        if out.shape[:1] != (n,):
            raise ContractError(f"{self.name!r} returned {out.shape[:1]} rows for {n} inputs")
        if out.dtype.kind in "fc" and not np.all(np.isfinite(out)):
            raise ContractError(f"{self.name!r} returned NaN or inf")
        if oc.kind == "label":
            if out.ndim == 2 and out.shape[1] == 1:
                out = out[:, 0]
            if out.ndim != 1:
                raise ContractError(f"{self.name!r} must return one label per row, got {out.shape}")
            return self._check_labels(out)
        if oc.kind == "probabilities":
            return self._check_proba(out, n)
        if oc.kind == "auto":
            if out.ndim == 1 or (out.ndim == 2 and out.shape[1] == 1):
                return self._check_labels(out.reshape(n)) if oc.labels else out.reshape(n)
            if oc.labels is not None and out.shape != (n, len(oc.labels)):
                raise ContractError(
                    f"{self.name!r} returned shape {out.shape}; expected labels ({n},) or scores "
                    f"({n}, {len(oc.labels)})"
                )
            return out
        if out.dtype.kind not in "fiub":
            raise ContractError(f"{self.name!r} must return numbers, got dtype {out.dtype}")
        expected = tuple(oc.shape) if oc.shape not in ([], [1]) else ()
        if out.ndim == 2 and expected == () and out.shape[1] == 1:
            out = out[:, 0]
        if tuple(out.shape[1:]) != expected:
            raise ContractError(
                f"{self.name!r} outputs must have per-row shape {list(expected)}, got "
                f"{list(out.shape[1:])}"
            )
        return out.astype(np.float64)

    # ------------------------------------------------------------------ prediction
    def predict(self, X: Any) -> np.ndarray:
        arr = self.check_input(X)
        return self.check_output(self.model.predict(arr), arr.shape[0])

    @property
    def has_proba(self) -> bool:
        oc = self.manifest.output
        return oc.kind == "probabilities" or (
            oc.labels is not None and self.model.has("predict_proba")
        )

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities, columns ordered as ``labels``."""
        oc = self.manifest.output
        if oc.labels is None:
            raise ContractError(f"{self.name!r} is not a classifier (no label set)")
        arr = self.check_input(X)
        if oc.kind == "probabilities":
            return self._check_proba(self.model.predict(arr), arr.shape[0])
        if self.model.has("predict_proba"):
            return self._check_proba(self.model.call("predict_proba", arr), arr.shape[0])
        # Label-only models: one-hot of the predicted label is the honest probability.
        pred = self.predict(arr)
        labels = list(oc.labels)
        idx = np.array([labels.index(v) for v in pred.tolist()])
        onehot = np.zeros((arr.shape[0], len(labels)))
        onehot[np.arange(arr.shape[0]), idx] = 1.0
        return onehot

    def supports(self, method: str) -> bool:
        return self.model.has(method)

    def finetune(self, X: Any, y: Any) -> Learnware:
        """Adapt the model to the user's labelled data, where the model declares it can."""
        arr = self.check_input(X)
        for method in ("finetune", "partial_fit"):
            if self.model.has(method):
                self.model.call(method, arr, np.asarray(y))
                return self
        raise ContractError(f"{self.name!r} declares no finetune/partial_fit method")


def _load_specs(
    root: Path, manifest: Manifest, limits: ArchiveLimits | None = None
) -> dict[str, StatSpec]:
    """Load the manifest's spec files, each within ``limits`` (file size and point count read
    before arrays are built; K, d, gamma and coordinates by :func:`validate_stat_spec`)."""
    limits = limits or ArchiveLimits()
    specs: dict[str, StatSpec] = {}
    for entry in manifest.stat_specs:
        path = root / entry.file
        if not path.is_file():
            raise PackageError(f"stat spec file {entry.file!r} listed in the manifest is missing")
        try:
            spec = load_stat_spec(path, limits)
        except SpecError as exc:
            raise PackageError(f"stat spec {entry.file!r}: {exc}") from None
        if spec.type_name != entry.type:
            raise PackageError(
                f"stat spec {entry.file!r} is of type {spec.type_name!r}, manifest says "
                f"{entry.type!r}"
            )
        if spec.type_name == "rkme-table" and spec.dimension != manifest.input.size:
            raise PackageError(
                f"stat spec {entry.file!r} has dimension {spec.dimension} but the declared input "
                f"shape is {manifest.input.shape}"
            )
        specs.setdefault(entry.type, spec)
    return specs


def open_package_dir(
    path: str | Path,
    *,
    limits: ArchiveLimits | None = None,
    semantic: Any = None,
) -> tuple[Path, bool]:
    """Return a directory holding the package (extracting a zip into a new temp dir).

    Reference-format packages are converted to a learndock manifest on the way (the temp copy
    is changed, never the caller's files). A zip whose files all sit under one top folder
    (and whose root holds nothing else) is unwrapped (:func:`unwrap_single_folder`). Returns
    (directory, is_temporary).
    """
    from learndock.package.reference import convert_reference_dir, is_reference_dir

    path = Path(path)
    notes: list[str] = []
    if path.is_dir():
        root, temporary = path, False
        if is_reference_dir(root, limits):
            tmp = Path(tempfile.mkdtemp(prefix="learndock-pkg-"))
            shutil.copytree(root, tmp, dirs_exist_ok=True, symlinks=True)
            root, temporary = tmp, True
    elif path.is_file():
        root = Path(tempfile.mkdtemp(prefix="learndock-pkg-"))
        try:
            extract_zip(path, root, limits)
            folder = unwrap_single_folder(root)
        except Exception:
            shutil.rmtree(root, ignore_errors=True)
            raise
        temporary = True
        if folder is not None:
            notes.append(f"the zip holds its files under one top folder {folder[:100]!r}: "
                         "unwrapped")
    else:
        raise PackageError(f"no package at {path}")
    try:
        if is_reference_dir(root, limits):
            convert_reference_dir(root, semantic=semantic, limits=limits, notes=notes)
    except Exception:
        if temporary:
            shutil.rmtree(root, ignore_errors=True)
        raise
    return root, temporary


def unwrap_single_folder(root: Path) -> str | None:
    """Move the contents of ``root``'s only entry up into ``root``, when that entry is a
    directory holding ``learnware.yaml`` and ``root`` holds nothing else (zips made by
    compressing a folder). Returns the folder's name, or None when nothing was done.

    ``root`` is a private directory the zip was just extracted into: every name in it passed
    the archive checks (no links, no ``..``, unique names), and moving a subtree up one level
    keeps every path inside ``root``.
    """
    entries = list(root.iterdir())
    if len(entries) != 1 or (root / MANIFEST_NAME).exists():
        return None
    folder = entries[0]
    if folder.is_symlink() or not folder.is_dir() or not (folder / MANIFEST_NAME).is_file():
        return None
    # Rename first: the folder may hold an entry of its own name (pkg/pkg/...).
    staging = root / f".learndock-unwrap-{uuid.uuid4().hex}"
    folder.rename(staging)
    for child in list(staging.iterdir()):
        child.rename(root / child.name)
    staging.rmdir()
    return folder.name


def load_learnware(
    path: str | Path,
    *,
    trust_remote_code: bool = False,
    runtime: Runtime = "auto",
    trusted_types: list[str] | None = None,
    limits: ArchiveLimits | None = None,
    semantic: Any = None,
    sandbox_timeout: float | None = None,
) -> Learnware:
    """Open a learnware package (directory or zip; learndock or reference format).

    Loading validates the manifest and specs but does not load the model; the model is loaded
    on first use. ``python``-format models run only with ``trust_remote_code=True`` (in this
    process) or ``runtime="sandbox"`` (in a subprocess). ``semantic`` supplies the semantic spec
    for reference-format zips that do not carry one.
    """
    root, temporary = open_package_dir(path, limits=limits, semantic=semantic)
    try:
        manifest = Manifest.load(root, limits)
        _check_files(root, manifest)
        specs = _load_specs(root, manifest, limits)
        digest = digest_directory(root)
    except Exception:
        if temporary:
            shutil.rmtree(root, ignore_errors=True)
        raise
    return Learnware(
        root,
        manifest,
        specs,
        digest,
        trust_remote_code=trust_remote_code,
        runtime=runtime,
        trusted_types=trusted_types,
        sandbox_timeout=sandbox_timeout,
        owns_root=temporary,
    )


def _check_files(root: Path, manifest: Manifest) -> None:
    entry = manifest.model
    needed = [entry.file] if entry.format in ("onnx", "skops") else [entry.module]
    for rel in needed:
        if rel and not (root / rel).is_file():
            raise PackageError(f"model file {rel!r} named in {MANIFEST_NAME} is missing")
