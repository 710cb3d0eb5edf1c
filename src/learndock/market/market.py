"""The Market: a transactional store of learnwares with checks, islands and search.

Metadata lives in a SQL database (SQLite by default, PostgreSQL for a multi-node dock), package
files in a content-addressed blob store. Every add/update/delete is one database transaction;
blobs are written *before* it (so a committed row always has its blob) and removed only
*after* it commits (so a crash leaves at worst an unreferenced blob, which :meth:`sweep`
removes). Ids are random, never reused counters.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import and_, create_engine, event, func, insert, select, text, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError, OperationalError

from learndock.config import ArchiveLimits, Settings
from learndock.errors import MarketError, NotFoundError
from learndock.market import schema as t
from learndock.market.blobstore import BlobStore, LocalBlobStore
from learndock.market.faults import crashpoint
from learndock.market.islands import RFF_DIM, IslandKey, encoder_schema_hash, spec_island_key
from learndock.package.archive import iter_package_files, write_zip
from learndock.package.build import CheckReport, check_package
from learndock.package.learnware import Learnware, load_learnware, open_package_dir
from learndock.package.manifest import Manifest
from learndock.search.result import MixtureMatch, SearchResult, SingleMatch
from learndock.search.statistical import (
    Candidate,
    exact_scores,
    gram,
    mixture_weights,
    prefilter,
)
from learndock.search.text import rank_text
from learndock.spec.embedding import RKMEEmbeddingSpec
from learndock.spec.io import StatSpec, load_stat_spec
from learndock.spec.kernels import GaussianKernel, RandomFourierFeatures
from learndock.spec.semantic import Scenario, SemanticQuery, SemanticSpec

ACCEPTED = "accepted"
REJECTED = "rejected"
SCENARIO_BITS = {s: 1 << i for i, s in enumerate(Scenario)}
#: A mixture is recommended only if it cuts MMD^2 of the best single learnware by this much.
MIXTURE_MIN_IMPROVEMENT = 0.2


class RejectedError(MarketError):
    """The package could not even be read (bad zip or manifest); nothing was stored."""

    def __init__(self, report: CheckReport) -> None:
        self.report = report
        super().__init__("package rejected before storage:\n" + report.text())


@dataclass
class AddResult:
    learnware_id: str
    version: int
    status: str
    report: CheckReport
    package_sha256: str
    island: str | None = None

    @property
    def accepted(self) -> bool:
        return self.status == ACCEPTED


@dataclass
class VersionInfo:
    number: int
    semver: str
    status: str
    report: dict[str, Any]
    package_sha256: str
    size_bytes: int
    created_at: float
    available: bool


@dataclass
class LearnwareInfo:
    id: str
    name: str
    owner: str | None
    status: str
    current_version: int | None
    latest_version: int
    semantic: SemanticSpec
    island: str | None
    download_count: int
    created_at: float
    updated_at: float


@dataclass
class Page:
    items: list[LearnwareInfo]
    total: int
    page: int
    page_size: int


@dataclass
class IslandInfo:
    key: str
    data_type: str
    dimension: int
    feature_names: list[str]
    kernel: GaussianKernel
    n_learnwares: int
    encoder: str | None = None  # image/text islands: the encoder id (name:weights-hash)


@dataclass
class SweepReport:
    removed_blobs: list[str] = field(default_factory=list)
    removed_temp_files: int = 0


@dataclass
class _IslandIndex:
    generation: int
    learnware_ids: np.ndarray
    spec_row_ids: np.ndarray
    rff: np.ndarray
    kernel: GaussianKernel
    rff_map: RandomFourierFeatures


def _new_id() -> str:
    return uuid.uuid4().hex[:16]


def _scenario_mask(scenarios: list[Scenario]) -> int:
    m = 0
    for s in scenarios:
        m |= SCENARIO_BITS[s]
    return m


class Market:
    """A learnware market over SQLAlchemy + a blob store.

    >>> market = Market()                      # ~/.learndock (or $LEARNDOCK_HOME), SQLite
    >>> result = market.add("my-learnware.zip")
    >>> hits = market.search({"task_type": "Classification"}, spec=user_spec)
    """

    def __init__(
        self,
        home: str | Path | None = None,
        *,
        database_url: str | None = None,
        blob_store: BlobStore | None = None,
        rff_dim: int = RFF_DIM,
        check_timeout: float | None = None,
        limits: ArchiveLimits | None = None,
    ) -> None:
        kw: dict[str, Any] = {}
        if home is not None:
            kw["home"] = Path(home)
        if database_url is not None:
            kw["database_url"] = database_url
        self.settings = Settings(**kw)
        self.settings.home.mkdir(parents=True, exist_ok=True)
        self.url = self.settings.resolved_database_url
        self.engine = _make_engine(self.url)
        self.blobs: BlobStore = blob_store or LocalBlobStore(self.settings.blob_dir)
        self.rff_dim = rff_dim
        self.check_timeout = check_timeout or self.settings.sandbox_timeout_s
        self.limits = limits or ArchiveLimits()
        self._indexes: dict[str, _IslandIndex] = {}
        self.migrate()

    # ------------------------------------------------------------------ schema
    def migrate(self) -> None:
        """Bring the database schema to the newest Alembic revision (safe to call often)."""
        from alembic import command
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
        for attempt in range(5):
            try:
                with self.engine.begin() as conn:
                    cfg.attributes["connection"] = conn
                    command.upgrade(cfg, "head")
                return
            except (OperationalError, IntegrityError) as exc:
                # Two processes creating the same fresh database: the loser retries and finds
                # the schema in place.
                if attempt == 4:
                    raise MarketError(f"cannot migrate the market database: {exc}") from exc
                time.sleep(0.2 * (attempt + 1))
            except Exception as exc:  # ProgrammingError on PostgreSQL duplicate tables
                if "already exists" in str(exc) and attempt < 4:
                    time.sleep(0.2 * (attempt + 1))
                    continue
                raise

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Market:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ add / update
    def _prepare(self, path: str | Path, semantic: Any) -> tuple[Path, CheckReport, Learnware, Path]:
        """Canonicalise the upload into a temp zip and check it (model run in the sandbox)."""
        work = Path(tempfile.mkdtemp(prefix="learndock-add-"))
        canonical = work / "package.zip"
        try:
            root, temporary = open_package_dir(path, limits=self.limits, semantic=semantic)
            try:
                write_zip(iter_package_files(root), canonical, self.limits)
            finally:
                if temporary:
                    shutil.rmtree(root, ignore_errors=True)
        except Exception as exc:  # noqa: BLE001 -- any failure to read an upload refuses it
            shutil.rmtree(work, ignore_errors=True)
            report = CheckReport()
            report.add("archive and manifest", False, str(exc))
            raise RejectedError(report) from None
        report = check_package(
            canonical,
            run_model=True,
            sandbox=True,
            limits=self.limits,
            sandbox_timeout=self.check_timeout,
        )
        if report.manifest is None:
            shutil.rmtree(work, ignore_errors=True)
            raise RejectedError(report)
        lw = load_learnware(canonical, limits=self.limits)
        return canonical, report, lw, work

    def _island_note(self, conn: Connection, key: IslandKey, report: CheckReport) -> None:
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
                ids = sorted({_encoder_id(k) or "?" for k in encoders})
                report.add(
                    "island", True,
                    f"other {key.data_type} learnwares use encoder(s) {ids}; specs of different "
                    "encoders are never compared, so users of those encoders will not find this "
                    "one",
                )

    def add(
        self, path: str | Path, *, owner: str | None = None, semantic: Any = None
    ) -> AddResult:
        """Check and store a new learnware. Accepted ones become searchable at once.

        Raises :class:`RejectedError` (storing nothing) if the package cannot be read at all;
        a readable package that fails a check is stored with status ``rejected`` and its report.
        """
        return self._store(path, learnware_id=None, owner=owner, semantic=semantic)

    def update(self, learnware_id: str, path: str | Path, *, semantic: Any = None) -> AddResult:
        """Add a new version to an existing learnware; older versions stay downloadable."""
        self._row(learnware_id)
        return self._store(path, learnware_id=learnware_id, owner=None, semantic=semantic)

    def _store(
        self, path: str | Path, learnware_id: str | None, owner: str | None, semantic: Any
    ) -> AddResult:
        canonical, report, lw, work = self._prepare(path, semantic)
        try:
            manifest = lw.manifest
            status = ACCEPTED if report.ok else REJECTED
            sha, size = self.blobs.put_file(canonical)
            crashpoint("after-blob")
            spec_rows = self._spec_rows(lw) if status == ACCEPTED else []
            for attempt in range(8):
                try:
                    with self.engine.begin() as conn:
                        result = self._write(
                            conn, learnware_id, owner, manifest, lw, report, status, sha, size,
                            spec_rows,
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
        finally:
            lw.close()
            shutil.rmtree(work, ignore_errors=True)

    def _spec_rows(self, lw: Learnware) -> list[tuple[IslandKey, StatSpec, dict[str, Any]]]:
        rows = []
        for spec in lw.specs.values():
            key = spec_island_key(spec, lw.manifest)
            rff = RandomFourierFeatures(spec.kernel, self.rff_dim, key.rff_seed)
            emb = rff.embed(spec.z, spec.beta).astype(np.float32)
            rows.append(
                (
                    key,
                    spec,
                    {
                        "type": spec.type_name,
                        "island_key": str(key),
                        "n_points": spec.n_points,
                        "dimension": spec.dimension,
                        "self_inner": spec.self_inner,
                        "z": np.ascontiguousarray(spec.z, dtype="<f8").tobytes(),
                        "beta": np.ascontiguousarray(spec.beta, dtype="<f8").tobytes(),
                        "rff": emb.astype("<f4").tobytes(),
                    },
                )
            )
        return rows

    def _ensure_island(self, conn: Connection, key: IslandKey, manifest: Manifest,
                       spec: StatSpec) -> None:
        exists = conn.execute(select(t.islands.c.key).where(t.islands.c.key == str(key))).first()
        if exists is None:
            names = [f.name for f in manifest.input.features or []]
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
                    feature_names_json=json.dumps(names),
                    rff_seed=key.rff_seed,
                    rff_dim=self.rff_dim,
                    generation=0,
                    created_at=time.time(),
                )
            )

    def _bump(self, conn: Connection, island_key: str | None) -> None:
        if island_key:
            conn.execute(
                update(t.islands)
                .where(t.islands.c.key == island_key)
                .values(generation=t.islands.c.generation + 1)
            )

    def _write(
        self,
        conn: Connection,
        learnware_id: str | None,
        owner: str | None,
        manifest: Manifest,
        lw: Learnware,
        report: CheckReport,
        status: str,
        sha: str,
        size: int,
        spec_rows: list[tuple[IslandKey, StatSpec, dict[str, Any]]],
    ) -> AddResult:
        now = time.time()
        if conn.execute(select(t.blobs.c.sha256).where(t.blobs.c.sha256 == sha)).first() is None:
            conn.execute(insert(t.blobs).values(sha256=sha, size_bytes=size, created_at=now))
        island = str(spec_rows[0][0]) if spec_rows else None
        for key, spec, _ in spec_rows:
            self._ensure_island(conn, key, manifest, spec)
            self._island_note(conn, key, report)
        sem = manifest.semantic
        tags = {
            "title": sem.name,
            "description": sem.description,
            "data_type": sem.data_type.value,
            "task_type": sem.task_type.value,
            "library_type": sem.library_type.value,
            "license": sem.license.value,
            "scenario_mask": _scenario_mask(sem.scenarios),
            "input_dimension": manifest.input.size,
            "output_dimension": sem.output.dimension if sem.output else None,
        }
        version_id = _new_id()
        if learnware_id is None:
            learnware_id = _new_id()
            number = 1
            conn.execute(
                insert(t.learnwares).values(
                    id=learnware_id,
                    name=manifest.name,
                    owner=owner,
                    created_at=now,
                    updated_at=now,
                    deleted_at=None,
                    current_version_id=None,
                    latest_number=1,
                    status=status,
                    island_key=None,
                    download_count=0,
                    search_count=0,
                    **tags,
                )
            )
            old_island = None
        else:
            row = _live_row(conn, learnware_id)
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
            self._bump(conn, old_island)
            if island != old_island:
                self._bump(conn, island)
            if conn.dialect.name == "sqlite":
                conn.execute(
                    text("DELETE FROM learnware_fts WHERE learnware_id = :i"), {"i": learnware_id}
                )
                conn.execute(
                    text(
                        "INSERT INTO learnware_fts (learnware_id, title, description) "
                        "VALUES (:i, :t, :d)"
                    ),
                    {"i": learnware_id, "t": sem.name, "d": sem.description},
                )
        return AddResult(learnware_id, number, status, report, sha, island)

    # ------------------------------------------------------------------ delete / sweep
    def delete(self, learnware_id: str) -> None:
        """Hide the learnware and release its packages (blobs no version references go)."""
        with self.engine.begin() as conn:
            row = _live_row(conn, learnware_id)
            shas = {
                r[0]
                for r in conn.execute(
                    select(t.versions.c.blob_sha256).where(
                        and_(
                            t.versions.c.learnware_id == learnware_id,
                            t.versions.c.blob_sha256.is_not(None),
                        )
                    )
                )
            }
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
            self._bump(conn, row["island_key"])
            if conn.dialect.name == "sqlite":
                conn.execute(
                    text("DELETE FROM learnware_fts WHERE learnware_id = :i"), {"i": learnware_id}
                )
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
            referenced = {
                r[0]
                for r in conn.execute(
                    select(t.versions.c.blob_sha256).where(t.versions.c.blob_sha256.is_not(None))
                )
            }
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
        -- :meth:`sweep` removes them -- but a row without its blob is."""
        problems = []
        with self.engine.connect() as conn:
            for vid, lid, sha in conn.execute(
                select(t.versions.c.id, t.versions.c.learnware_id, t.versions.c.blob_sha256).where(
                    t.versions.c.blob_sha256.is_not(None)
                )
            ):
                if not self.blobs.exists(sha):
                    problems.append(f"version {vid} of {lid}: blob {sha} is missing")
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

    # ------------------------------------------------------------------ reading
    def _row(self, learnware_id: str) -> dict[str, Any]:
        with self.engine.connect() as conn:
            return dict(_live_row(conn, learnware_id))

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

    def get(self, learnware_id: str) -> LearnwareInfo:
        with self.engine.connect() as conn:
            row = _live_row(conn, learnware_id)
            return self._info(conn, row)

    def versions(self, learnware_id: str) -> list[VersionInfo]:
        self._row(learnware_id)
        with self.engine.connect() as conn:
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
            )
            for r in rows
        ]

    def _filters(self, q: SemanticQuery | None, include_rejected: bool = False) -> list[Any]:
        c = t.learnwares.c
        conds: list[Any] = [c.deleted_at.is_(None)]
        if not include_rejected:
            conds.append(c.current_version_id.is_not(None))
        if q is None:
            return conds
        if q.data_type:
            conds.append(c.data_type.in_([v.value for v in q.data_type]))
        if q.task_type:
            conds.append(c.task_type.in_([v.value for v in q.task_type]))
        if q.library_type:
            conds.append(c.library_type.in_([v.value for v in q.library_type]))
        if q.license:
            conds.append(c.license.in_([v.value for v in q.license]))
        if q.scenarios:
            conds.append(c.scenario_mask.op("&")(_scenario_mask(q.scenarios)) != 0)
        if q.input_dimension is not None:
            conds.append(c.input_dimension == q.input_dimension)
        if q.output_dimension is not None:
            conds.append(c.output_dimension == q.output_dimension)
        return conds

    def list(
        self,
        query: SemanticQuery | dict[str, Any] | None = None,
        *,
        page: int = 0,
        page_size: int = 50,
        include_rejected: bool = False,
    ) -> Page:
        """Learnwares matching the tag filters, newest first, one page at a time."""
        q = _as_query(query)
        if page < 0 or not 1 <= page_size <= 1000:
            raise MarketError("page must be >= 0 and page_size in [1, 1000]")
        conds = self._filters(q, include_rejected)
        with self.engine.connect() as conn:
            total = conn.execute(
                select(func.count()).select_from(t.learnwares).where(and_(*conds))
            ).scalar_one()
            rows = conn.execute(
                select(t.learnwares)
                .where(and_(*conds))
                .order_by(t.learnwares.c.created_at.desc(), t.learnwares.c.id)
                .offset(page * page_size)
                .limit(page_size)
            ).mappings().all()
            items = [self._info(conn, r) for r in rows]
        return Page(items, int(total), page, page_size)

    def __len__(self) -> int:
        with self.engine.connect() as conn:
            return int(
                conn.execute(
                    select(func.count()).select_from(t.learnwares).where(and_(*self._filters(None)))
                ).scalar_one()
            )

    def package_path(self, learnware_id: str, version: int | None = None) -> Path:
        """Path of the stored package zip (current version unless ``version`` is given)."""
        sha = self._version_blob(learnware_id, version)
        p = self.blobs.local_path(sha) if hasattr(self.blobs, "local_path") else None
        if p is None:
            raise NotFoundError(f"package {sha} is not available locally")
        return p

    def _version_blob(self, learnware_id: str, version: int | None) -> str:
        row = self._row(learnware_id)
        with self.engine.connect() as conn:
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
        return str(v[0])

    def download(self, learnware_id: str, dest: str | Path, version: int | None = None) -> Path:
        """Copy the package zip to ``dest`` and count the download."""
        sha = self._version_blob(learnware_id, version)
        dest = Path(dest)
        with self.blobs.open(sha) as src, open(dest, "wb") as out:
            shutil.copyfileobj(src, out, 1 << 20)
        with self.engine.begin() as conn:
            conn.execute(
                update(t.learnwares)
                .where(t.learnwares.c.id == learnware_id)
                .values(download_count=t.learnwares.c.download_count + 1)
            )
        return dest

    def load(
        self,
        learnware_id: str,
        version: int | None = None,
        *,
        trust_remote_code: bool = False,
        runtime: str = "auto",
    ) -> Learnware:
        """Open a stored learnware for prediction (``python`` models need opt-in or sandbox)."""
        sha = self._version_blob(learnware_id, version)
        path = self.blobs.local_path(sha)
        if path is None:
            tmp = Path(tempfile.mkdtemp(prefix="learndock-dl-")) / "package.zip"
            path = self.download(learnware_id, tmp, version)
        lw = load_learnware(path, trust_remote_code=trust_remote_code, runtime=runtime,  # type: ignore[arg-type]
                            limits=self.limits)
        lw.market_id = learnware_id  # type: ignore[attr-defined]
        return lw

    def islands(self) -> list[IslandInfo]:
        with self.engine.connect() as conn:
            counts = dict(
                conn.execute(
                    select(t.learnwares.c.island_key, func.count())
                    .where(and_(*self._filters(None)))
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
                encoder=_encoder_id(r["kernel_json"]),
            )
            for r in rows
        ]

    def kernel_for(
        self, dimension: int, feature_names: list[str] | None = None, data_type: str = "Table"
    ) -> GaussianKernel | None:
        """The kernel of the largest island for this feature space -- build user specs with it
        so they can be compared with the learnwares there."""
        best = None
        for isl in self.islands():
            if isl.dimension != dimension or isl.data_type != data_type:
                continue
            if feature_names is not None and isl.feature_names != list(feature_names):
                continue
            if best is None or isl.n_learnwares > best.n_learnwares:
                best = isl
        return best.kernel if best else None

    # ------------------------------------------------------------------ search
    def _island_index(self, conn: Connection, key: str) -> _IslandIndex | None:
        row = conn.execute(select(t.islands).where(t.islands.c.key == key)).mappings().first()
        if row is None:
            return None
        cached = self._indexes.get(key)
        if cached is not None and cached.generation == row["generation"]:
            return cached
        # The specs of current versions of live learnwares. An IN subquery, not a join:
        # learnwares.current_version_id has no index, and SQLite's planner drives a join from
        # the island's specs and scans learnwares once per spec (O(N^2): 41 s at 10,000).
        current = select(t.learnwares.c.current_version_id).where(
            and_(
                t.learnwares.c.deleted_at.is_(None),
                t.learnwares.c.current_version_id.is_not(None),
            )
        )
        rows = conn.execute(
            select(t.specs.c.id, t.specs.c.learnware_id, t.specs.c.rff)
            .where(and_(t.specs.c.island_key == key, t.specs.c.version_id.in_(current)))
            .order_by(t.specs.c.id)
        ).all()
        kernel = GaussianKernel.from_dict(json.loads(row["kernel_json"]))
        dim = int(row["rff_dim"])
        rff = (
            np.frombuffer(b"".join(r[2] for r in rows), dtype="<f4").reshape(len(rows), dim)
            if rows
            else np.zeros((0, dim), dtype=np.float32)
        )
        idx = _IslandIndex(
            generation=int(row["generation"]),
            learnware_ids=np.array([r[1] for r in rows], dtype=object),
            spec_row_ids=np.array([r[0] for r in rows], dtype=np.int64),
            rff=np.ascontiguousarray(rff),
            kernel=kernel,
            rff_map=RandomFourierFeatures(kernel, dim, int(row["rff_seed"])),
        )
        self._indexes[key] = idx
        return idx

    def _candidates(self, conn: Connection, spec_row_ids: list[int]) -> dict[int, Candidate]:
        rows = conn.execute(
            select(
                t.specs.c.id, t.specs.c.learnware_id, t.specs.c.n_points, t.specs.c.dimension,
                t.specs.c.z, t.specs.c.beta, t.specs.c.self_inner,
            ).where(t.specs.c.id.in_(spec_row_ids))
        ).all()
        out = {}
        for rid, lid, k, d, z, beta, si in rows:
            out[int(rid)] = Candidate(
                lid,
                np.frombuffer(z, dtype="<f8").reshape(int(k), int(d)),
                np.frombuffer(beta, dtype="<f8"),
                float(si),
            )
        return out

    def search(
        self,
        query: SemanticQuery | dict[str, Any] | None = None,
        spec: StatSpec | str | Path | None = None,
        *,
        top_k: int = 10,
        max_mixture: int = 5,
        prefilter_k: int | None = None,
        mixture_pool: int = 16,
    ) -> SearchResult:
        """Find learnwares for a task.

        ``query`` filters by tags (exact) and ranks by ``text`` (full-text over names and
        descriptions). ``spec`` (the user's RKME, built locally with the island's kernel, see
        :meth:`kernel_for`) ranks the matching learnwares of compatible islands by MMD and
        proposes a mixture. Scores are absolute, see :mod:`learndock.search.statistical`.
        """
        t0 = time.perf_counter()
        q = _as_query(query)
        res = SearchResult()
        if isinstance(spec, (str, Path)):
            spec = load_stat_spec(spec)
        conds = self._filters(q)
        has_filter = len(conds) > 2
        with self.engine.connect() as conn:
            allowed_ids: set[str] | None = None
            if has_filter or spec is None:
                allowed_ids = set(
                    conn.execute(select(t.learnwares.c.id).where(and_(*conds))).scalars()
                )
                res.explanation.append(
                    f"tag filters kept {len(allowed_ids)} learnware(s)"
                    + (f" ({_describe_query(q)})" if q else "")
                )
            text_rank: dict[str, float] = {}
            if q is not None and q.text.strip():
                text_rank = rank_text(conn, q.text)
                res.explanation.append(
                    f"full-text: {len(text_rank)} learnware(s) share words with {q.text[:60]!r}"
                )
            res.timings_ms["semantic"] = (time.perf_counter() - t0) * 1e3
            if spec is None:
                ids = list(allowed_ids or [])
                ids.sort(key=lambda i: (-text_rank.get(i, 0.0), i))
                if text_rank:
                    ids = [i for i in ids if i in text_rank] or ids
                names = self._names(conn, ids[:top_k])
                res.single = [
                    SingleMatch(i, *names[i], text_rank=text_rank.get(i)) for i in ids[:top_k]
                ]
                return res
            self._statistical(conn, q, spec, allowed_ids, text_rank, res, top_k, max_mixture,
                              prefilter_k, mixture_pool)
        res.timings_ms["total"] = (time.perf_counter() - t0) * 1e3
        return res

    def _names(self, conn: Connection, ids: list[str]) -> dict[str, tuple[str, int]]:
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

    def _statistical(
        self,
        conn: Connection,
        q: SemanticQuery | None,
        spec: StatSpec,
        allowed_ids: set[str] | None,
        text_rank: dict[str, float],
        res: SearchResult,
        top_k: int,
        max_mixture: int,
        prefilter_k: int | None,
        mixture_pool: int,
    ) -> None:
        t1 = time.perf_counter()
        kernel_key = spec.kernel.key()
        spec_type = getattr(spec, "data_type", "Table")
        data_types = [d.value for d in q.data_type] if q and q.data_type else [spec_type]
        if spec_type not in data_types:
            res.explanation.append(f"your spec describes {spec_type} data but the query asks "
                                   f"for {'/'.join(data_types)} learnwares")
            return
        isl_rows = conn.execute(
            select(t.islands.c.key, t.islands.c.kernel_key, t.islands.c.schema_hash,
                   t.islands.c.kernel_json).where(
                and_(
                    t.islands.c.dimension == spec.dimension,
                    t.islands.c.data_type == spec_type,
                )
            )
        ).all()
        if isinstance(spec, RKMEEmbeddingSpec):
            # Specs from different encoders live in different spaces: never compared.
            wanted = encoder_schema_hash(spec.encoder_id)
            others = sorted({_encoder_id(kj) or "?" for _, _, sh, kj in isl_rows if sh != wanted})
            isl_rows = [r for r in isl_rows if r[2] == wanted]
            if not isl_rows:
                res.explanation.append(
                    f"refused: your {spec_type.lower()} spec was built with encoder "
                    f"{spec.encoder_id}; "
                    + (f"this market's {spec_type} learnwares use {', '.join(others)} -- rebuild "
                       "your spec with that encoder" if others
                       else f"the market has no {spec_type} learnwares with specs")
                )
                return
        keys = [r[0] for r in isl_rows if r[1] == kernel_key]
        if not keys:
            if isl_rows:
                res.explanation.append(
                    f"no island uses your spec's kernel ({kernel_key}); {len(isl_rows)} island(s) "
                    f"of dimension {spec.dimension} use other kernels -- rebuild your spec with "
                    "Market.kernel_for(...) or `learndock spec table --kernel-from`"
                )
            else:
                res.explanation.append(
                    f"no island of {'/'.join(data_types)} data with dimension {spec.dimension}"
                )
            return
        k_pre = prefilter_k or max(64, 4 * top_k, mixture_pool)
        scored: list[tuple[float, float, str, str]] = []  # (mmd, score, learnware id, island)
        per_island: dict[str, list[tuple[float, Candidate, float]]] = {}
        for key in keys:
            idx = self._island_index(conn, key)
            if idx is None or idx.rff.shape[0] == 0:
                continue
            allowed = (
                np.fromiter((i in allowed_ids for i in idx.learnware_ids), bool,
                            len(idx.learnware_ids))
                if allowed_ids is not None
                else None
            )
            emb = idx.rff_map.embed(spec.z, spec.beta)
            top = prefilter(idx.rff, emb, allowed, k_pre)
            res.explanation.append(
                f"island {key}: {idx.rff.shape[0]} spec(s); random-feature prefilter kept "
                f"{len(top)} for exact MMD"
            )
            if len(top) == 0:
                continue
            rows = self._candidates(conn, [int(idx.spec_row_ids[i]) for i in top])
            cands = [rows[int(idx.spec_row_ids[i])] for i in top]
            mmd, score, ip = exact_scores(spec, cands, idx.kernel)
            per_island[key] = sorted(zip(mmd.tolist(), cands, ip.tolist(), strict=True), key=lambda x: x[0])
            for m, s, c in zip(mmd.tolist(), score.tolist(), cands, strict=True):
                scored.append((m, s, c.learnware_id, key))
        res.timings_ms["statistical"] = (time.perf_counter() - t1) * 1e3
        if not scored:
            res.explanation.append("no learnware passed the filters in a compatible island")
            return
        scored.sort(key=lambda x: (round(x[0], 12), -text_rank.get(x[2], 0.0), x[2]))
        top_rows = scored[:top_k]
        names = self._names(conn, [r[2] for r in top_rows])
        res.single = [
            SingleMatch(lid, *names[lid], score=s, mmd=m, text_rank=text_rank.get(lid), island=key)
            for m, s, lid, key in top_rows
            if lid in names
        ]
        # Mixture, within the island of the best single match.
        t2 = time.perf_counter()
        best_mmd, _, _, best_key = scored[0]
        pool = per_island[best_key][:mixture_pool]
        if max_mixture >= 2 and len(pool) >= 2:
            cands = [c for _, c, _ in pool]
            h = np.array([ip for _, _, ip in pool])
            g = gram(cands, self._indexes[best_key].kernel)
            w, mix2 = mixture_weights(spec.self_inner, g, h, max_mixture)
            order = [i for i in np.argsort(-w, kind="stable") if w[i] > 1e-4]
            best2 = best_mmd**2
            improvement = 1.0 - mix2 / best2 if best2 > 0 else 0.0
            norm = spec.self_inner + float(w @ g @ w)
            recommended = len(order) >= 2 and improvement >= MIXTURE_MIN_IMPROVEMENT
            mnames = self._names(conn, [cands[i].learnware_id for i in order])
            res.mixture = MixtureMatch(
                learnware_ids=[cands[i].learnware_id for i in order],
                names=[mnames[cands[i].learnware_id][0] for i in order],
                weights=[float(w[i]) for i in order],
                mmd=float(np.sqrt(mix2)),
                score=float(np.clip(1.0 - mix2 / norm, 0.0, 1.0)),
                best_single_mmd=float(best_mmd),
                improvement=float(improvement),
                recommended=recommended,
                island=best_key,
            )
            res.explanation.append(
                f"mixture of {len(order)} learnware(s) cuts MMD^2 by {improvement:.0%} against "
                f"the best single one: "
                + ("recommended" if recommended else
                   f"not recommended (needs >= {MIXTURE_MIN_IMPROVEMENT:.0%} and 2+ members)")
            )
        res.timings_ms["mixture"] = (time.perf_counter() - t2) * 1e3


def _live_row(conn: Connection, learnware_id: str) -> Any:
    """The learnware's row, or NotFoundError if there is none or it was deleted."""
    row = conn.execute(
        select(t.learnwares).where(t.learnwares.c.id == learnware_id)
    ).mappings().first()
    if row is None or row["deleted_at"] is not None:
        raise NotFoundError(f"no learnware {learnware_id!r}")
    return row


def _encoder_id(kernel_json: str) -> str | None:
    """The encoder id an image/text island stored with its kernel (None for tables)."""
    return (json.loads(kernel_json).get("encoder") or {}).get("id")


def _as_query(query: SemanticQuery | dict[str, Any] | None) -> SemanticQuery | None:
    if query is None or isinstance(query, SemanticQuery):
        return query
    return SemanticQuery.parse(query)


def _describe_query(q: SemanticQuery) -> str:
    parts = []
    for name in ("data_type", "task_type", "library_type", "scenarios", "license"):
        v = getattr(q, name)
        if v:
            parts.append(f"{name} in {[x.value for x in v]}")
    for name in ("input_dimension", "output_dimension"):
        v = getattr(q, name)
        if v is not None:
            parts.append(f"{name}={v}")
    return ", ".join(parts) or "no tag filters"


def _make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 60})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=60000")
            cur.close()

        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://"):]
    return create_engine(url, pool_pre_ping=True)
