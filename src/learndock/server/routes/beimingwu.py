"""The reference dock's API, the part its Python client calls, under ``/beimingwu``.

``learnware.client.LearnwareClient(host="http://HOST:PORT/beimingwu")`` -- the reference's
client, unchanged -- works against this dock: it logs in with an account's e-mail and a
learndock API token, uploads reference-format zips (in chunks), lists, searches, downloads,
loads, updates and deletes learnwares. Every route maps onto the same services as ``/api/v1``:

| route | does |
|---|---|
| ``POST /auth/login_by_token`` ``{email, token}`` | ``token`` must be a live learndock *API* token of that account; answers a session token (a learndock ``login`` token: stored hashed, revocable, 1 day at most and never past the API token's own expiry) |
| ``POST /auth/logout`` | revokes the session token |
| ``POST /user/chunked_upload`` (multipart ``chunk_file``, ``file_hash``, ``chunk_begin``) | stages the chunk (:mod:`~learndock.server.compat.chunks`) |
| ``POST /user/add_learnware_uploaded`` ``{file_hash, semantic_specification}`` | MD5 re-checked, then ``Market.submit`` + the verification queue (as ``POST /api/v1/learnwares``); ``{learnware_id}`` |
| ``POST /user/update_learnware`` (multipart ``learnware_id``, ``semantic_specification``, ``learnware_file``?) | a new version: the zip sent, or the current package with the new semantic spec; queued for verification |
| ``POST /user/list_learnware`` ``{page, limit}`` | the caller's learnwares in every state |
| ``POST /user/delete_learnware`` ``{learnware_id}`` | owner or admin |
| ``GET /engine/learnware_info?learnware_id=`` | semantic spec and verification state |
| ``GET /engine/semantic_specification`` | the vocabulary |
| ``POST /engine/search_learnware`` (form ``semantic_specification``, ``limit``, ``page``; file ``statistical_specification``?) | ``Market.search``: single results and the recommended mixture |
| ``GET /engine/download_learnware?learnware_id=`` | a reference-format zip (:mod:`~learndock.server.compat.refzip`) |

Visibility and permissions are those of ``/api/v1`` (a learnware without a published version
is seen only by its owner and admins). Verification states map to the reference's
``verify_status``: queued -> ``WAITING``, verifying -> ``PROCESSING``, published ->
``SUCCESS``, rejected or failed -> ``FAIL`` (of the learnware's latest version). Answers use the
reference's envelope (:mod:`~learndock.server.compat.envelope`); the routes stay out of the
OpenAPI schema of ``/api/v1``. The bodies stream (the app's JSON cap does not apply): each
route caps what it reads itself.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
import re
import shutil
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse
from starlette.background import BackgroundTask

from learndock.market.types import ACCEPTED, FAILED, QUEUED, REJECTED, VERIFYING, LearnwareInfo
from learndock.package.archive import iter_package_files, write_zip
from learndock.package.manifest import Manifest
from learndock.server.accounts import DAY, normalise_email
from learndock.server.compat.chunks import ChunkStore, check_hash
from learndock.server.compat.envelope import (
    BAD_PARAMS,
    LOGIN_REFUSED,
    NOT_FOUND,
    CompatError,
    enveloped,
    ok,
)
from learndock.server.compat.forms import read_form, read_json
from learndock.server.compat.refzip import ReferenceZips, reference_semantic
from learndock.server.deps import Dock, Principal, client_ip
from learndock.server.errors import AuthenticationError, ForbiddenError, ValidationFailedError
from learndock.server.routes.learnwares import may_manage, visible
from learndock.spec.semantic import (
    DataType,
    LibraryType,
    License,
    Scenario,
    SemanticQuery,
    SemanticSpec,
    TaskType,
)

PREFIX = "/beimingwu"
router = APIRouter(include_in_schema=False)

#: A session lives a day at most (the reference's login JWTs do too).
SESSION_TTL_S = DAY
#: Results one search computes (the page asked for is cut from them).
MAX_SEARCH_RESULTS = 100
#: Largest chunk of a chunked upload (the client sends 1 MiB).
MAX_CHUNK_BYTES = 64 * 1024 * 1024
#: Largest page of ``list_learnware`` (the client asks for 10,000 at once).
MAX_LIST = 10_000
_ID = re.compile(r"^[0-9A-Za-z]{1,32}$")
STATUS = {QUEUED: "WAITING", VERIFYING: "PROCESSING", ACCEPTED: "SUCCESS", REJECTED: "FAIL",
          FAILED: "FAIL"}


# ---------------------------------------------------------------------- per-app state
@dataclass
class Compat:
    chunks: ChunkStore
    zips: ReferenceZips


_state_lock = threading.Lock()


def _dock(request: Request) -> Dock:
    return request.app.state.dock  # type: ignore[no-any-return]


def _compat(request: Request) -> Compat:
    state = request.app.state
    with _state_lock:
        compat = getattr(state, "beimingwu", None)
        if compat is None:
            dock = _dock(request)
            home = dock.settings.resolved_home
            compat = Compat(ChunkStore(dock.settings.tmp_dir, dock.settings.max_upload_bytes),
                            ReferenceZips(home / "cache" / "beimingwu", dock.market.limits))
            state.beimingwu = compat
    return compat


# ---------------------------------------------------------------------- helpers
def _principal(request: Request, dock: Dock, *, required: bool) -> Principal | None:
    """The caller from ``Authorization: Bearer <token>`` (a session or an API token)."""
    header = request.headers.get("authorization")
    if not header:
        if required:
            raise AuthenticationError("Unauthorized access: log in first (login_by_token)")
        return None
    scheme, _, credential = header.partition(" ")
    if scheme.lower() != "bearer" or not credential.strip():
        raise AuthenticationError("use the header `Authorization: Bearer <token>`")
    return Principal(*dock.accounts.resolve(credential.strip()))


def _int(value: Any, name: str, default: int, lo: int, hi: int) -> int:
    if value is None or value == "":
        return default
    try:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError
        n = int(value)
    except (TypeError, ValueError):
        raise CompatError(f"{name} must be an integer", ref_code=BAD_PARAMS, status=422) \
            from None
    if not lo <= n <= hi:
        raise CompatError(f"{name} must be in [{lo}, {hi}]", ref_code=BAD_PARAMS, status=422)
    return n


def _learnware_id(value: Any) -> str:
    if not isinstance(value, str) or not _ID.match(value):
        raise CompatError(f"no learnware {str(value)[:40]!r}", ref_code=NOT_FOUND, status=404)
    return value


def _semantic_dict(value: Any, *, required: bool) -> dict[str, Any] | None:
    """The client's ``semantic_specification``: a JSON string (or an object)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise CompatError("semantic_specification is required", ref_code=BAD_PARAMS,
                              status=422)
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except (ValueError, RecursionError) as exc:
            raise CompatError(f"semantic_specification is not valid JSON: {exc}",
                              ref_code=BAD_PARAMS, status=422) from None
    if not isinstance(value, dict):
        raise CompatError("semantic_specification must be a JSON object", ref_code=BAD_PARAMS,
                          status=422)
    return value


def _timestamp(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _verify_status(dock: Dock, info: LearnwareInfo) -> str:
    """The reference's state of the learnware's latest version."""
    if info.current_version is not None and info.current_version == info.latest_version:
        return STATUS[ACCEPTED]
    versions = dock.market.versions(info.id)
    latest = versions[-1].status if versions else info.status
    return STATUS.get(latest, "FAIL")


def _item(dock: Dock, info: LearnwareInfo) -> dict[str, Any]:
    return {"learnware_id": info.id, "user_id": info.owner,
            "last_modify": _timestamp(info.updated_at),
            "verify_status": _verify_status(dock, info),
            "semantic_specification": reference_semantic(info.semantic)
            if info.semantic is not None else {}}


def _json_cap(dock: Dock) -> int:
    return dock.settings.max_json_bytes


def _search_cap(dock: Dock) -> int:
    from learndock.spec.io import max_spec_json_bytes

    return dock.settings.max_search_bytes or max_spec_json_bytes(dock.market.limits, user=True)


# ---------------------------------------------------------------------- auth
@router.post("/auth/login_by_token")
@enveloped
async def login_by_token(request: Request) -> JSONResponse:
    dock = _dock(request)
    body = await read_json(request, _json_cap(dock))
    email, token = body.get("email"), body.get("token")
    if not isinstance(email, str) or not isinstance(token, str) or not email or not token:
        raise CompatError('send {"email": ..., "token": ...} (an API token of that account)',
                          ref_code=BAD_PARAMS, status=400)

    def login() -> str:
        keys = [f"ip:{client_ip(request)}"]
        with contextlib.suppress(ValidationFailedError):
            keys.append(f"account:{normalise_email(email)}")
        dock.login_limit.take(*keys)
        refused = CompatError("login failed: wrong e-mail address or token", ref_code=LOGIN_REFUSED,
                              status=401)
        try:
            user, api_token = dock.accounts.resolve(token.strip())
            same = user.email == normalise_email(email)
        except (AuthenticationError, ValidationFailedError):
            raise refused from None
        if not same or api_token.kind != "api":
            raise refused
        ttl = min(SESSION_TTL_S, api_token.expires_at - time.time())
        new = dock.accounts.create_token(user.id, "reference client session", kind="login",
                                         ttl_days=max(ttl, 1.0) / DAY)
        return new.secret

    return ok({"token": await run_in_threadpool(login)})


@router.post("/auth/logout")
@enveloped
async def logout(request: Request) -> JSONResponse:
    dock = _dock(request)

    def run() -> None:
        me = _principal(request, dock, required=True)
        assert me is not None
        if me.token.kind == "login":  # an API token sent directly stays valid
            dock.accounts.revoke_token(me.token.id, user_id=me.id)

    await run_in_threadpool(run)
    return ok()


# ---------------------------------------------------------------------- uploads
@router.post("/user/chunked_upload")
@enveloped
async def chunked_upload(request: Request) -> JSONResponse:
    dock, compat = _dock(request), _compat(request)
    me = await run_in_threadpool(_principal, request, dock, required=True)
    assert me is not None
    form = await read_form(request, dock.settings.tmp_dir, file_field="chunk_file",
                           max_file_bytes=min(MAX_CHUNK_BYTES, dock.settings.max_upload_bytes))
    try:
        file_hash = check_hash(form.fields.get("file_hash"))
        begin = _int(form.fields.get("chunk_begin"), "chunk_begin", 0, 0,
                     dock.settings.max_upload_bytes)
        if form.file is None:
            raise CompatError("no chunk_file part in the form", ref_code=BAD_PARAMS,
                              status=422)
        if begin == 0:  # an upload starts: it counts against the upload rate limit
            dock.upload_limit.take(f"account:{me.id}", f"ip:{client_ip(request)}")
        chunk = form.file
        size = await run_in_threadpool(compat.chunks.append, me.id, file_hash, begin, chunk,
                                       form.file_size)
    finally:
        form.discard()
    return ok({"file_hash": file_hash, "received": size})


def _submit(dock: Dock, path: Path, *, me: Principal, learnware_id: str | None,
            owner: str | None, semantic: Any) -> Any:
    sub = dock.market.submit(path, owner=owner, learnware_id=learnware_id, semantic=semantic,
                             uploaded_by=me.id, duplicates=dock.settings.duplicates)
    dock.queue.enqueue(sub.job_id)
    return sub


@router.post("/user/add_learnware_uploaded")
@enveloped
async def add_learnware_uploaded(request: Request) -> JSONResponse:
    dock, compat = _dock(request), _compat(request)
    body = await read_json(request, _json_cap(dock))

    def run() -> dict[str, Any]:
        me = _principal(request, dock, required=True)
        assert me is not None
        file_hash = check_hash(body.get("file_hash"))
        semantic = _semantic_dict(body.get("semantic_specification"), required=True)
        path = compat.chunks.claim(me.id, file_hash, compat.chunks.claimed_path())
        try:
            sub = _submit(dock, path, me=me, learnware_id=None, owner=me.id, semantic=semantic)
        finally:
            path.unlink(missing_ok=True)
        return {"learnware_id": sub.learnware_id, "version": sub.version,
                "verify_status": STATUS[QUEUED]}

    return ok(await run_in_threadpool(run))


def _with_semantic(dock: Dock, info: LearnwareInfo, semantic: dict[str, Any], out: Path) -> Path:
    """The learnware's current package (else its latest) with a new semantic spec."""
    number = info.current_version or info.latest_version
    with dock.market.load(info.id, number) as lw:  # a verified private copy
        sem = SemanticSpec.parse(semantic, origin=lw.semantic.origin)
        manifest = Manifest.parse({**lw.manifest.to_dict(), "semantic": sem})
        manifest.save(lw.root)
        write_zip(iter_package_files(lw.root), out, dock.market.limits)
    return out


@router.post("/user/update_learnware")
@enveloped
async def update_learnware(request: Request) -> JSONResponse:
    dock, compat = _dock(request), _compat(request)
    me = await run_in_threadpool(_principal, request, dock, required=True)
    assert me is not None
    form = await read_form(request, dock.settings.tmp_dir, file_field="learnware_file",
                           max_file_bytes=dock.settings.max_upload_bytes)

    def run() -> dict[str, Any]:
        learnware_id = _learnware_id(form.fields.get("learnware_id"))
        semantic = _semantic_dict(form.fields.get("semantic_specification"), required=True)
        assert semantic is not None
        info = visible(dock, learnware_id, me)
        if not may_manage(me, info):
            raise ForbiddenError(f"only the owner of learnware {learnware_id!r} or an admin can "
                                 "update it")
        dock.upload_limit.take(f"account:{me.id}", f"ip:{client_ip(request)}")
        if form.file is not None and form.file_size > 0:
            sub = _submit(dock, form.file, me=me, learnware_id=learnware_id, owner=info.owner,
                          semantic=semantic)
        else:
            path = compat.chunks.claimed_path()
            try:
                _with_semantic(dock, info, semantic, path)
                sub = _submit(dock, path, me=me, learnware_id=learnware_id, owner=info.owner,
                              semantic=None)
            finally:
                path.unlink(missing_ok=True)
        return {"learnware_id": learnware_id, "version": sub.version,
                "verify_status": STATUS[QUEUED]}

    try:
        return ok(await run_in_threadpool(run))
    finally:
        form.discard()


# ---------------------------------------------------------------------- the caller's learnwares
@router.post("/user/list_learnware")
@enveloped
async def list_learnware(request: Request) -> JSONResponse:
    dock = _dock(request)
    body = await read_json(request, _json_cap(dock))
    page = _int(body.get("page"), "page", 0, 0, 1_000_000)
    limit = _int(body.get("limit"), "limit", 10, 1, MAX_LIST)
    verified_only = body.get("is_verified") in (True, "true", "True", 1)

    def run() -> dict[str, Any]:
        me = _principal(request, dock, required=True)
        assert me is not None
        # The catalogue pages by at most 1000: a larger page is read as whole pages of 1000.
        size = limit if limit <= 1000 else 1000
        n_pages, effective = (1, limit) if limit <= 1000 else (limit // 1000, limit // 1000 * 1000)
        items: list[LearnwareInfo] = []
        total = 0
        for k in range(n_pages):
            pg = dock.market.list(None, page=page * n_pages + k, page_size=size,
                                  include_rejected=not verified_only, owner=me.id)
            items += pg.items
            total = pg.total
            if len(pg.items) < size:
                break
        return {"learnware_list": [_item(dock, i) for i in items], "page": page,
                "limit": effective, "total_pages": math.ceil(total / effective),
                "total": total}

    return ok(await run_in_threadpool(run))


@router.post("/user/delete_learnware")
@enveloped
async def delete_learnware(request: Request) -> JSONResponse:
    dock, compat = _dock(request), _compat(request)
    body = await read_json(request, _json_cap(dock))

    def run() -> None:
        me = _principal(request, dock, required=True)
        assert me is not None
        learnware_id = _learnware_id(body.get("learnware_id"))
        info = visible(dock, learnware_id, me)
        if not may_manage(me, info):
            raise ForbiddenError(f"only the owner of learnware {learnware_id!r} or an admin can "
                                 "delete it")
        dock.market.delete(learnware_id)
        compat.zips.forget(learnware_id)

    await run_in_threadpool(run)
    return ok()


# ---------------------------------------------------------------------- engine
@router.get("/engine/learnware_info")
@enveloped
async def learnware_info(request: Request) -> JSONResponse:
    dock = _dock(request)

    def run() -> dict[str, Any]:
        me = _principal(request, dock, required=False)
        info = visible(dock, _learnware_id(request.query_params.get("learnware_id")), me)
        return {"learnware_info": _item(dock, info)}

    return ok(await run_in_threadpool(run))


@router.get("/engine/semantic_specification")
@enveloped
async def semantic_specification(request: Request) -> JSONResponse:
    def cls(values: list[str]) -> dict[str, Any]:
        return {"Type": "Class", "Values": values}

    return ok({"semantic_specification": {
        "Data": cls([v.value for v in DataType]),
        "Task": cls([v.value for v in TaskType]),
        "Model": {"Type": "Optional", "Values": ["Others"]},
        "Library": cls([v.value for v in LibraryType]),
        "Scenario": {"Type": "Tag", "Values": [v.value for v in Scenario]},
        "Description": {"Type": "String", "Values": None},
        "Name": {"Type": "String", "Values": None},
        "License": cls([v.value for v in License]),
    }})


@router.post("/engine/search_learnware")
@enveloped
async def search_learnware(request: Request) -> JSONResponse:
    from learndock.spec.io import load_stat_spec

    dock = _dock(request)
    await run_in_threadpool(_principal, request, dock, required=False)  # a bad token: 401
    dock.search_limit.take(f"ip:{client_ip(request)}")
    form = await read_form(request, dock.settings.tmp_dir, file_field="statistical_specification",
                           max_file_bytes=_search_cap(dock))

    def run() -> dict[str, Any]:
        semantic = _semantic_dict(form.fields.get("semantic_specification"), required=False)
        limit = _int(form.fields.get("limit"), "limit", 10, 1, MAX_SEARCH_RESULTS)
        page = _int(form.fields.get("page"), "page", 0, 0, MAX_SEARCH_RESULTS)
        query = SemanticQuery.parse(semantic) if semantic else None
        spec = None
        if form.file is not None and form.file_size > 0:
            spec = load_stat_spec(form.file, dock.market.limits, user=True,
                                  default_type="RKMETableSpecification")
        top_k = min(MAX_SEARCH_RESULTS, (page + 1) * limit)
        res = dock.market.search(query, spec, top_k=top_k)
        infos: dict[str, LearnwareInfo] = {}

        def entry(learnware_id: str, matching: float) -> dict[str, Any]:
            if learnware_id not in infos:
                infos[learnware_id] = dock.market.get(learnware_id)
            info = infos[learnware_id]
            return {"learnware_id": learnware_id, "matching": matching,
                    "semantic_specification": reference_semantic(info.semantic),
                    "last_modify": _timestamp(info.updated_at), "user_id": info.owner}

        single = [entry(m.learnware_id, m.score if m.score is not None else 0.0)
                  for m in res.single[page * limit:(page + 1) * limit]]
        multi = []
        mix = res.mixture
        if page == 0 and mix is not None and mix.recommended:
            multi = [{**entry(i, mix.score), "weight": w}
                     for i, w in zip(mix.learnware_ids, mix.weights, strict=True)]
        return {"learnware_list_single": single, "learnware_list_multi": multi,
                "is_hetero": False, "page": page, "limit": limit,
                "total_pages": math.ceil(len(res.single) / limit),
                "explanation": res.explanation}

    try:
        return ok(await run_in_threadpool(run))
    finally:
        form.discard()


@router.get("/engine/download_learnware")
@enveloped
async def download_learnware(request: Request) -> FileResponse:
    dock, compat = _dock(request), _compat(request)

    def run() -> tuple[Path, str]:
        me = _principal(request, dock, required=False)
        learnware_id = _learnware_id(request.query_params.get("learnware_id"))
        info = visible(dock, learnware_id, me)
        number = info.current_version
        if number is None:  # not published: its owner or an admin (visible() said so)
            number = info.latest_version
        v = next((v for v in dock.market.versions(learnware_id) if v.number == number), None)
        if v is None or not v.available:
            raise CompatError(f"learnware {learnware_id!r} has no downloadable version",
                              ref_code=NOT_FOUND, status=404)
        tmp_dir = dock.settings.tmp_dir
        tmp_dir.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix="bmw-download-", dir=tmp_dir))
        try:
            package = work / "package.zip"
            dock.market.download(learnware_id, package, number)  # re-hashed; counted
            dest = tmp_dir / f"bmw-download-{uuid.uuid4().hex}.zip"
            compat.zips.serve(package, v.package_sha256, learnware_id, dest)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return dest, learnware_id

    dest, learnware_id = await run_in_threadpool(run)

    def cleanup() -> None:
        with contextlib.suppress(OSError):
            dest.unlink()

    return FileResponse(dest, media_type="application/zip", filename=f"{learnware_id}.zip",
                        headers={"Cache-Control": "no-store"}, background=BackgroundTask(cleanup))
