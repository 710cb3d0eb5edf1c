"""The market: store (SQL + blobs), submission checks, islands, search entry point."""

from learndock.market.blobstore import BlobStore, LocalBlobStore
from learndock.market.islands import IslandKey
from learndock.market.market import (
    AddResult,
    IslandInfo,
    LearnwareInfo,
    Market,
    Page,
    RejectedError,
    VersionInfo,
)

__all__ = [
    "AddResult",
    "BlobStore",
    "IslandInfo",
    "IslandKey",
    "LearnwareInfo",
    "LocalBlobStore",
    "Market",
    "Page",
    "RejectedError",
    "VersionInfo",
]
