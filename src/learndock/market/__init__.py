"""The market: store (SQL + blobs), submission checks, islands, search entry point."""

from learndock.market.blobstore import BlobStore, LocalBlobStore
from learndock.market.islands import IslandKey
from learndock.market.market import Market
from learndock.market.types import (
    AddResult,
    BlobIntegrityError,
    IslandInfo,
    IslandKernel,
    LearnwareInfo,
    Page,
    RejectedError,
    SweepReport,
    VersionInfo,
)

__all__ = [
    "AddResult",
    "BlobIntegrityError",
    "BlobStore",
    "IslandInfo",
    "IslandKernel",
    "IslandKey",
    "LearnwareInfo",
    "LocalBlobStore",
    "Market",
    "Page",
    "RejectedError",
    "SweepReport",
    "VersionInfo",
]
