"""Building, packing and checking packages (the ``pack``/``check`` commands' engine)."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from learndock.config import ArchiveLimits
from learndock.errors import LearndockError, PackageError
from learndock.package.archive import digest_directory, inspect_zip, iter_package_files, write_zip
from learndock.package.learnware import Learnware, load_learnware, open_package_dir
from learndock.package.manifest import Manifest
from learndock.spec.semantic import DataType, TaskType


def pack(
    directory: str | Path,
    out: str | Path,
    *,
    limits: ArchiveLimits | None = None,
    semantic: Any = None,
) -> str:
    """Validate the package in ``directory`` and write a deterministic zip; returns its digest.

    Reference-format directories are converted on the way (the zip holds the converted
    manifest and specs). The caller's directory is never modified.
    """
    limits = limits or ArchiveLimits()
    root, temporary = open_package_dir(directory, limits=limits, semantic=semantic)
    try:
        lw = load_learnware(root, limits=limits)  # validates manifest, files and specs
        files = iter_package_files(root)
        write_zip(files, out, limits)
        return lw.digest
    finally:
        if temporary:
            shutil.rmtree(root, ignore_errors=True)


@dataclass
class CheckItem:
    name: str
    ok: bool
    message: str


@dataclass
class CheckReport:
    """The outcome of checking a package: one line per check, accepted only if all pass."""

    items: list[CheckItem] = field(default_factory=list)
    digest: str | None = None
    manifest: Manifest | None = None

    @property
    def ok(self) -> bool:
        return bool(self.items) and all(i.ok for i in self.items)

    def add(self, name: str, ok: bool, message: str) -> bool:
        self.items.append(CheckItem(name, ok, message))
        return ok

    def text(self) -> str:
        lines = [f"[{'ok' if i.ok else 'FAIL'}] {i.name}: {i.message}" for i in self.items]
        lines.append("accepted" if self.ok else "rejected")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "digest": self.digest,
            "name": self.manifest.name if self.manifest else None,
            "version": self.manifest.version if self.manifest else None,
            "checks": [{"name": i.name, "ok": i.ok, "message": i.message} for i in self.items],
        }


def check_package(
    path: str | Path,
    *,
    run_model: bool = True,
    trust_remote_code: bool = False,
    sandbox: bool = False,
    limits: ArchiveLimits | None = None,
    semantic: Any = None,
    n_probe: int = 32,
    sandbox_timeout: float | None = None,
) -> CheckReport:
    """Check a package the way the dock does on submission. Never raises on bad packages.

    Checks: archive safety, manifest + semantic spec, spec files (finite, simplex weights,
    dimension = declared input), and -- when ``run_model`` -- that the model loads and predicts
    on inputs drawn from its own spec by kernel herding, with outputs that honour the contract.
    ``python`` models are run only in the sandbox (``sandbox=True``) or with
    ``trust_remote_code=True``; otherwise that check is reported as not run (a failure).
    """
    report = CheckReport()
    p = Path(path)
    if p.is_file():
        try:
            entries = inspect_zip(p, limits)
            report.add("archive", True, f"{len(entries)} entries, all safe")
        except LearndockError as exc:
            report.add("archive", False, str(exc))
            return report
    try:
        lw = load_learnware(
            p,
            trust_remote_code=trust_remote_code,
            runtime="sandbox" if sandbox else ("trusted" if trust_remote_code else "auto"),
            limits=limits,
            semantic=semantic,
            sandbox_timeout=sandbox_timeout,
        )
    except LearndockError as exc:
        report.add("manifest and specs", False, str(exc))
        return report
    report.manifest = lw.manifest
    report.digest = lw.digest
    m = lw.manifest
    report.add(
        "manifest and specs",
        True,
        f"{m.name} {m.version}: {m.semantic.data_type.value} {m.semantic.task_type.value}, "
        f"{m.model.format} model, {len(lw.specs)} stat spec(s)",
    )
    if not lw.specs:
        report.add("statistical spec", False, "the package lists no statistical specification")
        lw.close()
        return report
    spec = lw.stat_spec
    sim = spec.self_inner
    report.add(
        "statistical spec",
        bool(np.isfinite(sim) and sim > 0),
        f"{spec.type_name}: {spec.n_points} points in {spec.dimension} dims, kernel "
        f"{spec.kernel.describe()}",
    )
    _spec_notes(lw, report)
    if run_model:
        try:
            _probe_model(lw, report, n_probe)
            # Which isolation ran the package's code (sandboxed python models only).
            isolation = getattr(lw._model, "isolation", None)
            if isolation:
                report.add("isolation", True, isolation)
        finally:
            lw.close()
    else:
        lw.close()
    return report


def _spec_notes(lw: Learnware, report: CheckReport) -> None:
    """Notes that do not reject a package: a degenerate kernel, a spec kept only for
    provenance, what a reference import recorded."""
    from learndock.spec.health import kernel_health
    from learndock.spec.reference import is_comparable

    spec = lw.stat_spec
    if not is_comparable(spec):
        report.add("spec note", True, f"{spec.type_name} spec compared with nothing in learndock: "
                   + str(getattr(spec, "encoder", {}).get("note", ""))[:600])
    else:
        health = kernel_health(spec)
        if health.degenerate:
            report.add("kernel note", True, health.explanation)
    if lw.semantic.origin == "reference":
        from learndock.package.reference import IMPORT_RECORD, read_import_record

        record = read_import_record(lw.root)
        if record is not None:
            from learndock.sandbox.protocol import sanitize

            notes = [sanitize(n, 600) for n in record.get("notes") or [] if isinstance(n, str)]
            report.add("reference import", True, f"converted from the reference format; "
                       f"recorded in {IMPORT_RECORD}: " + (" | ".join(notes[:12]) or "no notes"))


def _probe_model(lw: Learnware, report: CheckReport, n_probe: int) -> None:
    m = lw.manifest
    if m.model.format == "python" and not (lw.trust_remote_code or lw.runtime_kind == "sandbox"):
        report.add(
            "model runs",
            False,
            "python-format model not run: needs the sandbox or trust_remote_code",
        )
        return
    X, source = probe_inputs(lw, n_probe)
    n_probe = len(X)
    try:
        out = lw.predict(X)
    except LearndockError as exc:
        report.add("model runs", False, f"predict on {n_probe} {source}: {exc}"
                   + _sibling_import_hint(lw, str(exc)))
        return
    except Exception as exc:  # noqa: BLE001 -- any failure of uploaded code is a rejection
        report.add("model runs", False, f"predict raised {type(exc).__name__}: {exc}")
        return
    report.add("model runs", True, f"predict on {n_probe} {source} -> shape {list(out.shape)}")
    if m.semantic.task_type is TaskType.CLASSIFICATION and m.output.kind != "auto":
        try:
            proba = lw.predict_proba(X)
            report.add("probabilities", True, f"shape {list(proba.shape)}, rows sum to 1")
        except LearndockError as exc:
            report.add("probabilities", False, str(exc))
        except Exception as exc:  # noqa: BLE001
            report.add("probabilities", False, f"predict_proba raised {type(exc).__name__}: {exc}")


def _sibling_import_hint(lw: Learnware, message: str) -> str:
    """A hint when the package imports one of its own modules by absolute name
    (``from my_module import X``): package modules are imported relative to the package."""
    import re

    m = re.search(r"No module named '([A-Za-z_][A-Za-z0-9_]*)'", message)
    if m and ((lw.root / f"{m.group(1)}.py").is_file() or (lw.root / m.group(1)).is_dir()):
        return (f" -- {m.group(1)!r} is a module of the package itself: import it relatively "
                f"(from .{m.group(1)} import ...); the package directory is not on sys.path "
                "(the reference dock refuses this too)")
    return ""


#: Most input elements in one probe batch (float64: 32 MB). Image probes shrink the batch to
#: fit (at least one sample, itself capped by ``max_sample_elements``).
PROBE_MAX_ELEMENTS = 4 * 1024 * 1024

_PROBE_TEXTS = [
    "The market closed higher after the quarterly results.",
    "A new album from the band tops the charts this week.",
    "Parliament votes on the proposed bill tomorrow.",
    "The team won the final in extra time.",
    "The phone maker unveiled a faster chip.",
]


def probe_inputs(lw: Learnware, n: int) -> tuple[Any, str]:
    """Inputs to try a model on. Tables: points herded from the spec (they look like the
    developer's data). Image/text specs live in embedding space, which cannot be turned back
    into inputs: images are seeded noise in [0, 1] of the declared shape, texts fixed sentences.
    """
    data_type = lw.semantic.data_type
    if data_type is DataType.TEXT:
        return [_PROBE_TEXTS[i % len(_PROBE_TEXTS)] for i in range(n)], "fixed sentences"
    if data_type is DataType.IMAGE:
        per_sample = max(1, lw.manifest.input.size)
        n = max(1, min(n, PROBE_MAX_ELEMENTS // per_sample))
        shape = (n, *lw.manifest.input.shape)
        return np.random.default_rng(0).random(shape), "seeded noise images"
    return lw.stat_spec.herd(n, random_state=0), "inputs herded from the spec"


def package_digest(path: str | Path, limits: ArchiveLimits | None = None) -> str:
    from learndock.package.archive import digest_zip

    p = Path(path)
    if p.is_dir():
        return digest_directory(p)
    if p.is_file():
        return digest_zip(p, limits)
    raise PackageError(f"no package at {p}")
