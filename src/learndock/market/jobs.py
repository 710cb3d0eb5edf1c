"""Verification jobs: the durable queue between a quick upload and its slow checks.

A submitted version (:meth:`learndock.market.Market.submit`) gets one row here, in the same
transaction that stores the version, so a job exists exactly when a version waits. Workers
*claim* jobs under a **lease**:

- ``claim`` moves a ``queued`` job to ``running`` with one conditional ``UPDATE`` (the row must
  still be queued), sets ``lease_expires_at = now + lease`` and a random ``lease_token``, and
  counts the attempt. Two workers racing for a job: one update matches, the other moves on. No
  ``SELECT ... FOR UPDATE``: the same statements work on SQLite and PostgreSQL.
- While it checks, the worker **heartbeats** (extends its lease) every third of the lease.
- It **finishes** the job in the transaction that records the verdict, again conditionally on
  its ``lease_token``: a worker that lost its lease (stalled past it, and another worker took
  the job) cannot overwrite the newer attempt's result -- its transaction changes nothing.
- A worker killed mid-job stops heartbeating; once its lease has expired, :meth:`JobStore.reap`
  (run by every worker before it claims) puts the job back to ``queued`` with a note -- or,
  after ``max_attempts`` attempts, marks it ``failed`` and the version ``failed`` with a message
  saying why. Nothing stays ``running`` forever, and any worker on any node can reclaim.
- An exception in a worker (not a rejection: a database or sandbox fault) releases the job the
  same way: back to ``queued`` while attempts remain, else ``failed``.

Times are each node's ``time.time()``: nodes must keep their clocks in sync (NTP) to within a
small part of the lease.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import and_, func, insert, select, update
from sqlalchemy.engine import Connection, Engine

from learndock.errors import MarketError
from learndock.market import schema as t
from learndock.market.db import new_id, write_txn
from learndock.market.types import ACCEPTED, FAILED, PENDING, QUEUED, VERIFYING

JOB_QUEUED = "queued"
JOB_RUNNING = "running"
JOB_DONE = "done"
JOB_FAILED = "failed"
JOB_CANCELLED = "cancelled"
JOB_STATES = (JOB_QUEUED, JOB_RUNNING, JOB_DONE, JOB_FAILED, JOB_CANCELLED)

DEFAULT_MAX_ATTEMPTS = 3
DEFAULT_LEASE_S = 60.0

_j = t.verification_jobs


class LeaseLost(MarketError):
    """The worker no longer holds the job's lease (it expired and the job was reclaimed, or
    it was cancelled): its result must not be recorded."""


@dataclass(frozen=True)
class Job:
    id: str
    version_id: str
    learnware_id: str
    state: str
    attempts: int
    max_attempts: int
    worker: str | None
    claimed_at: float | None
    heartbeat_at: float | None
    lease_expires_at: float | None
    created_at: float
    updated_at: float
    finished_at: float | None
    last_error: str | None

    @classmethod
    def from_row(cls, row: Any) -> Job:
        return cls(**{f: row[f] for f in cls.__dataclass_fields__})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Lease:
    """A worker's hold on a job; ``token`` fences every write the worker makes for it."""

    job: Job
    token: str
    worker: str

    @property
    def job_id(self) -> str:
        return self.job.id


def worker_name(prefix: str = "worker") -> str:
    """A name for a worker thread: host, process, thread (shown in the queue listing)."""
    return f"{prefix}@{socket.gethostname()}:{os.getpid()}:{threading.get_ident() % 100000}"


def _report_with(report_json: str | None, name: str, ok: bool, message: str) -> str:
    """The version's report (JSON) with one more check line (the verdict not reached)."""
    try:
        report = json.loads(report_json) if report_json else {}
    except ValueError:
        report = {}
    checks = [c for c in report.get("checks", []) if c.get("name") != name]
    checks.append({"name": name, "ok": ok, "message": message})
    report["checks"] = checks
    report["ok"] = ok and all(c.get("ok") for c in checks)
    return json.dumps(report)


def _pending_learnware(conn: Connection, learnware_id: str, status: str) -> None:
    """A learnware with no published version shows the state of its pending one."""
    conn.execute(
        update(t.learnwares)
        .where(and_(t.learnwares.c.id == learnware_id,
                    t.learnwares.c.current_version_id.is_(None),
                    t.learnwares.c.status.in_(PENDING)))
        .values(status=status)
    )


class JobStore:
    """SQL over ``verification_jobs`` (and the status of the versions the jobs are for)."""

    def __init__(self, engine: Engine, *, max_attempts: int = DEFAULT_MAX_ATTEMPTS) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        self.engine = engine
        self.max_attempts = max_attempts

    # ------------------------------------------------------------------ enqueue
    def create(self, conn: Connection, version_id: str, learnware_id: str, now: float) -> str:
        """A queued job for the version (in the caller's transaction, with the version)."""
        job_id = new_id()
        conn.execute(
            insert(_j).values(
                id=job_id, version_id=version_id, learnware_id=learnware_id, state=JOB_QUEUED,
                attempts=0, max_attempts=self.max_attempts, worker=None, lease_token=None,
                claimed_at=None, heartbeat_at=None, lease_expires_at=None, created_at=now,
                updated_at=now, finished_at=None, last_error=None,
            )
        )
        return job_id

    # ------------------------------------------------------------------ claim / lease
    def claim(self, worker: str, lease_s: float = DEFAULT_LEASE_S,
              job_id: str | None = None) -> Lease | None:
        """Take the oldest queued job (or the given one, if it is queued) under a lease of
        ``lease_s`` seconds; None if there is none. Expired leases are reaped first."""
        if lease_s <= 0:
            raise ValueError("lease_s must be > 0")
        self.reap()
        with self.engine.connect() as conn:
            q = select(_j.c.id).where(_j.c.state == JOB_QUEUED)
            if job_id is not None:
                q = q.where(_j.c.id == job_id)
            ids = list(conn.execute(q.order_by(_j.c.created_at, _j.c.id).limit(8)).scalars())
        for jid in ids:
            token = new_id()

            def take(conn: Connection, jid: str = jid, token: str = token) -> bool:
                now = time.time()
                res = conn.execute(
                    update(_j)
                    .where(and_(_j.c.id == jid, _j.c.state == JOB_QUEUED))
                    .values(state=JOB_RUNNING, attempts=_j.c.attempts + 1, worker=worker[:200],
                            lease_token=token, claimed_at=now, heartbeat_at=now,
                            lease_expires_at=now + lease_s, updated_at=now)
                )
                if res.rowcount != 1:
                    return False  # another worker took it first
                vid, lid = conn.execute(
                    select(_j.c.version_id, _j.c.learnware_id).where(_j.c.id == jid)).one()
                conn.execute(
                    update(t.versions)
                    .where(and_(t.versions.c.id == vid, t.versions.c.status.in_(PENDING)))
                    .values(status=VERIFYING)
                )
                _pending_learnware(conn, lid, VERIFYING)
                return True

            if write_txn(self.engine, take):
                job = self.get(jid)
                if job is not None:
                    return Lease(job, token, worker)
        return None

    def heartbeat(self, lease: Lease, lease_s: float = DEFAULT_LEASE_S) -> bool:
        """Extend the lease; False if the worker lost it (then it should stop and not write)."""
        def beat(conn: Connection) -> bool:
            now = time.time()
            res = conn.execute(
                update(_j)
                .where(and_(_j.c.id == lease.job_id, _j.c.lease_token == lease.token,
                            _j.c.state == JOB_RUNNING))
                .values(heartbeat_at=now, lease_expires_at=now + lease_s, updated_at=now)
            )
            return res.rowcount == 1

        return write_txn(self.engine, beat)

    def finish(self, conn: Connection, lease: Lease, state: str = JOB_DONE,
               error: str | None = None) -> None:
        """Close the job in the caller's transaction (the one recording the verdict).

        Raises :class:`LeaseLost` (so the caller's transaction rolls back) if the worker no
        longer holds the lease.
        """
        now = time.time()
        values: dict[str, Any] = {"state": state, "finished_at": now, "updated_at": now,
                                  "lease_expires_at": None}
        if error is not None:  # else keep the note of an earlier, lost attempt
            values["last_error"] = error[:4000]
        res = conn.execute(
            update(_j)
            .where(and_(_j.c.id == lease.job_id, _j.c.lease_token == lease.token,
                        _j.c.state == JOB_RUNNING))
            .values(**values)
        )
        if res.rowcount != 1:
            raise LeaseLost(f"job {lease.job_id}: lease lost by {lease.worker}")

    def release(self, lease: Lease, error: str) -> str:
        """After a worker fault: back to ``queued`` while attempts remain, else ``failed``
        (the version too, with ``error`` in its report). Returns the job's new state (or its
        current one if the lease was already lost)."""
        def rel(conn: Connection) -> str:
            row = conn.execute(select(_j).where(_j.c.id == lease.job_id)).mappings().first()
            if row is None or row["lease_token"] != lease.token or row["state"] != JOB_RUNNING:
                return str(row["state"]) if row is not None else JOB_CANCELLED
            if int(row["attempts"]) >= int(row["max_attempts"]):
                msg = (f"verification could not be completed after {row['attempts']} "
                       f"attempt(s); last error: {error}")
                self._fail(conn, row, msg)
                return JOB_FAILED
            self._requeue(conn, row, f"attempt {row['attempts']} failed: {error}")
            return JOB_QUEUED

        return write_txn(self.engine, rel)

    def reap(self, now: float | None = None) -> list[str]:
        """Jobs whose worker stopped renewing its lease (crashed, killed, partitioned): back to
        ``queued`` while attempts remain, else ``failed``. Returns the ids it changed."""
        now = time.time() if now is None else now
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(_j).where(and_(_j.c.state == JOB_RUNNING, _j.c.lease_expires_at < now))
            ).mappings().all()
        changed = []
        for row in rows:
            def one(conn: Connection, row: Any = row) -> bool:
                # Conditional on the lease we saw: a heartbeat since then keeps the job.
                fresh = conn.execute(
                    select(_j).where(and_(_j.c.id == row["id"], _j.c.state == JOB_RUNNING,
                                          _j.c.lease_token == row["lease_token"],
                                          _j.c.lease_expires_at < now))
                ).mappings().first()
                if fresh is None:
                    return False
                lost = (f"worker {fresh['worker']} stopped renewing its lease during attempt "
                        f"{fresh['attempts']} (crashed or killed)")
                if int(fresh["attempts"]) >= int(fresh["max_attempts"]):
                    self._fail(conn, fresh, f"verification did not finish after "
                                            f"{fresh['attempts']} attempt(s): {lost}")
                else:
                    self._requeue(conn, fresh, f"{lost}; retrying")
                return True

            if write_txn(self.engine, one):
                changed.append(str(row["id"]))
        return changed

    def _requeue(self, conn: Connection, row: Any, note: str) -> None:
        now = time.time()
        res = conn.execute(
            update(_j)
            .where(and_(_j.c.id == row["id"], _j.c.lease_token == row["lease_token"]))
            .values(state=JOB_QUEUED, lease_token=None, lease_expires_at=None, updated_at=now,
                    last_error=note[:4000])
        )
        if res.rowcount == 1:
            conn.execute(
                update(t.versions)
                .where(and_(t.versions.c.id == row["version_id"],
                            t.versions.c.status.in_(PENDING)))
                .values(status=QUEUED)
            )
            _pending_learnware(conn, row["learnware_id"], QUEUED)

    def _fail(self, conn: Connection, row: Any, message: str) -> None:
        now = time.time()
        res = conn.execute(
            update(_j)
            .where(and_(_j.c.id == row["id"], _j.c.lease_token == row["lease_token"]))
            .values(state=JOB_FAILED, lease_token=None, lease_expires_at=None, updated_at=now,
                    finished_at=now, last_error=message[:4000])
        )
        if res.rowcount != 1:
            return
        v = conn.execute(
            select(t.versions.c.status, t.versions.c.report_json)
            .where(t.versions.c.id == row["version_id"])
        ).first()
        if v is None or v[0] not in PENDING:
            return
        conn.execute(
            update(t.versions)
            .where(t.versions.c.id == row["version_id"])
            .values(status=FAILED, verified_at=now,
                    report_json=_report_with(v[1], "verification", False, message))
        )
        conn.execute(
            update(t.learnwares)
            .where(and_(t.learnwares.c.id == row["learnware_id"],
                        t.learnwares.c.current_version_id.is_(None),
                        t.learnwares.c.status != ACCEPTED))
            .values(status=FAILED)
        )

    # ------------------------------------------------------------------ operator actions
    def retry(self, job_id: str) -> bool:
        """Put a ``failed`` job back in the queue with a fresh set of attempts."""
        def again(conn: Connection) -> bool:
            row = conn.execute(select(_j).where(_j.c.id == job_id)).mappings().first()
            if row is None or row["state"] != JOB_FAILED:
                return False
            lw = conn.execute(
                select(t.learnwares.c.deleted_at).where(t.learnwares.c.id == row["learnware_id"])
            ).first()
            if lw is None or lw[0] is not None:
                return False
            now = time.time()
            conn.execute(
                update(_j).where(_j.c.id == job_id)
                .values(state=JOB_QUEUED, attempts=0, finished_at=None, updated_at=now)
            )
            conn.execute(
                update(t.versions).where(t.versions.c.id == row["version_id"])
                .values(status=QUEUED, verified_at=None)
            )
            conn.execute(
                update(t.learnwares)
                .where(and_(t.learnwares.c.id == row["learnware_id"],
                            t.learnwares.c.current_version_id.is_(None)))
                .values(status=QUEUED)
            )
            return True

        return write_txn(self.engine, again)

    @staticmethod
    def cancel_for_learnware(conn: Connection, learnware_id: str) -> None:
        """In a delete's transaction: its waiting jobs will never run."""
        now = time.time()
        conn.execute(
            update(_j)
            .where(and_(_j.c.learnware_id == learnware_id,
                        _j.c.state.in_((JOB_QUEUED, JOB_RUNNING))))
            .values(state=JOB_CANCELLED, lease_token=None, lease_expires_at=None,
                    finished_at=now, updated_at=now, last_error="the learnware was deleted")
        )

    # ------------------------------------------------------------------ reads
    def get(self, job_id: str) -> Job | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(_j).where(_j.c.id == job_id)).mappings().first()
        return Job.from_row(row) if row is not None else None

    def for_version(self, version_id: str) -> Job | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(_j).where(_j.c.version_id == version_id)
            ).mappings().first()
        return Job.from_row(row) if row is not None else None

    def for_learnware(self, learnware_id: str) -> list[Job]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(_j).where(_j.c.learnware_id == learnware_id).order_by(_j.c.created_at)
            ).mappings().all()
        return [Job.from_row(r) for r in rows]

    def list(self, states: list[str] | tuple[str, ...] | None = None, *, limit: int = 100,
             offset: int = 0) -> list[Job]:
        q = select(_j)
        if states:
            q = q.where(_j.c.state.in_(list(states)))
        with self.engine.connect() as conn:
            rows = conn.execute(
                q.order_by(_j.c.created_at, _j.c.id).offset(offset).limit(limit)
            ).mappings().all()
        return [Job.from_row(r) for r in rows]

    def counts(self) -> dict[str, int]:
        """Jobs per state (every state present, zeros included)."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(_j.c.state, func.count()).group_by(_j.c.state)).all()
        out = dict.fromkeys(JOB_STATES, 0)
        out.update({str(s): int(n) for s, n in rows})
        return out

    def depth(self) -> int:
        """Jobs waiting or running."""
        c = self.counts()
        return c[JOB_QUEUED] + c[JOB_RUNNING]
