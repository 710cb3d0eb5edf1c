"""A client for a learndock dock over HTTP: :class:`Client` mirrors the local ``Market``."""

from learndock.client.client import Client
from learndock.server.errors import (
    ApiError,
    AuthenticationError,
    ConflictError,
    ForbiddenError,
    PayloadTooLargeError,
    RateLimitedError,
    ServiceUnavailableError,
)

__all__ = [
    "ApiError",
    "AuthenticationError",
    "Client",
    "ConflictError",
    "ForbiddenError",
    "PayloadTooLargeError",
    "RateLimitedError",
    "ServiceUnavailableError",
]
