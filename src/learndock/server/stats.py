"""Counts for health, metrics and the admin statistics (aggregates only: no ids, no e-mails)."""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import and_, func, select

from learndock.market import schema as t
from learndock.server.deps import Dock


def learnware_counts(dock: Dock) -> dict[str, int]:
    lw = t.learnwares.c
    with dock.market.engine.connect() as conn:
        published = conn.execute(
            select(func.count()).select_from(t.learnwares)
            .where(and_(lw.deleted_at.is_(None), lw.current_version_id.is_not(None)))
        ).scalar_one()
        others = conn.execute(
            select(lw.status, func.count())
            .where(and_(lw.deleted_at.is_(None), lw.current_version_id.is_(None)))
            .group_by(lw.status)
        ).all()
        deleted = conn.execute(
            select(func.count()).select_from(t.learnwares).where(lw.deleted_at.is_not(None))
        ).scalar_one()
    out = {"published": int(published), "deleted": int(deleted)}
    for status, n in others:
        out[str(status)] = out.get(str(status), 0) + int(n)
    return out


def version_counts(dock: Dock) -> dict[str, int]:
    with dock.market.engine.connect() as conn:
        rows = conn.execute(select(t.versions.c.status, func.count())
                            .group_by(t.versions.c.status)).all()
    return {("published" if s == "accepted" else str(s)): int(n) for s, n in rows}


def downloads(dock: Dock) -> int:
    with dock.market.engine.connect() as conn:
        n = conn.execute(select(func.coalesce(func.sum(t.learnwares.c.download_count), 0))
                         ).scalar_one()
    return int(n)


def queue_info(dock: Dock) -> dict[str, Any]:
    counts = dock.market.jobs.counts()
    return {"depth": counts["queued"] + counts["running"], "jobs": counts,
            "workers": dock.queue.stats()}


def statistics(dock: Dock, days: int = 30) -> dict[str, Any]:
    lw = t.learnwares.c
    live = and_(lw.deleted_at.is_(None), lw.current_version_id.is_not(None))
    since = time.time() - days * 86400.0
    with dock.market.engine.connect() as conn:
        by_type = conn.execute(select(lw.data_type, func.count()).where(live)
                               .group_by(lw.data_type)).all()
        by_task = conn.execute(select(lw.task_type, func.count()).where(live)
                               .group_by(lw.task_type)).all()
        created = conn.execute(select(t.versions.c.created_at)
                               .where(t.versions.c.created_at >= since)).scalars().all()
    per_day: dict[str, int] = {}
    for ts in created:
        day = datetime.fromtimestamp(float(ts), tz=timezone.utc).strftime("%Y-%m-%d")
        per_day[day] = per_day.get(day, 0) + 1
    return {
        "learnwares_by_state": learnware_counts(dock),
        "versions_by_state": version_counts(dock),
        "published_by_data_type": {str(k): int(v) for k, v in by_type},
        "published_by_task_type": {str(k): int(v) for k, v in by_task},
        "uploads_by_day": dict(sorted(per_day.items())),
        "users": dock.accounts.count_users(),
        "queue": dock.market.jobs.counts(),
        "downloads": downloads(dock),
    }
