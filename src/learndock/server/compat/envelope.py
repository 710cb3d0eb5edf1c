"""The reference dock's response envelope: ``{"code": 0, "msg": ..., "data": ...}``.

The reference client reads every answer as JSON and looks at ``code`` (0: success) before
anything else, whatever the HTTP status -- so errors here carry both a non-zero code from the
reference's table *and* the HTTP status learndock's own API would give (401, 403, 404, 413,
422, 429, 5xx). The one exception the client makes is ``is_connected``, which treats a 404 of
the login route as "no dock here": that route never answers 404.

Codes (the reference's numbering): 11 not logged in / bad session, 21 bad parameters,
31 not permitted or system error, 41 package or specification refused, 42 specifications not
comparable, 51 refused by the dock's rules (conflict, rate limit), 53 login refused, 71 no such
learnware.
"""

from __future__ import annotations

import functools
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import Request, Response
from fastapi.responses import JSONResponse

from learndock.server.errors import ApiError, describe

log = logging.getLogger("learndock.server")

OK, UNAUTHORIZED, BAD_PARAMS, NOT_PERMITTED = 0, 11, 21, 31
REFUSED, NOT_COMPARABLE, RULES, LOGIN_REFUSED, NOT_FOUND = 41, 42, 51, 53, 71

#: learndock's error codes (:func:`learndock.server.errors.describe`) -> the reference's.
CODES = {
    "unauthorized": UNAUTHORIZED,
    "forbidden": NOT_PERMITTED,
    "not_found": NOT_FOUND,
    "bad_request": BAD_PARAMS,
    "validation_error": BAD_PARAMS,
    "payload_too_large": BAD_PARAMS,
    "unsupported_media_type": BAD_PARAMS,
    "package_rejected": REFUSED,
    "invalid_spec": REFUSED,
    "kernel_mismatch": NOT_COMPARABLE,
    "conflict": RULES,
    "rate_limited": RULES,
    "unavailable": NOT_PERMITTED,
    "integrity_error": NOT_PERMITTED,
    "internal_error": NOT_PERMITTED,
}


class CompatError(ApiError):
    """An error with the reference's code chosen explicitly (e.g. 53 for a refused login)."""

    def __init__(self, message: str, *, ref_code: int, status: int,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message, status=status, code="compat", headers=headers)
        self.ref_code = ref_code


def ok(data: Any = None, msg: str = "Request success.") -> JSONResponse:
    return JSONResponse({"code": OK, "msg": msg, "data": data})


def fail(ref_code: int, msg: str, status: int, data: Any = None,
         headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"code": ref_code, "msg": msg, "data": data}, status_code=status,
                        headers=headers)


def error_response(request: Request, exc: BaseException) -> JSONResponse:
    """The envelope for an exception raised while serving a compat route."""
    from learndock.market.types import RejectedError

    if isinstance(exc, CompatError):
        return fail(exc.ref_code, exc.message, exc.status, headers=exc.headers or None)
    status, code = describe(exc)
    message = str(exc) or type(exc).__name__
    headers = exc.headers if isinstance(exc, ApiError) and exc.headers else None
    if isinstance(exc, RejectedError):
        failed = [i for i in exc.report.items if not i.ok]
        if failed:
            message = "package rejected: " + "; ".join(f"{i.name}: {i.message}" for i in failed)
    if status >= 500:
        ref = uuid.uuid4().hex[:12]
        log.error("%s %s -> %s (reference %s): %s", request.method, request.url.path, status,
                  ref, exc, exc_info=code == "internal_error")
        if code == "internal_error":
            message = f"internal error (reference {ref})"
    return fail(CODES.get(code, NOT_PERMITTED), message, status, headers=headers)


Handler = Callable[[Request], Awaitable[Response]]


def enveloped(fn: Handler) -> Handler:
    """Answer every exception of a route in the reference's envelope (the app's own handlers
    would answer in learndock's error shape, which the reference client cannot read)."""

    @functools.wraps(fn)
    async def wrapper(request: Request) -> Response:
        try:
            return await fn(request)
        except Exception as exc:  # noqa: BLE001 -- every error answers in the envelope
            return error_response(request, exc)

    return wrapper
