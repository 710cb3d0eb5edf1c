"""Learnwares: upload, versions, get, list, download, delete, status; search; islands.

Visibility: a learnware with a published version is public (get, list, search, download of
published versions); one without is visible only to its owner and admins (others get 404, as
for an id that does not exist). Check logs and jobs are shown to the owner and admins only.
Only the owner uploads new versions; the owner or an admin deletes.
"""

from __future__ import annotations

import contextlib
import uuid
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse
from starlette.background import BackgroundTask

from learndock.market.jobs import Job
from learndock.market.types import ACCEPTED, LearnwareInfo, VersionInfo
from learndock.server.deps import CurrentUser, Dock, DockDep, MaybeUser, Principal, client_ip
from learndock.server.errors import ApiNotFoundError, ForbiddenError
from learndock.server.models import (
    ID_PATTERN,
    ErrorResponse,
    IslandKernelOut,
    IslandOut,
    JobOut,
    LearnwareOut,
    LearnwarePage,
    SearchRequest,
    SearchResponse,
    StatusOut,
    SubmissionOut,
    VersionOut,
    api_state,
)
from learndock.server.uploads import receive_upload
from learndock.spec.io import stat_spec_from_dict
from learndock.spec.semantic import SemanticQuery

router = APIRouter(tags=["learnwares"])
LearnwareId = Annotated[str, Path(pattern=ID_PATTERN, description="a learnware id")]
VersionNumber = Annotated[int, Path(ge=1, le=1_000_000)]

#: What an upload may be answered besides the app-wide errors: too large, not a zip/multipart.
UPLOAD_ERRORS: dict[int | str, dict[str, Any]] = {
    413: {"model": ErrorResponse, "description": "larger than the dock accepts"},
    415: {"model": ErrorResponse, "description": "neither multipart/form-data nor a zip"},
}
UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {"type": "string", "format": "binary",
                                 "description": "the package zip"},
                        "semantic": {"type": "string",
                                     "description": "semantic spec JSON (reference-format zips "
                                                    "that carry none)"},
                    },
                }
            },
            "application/zip": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}


# ---------------------------------------------------------------------- conversions
def learnware_out(info: LearnwareInfo) -> LearnwareOut:
    state = "published" if info.current_version is not None else api_state(info.status)
    return LearnwareOut(
        id=info.id, name=info.name, owner=info.owner, state=state,  # type: ignore[arg-type]
        current_version=info.current_version, latest_version=info.latest_version,
        semantic=info.semantic.to_dict() if info.semantic is not None else None,
        island=info.island, download_count=info.download_count, created_at=info.created_at,
        updated_at=info.updated_at,
    )


def job_out(job: Job | None) -> JobOut | None:
    return JobOut(**job.to_dict()) if job is not None else None  # type: ignore[arg-type]


def version_out(v: VersionInfo, manage: bool, job: Job | None = None) -> VersionOut:
    return VersionOut(
        number=v.number, semver=v.semver, state=api_state(v.status),  # type: ignore[arg-type]
        current=v.current, package_sha256=v.package_sha256, size_bytes=v.size_bytes,
        created_at=v.created_at, verified_at=v.verified_at, available=v.available,
        report=v.report if manage else None, job=job_out(job) if manage else None,
    )


# ---------------------------------------------------------------------- permissions
def may_manage(principal: Principal | None, info: LearnwareInfo) -> bool:
    return principal is not None and (principal.is_admin or info.owner == principal.id)


def visible(dock: Dock, learnware_id: str, principal: Principal | None) -> LearnwareInfo:
    """The learnware if the caller may see it (published, or theirs, or they are an admin)."""
    info = dock.market.get(learnware_id)
    if info.current_version is None and not may_manage(principal, info):
        raise ApiNotFoundError(f"no learnware {learnware_id!r}")
    return info


def _versions(dock: Dock, info: LearnwareInfo, manage: bool) -> list[VersionOut]:
    versions = dock.market.versions(info.id)
    jobs = {j.version_id: j for j in dock.market.jobs.for_learnware(info.id)} if manage else {}
    return [version_out(v, manage, jobs.get(v.version_id or "")) for v in versions
            if manage or v.status == ACCEPTED]


# ---------------------------------------------------------------------- list / get
@router.get("/learnwares", response_model=LearnwarePage,
            summary="List learnwares (tag filters, full text, paging, sort)")
def list_learnwares(
    dock: DockDep,
    principal: MaybeUser,
    q: Annotated[str, Query(max_length=4096, description="words to find in names and "
                                                         "descriptions")] = "",
    data_type: Annotated[list[str], Query()] = [],  # noqa: B006 -- FastAPI copies defaults
    task_type: Annotated[list[str], Query()] = [],  # noqa: B006
    library_type: Annotated[list[str], Query()] = [],  # noqa: B006
    scenarios: Annotated[list[str], Query()] = [],  # noqa: B006
    license: Annotated[list[str], Query()] = [],  # noqa: B006
    input_dimension: Annotated[int | None, Query(gt=0, le=10**9)] = None,
    output_dimension: Annotated[int | None, Query(gt=0, le=10**9)] = None,
    owner: Annotated[str | None, Query(pattern=ID_PATTERN)] = None,
    mine: Annotated[bool, Query(description="the caller's own learnwares, in any state")] = False,
    page: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    page_size: Annotated[int, Query(ge=1, le=100)] = 20,
    sort: Annotated[Literal["recent", "downloads", "name"], Query()] = "recent",
) -> LearnwarePage:
    raw: dict[str, Any] = {"data_type": data_type, "task_type": task_type,
                           "library_type": library_type, "scenarios": scenarios,
                           "license": license, "text": q, "input_dimension": input_dimension,
                           "output_dimension": output_dimension}
    query = SemanticQuery.parse(raw)
    if mine:
        if principal is None:
            from learndock.server.errors import AuthenticationError

            raise AuthenticationError("mine=true needs an API token")
        owner, include = principal.id, True
    else:
        include = False
    pg = dock.market.list(query, page=page, page_size=page_size, include_rejected=include,
                          sort=sort, owner=owner)
    return LearnwarePage(items=[learnware_out(i) for i in pg.items], total=pg.total,
                         page=pg.page, page_size=pg.page_size)


@router.get("/learnwares/{learnware_id}", response_model=LearnwareOut,
            summary="One learnware")
def get_learnware(learnware_id: LearnwareId, dock: DockDep, principal: MaybeUser) -> LearnwareOut:
    return learnware_out(visible(dock, learnware_id, principal))


@router.get("/learnwares/{learnware_id}/versions", response_model=list[VersionOut],
            summary="Its versions (others see the published ones, without check logs)")
def list_versions(learnware_id: LearnwareId, dock: DockDep,
                  principal: MaybeUser) -> list[VersionOut]:
    info = visible(dock, learnware_id, principal)
    return _versions(dock, info, may_manage(principal, info))


@router.get("/learnwares/{learnware_id}/versions/{number}", response_model=VersionOut,
            summary="One version (with its check log for the owner and admins)")
def get_version(learnware_id: LearnwareId, number: VersionNumber, dock: DockDep,
                principal: MaybeUser) -> VersionOut:
    info = visible(dock, learnware_id, principal)
    for v in _versions(dock, info, may_manage(principal, info)):
        if v.number == number:
            return v
    raise ApiNotFoundError(f"learnware {learnware_id!r} has no version {number}")


@router.get("/learnwares/{learnware_id}/status", response_model=StatusOut,
            summary="Verification state of every version, with logs (owner and admins)")
def status(learnware_id: LearnwareId, dock: DockDep, me: CurrentUser) -> StatusOut:
    info = visible(dock, learnware_id, me)
    if not may_manage(me, info):
        raise ForbiddenError(f"only the owner of learnware {learnware_id!r} sees its "
                             "verification status")
    out = learnware_out(info)
    return StatusOut(learnware_id=info.id, state=out.state, current_version=info.current_version,
                     latest_version=info.latest_version, versions=_versions(dock, info, True))


# ---------------------------------------------------------------------- upload
def _submission(sub: Any) -> SubmissionOut:
    return SubmissionOut(learnware_id=sub.learnware_id, version=sub.version,
                         state=api_state(sub.status),  # type: ignore[arg-type]
                         job_id=sub.job_id, package_sha256=sub.package_sha256, report=sub.report)


async def _receive_and_submit(request: Request, dock: Dock, me: Principal,
                              learnware_id: str | None, owner: str | None) -> SubmissionOut:
    dock.upload_limit.take(f"account:{me.id}", f"ip:{client_ip(request)}")
    upload = await receive_upload(request, dock.settings.tmp_dir, dock.settings.max_upload_bytes)
    try:
        sub = await run_in_threadpool(
            lambda: dock.market.submit(upload.path, owner=owner, learnware_id=learnware_id,
                                       semantic=upload.semantic, uploaded_by=me.id,
                                       duplicates=dock.settings.duplicates))
    finally:
        upload.discard()
    dock.queue.enqueue(sub.job_id)
    return _submission(sub)


@router.post("/learnwares", status_code=202, response_model=SubmissionOut,
             openapi_extra=UPLOAD_BODY, responses=UPLOAD_ERRORS,
             summary="Upload a new learnware (queued for verification)")
async def upload(request: Request, dock: DockDep, me: CurrentUser) -> SubmissionOut:
    return await _receive_and_submit(request, dock, me, None, me.id)


@router.post("/learnwares/{learnware_id}/versions", status_code=202,
             response_model=SubmissionOut, openapi_extra=UPLOAD_BODY, responses=UPLOAD_ERRORS,
             summary="Upload a new version (owner only; queued for verification)")
async def upload_version(learnware_id: LearnwareId, request: Request, dock: DockDep,
                         me: CurrentUser) -> SubmissionOut:
    info = await run_in_threadpool(visible, dock, learnware_id, me)
    if info.owner != me.id:
        raise ForbiddenError(f"only the owner of learnware {learnware_id!r} can upload "
                             "new versions")
    return await _receive_and_submit(request, dock, me, learnware_id, info.owner)


# ---------------------------------------------------------------------- download / delete
@router.get("/learnwares/{learnware_id}/download", response_class=FileResponse,
            responses={200: {"content": {"application/zip": {}},
                             "description": "the package zip; headers X-Learndock-SHA256, "
                                            "X-Learndock-Version"}},
            summary="Download a version's package (current published one by default)")
def download(learnware_id: LearnwareId, dock: DockDep, principal: MaybeUser,
             version: Annotated[int | None, Query(ge=1, le=1_000_000)] = None) -> FileResponse:
    info = visible(dock, learnware_id, principal)
    manage = may_manage(principal, info)
    number = version if version is not None else info.current_version
    if number is None:
        raise ApiNotFoundError(f"learnware {learnware_id!r} has no published version")
    match = [v for v in dock.market.versions(learnware_id) if v.number == number]
    if not match or (match[0].status != ACCEPTED and not manage):
        raise ApiNotFoundError(f"learnware {learnware_id!r} has no version {number}")
    v = match[0]
    tmp_dir = dock.settings.tmp_dir
    tmp_dir.mkdir(parents=True, exist_ok=True)
    dest = tmp_dir / f"download-{uuid.uuid4().hex}.zip"
    try:
        dock.market.download(learnware_id, dest, number)  # re-hashed on the way; counted
    except BaseException:
        dest.unlink(missing_ok=True)
        raise

    def cleanup() -> None:
        with contextlib.suppress(OSError):
            dest.unlink()

    return FileResponse(
        dest, media_type="application/zip", filename=f"{learnware_id}-v{number}.zip",
        headers={"X-Learndock-SHA256": v.package_sha256, "X-Learndock-Version": str(number),
                 "ETag": f'"{v.package_sha256}"', "Cache-Control": "no-store"},
        background=BackgroundTask(cleanup),
    )


@router.delete("/learnwares/{learnware_id}", status_code=204, response_class=Response,
               summary="Delete a learnware (owner or admin)")
def delete(learnware_id: LearnwareId, dock: DockDep, me: CurrentUser) -> Response:
    info = visible(dock, learnware_id, me)
    if not may_manage(me, info):
        raise ForbiddenError(f"only the owner of learnware {learnware_id!r} or an admin can "
                             "delete it")
    dock.market.delete(learnware_id)
    return Response(status_code=204)


# ---------------------------------------------------------------------- search / islands
@router.post("/search", response_model=SearchResponse, tags=["search"],
             summary="Search by semantic query and (optionally) your statistical spec")
def search(body: SearchRequest, request: Request, dock: DockDep,
           principal: MaybeUser) -> SearchResponse:
    dock.search_limit.take(f"ip:{client_ip(request)}")
    query = SemanticQuery.parse(body.query) if body.query is not None else None
    spec = (stat_spec_from_dict(body.spec, dock.market.limits, user=True)
            if body.spec is not None else None)
    res = dock.market.search(query, spec, top_k=body.top_k, max_mixture=body.max_mixture)
    return SearchResponse(**res.to_dict(), learnware_ids=res.learnware_ids)


@router.get("/islands", response_model=list[IslandOut], tags=["search"],
            summary="Islands: comparable feature spaces and their kernels")
def islands(dock: DockDep) -> list[IslandOut]:
    return [IslandOut(key=i.key, data_type=i.data_type, dimension=i.dimension,
                      feature_names=i.feature_names, kernel=i.kernel.to_dict(),
                      n_learnwares=i.n_learnwares, encoder=i.encoder,
                      kernel_version=i.kernel_version)
            for i in dock.market.islands()]


@router.get("/islands/{island}/kernel", response_model=IslandKernelOut, tags=["search"],
            summary="An island's current kernel (the file to fit your spec with)")
def island_kernel(island: Annotated[str, Path(max_length=200)],
                  dock: DockDep) -> IslandKernelOut:
    return IslandKernelOut(**dock.market.island_kernel(island).to_dict())
