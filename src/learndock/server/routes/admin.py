"""Admin: users and roles, the verification queue, statistics."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query

from learndock.market.jobs import JOB_STATES
from learndock.server.deps import Admin, DockDep
from learndock.server.errors import ApiNotFoundError, ConflictError
from learndock.server.models import (
    ID_PATTERN,
    JobOut,
    KernelRevisionOut,
    QueueOut,
    RoleChange,
    StatsOut,
    UserOut,
    UserPage,
)
from learndock.server.routes.accounts import user_out
from learndock.server.stats import statistics

router = APIRouter(prefix="/admin", tags=["admin"])
UserId = Annotated[str, Path(pattern=ID_PATTERN)]
JobState = Literal["queued", "running", "done", "failed", "cancelled"]


@router.get("/users", response_model=UserPage, summary="List accounts")
def list_users(
    dock: DockDep, _: Admin,
    page: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    page_size: Annotated[int, Query(ge=1, le=500)] = 50,
) -> UserPage:
    users, total = dock.accounts.list_users(page, page_size)
    return UserPage(items=[user_out(u) for u in users], total=total, page=page,
                    page_size=page_size)


@router.patch("/users/{user_id}", response_model=UserOut, summary="Change an account's role")
def change_role(user_id: UserId, body: RoleChange, dock: DockDep, _: Admin) -> UserOut:
    return user_out(dock.accounts.set_role(user_id, body.role))


@router.get("/queue", response_model=QueueOut,
            summary="Verification jobs (default: queued, running and failed)")
def queue(
    dock: DockDep, _: Admin,
    state: Annotated[list[JobState], Query()] = ["queued", "running", "failed"],  # noqa: B006
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
) -> QueueOut:
    jobs = dock.market.jobs.list([s for s in state if s in JOB_STATES], limit=limit,
                                 offset=offset)
    return QueueOut(items=[j.to_dict() for j in jobs], counts=dock.market.jobs.counts())


@router.post("/queue/{job_id}/retry", status_code=202, response_model=JobOut,
             summary="Queue a failed job again (fresh attempts)")
def retry(job_id: Annotated[str, Path(pattern=ID_PATTERN)], dock: DockDep, _: Admin) -> JobOut:
    job = dock.market.jobs.get(job_id)
    if job is None:
        raise ApiNotFoundError(f"no job {job_id!r}")
    if not dock.market.jobs.retry(job_id):
        raise ConflictError(f"job {job_id!r} is {job.state}; only failed jobs are retried")
    dock.queue.enqueue(job_id)
    return JobOut(**dock.market.jobs.get(job_id).to_dict())  # type: ignore[union-attr]


@router.get("/stats", response_model=StatsOut,
            summary="Counts by state, data type, task type and day")
def stats(dock: DockDep, _: Admin) -> StatsOut:
    return StatsOut(**statistics(dock))


@router.post("/islands/{island}/revise-kernel", response_model=KernelRevisionOut,
             summary="Choose an island's kernel again from its specs (rescores them if it "
                     "changes)")
def revise_kernel(island: Annotated[str, Path(max_length=200)], dock: DockDep,
                  _: Admin) -> KernelRevisionOut:
    choice = dock.market.revise_kernel(island)
    info = dock.market.island_kernel(island)
    d = choice.to_dict()
    return KernelRevisionOut(island=island, kernel_version=info.version,
                             kernel=info.kernel.to_dict(), changed=d["changed"],
                             reason=d["reason"], n_specs=d["n_specs"], current=d["current"],
                             best=d["best"])
