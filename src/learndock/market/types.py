"""What the market hands back: result records and the market's own errors.

In a module of their own so that every part (store, catalogue, façade) returns the same types
without importing one another.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from learndock.errors import MarketError
from learndock.package.build import CheckReport
from learndock.spec.kernels import GaussianKernel
from learndock.spec.semantic import SemanticSpec

ACCEPTED = "accepted"
REJECTED = "rejected"
#: Two-phase submissions (:meth:`learndock.market.Market.submit`): a version is stored
#: ``queued``, a worker moves it to ``verifying`` and then ``accepted`` (published: searchable,
#: downloadable by anyone) or ``rejected``; ``failed`` when its checks could not be completed
#: (attempts exhausted, e.g. workers lost mid-job) -- not the package's fault, an operator can
#: retry it.
QUEUED = "queued"
VERIFYING = "verifying"
FAILED = "failed"
PENDING = (QUEUED, VERIFYING)


class RejectedError(MarketError):
    """The package could not even be read (bad zip or manifest); nothing was stored."""

    def __init__(self, report: CheckReport) -> None:
        self.report = report
        super().__init__("package rejected before storage:\n" + report.text())


class BlobIntegrityError(MarketError):
    """A stored package's bytes no longer hash to the SHA-256 they were stored under.

    Raised instead of handing out tampered or corrupted bytes; ``learndock market verify``
    lists every such package.
    """

    def __init__(self, learnware_id: str, version: int, expected: str, actual: str) -> None:
        self.learnware_id = learnware_id
        self.version = version
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"package of learnware {learnware_id} version {version} is corrupt or was tampered "
            f"with: stored as sha256 {expected}, its bytes now hash to {actual}"
        )


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
    uploaded_by: str | None = None
    verified_at: float | None = None
    current: bool = False  # the learnware's current (published, searchable) version
    version_id: str | None = None


@dataclass
class Submission:
    """A version stored by :meth:`learndock.market.Market.submit`, waiting for its checks."""

    learnware_id: str
    version: int
    version_id: str
    job_id: str
    status: str
    package_sha256: str
    report: dict[str, Any]


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
    kernel_version: int = 1  # the market's kernel for the island is versioned (revisions)


@dataclass
class IslandKernel:
    """An island's current kernel as users fetch it to fit their specs with
    (``learndock market kernel ISLAND -o kernel.json``), with its history."""

    island: str
    version: int
    kernel: GaussianKernel
    encoder: dict | None
    history: list[dict]  # every version: {version, kernel_key, reason, n_specs, created_at}

    def to_dict(self) -> dict:
        """The kernel file: ``learndock spec table --kernel-from`` reads its ``kernel``."""
        doc = {"island": self.island, "kernel_version": self.version,
               "kernel": self.kernel.to_dict(), "history": self.history}
        if self.encoder:
            doc["encoder"] = self.encoder
        return doc


@dataclass
class SweepReport:
    removed_blobs: list[str] = field(default_factory=list)
    removed_temp_files: int = 0
