"""Verification over Redis with RQ: the standard job queue of a multi-node dock.

**Why RQ.** The queue only has to carry a job id from an API process to some worker: the state,
the retries and the fencing already live in the database (:mod:`learndock.market.jobs`: a lease
per claim, heartbeats, ``max_attempts``, a conditional verdict). RQ does exactly the carrying --
a Redis list per queue, a worker command, registries to look at -- with one dependency
(``redis``) and no broker-side configuration; its own retries and scheduling stay off.
Dramatiq's acks and Celery's broker abstraction would duplicate what the lease already
guarantees, at the cost of more machinery (middleware, retries on by default, a second retry
policy to keep in line with ``max_attempts``).

**The database stays the source of truth.** A message is a hint: "job X may be waiting".

- ``RedisQueue.enqueue(job_id)`` (in the API process, after the submission committed) sends one
  RQ job ``run_job(job_id)`` (JSON-serialised: no pickles on the wire) and stamps a *sent* mark
  (``learndock:<queue>:sent:<job_id>`` = the time; it expires after ``requeue_after_s``). If
  Redis is down, the upload still succeeds: the job is in the database and is sent later
  (and the API process stops trying for :data:`SEND_PAUSE_S`, so requests do not wait on it).
- :func:`run_job` (in ``learndock worker``) claims that job under a lease -- only if it is still
  ``queued`` -- and verifies it (:class:`~learndock.market.verification.Verifier`). A message
  delivered twice finds the job taken or done and does nothing.
- :class:`Reaper` runs in every worker, every ``reap_interval_s`` (one worker of the dock does
  the work per interval: a Redis lock with an expiry). It puts jobs whose lease expired back to
  ``queued`` (or ``failed`` with a message after ``max_attempts``) and sends again, at once, the
  ones it put back; and it sends again any ``queued`` job whose message may be lost: no sent mark
  (never sent -- the API died between commit and send -- or Redis restarted empty), a mark older
  than the job's last change (it was put back after a worker fault), or a mark that expired
  (sent ``requeue_after_s`` ago and still waiting: the worker that took it died before
  claiming, or the backlog is long -- a duplicate is harmless).

So a worker killed mid-job (``kill -9``) leaves its job ``running`` until the lease expires,
then the next reaper tick requeues and resends it: it is retried by another worker, or fails
with a message after ``max_attempts`` -- never stuck. The bound is ``lease_s + reap_interval_s``
plus the time to run the job again.

Run the workers with ``learndock worker`` (it sets up the market and the reaper); a plain
``rq worker`` cannot run these jobs. RQ's job timeout (``job_timeout_s``) is only a backstop
above the sandbox timeouts: a job that hits it is released like any worker fault.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from learndock.market.jobs import DEFAULT_LEASE_S, JOB_QUEUED, worker_name
from learndock.market.verification import Verifier, warm_runtimes

if TYPE_CHECKING:
    from learndock.market.market import Market

log = logging.getLogger("learndock.verification.redis")

DEFAULT_QUEUE_NAME = "learndock-verification"
#: The one function an RQ job of this queue may name (checked by the worker before it runs).
JOB_FUNC = "learndock.market.redis_queue.run_job"
#: A queued job sent this recently (and not changed since) is left alone by the reaper: the API
#: process that created it is about to send it.
SEND_GRACE_S = 5.0
#: Most queued jobs a reaper tick looks at (oldest first).
REAP_BATCH = 2000
#: After a failed send, an API process stops trying for this long (uploads run on the event
#: loop: an unreachable Redis must not stall every request); the reaper sends those jobs later.
SEND_PAUSE_S = 5.0


def _redact(url: str) -> str:
    """The URL without its password."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


def _import_rq() -> Any:
    try:
        import redis
        import rq
    except ImportError as exc:  # pragma: no cover - depends on the installed extras
        from learndock.errors import MarketError

        raise MarketError(f"the Redis queue needs RQ ({exc}): pip install 'learndock[redis]' "
                          "(or: pip install rq)") from None
    return redis, rq


class RedisQueue:
    """The API side of the Redis queue (and the sender the reaper uses): see the module
    docstring. No threads: ``start``/``stop`` only check and close the connection."""

    kind = "redis"

    def __init__(self, url: str, name: str = DEFAULT_QUEUE_NAME, *, job_timeout_s: int = 3600,
                 requeue_after_s: float = 120.0, result_ttl_s: int = 3600,
                 socket_timeout_s: float = 2.0) -> None:
        redis, rq = _import_rq()
        from rq.serializers import JSONSerializer

        if requeue_after_s <= 0 or job_timeout_s <= 0:
            raise ValueError("requeue_after_s and job_timeout_s must be > 0")
        self.url, self.name = url, name
        self.job_timeout_s = int(job_timeout_s)
        self.requeue_after_s = float(requeue_after_s)
        self.result_ttl_s = int(result_ttl_s)
        self.redis = redis.Redis.from_url(url, socket_timeout=socket_timeout_s,
                                          socket_connect_timeout=socket_timeout_s,
                                          health_check_interval=30)
        self.serializer = JSONSerializer
        self.rq_queue = rq.Queue(name, connection=self.redis, serializer=JSONSerializer)
        self.sent = 0
        self._paused_until = 0.0

    # ------------------------------------------------------------------ keys
    def _mark_key(self, job_id: str) -> str:
        return f"learndock:{self.name}:sent:{job_id}"

    @property
    def lock_key(self) -> str:
        return f"learndock:{self.name}:reaper"

    # ------------------------------------------------------------------ sending
    def send(self, job_id: str) -> None:
        """Put ``run_job(job_id)`` on the RQ queue and stamp the sent mark (raises on Redis
        errors)."""
        self.rq_queue.enqueue_call(
            JOB_FUNC, args=(job_id,), timeout=self.job_timeout_s, result_ttl=self.result_ttl_s,
            failure_ttl=max(self.result_ttl_s, 86400), description=f"verify job {job_id}",
        )
        # After the message: a mark without a message would hold back the reaper's resend.
        self.redis.set(self._mark_key(job_id), repr(time.time()),
                       ex=max(1, int(round(self.requeue_after_s))))
        self.sent += 1

    def marks(self, job_ids: list[str]) -> list[float | None]:
        """When each job was last sent (None: no live mark)."""
        if not job_ids:
            return []
        out: list[float | None] = []
        for raw in self.redis.mget([self._mark_key(j) for j in job_ids]):
            try:
                out.append(float(raw) if raw is not None else None)
            except (TypeError, ValueError):
                out.append(None)
        return out

    # ------------------------------------------------------------------ VerificationQueue
    def enqueue(self, job_id: str) -> None:
        """Send the job, or -- Redis unreachable -- leave it to the reapers (never raises)."""
        if time.monotonic() < self._paused_until:
            log.info("job %s: not sent (Redis failed recently); a worker's reaper sends it",
                     job_id)
            return
        try:
            self.send(job_id)
        except Exception as exc:  # noqa: BLE001 -- the job is safe in the database
            self._paused_until = time.monotonic() + SEND_PAUSE_S
            log.warning("job %s: not sent to Redis (%s: %s); a worker's reaper sends it later",
                        job_id, type(exc).__name__, exc)

    def start(self) -> None:
        try:
            self.redis.ping()
        except Exception as exc:  # noqa: BLE001 -- uploads still work; workers catch up
            log.warning("Redis queue %s at %s is unreachable (%s): jobs wait in the database",
                        self.name, _redact(self.url), type(exc).__name__)

    def stop(self, timeout: float = 10.0) -> None:
        self.redis.close()

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "library": "rq", "url": _redact(self.url), "queue": self.name}

    def stats(self) -> dict[str, Any]:
        from rq import Worker

        out: dict[str, Any] = {**self.describe(), "workers": 0}
        try:
            out["pending"] = self.rq_queue.count
            out["workers"] = Worker.count(connection=self.redis, queue=self.rq_queue)
            out["ok"] = True
        except Exception as exc:  # noqa: BLE001 -- health must answer
            out.update(ok=False, error=type(exc).__name__)
        return out


# ---------------------------------------------------------------------- the worker side
@dataclass
class _WorkerContext:
    market: Market
    queue: RedisQueue
    lease_s: float


_CONTEXT: _WorkerContext | None = None


def run_job(job_id: str) -> dict[str, Any]:
    """The RQ job: verify ``job_id`` if it is still queued (a duplicate or stale message does
    nothing). Runs inside :func:`run_worker`."""
    ctx = _CONTEXT
    if ctx is None:
        raise RuntimeError("verification jobs run in `learndock worker` (it opens the market "
                           "and runs the reaper), not in a plain `rq worker`")
    verifier = Verifier(ctx.market, worker_name("rq"), ctx.lease_s)
    claimed, result = verifier.step(str(job_id))
    out: dict[str, Any] = {"job_id": job_id, "claimed": claimed}
    if result is not None:
        out.update(learnware_id=result.learnware_id, version=result.version,
                   status=result.status)
    elif claimed:
        # A worker fault released the job: back to queued while attempts remain. Send it
        # again now rather than at the next reaper tick.
        job = ctx.market.jobs.get(job_id)
        out["state"] = job.state if job is not None else None
        if job is not None and job.state == JOB_QUEUED:
            ctx.queue.enqueue(job_id)
    return out


class Reaper(threading.Thread):
    """Every ``interval_s``: expired leases back to ``queued`` (or ``failed``), and lost
    messages sent again (see the module docstring). Every worker runs one; a Redis lock lets
    one of them do the work per interval."""

    def __init__(self, market: Market, queue: RedisQueue, interval_s: float = 10.0,
                 *, grace_s: float = SEND_GRACE_S) -> None:
        super().__init__(name="learndock-reaper", daemon=True)
        if interval_s <= 0:
            raise ValueError("interval_s must be > 0")
        self.market, self.queue, self.interval_s, self.grace_s = market, queue, interval_s, grace_s
        self.me = f"{socket.gethostname()}:{os.getpid()}"
        self._stop_event = threading.Event()
        self.ticks = 0

    def tick(self, *, force: bool = False) -> dict[str, list[str]] | None:
        """One round; None if another worker holds this interval's lock (``force``: ignore
        the lock)."""
        lock_ms = max(100, int(self.interval_s * 900))  # expires before the next interval
        if not force and not self.queue.redis.set(self.queue.lock_key, self.me, nx=True,
                                                  px=lock_ms):
            return None
        reaped = self.market.jobs.reap()
        for job_id in reaped:
            log.warning("job %s: its worker stopped renewing the lease; requeued or failed",
                        job_id)
        queued = self.market.jobs.list([JOB_QUEUED], limit=REAP_BATCH)
        marks = self.queue.marks([j.id for j in queued])
        now = time.time()
        resend = []
        for job, mark in zip(queued, marks, strict=True):
            if (job.id in reaped
                    or (mark is None and now - job.updated_at >= self.grace_s)
                    or (mark is not None and mark < job.updated_at)):
                resend.append(job.id)
        for job_id in resend:
            self.queue.send(job_id)
        if resend:
            log.info("reaper sent %d queued job(s) again: %s", len(resend), ", ".join(resend[:10]))
        self.ticks += 1
        return {"reaped": reaped, "sent": resend}

    def run(self) -> None:
        while not self._stop_event.is_set():
            try:
                self.tick()
            except Exception:  # noqa: BLE001 -- database or Redis down: next interval
                log.exception("reaper tick failed")
            self._stop_event.wait(self.interval_s)

    def stop(self) -> None:
        self._stop_event.set()
        if self.is_alive():
            self.join(timeout=10)


def _worker_classes() -> tuple[type, type]:
    from rq import SimpleWorker
    from rq.job import Job

    class VerificationJob(Job):
        """An RQ job that may only call :data:`JOB_FUNC` (whoever can write to Redis cannot
        make the worker import anything else)."""

        @property
        def func(self) -> Any:
            if self.func_name != JOB_FUNC:
                raise RuntimeError(f"refused RQ job {self.id}: it calls {self.func_name!r}, "
                                   f"this queue runs only {JOB_FUNC}")
            return run_job

    class VerificationWorker(SimpleWorker):
        """RQ's in-process worker (no fork per job: the market and its connection pool are
        opened once; uploaded code runs in the sandbox's own processes anyway)."""

        stop_asked = False

        def request_stop(self, signum: Any, frame: Any) -> None:
            self.stop_asked = True
            super().request_stop(signum, frame)

    return VerificationJob, VerificationWorker


def run_worker(market: Market, queue: RedisQueue, *, lease_s: float = DEFAULT_LEASE_S,
               reap_interval_s: float = 10.0, burst: bool = False,
               logging_level: str = "INFO") -> None:
    """Consume ``queue`` in this process (its main thread: RQ handles SIGINT/SIGTERM as a warm
    shutdown) with a :class:`Reaper` beside it, until stopped -- or, with ``burst``, until the
    queue is empty. Restarts RQ's loop if Redis goes away."""
    global _CONTEXT
    redis, _ = _import_rq()
    job_class, worker_class = _worker_classes()
    _CONTEXT = _WorkerContext(market, queue, lease_s)
    warm_runtimes()
    reaper = Reaper(market, queue, reap_interval_s)
    try:
        reaper.tick(force=True)  # jobs lost while no worker ran go out before the first wait
    except Exception:  # noqa: BLE001
        log.exception("first reaper tick failed")
    if not burst:
        reaper.start()
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        while True:
            conn = redis.Redis.from_url(queue.url)
            worker = worker_class([queue.name], connection=conn, job_class=job_class,
                                  serializer=queue.serializer)
            try:
                worker.work(burst=burst, logging_level=logging_level, with_scheduler=False)
            finally:
                conn.close()
            if burst or worker.stop_asked:
                return
            log.warning("the RQ worker loop ended (Redis unreachable?); restarting in 2 s")
            time.sleep(2.0)
    finally:
        reaper.stop()
        _CONTEXT = None
        for sig, handler in handlers.items():  # RQ installed its own
            if handler is not None:
                signal.signal(sig, handler)
