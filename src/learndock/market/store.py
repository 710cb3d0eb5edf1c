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
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import and_, func, insert, select, text, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError, OperationalError

from learndock.config import ArchiveLimits
from learndock.errors import LearndockError, MarketError
from learndock.market import schema as t
from learndock.market.blobstore import BlobStore, LocalBlobStore, hash_blob
from learndock.market.db import encoder_id, live_row, new_id, scenario_mask, write_txn
from learndock.market.faults import crashpoint
from learndock.market.intake import checked_upload, read_upload
from learndock.market.islands import IslandKey, spec_island_key
from learndock.market.jobs import JOB_CANCELLED, JOB_DONE, JOB_FAILED, JobStore, Lease
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
from learndock.spec.io import StatSpec
from learndock.spec.kernels import RandomFourierFeatures

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

    # ------------------------------------------------------------------ add / update
    def store(
        self, path: str | Path, learnware_id: str | None, owner: str | None, semantic: Any
    ) -> AddResult:
        """Add a learnware (``learnware_id`` None) or a version of one; see ``Market.add``."""
        if learnware_id is not None:
            with self.engine.connect() as conn:
                live_row(conn, learnware_id)  # unknown id: NotFoundError before any work
        with checked_upload(path, semantic, self.limits, self.check_timeout) as (
            canonical, report, lw
        ):
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

    def spec_rows(self, lw: Learnware) -> list[SpecRow]:
        """Each spec's row: arrays as little-endian bytes plus its island's random features."""
        rows = []
        for spec in lw.specs.values():
            key = spec_island_key(spec, lw.manifest)
            rff = RandomFourierFeatures(spec.kernel, self.rff_dim, key.rff_seed)
            emb = rff.embed(spec.z, spec.beta).astype(np.float32)
            rows.append((key, spec, {
                "type": spec.type_name,
                "island_key": str(key),
                "n_points": spec.n_points,
                "dimension": spec.dimension,
                "self_inner": spec.self_inner,
                "z": np.ascontiguousarray(spec.z, dtype="<f8").tobytes(),
                "beta": np.ascontiguousarray(spec.beta, dtype="<f8").tobytes(),
                "rff": emb.astype("<f4").tobytes(),
            }))
        return rows

    def _ensure_island(self, conn: Connection, key: IslandKey, manifest: Manifest,
                       spec: StatSpec) -> None:
        exists = conn.execute(select(t.islands.c.key).where(t.islands.c.key == str(key))).first()
        if exists is not None:
            return
        kernel_doc = spec.kernel.to_dict()
        if isinstance(spec, RKMEEmbeddingSpec):
            kernel_doc["encoder"] = spec.encoder  # the encoder is part of the kernel
        conn.execute(
            insert(t.islands).values(
                key=str(key),
                data_type=key.data_type,
                dimension=key.dimension,
                schema_hash=key.schema_hash,
                kernel_key=key.kernel_key,
                kernel_json=json.dumps(kernel_doc),
                feature_names_json=json.dumps([f.name for f in manifest.input.features or []]),
                rff_seed=key.rff_seed,
                rff_dim=self.rff_dim,
                generation=0,
                created_at=time.time(),
            )
        )

    @staticmethod
    def _island_note(conn: Connection, key: IslandKey, report: CheckReport) -> None:
        """Tell the developer when their spec lands apart from comparable learnwares."""
        others = conn.execute(
            select(t.islands.c.key, t.islands.c.kernel_key).where(
                and_(
                    t.islands.c.data_type == key.data_type,
                    t.islands.c.dimension == key.dimension,
                    t.islands.c.schema_hash == key.schema_hash,
                    t.islands.c.kernel_key != key.kernel_key,
                )
            )
        ).all()
        if others:
            report.add(
                "island",
                True,
                f"this feature space already has island(s) {[o[0] for o in others]} with another "
                "kernel; this spec is comparable only within its own island -- rebuild it with "
                "the island's kernel (`learndock spec table --kernel-from`) to be found together",
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

    @staticmethod
    def _set_fts(conn: Connection, learnware_id: str, title: str | None = None,
                 description: str = "") -> None:
        """Replace (or, without a title, remove) the learnware's SQLite full-text row.
        PostgreSQL indexes the learnwares table itself (an expression index)."""
        if conn.dialect.name != "sqlite":
            return
        conn.execute(text("DELETE FROM learnware_fts WHERE learnware_id = :i"), {"i": learnware_id})
        if title is not None:
            conn.execute(
                text("INSERT INTO learnware_fts (learnware_id, title, description) "
                     "VALUES (:i, :t, :d)"),
                {"i": learnware_id, "t": fts_text(title), "d": fts_text(description)},
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
        for key, spec, _ in spec_rows:
            self._ensure_island(conn, key, manifest, spec)
            self._island_note(conn, key, report)
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
        else:
            row = live_row(conn, learnware_id)
            number = int(row["latest_number"]) + 1
            old_island = row["island_key"]
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
            for _, _, values in spec_rows:
                conn.execute(
                    insert(t.specs).values(version_id=version_id, learnware_id=learnware_id, **values)
                )
            conn.execute(
                update(t.learnwares)
                .where(t.learnwares.c.id == learnware_id)
                .values(current_version_id=version_id, status=ACCEPTED, island_key=island, **tags)
            )
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
    ) -> Submission:
        """Store an upload as a ``queued`` version with its verification job (quick: the
        archive, manifest and specs are read within the caps, no model code runs). Nothing
        of it is searchable until :meth:`verify_job` accepts it."""
        if learnware_id is not None:
            with self.engine.connect() as conn:
                live_row(conn, learnware_id)
        with read_upload(path, semantic, self.limits) as (canonical, report, lw):
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
            return self._record(lease, jobs, v, lw_row, status, report, rows, None)
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
            if status == ACCEPTED:
                for key, spec, _ in spec_rows:
                    self._ensure_island(conn, key, manifest, spec)
                    self._island_note(conn, key, rep)
            doc = rep.to_dict()
            conn.execute(
                update(t.versions).where(t.versions.c.id == vid)
                .values(status=status, report_json=json.dumps(doc), verified_at=now)
            )
            row = live_row(conn, lid)
            if status == ACCEPTED:
                for _, _, values in spec_rows:
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
                still = conn.execute(
                    select(func.count()).select_from(t.versions).where(t.versions.c.blob_sha256 == sha)
                ).scalar_one()
                if not still:
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
