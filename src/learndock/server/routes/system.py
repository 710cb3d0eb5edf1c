"""Health and metrics (no account needed; aggregates only)."""

from __future__ import annotations

import time

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from learndock import __version__
from learndock.server.deps import DockDep, MaybeUser
from learndock.server.models import HealthOut, MetricsOut
from learndock.server.settings import describe_backends
from learndock.server.stats import downloads, learnware_counts, queue_info, version_counts

router = APIRouter(tags=["operations"])


def jail_info() -> dict[str, object]:
    from learndock.sandbox import jail_support

    try:
        s = jail_support()
    except Exception as exc:  # noqa: BLE001 -- health must answer, whatever the host
        return {"available": False, "detail": f"{type(exc).__name__}: {exc}"}
    return {"available": s.available, "detail": s.explain(), "bwrap": s.bwrap_version or None,
            "seccomp": s.seccomp_note}


@router.get("/health", response_model=HealthOut,
            responses={503: {"model": HealthOut, "description": "the database is unreachable"}},
            summary="Database reachable, queue depth, jail support")
def health(dock: DockDep, caller: MaybeUser) -> JSONResponse:
    """Anyone may ask whether the dock is healthy; where its database and bucket live (host,
    user, bucket names) is shown to admins only -- it helps an attacker more than a user."""
    backends = describe_backends(dock.market)  # which database and blob store (no secrets)
    admin = caller is not None and caller.is_admin
    db: dict[str, object] = (dict(backends["database"]) if admin
                             else {"dialect": backends["database"]["dialect"]})
    blob_store = (backends["blob_store"] if admin
                  else {"kind": backends["blob_store"].get("kind")})
    ok = True
    try:
        t0 = time.perf_counter()
        with dock.market.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        db.update(ok=True, latency_ms=round((time.perf_counter() - t0) * 1e3, 2))
    except Exception as exc:  # noqa: BLE001
        ok = False
        db.update(ok=False, error=type(exc).__name__)
    queue = queue_info(dock) if ok else {"depth": None, "workers": dock.queue.stats()}
    if not admin and isinstance(queue.get("workers"), dict):
        queue["workers"] = {k: v for k, v in queue["workers"].items() if k != "url"}
    demo = dock.demo.status() if dock.demo is not None else None
    body = HealthOut(status="ok" if ok else "degraded", version=__version__, database=db,
                     blob_store=blob_store, queue=queue, jail=jail_info(), demo=demo)
    return JSONResponse(body.model_dump(), status_code=200 if ok else 503)


@router.get("/metrics", response_model=MetricsOut, summary="Counts and queue states (JSON)")
def metrics(dock: DockDep) -> MetricsOut:
    return MetricsOut(uptime_s=time.time() - dock.started_at, learnwares=learnware_counts(dock),
                      versions=version_counts(dock), queue=queue_info(dock),
                      users=dock.accounts.count_users(), downloads=downloads(dock))
