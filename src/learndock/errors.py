"""Exception hierarchy.

Every error learndock raises on bad input derives from :class:`LearndockError`, so callers (the
CLI, the server) can turn it into a clear message without swallowing programming errors.
"""

from __future__ import annotations


class LearndockError(Exception):
    """Base class of all errors learndock raises on bad input or bad state."""


class SpecError(LearndockError, ValueError):
    """A specification is malformed or cannot be built from the given data."""


class KernelMismatchError(SpecError):
    """Two statistical specs were compared under different kernels or dimensions."""


class EncoderMismatchError(KernelMismatchError):
    """Two image or text specs were built with different encoders (name or weights)."""


class PackageError(LearndockError, ValueError):
    """A learnware package (directory or zip) is malformed or unsafe."""


class UnsafeArchiveError(PackageError):
    """A zip archive breaks a safety rule (path traversal, bomb, symlink, ...)."""


class ManifestError(PackageError):
    """The manifest is missing, unparsable or invalid."""


class ContractError(PackageError):
    """A model's inputs or outputs break the contract declared in its manifest."""


class TrustError(LearndockError, PermissionError):
    """Running the package would execute untrusted code and the caller did not opt in."""


class SandboxError(LearndockError, RuntimeError):
    """Running model code in the sandboxed subprocess failed or timed out."""


class MarketError(LearndockError):
    """A market operation failed (unknown id, rejected learnware, ...)."""


class DuplicateError(MarketError):
    """The same package content is already a live learnware (``learnware_id``, ``version``)."""

    def __init__(self, message: str, learnware_id: str, version: int) -> None:
        super().__init__(message)
        self.learnware_id = learnware_id
        self.version = version
        self.details = {"learnware_id": learnware_id, "version": version}


class NotFoundError(MarketError, KeyError):
    """No learnware (or version) with that id."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable.
        return str(self.args[0]) if self.args else "not found"
