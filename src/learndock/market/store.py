"""The store: every write to the market, each one crash-safe.

Uploads reach it already checked (:mod:`learndock.market.intake`). Every add/update/delete is one database transaction. Blobs are written *before* it (so a
committed row always has its blob) and removed only *after* it commits (so a crash leaves at
worst an unreferenced blob, which :meth:`LearnwareStore.sweep` removes). The transaction also
writes the full-text row and bumps the generation of every island whose set of searchable specs
changed, which is how the island index learns that its copy is stale. Ids are random, never
reused counters.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import and_, func, insert, select, text, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError, OperationalError

from learndock.config import ArchiveLimits
from learndock.errors import (
    DuplicateError,
    LearndockError,
    MarketError,
    NotFoundError,
    SpecError,
)
from learndock.market import schema as t
from learndock.market.blobstore import BlobStore, LocalBlobStore, hash_blob
from learndock.market.db import (
    encoder_id,
    fts_rowid,
    live_row,
    new_id,
    scenario_mask,
    write_txn,
)
from learndock.market.faults import crashpoint
from learndock.market.intake import checked_upload, read_upload
from learndock.market.islands import IslandKey, spec_island_key
from learndock.market.jobs import JOB_CANCELLED, JOB_DONE, JOB_FAILED, JobStore, Lease
from learndock.market.kernels import (
    REVISE_AT,
    KernelChoice,
    batch_vectors,
    choose_kernel,
    first_kernel,
    spec_vectors,
)
from learndock.market.types import (
    ACCEPTED,
    FAILED,
    QUEUED,
    REJECTED,
    AddResult,
    Submission,
    SweepReport,
)
from learndock.package.build import CheckReport, check_package
from learndock.package.learnware import Learnware, load_learnware
from learndock.package.manifest import Manifest
from learndock.search.text import fts_text
from learndock.spec.embedding import RKMEEmbeddingSpec
from learndock.spec.health import kernel_health
from learndock.spec.io import StatSpec
from learndock.spec.kernels import GaussianKernel

log = logging.getLogger(__name__)

@dataclass
class BulkItem:
    """One learnware for :meth:`LearnwareStore.bulk_load`: verified elsewhere, its package
    already in the blob store."""

    manifest: Manifest
    specs: list[StatSpec]
    blob_sha256: str
    size_bytes: int
    content_digest: str
    report: dict[str, Any]  # the check report from where it was verified
    owner: str | None = None


#: A spec row ready to insert: its island, the spec, and the column values.
SpecRow = tuple[IslandKey, StatSpec, dict[str, Any]]


@dataclass
class LearnwareStore:
    """The market's only writer of learnwares, versions, specs, islands, blobs and the
    full-text index (the catalogue counts downloads, nothing else)."""

    engine: Engine
    blobs: BlobStore
    limits: ArchiveLimits
    check_timeout: float  # seconds the sandboxed model check may run
    rff_dim: int  # random features per spec for the island index
    auto_revise: bool = True  # revise island kernels as islands grow (Settings.kernel_revision)

    # ------------------------------------------------------------------ add / update
    def store(
        self, path: str | Path, learnware_id: str | None, owner: str | None, semantic: Any,
        duplicates: str = "existing",
    ) -> AddResult:
        """Add a learnware (``learnware_id`` None) or a version of one; see ``Market.add``."""
        if learnware_id is not None:
            with self.engine.connect() as conn:
                live_row(conn, learnware_id)  # unknown id: NotFoundError before any work
        with checked_upload(path, semantic, self.limits, self.check_timeout) as (
            canonical, report, lw
        ):
            if learnware_id is None:
                existing = self.duplicate_of(lw.digest, duplicates)
                if existing is not None:
                    lid, number, status, sha, island = existing
                    report.add("duplicate", True,
                               f"the same content is already learnware {lid} (version "
                               f"{number}); nothing new was stored")
                    return AddResult(lid, number, status, report, sha, island)
            status = ACCEPTED if report.ok else REJECTED
            spec_rows = self.spec_rows(lw) if status == ACCEPTED else []
            sha, size = self.blobs.put_file(canonical)
            crashpoint("after-blob")
            for attempt in range(8):
                try:
                    with self.engine.begin() as conn:
                        result = self._write(
                            conn, learnware_id, owner, lw, report, status, sha, size, spec_rows
                        )
                        crashpoint("before-commit")
                    crashpoint("after-commit")
                    self.maybe_revise(result.island)
                    return result
                except IntegrityError:
                    if attempt == 7:
                        raise
                    time.sleep(0.05 * (attempt + 1))  # a concurrent writer won a race; retry
                except OperationalError as exc:
                    if "locked" not in str(exc) or attempt == 7:
                        raise
                    time.sleep(0.1 * (attempt + 1))
        raise MarketError("could not store the learnware")  # pragma: no cover

    def duplicate_of(self, digest: str, policy: str) -> tuple[str, int, str, str, str | None] \
            | None:
        """A live learnware whose version has this content digest, per ``policy``: ``allow``
        (None: store it again), ``existing`` (return (id, version, status, sha, island)) or
        ``refuse`` (:class:`~learndock.errors.DuplicateError`). Rejected versions do not
        count (resubmitting one is allowed)."""
        if policy not in ("allow", "existing", "refuse"):
            raise ValueError(f"duplicates must be 'allow', 'existing' or 'refuse', not {policy!r}")
        if policy == "allow":
            return None
        with self.engine.connect() as conn:
            row = conn.execute(
                select(t.versions.c.learnware_id, t.versions.c.number, t.versions.c.status,
                       t.versions.c.package_sha256, t.learnwares.c.island_key)
                .select_from(t.versions.join(t.learnwares,
                                             t.learnwares.c.id == t.versions.c.learnware_id))
                .where(and_(t.versions.c.content_digest == digest,
                            t.versions.c.status != REJECTED,
                            t.learnwares.c.deleted_at.is_(None)))
                .order_by(t.versions.c.created_at)
            ).first()
        if row is None:
            return None
        if policy == "refuse":
            raise DuplicateError(
                f"the same package content is already learnware {row[0]} (version {row[1]}); "
                "upload a new version of it instead, or change the package", row[0],
                int(row[1]))
        return str(row[0]), int(row[1]), str(row[2]), str(row[3]), row[4]

    def spec_rows(self, lw: Learnware) -> list[SpecRow]:
        """Each spec's row: its island and arrays as little-endian bytes. The values that
        depend on the island's kernel are added in the writing transaction
        (:meth:`_place_specs`), where the island's current kernel is known and locked."""
        rows = []
        for spec in lw.specs.values():
            key = spec_island_key(spec, lw.manifest)
            rows.append((key, spec, {
                "type": spec.type_name,
                "island_key": str(key),
                "n_points": spec.n_points,
                "dimension": spec.dimension,
                "z": np.ascontiguousarray(spec.z, dtype="<f8").tobytes(),
                "beta": np.ascontiguousarray(spec.beta, dtype="<f8").tobytes(),
                "fit_kernel_json": json.dumps(spec.kernel.to_dict()),
            }))
        return rows

    def _place_specs(self, conn: Connection, manifest: Manifest, spec_rows: list[SpecRow],
                     report: CheckReport) -> list[dict[str, Any]]:
        """Create each spec's island if new, lock it (its generation moves in this
        transaction, so a concurrent kernel revision waits for us and then rescores our rows
        too) and compute the spec's vectors under the island's current kernel."""
        out = []
        for key, spec, values in spec_rows:
            self._ensure_island(conn, key, manifest, spec)
            self.bump(conn, str(key))
            isl = conn.execute(
                select(t.islands.c.kernel_json, t.islands.c.kernel_version, t.islands.c.rff_dim,
                       t.islands.c.rff_seed).where(t.islands.c.key == str(key))
            ).one()
            kernel = GaussianKernel.from_dict(json.loads(isl.kernel_json))
            self._island_note(conn, key, spec, kernel, int(isl.kernel_version), report)
            si, rff = spec_vectors(spec.z, spec.beta, kernel, int(isl.rff_dim), int(isl.rff_seed))
            out.append({**values, "self_inner": si, "rff": rff,
                        "kernel_version": int(isl.kernel_version)})
        return out

    def _ensure_island(self, conn: Connection, key: IslandKey, manifest: Manifest,
                       spec: StatSpec) -> None:
        exists = conn.execute(select(t.islands.c.key).where(t.islands.c.key == str(key))).first()
        if exists is not None:
            return
        kernel = first_kernel(spec)
        kernel_doc = kernel.to_dict()
        if isinstance(spec, RKMEEmbeddingSpec):
            kernel_doc["encoder"] = spec.encoder  # the encoder defines the island's space
        now = time.time()
        conn.execute(
            insert(t.islands).values(
                key=str(key),
                data_type=key.data_type,
                dimension=key.dimension,
                schema_hash=key.schema_hash,
                kernel_key=kernel.key(),
                kernel_json=json.dumps(kernel_doc),
                feature_names_json=json.dumps([f.name for f in manifest.input.features or []]),
                rff_seed=key.rff_seed,
                rff_dim=self.rff_dim,
                generation=0,
                created_at=now,
                kernel_version=1,
            )
        )
        conn.execute(insert(t.island_kernels).values(
            island_key=str(key), version=1, kernel_key=kernel.key(),
            kernel_json=json.dumps(kernel_doc), n_specs=0, created_at=now,
            reason="the first spec's kernel" if kernel == spec.kernel else
                   "the market's default (the first spec's own kernel was degenerate)",
        ))

    @staticmethod
    def _island_note(conn: Connection, key: IslandKey, spec: StatSpec, kernel: GaussianKernel,
                     version: int, report: CheckReport) -> None:
        """Tell the developer how the market scores their spec (and where it may not be
        found)."""
        health = kernel_health(spec)
        if health.degenerate:  # e.g. the reference engine's gamma 0.1 on raw features
            report.add(
                "island", True,
                "the kernel this spec was fitted with is degenerate (" + health.explanation
                + "); the market scores it under the island's kernel, but its reduced set was "
                "chosen under the degenerate one and may describe the data poorly -- refit it "
                "with the island's kernel for search to find it reliably",
            )
        if spec.kernel != kernel:
            report.add(
                "island",
                True,
                f"island {key} scores every spec under its own kernel (version {version}, "
                f"{kernel.describe()}); your spec was fitted with another one ("
                f"{spec.kernel.describe()}): it is searched, rescored under the island's kernel. "
                f"`learndock market kernel {key} -o kernel.json` exports it; specs fitted with "
                "it (`learndock spec table --kernel-from kernel.json`) match more sharply",
            )
        if key.data_type in ("Image", "Text"):
            encoders = conn.execute(
                select(t.islands.c.kernel_json).where(
                    and_(t.islands.c.data_type == key.data_type,
                         t.islands.c.schema_hash != key.schema_hash)
                )
            ).scalars().all()
            if encoders:
                ids = sorted({encoder_id(k) or "?" for k in encoders})
                report.add(
                    "island", True,
                    f"other {key.data_type} learnwares use encoder(s) {ids}; specs of different "
                    "encoders are never compared, so users of those encoders will not find this "
                    "one",
                )

    @staticmethod
    def tags(manifest: Manifest) -> dict[str, Any]:
        """The learnwares row's tag columns for a manifest (filters and full text read them)."""
        sem = manifest.semantic
        return {
            "title": sem.name,
            "description": sem.description,
            "data_type": sem.data_type.value,
            "task_type": sem.task_type.value,
            "library_type": sem.library_type.value,
            "license": sem.license.value,
            "scenario_mask": scenario_mask(sem.scenarios),
            "input_dimension": manifest.input.size,
            "output_dimension": sem.output.dimension if sem.output else None,
        }

    @staticmethod
    def bump(conn: Connection, island_key: str | None) -> None:
        """Mark the island's searchable specs as changed (cached indexes reload it)."""
        if island_key:
            conn.execute(
                update(t.islands)
                .where(t.islands.c.key == island_key)
                .values(generation=t.islands.c.generation + 1)
            )

    @classmethod
    def log_serving(cls, conn: Connection, learnware_id: str, old_version_id: str | None,
                    new_version_id: str | None) -> None:
        """Append to the change log the spec rows that stop (``remove``) and start (``add``)
        being searchable when a learnware's current version moves from ``old_version_id`` to
        ``new_version_id`` (None: no version). Each island's row is locked first (its
        generation moves), so within an island the log's ``seq`` follows the commit order."""
        now = time.time()
        for vid, op in ((old_version_id, "remove"), (new_version_id, "add")):
            if vid is None:
                continue
            rows = conn.execute(select(t.specs.c.id, t.specs.c.island_key)
                                .where(t.specs.c.version_id == vid)
                                .order_by(t.specs.c.id)).all()
            for island in sorted({r[1] for r in rows}):
                cls.bump(conn, island)
            if rows:
                conn.execute(insert(t.change_log), [
                    {"island_key": r[1], "op": op, "spec_row_id": int(r[0]),
                     "learnware_id": learnware_id, "created_at": now} for r in rows])

    # ------------------------------------------------------------------ island kernels
    def _island_specs(self, conn: Connection, island_key: str,
                      current_only: bool) -> list[tuple[int, np.ndarray, np.ndarray]]:
        """(row id, z, beta) of the island's spec rows (only current versions of live
        learnwares if ``current_only``: those are what the kernel must tell apart)."""
        q = select(t.specs.c.id, t.specs.c.n_points, t.specs.c.dimension, t.specs.c.z,
                   t.specs.c.beta).where(t.specs.c.island_key == island_key)
        if current_only:
            q = q.where(t.specs.c.version_id.in_(
                select(t.learnwares.c.current_version_id).where(
                    t.learnwares.c.deleted_at.is_(None))))
        return [(int(i), np.frombuffer(z, dtype="<f8").reshape(int(k), int(d)),
                 np.frombuffer(b, dtype="<f8")) for i, k, d, z, b in conn.execute(q).all()]

    def revise_kernel(self, island_key: str, kernel: GaussianKernel | None = None, *,
                      reason: str | None = None, random_state: int = 0) -> KernelChoice:
        """Choose the island's kernel again (:func:`~learndock.market.kernels.choose_kernel`)
        or set ``kernel``; when it changes, every spec row of the island is rescored under it
        and the island switches to the new version atomically (searches in flight finish on
        the old vectors). The new vectors are computed outside the transaction; rows written
        meanwhile are rescored inside it (writers lock the island row, see
        :meth:`_place_specs`). A concurrent revision wins: this one then changes nothing."""
        with self.engine.connect() as conn:
            isl = conn.execute(select(t.islands).where(t.islands.c.key == island_key)
                               ).mappings().first()
            if isl is None:
                raise NotFoundError(f"no island {island_key!r}")
            current = GaussianKernel.from_dict(json.loads(isl["kernel_json"]))
            live = self._island_specs(conn, island_key, current_only=True)
            every = self._island_specs(conn, island_key, current_only=False)
        if kernel is None:
            choice = choose_kernel([(z, b) for _, z, b in live], current,
                                   random_state=random_state)
        else:
            if kernel.dimension != current.dimension:
                raise SpecError(f"island {island_key} has dimension {current.dimension}, the "
                                f"kernel {kernel.dimension}")
            choice = KernelChoice(kernel, kernel != current,
                                  reason or "set by the operator", len(live))
        if not choice.changed:
            write_txn(self.engine, lambda conn: conn.execute(
                update(t.islands).where(t.islands.c.key == island_key)
                .values(kernel_checked_n=max(int(isl["kernel_checked_n"]), len(every)))))
            return choice
        version = int(isl["kernel_version"]) + 1
        rff_dim, seed = int(isl["rff_dim"]), int(isl["rff_seed"])
        new = choice.kernel
        doc = new.to_dict()
        if "encoder" in json.loads(isl["kernel_json"]):
            doc["encoder"] = json.loads(isl["kernel_json"])["encoder"]
        computed = {rid: spec_vectors(z, b, new, rff_dim, seed) for rid, z, b in every}

        def switch(conn: Connection) -> bool:
            moved = conn.execute(
                update(t.islands)
                .where(and_(t.islands.c.key == island_key,
                            t.islands.c.kernel_version == version - 1))
                .values(kernel_version=version, kernel_key=new.key(), kernel_json=json.dumps(doc),
                        generation=t.islands.c.generation + 1, kernel_checked_n=len(every))
            ).rowcount
            if moved != 1:
                return False  # another revision switched first
            for rid, z, b in self._island_specs(conn, island_key, current_only=False):
                si, rff = computed.get(rid) or spec_vectors(z, b, new, rff_dim, seed)
                conn.execute(update(t.specs).where(t.specs.c.id == rid)
                             .values(self_inner=si, rff=rff, kernel_version=version))
            conn.execute(insert(t.island_kernels).values(
                island_key=island_key, version=version, kernel_key=new.key(),
                kernel_json=json.dumps(doc), reason=choice.reason, n_specs=choice.n_specs,
                created_at=time.time()))
            return True

        if not write_txn(self.engine, switch):
            return KernelChoice(current, False, "kept: another revision switched first",
                                choice.n_specs)
        return choice

    def maybe_revise(self, island_key: str | None) -> KernelChoice | None:
        """After a write: consider a revision when the island has just grown past one of
        :data:`~learndock.market.kernels.REVISE_AT` sizes (rare: ~8 times in its life), unless
        the operator turned automatic revision off (``kernel_revision = "off"``)."""
        if not island_key or not self.auto_revise:
            return None
        with self.engine.connect() as conn:
            checked = conn.execute(select(t.islands.c.kernel_checked_n)
                                   .where(t.islands.c.key == island_key)).scalar_one_or_none()
            if checked is None:
                return None
            due = min((size for size in REVISE_AT if size > int(checked)), default=None)
            if due is None:  # past the last automatic size: no count on the add path at all
                return None
            # counting stops at the next size, so an add never scans a large island
            rows = select(t.specs.c.id).where(t.specs.c.island_key == island_key).limit(due)
            n = int(conn.execute(select(func.count()).select_from(rows.subquery())).scalar_one())
        if n < due:
            return None
        try:
            return self.revise_kernel(island_key)
        except Exception:  # noqa: BLE001 - the add succeeded; a revision can wait
            log.exception("kernel revision of island %s failed", island_key)
            return None

    @staticmethod
    def _set_fts(conn: Connection, learnware_id: str, title: str | None = None,
                 description: str = "") -> None:
        """Replace (or, without a title, remove) the learnware's SQLite full-text row.
        PostgreSQL indexes the learnwares table itself (an expression index)."""
        if conn.dialect.name != "sqlite":
            return
        rowid = fts_rowid(learnware_id)
        conn.execute(text("DELETE FROM learnware_fts WHERE rowid = :r"), {"r": rowid})
        if title is not None:
            conn.execute(
                text("INSERT INTO learnware_fts (rowid, learnware_id, title, description) "
                     "VALUES (:r, :i, :t, :d)"),
                {"r": rowid, "i": learnware_id, "t": fts_text(title),
                 "d": fts_text(description)},
            )

    def _write(
        self,
        conn: Connection,
        learnware_id: str | None,
        owner: str | None,
        lw: Learnware,
        report: CheckReport,
        status: str,
        sha: str,
        size: int,
        spec_rows: list[SpecRow],
    ) -> AddResult:
        now = time.time()
        manifest = lw.manifest
        if conn.execute(select(t.blobs.c.sha256).where(t.blobs.c.sha256 == sha)).first() is None:
            conn.execute(insert(t.blobs).values(sha256=sha, size_bytes=size, created_at=now))
        island = str(spec_rows[0][0]) if spec_rows else None
        placed = self._place_specs(conn, manifest, spec_rows, report)
        sem = manifest.semantic
        tags = self.tags(manifest)
        version_id = new_id()
        if learnware_id is None:
            learnware_id = new_id()
            number = 1
            conn.execute(
                insert(t.learnwares).values(
                    id=learnware_id, name=manifest.name, owner=owner, created_at=now,
                    updated_at=now, deleted_at=None, current_version_id=None, latest_number=1,
                    status=status, island_key=None, download_count=0, search_count=0, **tags,
                )
            )
            old_island = None
            old_current = None
        else:
            row = live_row(conn, learnware_id)
            number = int(row["latest_number"]) + 1
            old_island = row["island_key"]
            old_current = row["current_version_id"]
            conn.execute(
                update(t.learnwares)
                .where(
                    and_(
                        t.learnwares.c.id == learnware_id,
                        t.learnwares.c.latest_number == row["latest_number"],
                    )
                )
                .values(latest_number=number, updated_at=now)
            )
        conn.execute(
            insert(t.versions).values(
                id=version_id,
                learnware_id=learnware_id,
                number=number,
                semver=manifest.version,
                status=status,
                report_json=json.dumps(report.to_dict()),
                manifest_json=json.dumps(manifest.to_dict()),
                package_sha256=sha,
                content_digest=lw.digest,
                blob_sha256=sha,
                size_bytes=size,
                created_at=now,
            )
        )
        if status == ACCEPTED:
            for values in placed:
                conn.execute(
                    insert(t.specs).values(version_id=version_id, learnware_id=learnware_id, **values)
                )
            conn.execute(
                update(t.learnwares)
                .where(t.learnwares.c.id == learnware_id)
                .values(current_version_id=version_id, status=ACCEPTED, island_key=island, **tags)
            )
            self.log_serving(conn, learnware_id, old_current, version_id)
            self.bump(conn, old_island)
            if island != old_island:
                self.bump(conn, island)
            self._set_fts(conn, learnware_id, sem.name, sem.description)
        return AddResult(learnware_id, number, status, report, sha, island)

    # ------------------------------------------------------------------ two-phase: submit
    def submit(
        self,
        path: str | Path,
        jobs: JobStore,
        *,
        learnware_id: str | None,
        owner: str | None,
        semantic: Any,
        uploaded_by: str | None = None,
        duplicates: str = "allow",
    ) -> Submission:
        """Store an upload as a ``queued`` version with its verification job (quick: the
        archive, manifest and specs are read within the caps, no model code runs). Nothing
        of it is searchable until :meth:`verify_job` accepts it."""
        if learnware_id is not None:
            with self.engine.connect() as conn:
                live_row(conn, learnware_id)
        with read_upload(path, semantic, self.limits) as (canonical, report, lw):
            if learnware_id is None and duplicates != "allow":
                self.duplicate_of(lw.digest, "refuse")  # a queue has no "existing" answer
            sha, size = self.blobs.put_file(canonical)
            manifest = lw.manifest

            def write(conn: Connection) -> Submission:
                now = time.time()
                if conn.execute(
                    select(t.blobs.c.sha256).where(t.blobs.c.sha256 == sha)
                ).first() is None:
                    conn.execute(insert(t.blobs).values(sha256=sha, size_bytes=size,
                                                        created_at=now))
                lid = learnware_id
                if lid is None:
                    lid, number = new_id(), 1
                    conn.execute(
                        insert(t.learnwares).values(
                            id=lid, name=manifest.name, owner=owner, created_at=now,
                            updated_at=now, deleted_at=None, current_version_id=None,
                            latest_number=1, status=QUEUED, island_key=None, download_count=0,
                            search_count=0, **self.tags(manifest),
                        )
                    )
                else:
                    row = live_row(conn, lid)
                    number = int(row["latest_number"]) + 1
                    res = conn.execute(
                        update(t.learnwares)
                        .where(and_(t.learnwares.c.id == lid,
                                    t.learnwares.c.latest_number == row["latest_number"]))
                        .values(latest_number=number, updated_at=now)
                    )
                    if res.rowcount != 1:
                        raise IntegrityError("latest_number moved", None, ValueError())
                    if row["current_version_id"] is None:
                        conn.execute(
                            update(t.learnwares).where(t.learnwares.c.id == lid)
                            .values(status=QUEUED, **self.tags(manifest))
                        )
                vid = new_id()
                conn.execute(
                    insert(t.versions).values(
                        id=vid, learnware_id=lid, number=number, semver=manifest.version,
                        status=QUEUED, report_json=json.dumps(report.to_dict()),
                        manifest_json=json.dumps(manifest.to_dict()), package_sha256=sha,
                        content_digest=lw.digest, blob_sha256=sha, size_bytes=size,
                        created_at=now, uploaded_by=uploaded_by, verified_at=None,
                    )
                )
                job_id = jobs.create(conn, vid, lid, now)
                return Submission(lid, number, vid, job_id, QUEUED, sha, report.to_dict())

            for attempt in range(8):
                try:
                    return write_txn(self.engine, write)
                except IntegrityError:
                    if attempt == 7:
                        raise
                    time.sleep(0.05 * (attempt + 1))  # a concurrent version took the number
        raise MarketError("could not store the submission")  # pragma: no cover

    # ------------------------------------------------------------------ bulk load
    def bulk_load(self, items: Iterable[BulkItem], *, batch_size: int = 5000,
                  progress: bool | None = None) -> list[str]:
        """Publish many learnwares that were verified elsewhere (a migration from another dock
        or an export of this one), ``batch_size`` per transaction; returns their ids.

        Each item's package blob must already be in the blob store (``blobs.put_file``). The
        writes are the ones :meth:`store` makes (learnware, version, specs under their
        island's kernel, full-text row, change log), batched: random features are computed
        for a whole batch in one pass, and rows go in with executemany. Running processes'
        island indexes catch up from the change log; nothing runs the models again, so load
        only packages whose checks passed where they come from (their reports are kept)."""
        from tqdm.auto import tqdm

        ids: list[str] = []
        batch: list[BulkItem] = []
        bar = tqdm(desc="bulk load", unit="learnware", disable=progress is False,
                   mininterval=1.0)

        def flush() -> None:
            ids.extend(write_txn(self.engine, lambda conn: self._bulk_batch(conn, batch)))
            bar.update(len(batch))
            batch.clear()

        for item in items:
            batch.append(item)
            if len(batch) >= batch_size:
                flush()
        if batch:
            flush()
        bar.close()
        return ids

    def _bulk_batch(self, conn: Connection, items: list[BulkItem]) -> list[str]:
        now = time.time()
        per_spec = [(i, spec_island_key(spec, it.manifest), spec)
                    for i, it in enumerate(items) for spec in it.specs]
        islands: dict[str, Any] = {}
        for i, key, spec in per_spec:
            if str(key) not in islands:
                self._ensure_island(conn, key, items[i].manifest, spec)
                self.bump(conn, str(key))
                islands[str(key)] = conn.execute(
                    select(t.islands.c.kernel_json, t.islands.c.kernel_version,
                           t.islands.c.rff_dim, t.islands.c.rff_seed)
                    .where(t.islands.c.key == str(key))).one()
        lids = [new_id() for _ in items]
        vids = [new_id() for _ in items]
        for sha in {it.blob_sha256 for it in items}:
            if conn.execute(select(t.blobs.c.sha256).where(t.blobs.c.sha256 == sha)).first() \
                    is None:
                size = next(it.size_bytes for it in items if it.blob_sha256 == sha)
                conn.execute(insert(t.blobs).values(sha256=sha, size_bytes=size, created_at=now))
        spec_values: list[dict[str, Any]] = []
        first_island: dict[int, str] = {}
        by_island: dict[str, list[tuple[int, StatSpec]]] = {}
        for i, key, spec in per_spec:
            by_island.setdefault(str(key), []).append((i, spec))
            first_island.setdefault(i, str(key))
        for key, members in by_island.items():
            isl = islands[key]
            kernel = GaussianKernel.from_dict(json.loads(isl.kernel_json))
            vectors = batch_vectors([s for _, s in members], kernel, int(isl.rff_dim),
                                    int(isl.rff_seed))
            for (i, spec), (si, rff) in zip(members, vectors, strict=True):
                spec_values.append({
                    "version_id": vids[i], "learnware_id": lids[i], "type": spec.type_name,
                    "island_key": key, "n_points": spec.n_points, "dimension": spec.dimension,
                    "z": np.ascontiguousarray(spec.z, dtype="<f8").tobytes(),
                    "beta": np.ascontiguousarray(spec.beta, dtype="<f8").tobytes(),
                    "fit_kernel_json": json.dumps(spec.kernel.to_dict()),
                    "self_inner": si, "rff": rff, "kernel_version": int(isl.kernel_version)})
        conn.execute(insert(t.learnwares), [
            {"id": lids[i], "name": it.manifest.name, "owner": it.owner, "created_at": now,
             "updated_at": now, "deleted_at": None, "current_version_id": vids[i],
             "latest_number": 1, "status": ACCEPTED, "island_key": first_island.get(i),
             "download_count": 0, "search_count": 0, **self.tags(it.manifest)}
            for i, it in enumerate(items)])
        conn.execute(insert(t.versions), [
            {"id": vids[i], "learnware_id": lids[i], "number": 1,
             "semver": it.manifest.version, "status": ACCEPTED,
             "report_json": json.dumps(it.report), "manifest_json":
             json.dumps(it.manifest.to_dict()), "package_sha256": it.blob_sha256,
             "content_digest": it.content_digest, "blob_sha256": it.blob_sha256,
             "size_bytes": it.size_bytes, "created_at": now, "verified_at": now}
            for i, it in enumerate(items)])
        if spec_values:
            conn.execute(insert(t.specs), spec_values)
            rows = conn.execute(select(t.specs.c.id, t.specs.c.island_key,
                                       t.specs.c.learnware_id)
                                .where(t.specs.c.version_id.in_(vids))
                                .order_by(t.specs.c.id)).all()
            conn.execute(insert(t.change_log), [
                {"island_key": r[1], "op": "add", "spec_row_id": int(r[0]),
                 "learnware_id": r[2], "created_at": now} for r in rows])
        if conn.dialect.name == "sqlite":  # new ids: no old full-text rows to replace
            conn.execute(
                text("INSERT INTO learnware_fts (rowid, learnware_id, title, description) "
                     "VALUES (:r, :i, :t, :d)"),
                [{"r": fts_rowid(lids[i]), "i": lids[i],
                  "t": fts_text(it.manifest.semantic.name),
                  "d": fts_text(it.manifest.semantic.description)}
                 for i, it in enumerate(items)])
        return lids

    # ------------------------------------------------------------------ two-phase: verify
    def verify_job(self, lease: Lease, jobs: JobStore) -> AddResult | None:
        """Run the submission checks of the leased job's version and record the verdict (and
        close the job) in one transaction. Accepted: specs and island rows written, the
        learnware's current version moves to it if it is the newest accepted one, so it
        becomes searchable. Returns None if there was nothing to check (deleted meanwhile).

        Raises :class:`~learndock.market.jobs.LeaseLost` if the lease was lost before the
        verdict could be recorded (another worker owns the job now: nothing was written)."""
        vid = lease.job.version_id
        with self.engine.connect() as conn:
            v = conn.execute(select(t.versions).where(t.versions.c.id == vid)).mappings().first()
            lw_row = conn.execute(
                select(t.learnwares).where(t.learnwares.c.id == lease.job.learnware_id)
            ).mappings().first()
        if v is None or lw_row is None or lw_row["deleted_at"] is not None \
                or v["blob_sha256"] is None:
            write_txn(self.engine, lambda conn: jobs.finish(conn, lease, JOB_CANCELLED,
                                                            "the learnware was deleted"))
            return None
        sha = str(v["blob_sha256"])
        work = Path(tempfile.mkdtemp(prefix="learndock-verify-"))
        try:
            pkg = work / "package.zip"
            with open(pkg, "wb") as out:
                actual = hash_blob(self.blobs, sha, out)
            if actual != sha:
                msg = (f"the stored package is corrupt or was tampered with: stored as sha256 "
                       f"{sha}, its bytes hash to {actual}")
                return self._record(lease, jobs, v, lw_row, FAILED, None, [], msg)
            report = check_package(pkg, run_model=True, sandbox=True, limits=self.limits,
                                   sandbox_timeout=self.check_timeout)
            status = ACCEPTED if report.ok and report.manifest is not None else REJECTED
            rows: list[SpecRow] = []
            if status == ACCEPTED:
                try:
                    lw = load_learnware(pkg, limits=self.limits)
                except (LearndockError, MemoryError) as exc:
                    report.add("manifest and specs", False, str(exc) or type(exc).__name__)
                    status = REJECTED
                else:
                    try:
                        rows = self.spec_rows(lw)
                    finally:
                        lw.close()
            result = self._record(lease, jobs, v, lw_row, status, report, rows, None)
            self.maybe_revise(result.island)
            return result
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def _record(self, lease: Lease, jobs: JobStore, v: Any, lw_row: Any, status: str,
                report: CheckReport | None, spec_rows: list[SpecRow],
                error: str | None) -> AddResult:
        manifest = Manifest.parse(json.loads(v["manifest_json"]))
        lid, vid, number = str(v["learnware_id"]), str(v["id"]), int(v["number"])

        def write(conn: Connection) -> AddResult:
            now = time.time()
            jobs.finish(conn, lease, JOB_DONE if error is None else JOB_FAILED, error)
            rep = report if report is not None else CheckReport()
            if report is None:
                rep.add("verification", False, error or "verification failed")
            island = str(spec_rows[0][0]) if spec_rows else None
            placed = self._place_specs(conn, manifest, spec_rows, rep) \
                if status == ACCEPTED else []
            doc = rep.to_dict()
            conn.execute(
                update(t.versions).where(t.versions.c.id == vid)
                .values(status=status, report_json=json.dumps(doc), verified_at=now)
            )
            row = live_row(conn, lid)
            if status == ACCEPTED:
                for values in placed:
                    conn.execute(insert(t.specs).values(version_id=vid, learnware_id=lid,
                                                        **values))
                cur = row["current_version_id"]
                cur_number = None if cur is None else conn.execute(
                    select(t.versions.c.number).where(t.versions.c.id == cur)
                ).scalar_one_or_none()
                if cur_number is None or number > int(cur_number):
                    old_island = row["island_key"]
                    sem = manifest.semantic
                    conn.execute(
                        update(t.learnwares).where(t.learnwares.c.id == lid)
                        .values(current_version_id=vid, status=ACCEPTED, island_key=island,
                                updated_at=now, **self.tags(manifest))
                    )
                    self.log_serving(conn, lid, cur, vid)
                    self.bump(conn, old_island)
                    if island != old_island:
                        self.bump(conn, island)
                    self._set_fts(conn, lid, sem.name, sem.description)
            elif row["current_version_id"] is None:
                conn.execute(
                    update(t.learnwares).where(t.learnwares.c.id == lid).values(status=status)
                )
            return AddResult(lid, number, status, rep, str(v["package_sha256"]), island)

        return write_txn(self.engine, write)  # LeaseLost: rolled back, nothing recorded

    # ------------------------------------------------------------------ delete / sweep
    def delete(self, learnware_id: str) -> None:
        """Hide the learnware and release its packages (blobs no version references go)."""
        with self.engine.begin() as conn:
            row = live_row(conn, learnware_id)
            shas = set(conn.execute(
                select(t.versions.c.blob_sha256).where(
                    and_(t.versions.c.learnware_id == learnware_id,
                         t.versions.c.blob_sha256.is_not(None))
                )
            ).scalars())
            self.log_serving(conn, learnware_id, row["current_version_id"], None)
            conn.execute(
                update(t.learnwares)
                .where(t.learnwares.c.id == learnware_id)
                .values(deleted_at=time.time(), current_version_id=None)
            )
            conn.execute(
                update(t.versions)
                .where(t.versions.c.learnware_id == learnware_id)
                .values(blob_sha256=None)
            )
            self.bump(conn, row["island_key"])
            self._set_fts(conn, learnware_id)
            JobStore.cancel_for_learnware(conn, learnware_id)
            unreferenced = []
            for sha in shas:
                # any other reference at all (an index probe; counting them all was a scan
                # of every version of a blob shared by many learnwares)
                still = conn.execute(
                    select(t.versions.c.id).where(t.versions.c.blob_sha256 == sha).limit(1)
                ).first()
                if still is None:
                    conn.execute(t.blobs.delete().where(t.blobs.c.sha256 == sha))
                    unreferenced.append(sha)
            crashpoint("delete-before-commit")
        crashpoint("delete-after-commit")
        for sha in unreferenced:
            self.blobs.delete(sha)

    def sweep(self, grace_seconds: float = 3600.0) -> SweepReport:
        """Remove blobs no version references (left by crashes), older than ``grace_seconds``.

        The grace period protects an add in flight: its blob is written just before its row.
        """
        report = SweepReport()
        with self.engine.connect() as conn:
            referenced = set(conn.execute(
                select(t.versions.c.blob_sha256).where(t.versions.c.blob_sha256.is_not(None))
            ).scalars())
        cutoff = time.time() - grace_seconds
        for sha, mtime in list(self.blobs.list()):
            if sha not in referenced and mtime <= cutoff:
                with self.engine.begin() as conn:
                    conn.execute(t.blobs.delete().where(t.blobs.c.sha256 == sha))
                self.blobs.delete(sha)
                report.removed_blobs.append(sha)
        if isinstance(self.blobs, LocalBlobStore):
            for p in self.blobs.stale_temp_files(grace_seconds):
                p.unlink(missing_ok=True)
                report.removed_temp_files += 1
        return report

    def verify(self) -> list[str]:
        """Consistency problems (empty list = consistent). Unreferenced blobs are not problems
        -- :meth:`sweep` removes them -- but a row without its blob is, and so is a blob whose
        bytes no longer hash to its key (each referenced blob is re-hashed)."""
        problems = []
        hashes: dict[str, str | None] = {}  # blob -> what its bytes hash to (None: missing)
        with self.engine.connect() as conn:
            for lid, number, sha in conn.execute(
                select(t.versions.c.learnware_id, t.versions.c.number, t.versions.c.blob_sha256)
                .where(t.versions.c.blob_sha256.is_not(None))
                .order_by(t.versions.c.learnware_id, t.versions.c.number)
            ):
                if sha not in hashes:
                    hashes[sha] = hash_blob(self.blobs, sha) if self.blobs.exists(sha) else None
                actual = hashes[sha]
                if actual is None:
                    problems.append(f"learnware {lid} version {number}: blob {sha} is missing")
                elif actual != sha:
                    problems.append(
                        f"learnware {lid} version {number}: blob {sha} is corrupt or was "
                        f"tampered with (its bytes hash to {actual})"
                    )
            for lid, cur in conn.execute(
                select(t.learnwares.c.id, t.learnwares.c.current_version_id).where(
                    and_(t.learnwares.c.deleted_at.is_(None),
                         t.learnwares.c.current_version_id.is_not(None))
                )
            ):
                n = conn.execute(
                    select(func.count()).select_from(t.specs).where(t.specs.c.version_id == cur)
                ).scalar_one()
                if not n:
                    problems.append(f"learnware {lid}: current version {cur} has no specs")
            for lid in conn.execute(
                select(t.learnwares.c.id).where(
                    ~t.learnwares.c.id.in_(select(t.versions.c.learnware_id))
                )
            ).scalars():
                problems.append(f"learnware {lid} has no versions")
        return problems
