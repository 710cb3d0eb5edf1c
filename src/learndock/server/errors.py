"""Errors on the wire: one table from learndock's exceptions to HTTP statuses and codes.

Every error response has the body ``{"error": {"code", "message", "details"}}`` and a 4xx/5xx
status -- never 200 with an error inside. :func:`describe` is the one place that maps an
exception to (status, code); the client maps the code back to an exception class
(:func:`exception_for`) that is both an :class:`ApiError` and the learndock error it stands for
(a missing learnware raises something that ``except NotFoundError`` catches, on either side).

Pure Python: the client imports it without FastAPI.
"""

from __future__ import annotations

import contextlib
from typing import Any

from learndock.errors import (
    DuplicateError,
    EncoderMismatchError,
    KernelMismatchError,
    LearndockError,
    ManifestError,
    MarketError,
    NotFoundError,
    PackageError,
    SandboxError,
    SpecError,
    TrustError,
    UnsafeArchiveError,
)


class ApiError(LearndockError):
    """An error with an HTTP status and a stable machine-readable code."""

    status: int = 500
    code: str = "internal_error"

    def __init__(self, message: str, *, details: Any = None, status: int | None = None,
                 code: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        self.headers = headers or {}
        if status is not None:
            self.status = status
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return self.message


class BadRequestError(ApiError, ValueError):
    status, code = 400, "bad_request"


class AuthenticationError(ApiError, PermissionError):
    """No credentials, or credentials that are wrong, revoked or expired."""

    status, code = 401, "unauthorized"


class ForbiddenError(ApiError, PermissionError):
    """Authenticated, but not allowed to do this (someone else's learnware, not an admin)."""

    status, code = 403, "forbidden"


class ApiNotFoundError(ApiError, NotFoundError):
    status, code = 404, "not_found"

    def __str__(self) -> str:
        return self.message


class ConflictError(ApiError, MarketError):
    status, code = 409, "conflict"


class PayloadTooLargeError(ApiError):
    status, code = 413, "payload_too_large"


class ValidationFailedError(ApiError, ValueError):
    status, code = 422, "validation_error"


class PackageRejectedError(ApiError, PackageError):
    """The upload could not be read as a package (unsafe archive, bad manifest or specs)."""

    status, code = 422, "package_rejected"


class InvalidSpecError(ApiError, SpecError):
    status, code = 422, "invalid_spec"


class RemoteKernelMismatchError(ApiError, KernelMismatchError):
    status, code = 422, "kernel_mismatch"


class RateLimitedError(ApiError):
    status, code = 429, "rate_limited"

    def __init__(self, message: str, *, retry_after: float = 1.0, **kw: Any) -> None:
        self.retry_after = max(1, int(retry_after + 0.999))
        kw.setdefault("headers", {"Retry-After": str(self.retry_after)})
        super().__init__(message, **kw)


class ServerError(ApiError):
    status, code = 500, "internal_error"


class ServiceUnavailableError(ApiError):
    status, code = 503, "unavailable"


#: learndock exceptions (not ApiErrors) -> (status, code); the first matching class wins.
_TABLE: list[tuple[type[BaseException], int, str]] = [
    (NotFoundError, 404, "not_found"),
    (DuplicateError, 409, "duplicate"),
    (UnsafeArchiveError, 422, "package_rejected"),
    (ManifestError, 422, "package_rejected"),
    (PackageError, 422, "package_rejected"),
    (EncoderMismatchError, 422, "kernel_mismatch"),
    (KernelMismatchError, 422, "kernel_mismatch"),
    (SpecError, 422, "invalid_spec"),
    (TrustError, 403, "forbidden"),
    (SandboxError, 503, "unavailable"),
    (MarketError, 400, "bad_request"),
    (LearndockError, 400, "bad_request"),
]


def describe(exc: BaseException) -> tuple[int, str]:
    """(HTTP status, error code) for an exception raised while serving a request."""
    if isinstance(exc, ApiError):
        return exc.status, exc.code
    from learndock.market.types import BlobIntegrityError, RejectedError

    if isinstance(exc, RejectedError):
        return 422, "package_rejected"
    if isinstance(exc, BlobIntegrityError):
        return 500, "integrity_error"
    for cls, status, code in _TABLE:
        if isinstance(exc, cls):
            return status, code
    return 500, "internal_error"


_BY_CODE: dict[str, type[ApiError]] = {
    "bad_request": BadRequestError,
    "unauthorized": AuthenticationError,
    "forbidden": ForbiddenError,
    "not_found": ApiNotFoundError,
    "conflict": ConflictError,
    "duplicate": ConflictError,
    "payload_too_large": PayloadTooLargeError,
    "validation_error": ValidationFailedError,
    "package_rejected": PackageRejectedError,
    "invalid_spec": InvalidSpecError,
    "kernel_mismatch": RemoteKernelMismatchError,
    "rate_limited": RateLimitedError,
    "unavailable": ServiceUnavailableError,
}


def exception_for(status: int, body: Any, headers: Any = None) -> ApiError:
    """The exception a client raises for an error response (typed body or not)."""
    err = body.get("error") if isinstance(body, dict) else None
    if not isinstance(err, dict):
        err = {"code": "internal_error" if status >= 500 else "bad_request",
               "message": f"HTTP {status}"}
    code = str(err.get("code") or "")
    message = str(err.get("message") or f"HTTP {status}")
    details = err.get("details")
    cls = _BY_CODE.get(code)
    if cls is None:
        cls = ServerError if status >= 500 else BadRequestError
    if cls is RateLimitedError:
        retry = 1.0
        with contextlib.suppress(TypeError, ValueError):
            retry = float((headers or {}).get("retry-after", 1))
        return RateLimitedError(message, retry_after=retry, details=details, status=status,
                                code=code)
    return cls(message, details=details, status=status, code=code or None)
