"""Intake: turn an upload into a canonical, checked package -- or refuse it, leaving no litter.

:func:`checked_upload` does all of it at once (``Market.add``); :func:`read_upload` only the
quick, code-free half (``Market.submit``: the model checks run later, in a worker).

Separate from the store because it does everything that may fail on hostile input (unzip,
parse, load specs, run the model in the sandbox) and nothing that persists: the store receives
either a checked package or an exception, and the temp directory is gone in both cases.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from learndock.config import ArchiveLimits
from learndock.errors import LearndockError
from learndock.market.types import RejectedError
from learndock.package.archive import inspect_zip, iter_package_files, write_zip
from learndock.package.build import CheckReport, check_package
from learndock.package.learnware import Learnware, load_learnware, open_package_dir


def _refusal(check: str, exc: BaseException) -> RejectedError:
    report = CheckReport()
    report.add(check, False, str(exc) or type(exc).__name__)
    return RejectedError(report)


def _canonicalise(path: str | Path, semantic: Any, limits: ArchiveLimits, work: Path) -> Path:
    """The upload as a canonical zip in ``work`` (RejectedError if it cannot be read)."""
    canonical = work / "package.zip"
    try:
        root, temporary = open_package_dir(path, limits=limits, semantic=semantic)
        try:
            write_zip(iter_package_files(root), canonical, limits)
        finally:
            if temporary:
                shutil.rmtree(root, ignore_errors=True)
    except Exception as exc:  # noqa: BLE001 -- any failure to read an upload refuses it
        raise _refusal("archive and manifest", exc) from None
    return canonical


@contextmanager
def read_upload(
    path: str | Path, semantic: Any, limits: ArchiveLimits
) -> Iterator[tuple[Path, CheckReport, Learnware]]:
    """The quick half of a submission: canonicalise the upload and read its manifest and specs
    within ``limits`` -- no model is loaded, no package code runs.

    Yields (canonical zip, a report of what was read, learnware); the model checks run later
    (:meth:`learndock.market.store.LearnwareStore.verify_job`). An unreadable upload raises
    :class:`RejectedError`. The temp directory is removed when the block exits.
    """
    work = Path(tempfile.mkdtemp(prefix="learndock-submit-"))
    lw: Learnware | None = None
    try:
        canonical = _canonicalise(path, semantic, limits, work)
        report = CheckReport()
        try:
            entries = inspect_zip(canonical, limits)
            report.add("archive", True, f"{len(entries)} entries, all safe")
            lw = load_learnware(canonical, limits=limits)
        except (LearndockError, MemoryError) as exc:
            raise _refusal("manifest and specs", exc) from None
        m = lw.manifest
        report.manifest, report.digest = m, lw.digest
        report.add("manifest and specs", True,
                   f"{m.name} {m.version}: {m.semantic.data_type.value} "
                   f"{m.semantic.task_type.value}, {m.model.format} model, "
                   f"{len(lw.specs)} stat spec(s)")
        if not lw.specs:
            raise _refusal("statistical spec",
                           ValueError("the package lists no statistical specification"))
        yield canonical, report, lw
    finally:
        if lw is not None:
            lw.close()
        shutil.rmtree(work, ignore_errors=True)


@contextmanager
def checked_upload(
    path: str | Path, semantic: Any, limits: ArchiveLimits, check_timeout: float
) -> Iterator[tuple[Path, CheckReport, Learnware]]:
    """Canonicalise the upload into a temp zip and check it (model run in the sandbox).

    Yields (canonical zip, report, learnware); the report may hold failed checks (the store
    keeps such a package as rejected). A package that cannot be read at all -- including one
    whose reading runs out of memory -- raises :class:`RejectedError`; any other error
    propagates. Whatever happens, the temp directory is removed when the block exits.
    """
    work = Path(tempfile.mkdtemp(prefix="learndock-add-"))
    lw: Learnware | None = None
    try:
        canonical = _canonicalise(path, semantic, limits, work)
        try:
            report = check_package(canonical, run_model=True, sandbox=True, limits=limits,
                                   sandbox_timeout=check_timeout)
            if report.manifest is None:
                raise RejectedError(report)
            lw = load_learnware(canonical, limits=limits)
        except RejectedError:
            raise
        except (LearndockError, MemoryError) as exc:
            raise _refusal("manifest and specs", exc) from None
        yield canonical, report, lw
    finally:
        if lw is not None:
            lw.close()
        shutil.rmtree(work, ignore_errors=True)
