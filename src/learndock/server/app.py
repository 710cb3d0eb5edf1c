"""The dock server: ``create_app(settings) -> FastAPI`` (API under ``/api/v1``).

One process holds one :class:`~learndock.market.Market` (SQLite or PostgreSQL + blob store),
the accounts over the same database, a verification queue (embedded worker threads by
default) and in-process rate limits. The OpenAPI schema is at ``/api/v1/openapi.json``, the
interactive docs at ``/api/v1/docs``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from learndock import __version__
from learndock.errors import LearndockError
from learndock.market import Market
from learndock.market.verification import VerificationQueue
from learndock.server.accounts import AccountStore
from learndock.server.deps import Dock
from learndock.server.errors import ApiError, describe
from learndock.server.models import ErrorResponse
from learndock.server.security import Passwords, RateLimiter, ensure_signing_key
from learndock.server.settings import ServerSettings
from learndock.web import UPLOAD_PATHS as WEB_UPLOADS

log = logging.getLogger("learndock.server")
PREFIX = "/api/v1"
#: Routes that stream their own body (uploads; the reference client's routes, which cap what
#: they read themselves) -- the JSON body cap does not apply to them.
_STREAMED = re.compile(rf"^({PREFIX}/learnwares(/[^/]+/versions)?/?|/beimingwu/.*|{WEB_UPLOADS})$")


# ---------------------------------------------------------------------- errors
def error_response(status: int, code: str, message: str, details: Any = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message, "details": details}},
                        status_code=status, headers=headers)


def _jsonable(x: Any) -> Any:
    try:
        json.dumps(x)
        return x
    except (TypeError, ValueError):
        return str(x)


def install_error_handlers(app: FastAPI) -> None:
    """Every error becomes ``{"error": {code, message, details}}`` with its status."""

    async def learndock_error(request: Request, exc: Exception) -> JSONResponse:
        from learndock.market.types import RejectedError

        status, code = describe(exc)
        details = getattr(exc, "details", None)
        headers = getattr(exc, "headers", None) if isinstance(exc, ApiError) else None
        message = str(exc)
        if isinstance(exc, RejectedError):
            details = exc.report.to_dict()
            failed = [i for i in exc.report.items if not i.ok]
            message = ("package rejected: " + "; ".join(f"{i.name}: {i.message}" for i in failed)
                       if failed else message)
        if status >= 500:
            log.error("%s %s -> %s: %s", request.method, request.url.path, status, exc)
        return error_response(status, code, message, _jsonable(details), headers)

    async def validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = [{"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", "")),
                   "type": str(e.get("type", ""))} for e in exc.errors()][:50]
        where = ", ".join(".".join(e["loc"]) + f": {e['msg']}" for e in errors[:3])
        return error_response(422, "validation_error", f"invalid request: {where}", errors)

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        codes = {404: "not_found", 405: "method_not_allowed", 401: "unauthorized",
                 403: "forbidden", 413: "payload_too_large"}
        return error_response(exc.status_code, codes.get(exc.status_code, "http_error"),
                              str(exc.detail), None, getattr(exc, "headers", None))

    async def data_error(request: Request, exc: Exception) -> JSONResponse:
        return error_response(400, "bad_request", "a value in the request is not valid here")

    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        ref = uuid.uuid4().hex[:12]
        log.exception("unhandled error %s in %s %s", ref, request.method, request.url.path)
        return error_response(500, "internal_error", f"internal error (reference {ref})")

    app.add_exception_handler(LearndockError, learndock_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(DataError, data_error)
    app.add_exception_handler(Exception, unexpected)


# ---------------------------------------------------------------------- body cap
class BodyLimit:
    """Reads a request's body (except uploads, which stream themselves) up to a cap before the
    app sees it: a declared or actual body over the cap is answered 413 without parsing."""

    def __init__(self, app: ASGIApp, *, default: int, search: int) -> None:
        self.app, self.default, self.search = app, default, search

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or _STREAMED.match(scope["path"]):
            await self.app(scope, receive, send)
            return
        limit = self.search if scope["path"].rstrip("/") == f"{PREFIX}/search" else self.default
        too_large = error_response(
            413, "payload_too_large",
            f"the request body is larger than this endpoint accepts ({limit} bytes)",
            {"limit": limit})
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    if int(value) > limit:
                        await too_large(scope, receive, send)
                        return
                except ValueError:
                    await error_response(400, "bad_request", "bad Content-Length")(
                        scope, receive, send)
                    return
        messages: list[Message] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                messages.append(message)
                break
            size += len(message.get("body", b""))
            if size > limit:
                await too_large(scope, receive, send)
                return
            messages.append(message)
            if not message.get("more_body", False):
                break

        async def replay() -> Message:
            if messages:
                return messages.pop(0)
            return await receive()

        await self.app(scope, replay, send)


# ---------------------------------------------------------------------- the app
def _sweep_tmp(tmp_dir: Path, older_than_s: float = 3600.0) -> None:
    """Remove uploads and downloads a killed server left behind (an hour old: another process
    sharing this home may be streaming into the folder right now)."""
    tmp_dir.mkdir(parents=True, exist_ok=True)
    cutoff = time.time() - older_than_s
    for p in tmp_dir.iterdir():
        with contextlib.suppress(OSError):
            if p.is_file() and p.stat().st_mtime < cutoff:
                p.unlink()


def create_app(
    settings: ServerSettings | None = None,
    *,
    market: Market | None = None,
    queue: VerificationQueue | None = None,
) -> FastAPI:
    """The dock's ASGI app. ``market``/``queue`` default to ones built from ``settings``
    (a given market is not closed at shutdown; a built one is)."""
    from learndock.server.routes import accounts, admin, beimingwu, learnwares, system
    from learndock.spec.io import max_spec_json_bytes
    from learndock.web import mount_web

    settings = settings or ServerSettings.load()
    home = settings.resolved_home
    ensure_signing_key(home)
    own_market = market is None
    if market is None:  # database + blob store from the settings
        market = settings.open_market()
    if queue is None:  # Redis (no verification threads here), threads, or none
        queue = settings.open_queue(market)
    passwords = Passwords(settings.argon2_time_cost, settings.argon2_memory_kib,
                          settings.argon2_parallelism)
    dock = Dock(
        settings=settings,
        market=market,
        accounts=AccountStore(market.engine, passwords, token_ttl_days=settings.token_ttl_days,
                              login_token_ttl_days=settings.login_token_ttl_days),
        queue=queue,
        login_limit=RateLimiter(settings.login_per_min / 60, settings.login_burst,
                                what="login attempts"),
        upload_limit=RateLimiter(settings.upload_per_min / 60, settings.upload_burst,
                                 what="uploads"),
        search_limit=RateLimiter(settings.search_per_min / 60, settings.search_burst,
                                 what="searches"),
    )
    _sweep_tmp(settings.tmp_dir)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # scikit-learn is imported here, before any worker or demo thread starts: two threads
        # importing it for the first time at once can see it half-initialised ("cannot import
        # name 'clone' from partially initialized module 'sklearn.base'": it killed the demo
        # build when the first page view imported sklearn.datasets at the same moment).
        import sklearn.base  # noqa: F401

        dock.queue.start()
        if settings.demo:
            from learndock.server.demo import DemoBuild

            dock.demo = DemoBuild(dock.market, quick=settings.demo_quick)
            dock.demo.start()
        try:
            yield
        finally:
            dock.queue.stop(timeout=max(5.0, settings.lease_s))
            if own_market:
                dock.market.close()

    app = FastAPI(
        title="learndock",
        version=__version__,
        description="A learnware dock: upload models with specifications, search them with "
                    "your data's statistical spec, download and reuse them. Errors are "
                    '`{"error": {"code", "message", "details"}}` with a 4xx/5xx status.',
        openapi_url=f"{PREFIX}/openapi.json",
        docs_url=f"{PREFIX}/docs",
        redoc_url=None,
        lifespan=lifespan,
        responses={400: {"model": ErrorResponse}, 401: {"model": ErrorResponse},
                   403: {"model": ErrorResponse}, 404: {"model": ErrorResponse},
                   422: {"model": ErrorResponse}, 429: {"model": ErrorResponse}},
    )
    app.state.dock = dock
    install_error_handlers(app)
    search_cap = settings.max_search_bytes or (max_spec_json_bytes(market.limits, user=True)
                                               + 64 * 1024)
    app.add_middleware(BodyLimit, default=settings.max_json_bytes, search=search_cap)
    for module in (system, accounts, learnwares, admin):
        app.include_router(module.router, prefix=PREFIX)
    app.include_router(beimingwu.router, prefix=beimingwu.PREFIX)  # the reference's client
    mount_web(app)  # the web UI at / (after the API), with its security headers
    return app
