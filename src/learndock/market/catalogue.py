"""The catalogue: every read of the market -- learnwares, versions, islands, packages.

It never changes what the market holds (the one write is the download counter). Packages are
re-hashed on every read (``package_path``, ``download``, ``load``): bytes that no longer match
the SHA-256 they were stored under raise :class:`BlobIntegrityError` instead of reaching a
user or being unpickled.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from sqlalchemy import and_, func, select, update
from sqlalchemy.engine import Connection, Engine

from learndock.config import ArchiveLimits
from learndock.errors import MarketError, NotFoundError
from learndock.market import schema as t
from learndock.market.blobstore import BlobStore, hash_blob
from learndock.market.db import encoder_id, live_row, scenario_mask
from learndock.market.types import (
    BlobIntegrityError,
    IslandInfo,
    IslandKernel,
    LearnwareInfo,
    Page,
    VersionInfo,
)
from learndock.package.learnware import Learnware, load_learnware
from learndock.search.pipeline import IslandRow
from learndock.search.text import query_terms, rank_text
from learndock.spec.kernels import GaussianKernel
from learndock.spec.semantic import SemanticQuery, SemanticSpec


@dataclass
class Catalogue:
    """Reads for users (get, list, versions, islands, packages) and for the search pipeline
    (:class:`learndock.search.pipeline.SearchCatalogue`)."""

    engine: Engine
    blobs: BlobStore
    limits: ArchiveLimits  # caps for opening packages in :meth:`load`

    # ------------------------------------------------------------------ learnwares
    def get(self, learnware_id: str) -> LearnwareInfo:
        with self.engine.connect() as conn:
            return self._info(conn, live_row(conn, learnware_id))

    def _info(self, conn: Connection, row: Any) -> LearnwareInfo:
        vid = row["current_version_id"]
        vq = select(t.versions.c.number, t.versions.c.manifest_json).where(
            t.versions.c.learnware_id == row["id"]
        )
        vq = vq.where(t.versions.c.id == vid) if vid else vq.order_by(t.versions.c.number.desc())
        v = conn.execute(vq.limit(1)).first()
        manifest = json.loads(v[1]) if v and v[1] else None
        sem = SemanticSpec.parse(manifest["semantic"]) if manifest else None
        return LearnwareInfo(
            id=row["id"],
            name=row["name"],
            owner=row["owner"],
            status=row["status"],
            current_version=v[0] if vid and v else None,
            latest_version=int(row["latest_number"]),
            semantic=sem,  # type: ignore[arg-type]
            island=row["island_key"],
            download_count=int(row["download_count"]),
            created_at=float(row["created_at"]),
            updated_at=float(row["updated_at"]),
        )

    def versions(self, learnware_id: str) -> list[VersionInfo]:
        with self.engine.connect() as conn:
            current = live_row(conn, learnware_id)["current_version_id"]
            rows = conn.execute(
                select(t.versions)
                .where(t.versions.c.learnware_id == learnware_id)
                .order_by(t.versions.c.number)
            ).mappings().all()
        return [
            VersionInfo(
                number=r["number"],
                semver=r["semver"],
                status=r["status"],
                report=json.loads(r["report_json"]),
                package_sha256=r["package_sha256"],
                size_bytes=int(r["size_bytes"]),
                created_at=float(r["created_at"]),
                available=r["blob_sha256"] is not None,
                uploaded_by=r["uploaded_by"],
                verified_at=None if r["verified_at"] is None else float(r["verified_at"]),
                current=r["id"] == current,
                version_id=r["id"],
            )
            for r in rows
        ]

    def filters(self, q: SemanticQuery | None, include_rejected: bool = False) -> list[Any]:
        """SQL conditions for the query's tags (text is matched by :meth:`text_rank`)."""
        c = t.learnwares.c
        conds: list[Any] = [c.deleted_at.is_(None)]
        if not include_rejected:
            conds.append(c.current_version_id.is_not(None))
        if q is None:
            return conds
        for name in ("data_type", "task_type", "library_type", "license"):
            values = getattr(q, name)
            if values:
                conds.append(getattr(c, name).in_([v.value for v in values]))
        if q.scenarios:
            conds.append(c.scenario_mask.op("&")(scenario_mask(q.scenarios)) != 0)
        if q.input_dimension is not None:
            conds.append(c.input_dimension == q.input_dimension)
        if q.output_dimension is not None:
            conds.append(c.output_dimension == q.output_dimension)
        return conds

    #: ``sort`` keys of :meth:`listing` -> ORDER BY (ties broken by id, so pages are stable).
    SORTS: ClassVar[dict[str, tuple[Any, ...]]] = {
        "recent": (t.learnwares.c.created_at.desc(), t.learnwares.c.id),
        "downloads": (t.learnwares.c.download_count.desc(), t.learnwares.c.created_at.desc(),
                      t.learnwares.c.id),
        "name": (func.lower(t.learnwares.c.title), t.learnwares.c.id),
    }

    def listing(
        self, q: SemanticQuery | None, page: int, page_size: int, include_rejected: bool,
        *, sort: str = "recent", owner: str | None = None,
    ) -> Page:
        """One page of the learnwares matching the tags and words (and owner), newest first
        (or by downloads, or by name)."""
        if page < 0 or not 1 <= page_size <= 1000:
            raise MarketError("page must be >= 0 and page_size in [1, 1000]")
        if sort not in self.SORTS:
            raise MarketError(f"sort must be one of {sorted(self.SORTS)}, not {sort!r}")
        conds = self.filters(q, include_rejected)
        if owner is not None:
            conds.append(t.learnwares.c.owner == owner)
        with self.engine.connect() as conn:
            if q is not None and query_terms(q.text):
                # Words restrict the list to the learnwares that share one (none: empty page).
                conds.append(t.learnwares.c.id.in_(list(self.text_rank(conn, q.text))))
            total = conn.execute(
                select(func.count()).select_from(t.learnwares).where(and_(*conds))
            ).scalar_one()
            rows = conn.execute(
                select(t.learnwares)
                .where(and_(*conds))
                .order_by(*self.SORTS[sort])
                .offset(page * page_size)
                .limit(page_size)
            ).mappings().all()
            items = [self._info(conn, r) for r in rows]
        return Page(items, int(total), page, page_size)

    def count(self) -> int:
        with self.engine.connect() as conn:
            return int(
                conn.execute(
                    select(func.count()).select_from(t.learnwares).where(and_(*self.filters(None)))
                ).scalar_one()
            )

    # ------------------------------------------------------------------ islands
    def islands(self) -> list[IslandInfo]:
        with self.engine.connect() as conn:
            counts = dict(
                conn.execute(
                    select(t.learnwares.c.island_key, func.count())
                    .where(and_(*self.filters(None)))
                    .group_by(t.learnwares.c.island_key)
                ).all()
            )
            rows = conn.execute(select(t.islands)).mappings().all()
        return [
            IslandInfo(
                key=r["key"],
                data_type=r["data_type"],
                dimension=int(r["dimension"]),
                feature_names=json.loads(r["feature_names_json"]),
                kernel=GaussianKernel.from_dict(json.loads(r["kernel_json"])),
                n_learnwares=int(counts.get(r["key"], 0)),
                encoder=encoder_id(r["kernel_json"]),
                kernel_version=int(r["kernel_version"]),
            )
            for r in rows
        ]

    def island_kernel(self, key: str) -> IslandKernel:
        """The island's current kernel and its history (NotFoundError if no such island)."""
        with self.engine.connect() as conn:
            row = conn.execute(select(t.islands).where(t.islands.c.key == key)).mappings().first()
            if row is None:
                raise NotFoundError(f"no island {key!r} (see `learndock market islands`)")
            history = conn.execute(
                select(t.island_kernels.c.version, t.island_kernels.c.kernel_key,
                       t.island_kernels.c.reason, t.island_kernels.c.n_specs,
                       t.island_kernels.c.created_at)
                .where(t.island_kernels.c.island_key == key)
                .order_by(t.island_kernels.c.version)
            ).mappings().all()
        doc = json.loads(row["kernel_json"])
        return IslandKernel(key, int(row["kernel_version"]), GaussianKernel.from_dict(doc),
                            doc.get("encoder"), [dict(h) for h in history])

    def kernel_for(
        self, dimension: int, feature_names: list[str] | None = None, data_type: str = "Table"
    ) -> GaussianKernel | None:
        best = None
        for isl in self.islands():
            if isl.dimension != dimension or isl.data_type != data_type:
                continue
            if feature_names is not None and isl.feature_names != list(feature_names):
                continue
            if best is None or isl.n_learnwares > best.n_learnwares:
                best = isl
        return best.kernel if best else None

    # ------------------------------------------------------------------ for the search pipeline
    def ids_matching(self, conn: Connection, q: SemanticQuery | None) -> set[str]:
        return set(conn.execute(select(t.learnwares.c.id).where(and_(*self.filters(q)))).scalars())

    def text_rank(self, conn: Connection, text: str) -> dict[str, float]:
        return rank_text(conn, text)

    def names(self, conn: Connection, ids: list[str]) -> dict[str, tuple[str, int]]:
        """learnware id -> (name, current version number)."""
        if not ids:
            return {}
        rows = conn.execute(
            select(t.learnwares.c.id, t.learnwares.c.name, t.versions.c.number)
            .select_from(
                t.learnwares.join(t.versions, t.versions.c.id == t.learnwares.c.current_version_id)
            )
            .where(t.learnwares.c.id.in_(ids))
        ).all()
        return {r[0]: (r[1], int(r[2])) for r in rows}

    def island_rows(self, conn: Connection, data_type: str, dimension: int) -> list[IslandRow]:
        rows = conn.execute(
            select(t.islands.c.key, t.islands.c.kernel_json, t.islands.c.kernel_version).where(
                and_(t.islands.c.dimension == dimension, t.islands.c.data_type == data_type)
            )
        ).all()
        return [IslandRow(key, GaussianKernel.from_dict(json.loads(kj)), int(v), encoder_id(kj))
                for key, kj, v in rows]

    # ------------------------------------------------------------------ packages
    def _version_blob(self, learnware_id: str, version: int | None) -> tuple[str, int]:
        """(blob sha256, version number) of the current or the given version."""
        with self.engine.connect() as conn:
            row = live_row(conn, learnware_id)
            q = select(t.versions.c.blob_sha256, t.versions.c.number).where(
                t.versions.c.learnware_id == learnware_id
            )
            if version is None:
                if row["current_version_id"] is None:
                    raise NotFoundError(f"learnware {learnware_id!r} has no accepted version")
                q = q.where(t.versions.c.id == row["current_version_id"])
            else:
                q = q.where(t.versions.c.number == version)
            v = conn.execute(q).first()
        if v is None or v[0] is None:
            raise NotFoundError(f"learnware {learnware_id!r} has no version {version}")
        return str(v[0]), int(v[1])

    def _check(self, learnware_id: str, number: int, sha: str, actual: str) -> None:
        if actual != sha:
            raise BlobIntegrityError(learnware_id, number, sha, actual)

    def _verified_copy(self, learnware_id: str, version: int | None, dest: Path) -> None:
        """Copy the package to ``dest`` hashing as it goes; ``dest`` appears only if it is intact."""
        sha, number = self._version_blob(learnware_id, version)
        part = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}.part")
        try:
            with open(part, "wb") as out:
                actual = hash_blob(self.blobs, sha, out)
            self._check(learnware_id, number, sha, actual)
            os.replace(part, dest)
        finally:
            part.unlink(missing_ok=True)

    def package_path(self, learnware_id: str, version: int | None = None) -> Path:
        sha, number = self._version_blob(learnware_id, version)
        p = self.blobs.local_path(sha) if hasattr(self.blobs, "local_path") else None
        if p is None:
            raise NotFoundError(f"package {sha} is not available locally")
        self._check(learnware_id, number, sha, hash_blob(self.blobs, sha))
        return p

    def download(self, learnware_id: str, dest: str | Path, version: int | None = None) -> Path:
        dest = Path(dest)
        self._verified_copy(learnware_id, version, dest)
        with self.engine.begin() as conn:
            conn.execute(
                update(t.learnwares)
                .where(t.learnwares.c.id == learnware_id)
                .values(download_count=t.learnwares.c.download_count + 1)
            )
        return dest

    def load(
        self, learnware_id: str, version: int | None, *, trust_remote_code: bool, runtime: str
    ) -> Learnware:
        # Loaded from a private, verified copy: the check and the read see the same bytes.
        work = Path(tempfile.mkdtemp(prefix="learndock-load-"))
        try:
            pkg = work / "package.zip"
            self._verified_copy(learnware_id, version, pkg)
            lw = load_learnware(pkg, trust_remote_code=trust_remote_code,
                                runtime=runtime,  # type: ignore[arg-type]
                                limits=self.limits)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        lw.market_id = learnware_id  # type: ignore[attr-defined]
        return lw
