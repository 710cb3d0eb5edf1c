"""The Market: one object in front of the parts that do the work.

- :class:`~learndock.market.store.LearnwareStore` -- every write (add, update, delete, sweep,
  verify), blobs before rows, crash-safe;
- :class:`~learndock.market.catalogue.Catalogue` -- every read (learnwares, versions, islands,
  packages re-hashed on the way out);
- :class:`~learndock.market.index.IslandIndex` -- each island's random-feature vectors,
  reloaded when a write moves the island's generation;
- :class:`~learndock.search.pipeline.SearchPipeline` -- semantic filter, full text,
  prefilter, exact rerank, mixture;
- :class:`~learndock.market.hetero_store.HeteroStore` -- the system space of heterogeneous
  search (its versions and the island bridges), brought up to date lazily before a
  cross-island search, never on the add path;
- :class:`~learndock.market.jobs.JobStore` -- the verification queue of two-phase submissions
  (:meth:`Market.submit` stores a version ``queued``; a worker runs its checks under a lease,
  see :mod:`learndock.market.verification`).

Data moves one way: the store writes the tables, the catalogue and the index read them, the
pipeline reads only through those two. Metadata lives in a SQL database (SQLite by default,
PostgreSQL for a multi-node dock), package files in a content-addressed blob store.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy.engine import Connection

from learndock.config import ArchiveLimits, Settings
from learndock.market import types as records
from learndock.market.backends import open_blob_store
from learndock.market.blobstore import BlobStore
from learndock.market.catalogue import Catalogue
from learndock.market.db import SCENARIO_BITS, make_engine
from learndock.market.db import migrate as _migrate
from learndock.market.hetero_store import HeteroStore
from learndock.market.index import IslandIndex, IslandView
from learndock.market.islands import RFF_DIM
from learndock.market.jobs import DEFAULT_LEASE_S, DEFAULT_MAX_ATTEMPTS, JobStore
from learndock.market.kernels import KernelChoice
from learndock.market.store import BulkItem, LearnwareStore, SpecRow
from learndock.package.learnware import Learnware
from learndock.search.pipeline import MIXTURE_MIN_IMPROVEMENT, SearchPipeline
from learndock.search.query import as_query
from learndock.search.result import SearchResult
from learndock.search.statistical import Candidate
from learndock.spec.io import StatSpec
from learndock.spec.kernels import GaussianKernel
from learndock.spec.semantic import SemanticQuery

# The names this module defined before the split, importable from here as they were.
ACCEPTED, REJECTED = records.ACCEPTED, records.REJECTED
RejectedError = records.RejectedError
AddResult = records.AddResult
VersionInfo = records.VersionInfo
LearnwareInfo = records.LearnwareInfo
Page = records.Page
IslandInfo = records.IslandInfo
IslandKernel = records.IslandKernel
SweepReport = records.SweepReport
Submission = records.Submission
__all__ = ["MIXTURE_MIN_IMPROVEMENT", "SCENARIO_BITS", "BulkItem", "Market"]


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
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        ann_min_rows: int | None = None,
        ann_dtype: str | None = None,
        kernel_revision: str | None = None,
        hetero_embedder: str | None = None,
    ) -> None:
        kw: dict[str, Any] = {}
        if home is not None:
            kw["home"] = Path(home)
        if database_url is not None:
            kw["database_url"] = database_url
        if ann_min_rows is not None:
            kw["ann_min_rows"] = ann_min_rows
        if ann_dtype is not None:
            kw["ann_dtype"] = ann_dtype
        if kernel_revision is not None:
            kw["kernel_revision"] = kernel_revision
        if hetero_embedder is not None:
            kw["hetero_embedder"] = hetero_embedder
        self.settings = Settings(**kw)
        self.settings.home.mkdir(parents=True, exist_ok=True)
        self.url = self.settings.resolved_database_url
        self.engine = make_engine(self.url)
        self.blobs: BlobStore = blob_store or open_blob_store(self.settings)
        self.rff_dim = rff_dim
        self.check_timeout = check_timeout or self.settings.sandbox_timeout_s
        self.limits = limits or ArchiveLimits()
        self.store = LearnwareStore(self.engine, self.blobs, self.limits, self.check_timeout,
                                    rff_dim)
        self.store.auto_revise = self.settings.kernel_revision == "auto"
        self.catalogue = Catalogue(self.engine, self.blobs, self.limits)
        self.index = IslandIndex(self.settings.index_dir,
                                 ann_min_rows=self.settings.ann_min_rows,
                                 ann_dtype=self.settings.ann_dtype)
        self.hetero = HeteroStore(self.engine, self.settings.hetero_embedder,
                                  self.settings.cache_dir)
        self.pipeline = SearchPipeline(self.engine, self.catalogue, self.index, self.limits,
                                       self.hetero)
        self.jobs = JobStore(self.engine, max_attempts=max_attempts)
        self.migrate()

    def migrate(self) -> None:
        """Bring the database schema to the newest Alembic revision (safe to call often)."""
        _migrate(self.engine)

    def close(self) -> None:
        self.index.save()  # graphs changed since they were built or opened
        self.engine.dispose()

    def __enter__(self) -> Market:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ writes
    def add(
        self, path: str | Path, *, owner: str | None = None, semantic: Any = None,
        duplicates: str = "existing",
    ) -> AddResult:
        """Check and store a new learnware. Accepted ones become searchable at once.

        Raises :class:`RejectedError` (storing nothing) if the package cannot be read at all;
        a readable package that fails a check is stored with status ``rejected`` and its report.
        The same content as a live learnware (same digest) is not stored twice: ``duplicates``
        ``"existing"`` returns that learnware (its report says so), ``"refuse"`` raises
        :class:`~learndock.errors.DuplicateError`, ``"allow"`` stores a second copy.
        """
        return self.store.store(path, learnware_id=None, owner=owner, semantic=semantic,
                                duplicates=duplicates)

    def bulk_load(self, items: Any, *, batch_size: int = 5000,
                  progress: bool | None = None) -> list[str]:
        """Publish many learnwares verified elsewhere (a migration), in batches; see
        :meth:`learndock.market.store.LearnwareStore.bulk_load` and :class:`BulkItem`."""
        return self.store.bulk_load(items, batch_size=batch_size, progress=progress)

    def update(self, learnware_id: str, path: str | Path, *, semantic: Any = None) -> AddResult:
        """Add a new version to an existing learnware; older versions stay downloadable."""
        return self.store.store(path, learnware_id=learnware_id, owner=None, semantic=semantic)

    def delete(self, learnware_id: str) -> None:
        """Hide the learnware and release its packages (blobs no version references go); its
        waiting verification jobs are cancelled."""
        self.store.delete(learnware_id)

    # ------------------------------------------------------------------ two-phase writes
    def submit(
        self,
        path: str | Path,
        *,
        owner: str | None = None,
        learnware_id: str | None = None,
        semantic: Any = None,
        uploaded_by: str | None = None,
        duplicates: str = "allow",
    ) -> Submission:
        """Store a learnware (or, with ``learnware_id``, a new version of one) *without* its
        model checks: the archive, manifest and specs are read within the caps (an unreadable
        upload raises :class:`RejectedError`, storing nothing), then the version is kept
        ``queued`` with a verification job. Nothing of it is searchable until a worker
        (:meth:`verify_pending`, or a :class:`~learndock.market.verification.VerificationQueue`)
        accepts it. :meth:`add` does both steps at once. ``duplicates="refuse"`` raises
        :class:`~learndock.errors.DuplicateError` for the content of a live learnware (the
        dock server passes its ``duplicates`` setting)."""
        return self.store.submit(path, self.jobs, learnware_id=learnware_id, owner=owner,
                                 semantic=semantic, uploaded_by=uploaded_by,
                                 duplicates=duplicates)

    def verify_pending(
        self, version_id: str | None = None, *, worker: str | None = None,
        lease_s: float = DEFAULT_LEASE_S,
    ) -> AddResult | None:
        """Run the checks of one queued version now (the given one, else the oldest) under a
        lease with heartbeats; record accepted/rejected (or failed). Returns None if no such
        job was queued. See :class:`~learndock.market.verification.Verifier`."""
        from learndock.market.verification import Verifier

        job_id = None
        if version_id is not None:
            job = self.jobs.for_version(version_id)
            if job is None:
                return None
            job_id = job.id
        return Verifier(self, worker=worker, lease_s=lease_s).run_one(job_id)

    def sweep(self, grace_seconds: float = 3600.0) -> SweepReport:
        """Remove unreferenced blobs (left by crashes) older than ``grace_seconds``."""
        return self.store.sweep(grace_seconds)

    def verify(self) -> list[str]:
        """Consistency problems (empty list = consistent): missing or tampered blobs, current
        versions without specs, learnwares without versions."""
        return self.store.verify()

    # ------------------------------------------------------------------ reads
    def get(self, learnware_id: str) -> LearnwareInfo:
        return self.catalogue.get(learnware_id)

    def versions(self, learnware_id: str) -> list[VersionInfo]:
        return self.catalogue.versions(learnware_id)

    def list(
        self,
        query: SemanticQuery | dict[str, Any] | None = None,
        *,
        page: int = 0,
        page_size: int = 50,
        include_rejected: bool = False,
        sort: str = "recent",
        owner: str | None = None,
    ) -> Page:
        """Learnwares matching the tag filters (and the query's words, if any), newest first
        (``sort="downloads"`` or ``"name"`` to change), one page at a time; ``owner`` keeps
        one owner's. ``include_rejected`` adds those with no accepted version (queued,
        rejected, failed)."""
        return self.catalogue.listing(as_query(query), page, page_size, include_rejected,
                                      sort=sort, owner=owner)

    def __len__(self) -> int:
        return self.catalogue.count()

    def islands(self) -> list[IslandInfo]:
        return self.catalogue.islands()

    def kernel_for(
        self, dimension: int, feature_names: list[str] | None = None, data_type: str = "Table"
    ) -> GaussianKernel | None:
        """The market's kernel of the largest island for this feature space -- fit user specs
        with it for the sharpest match (a spec fitted with another kernel is still searched,
        rescored under the island's)."""
        return self.catalogue.kernel_for(dimension, feature_names, data_type)

    def island_kernel(self, island: str) -> IslandKernel:
        """The island's current kernel, its version and history (``to_dict()`` is the kernel
        file ``learndock spec table --kernel-from`` reads)."""
        return self.catalogue.island_kernel(island)

    def revise_kernel(self, island: str, kernel: GaussianKernel | None = None, *,
                      random_state: int = 0) -> KernelChoice:
        """Choose the island's kernel again from its specs (or set ``kernel``), rescoring every
        spec of the island when it changes; see :mod:`learndock.market.kernels`. The market
        also does this by itself, rarely, as an island grows."""
        return self.store.revise_kernel(island, kernel, random_state=random_state)

    def package_path(self, learnware_id: str, version: int | None = None) -> Path:
        """Path of the stored package zip (current version unless ``version`` is given), after
        checking its bytes (:class:`~learndock.market.types.BlobIntegrityError`
        if they changed)."""
        return self.catalogue.package_path(learnware_id, version)

    def download(self, learnware_id: str, dest: str | Path, version: int | None = None) -> Path:
        """Copy the package zip to ``dest`` (only if intact) and count the download."""
        return self.catalogue.download(learnware_id, dest, version)

    def load(
        self,
        learnware_id: str,
        version: int | None = None,
        *,
        trust_remote_code: bool = False,
        runtime: str = "auto",
    ) -> Learnware:
        """Open a stored learnware for prediction (``python`` models need opt-in or sandbox)."""
        return self.catalogue.load(learnware_id, version, trust_remote_code=trust_remote_code,
                                   runtime=runtime)

    # ------------------------------------------------------------------ search
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
        descriptions, any language; words that match no learnware give an empty result).
        ``spec`` (the user's RKME, built locally with the island's kernel, see
        :meth:`kernel_for`) is checked against the caps (``SpecError``), then ranks the matching
        learnwares of compatible islands by MMD and proposes a mixture. Scores are absolute,
        see :mod:`learndock.search.statistical`. With a table spec and the query's
        ``input_descriptions`` (or column descriptions carried by the spec), learnwares of
        other feature spaces are ranked too, in ``result.cross_island``
        (:mod:`learndock.market.hetero_store`).
        """
        return self.pipeline.run(query, spec, top_k=top_k, max_mixture=max_mixture,
                                 prefilter_k=prefilter_k, mixture_pool=mixture_pool)

    def decide(self, result: SearchResult, X: Any, labels: Any = None, *,
               top_k: int | None = None, trust_remote_code: bool = False,
               **params: Any) -> Any:
        """The decision step, here, on your rows: load the shortlist (``result.single``,
        the first ``top_k``) and the mixture's members, run their models on ``X``
        and re-rank by what they do (with ``labels``: a validated choice among them, the
        mixture and your own model). Returns the :class:`~learndock.reuse.decision.Decision`
        (also kept in ``result.decision``). ``X`` and ``labels`` never leave this process."""
        return result.decide_loading(lambda lid: self.load(lid, trust_remote_code=trust_remote_code), X, labels, top_k=top_k, **params)

    # ------------------------------------------------------------------ heterogeneous search
    def update_system_space(self) -> Any:
        """Bring the system space (heterogeneous search across islands) up to date: every
        table island with described columns that is not in it yet joins, and a new version
        with its bridges is stored. Returns the :class:`~learndock.hetero.SystemSpace`, or
        None when no island can join. Search does this by itself, lazily; see
        :mod:`learndock.market.hetero_store`."""
        return self.hetero.update()

    def bridges(self, source_island: str | None = None) -> list[dict[str, Any]]:
        """The stored island bridges (``island_bridges``), newest map version first."""
        return self.hetero.bridges(source_island)

    # ------------------------------------------------------------------ internals (benchmarks)
    @property
    def _indexes(self) -> dict[str, IslandView]:
        return self.index.cache

    def _island_index(self, conn: Connection, key: str) -> IslandView | None:
        return self.index.for_island(conn, key)

    def _candidates(self, conn: Connection, spec_row_ids: list[int]) -> dict[int, Candidate]:
        return self.index.candidates(conn, spec_row_ids)

    def _spec_rows(self, lw: Learnware) -> list[SpecRow]:
        return self.store.spec_rows(lw)

    def _bump(self, conn: Connection, island_key: str | None) -> None:
        self.store.bump(conn, island_key)
