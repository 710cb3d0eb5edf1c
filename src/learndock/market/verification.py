"""Verification workers and the queue interface the dock server runs them behind.

The durable state of the queue is the ``verification_jobs`` table (:mod:`learndock.market.jobs`):
a job row is committed together with its ``queued`` version, claimed under a lease, renewed by
heartbeats and closed in the transaction that records the verdict. A *queue* only decides
**who runs a job and when** -- it carries job ids, never state. So any queue may lose or
duplicate a message without harm: a lost one is found by the workers' polling (or a reaper),
a duplicate finds the job no longer ``queued`` and does nothing.

:class:`VerificationQueue` is that interface:

``enqueue(job_id)``
    Called after the submission's transaction committed. Must return quickly.
``start()`` / ``stop(timeout)``
    Start and stop whatever runs jobs (threads here; nothing for an external queue).
``stats()``
    A small JSON-able dict for health and metrics (kind, workers, ...).

Implementations here:

- :class:`ThreadQueue` -- the embedded default of ``learndock serve``: N daemon threads in the
  server process, woken by ``enqueue`` and polling every ``poll_s`` (so jobs submitted by other
  processes or nodes, and jobs whose lease expired, are picked up too).
- :class:`InlineQueue` -- runs the job inside ``enqueue`` (scripts, tests, a one-shot CLI).
- :class:`NullQueue` -- runs nothing: jobs wait for workers elsewhere (``learndock worker``).
- :class:`learndock.market.redis_queue.RedisQueue` -- a standard job queue (RQ over Redis) for a
  multi-node dock: ``enqueue`` sends the job id to Redis, ``learndock worker`` processes on any
  node consume it and run :meth:`Verifier.run_one` on it, and every such worker also runs a
  :class:`~learndock.market.redis_queue.Reaper` (expired leases back to ``queued``, lost
  messages sent again). The API processes run no verification threads.

:func:`learndock.market.backends.make_queue` picks one from settings (``learndock serve`` and ``create_app`` use it).
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from learndock.market.jobs import DEFAULT_LEASE_S, JobStore, Lease, LeaseLost, worker_name
from learndock.market.types import AddResult

if TYPE_CHECKING:
    from learndock.market.market import Market

log = logging.getLogger("learndock.verification")


@runtime_checkable
class VerificationQueue(Protocol):
    """Who runs verification jobs (see the module docstring)."""

    def enqueue(self, job_id: str) -> None: ...

    def start(self) -> None: ...

    def stop(self, timeout: float = 10.0) -> None: ...

    def stats(self) -> dict[str, Any]: ...


_WARMED = threading.Event()


def warm_runtimes() -> None:
    """Import the model runtimes (skops pulls in every scikit-learn estimator: ~3-6 s) in the
    background when a worker starts, so the first upload after a start is not the slow one."""
    if _WARMED.is_set():
        return
    _WARMED.set()

    def _imports() -> None:
        import importlib

        for name in ("skops.io", "onnxruntime"):
            try:
                importlib.import_module(name)
            except Exception:  # noqa: BLE001 -- the check itself reports a missing runtime
                log.debug("could not pre-import %s", name, exc_info=True)

    threading.Thread(target=_imports, name="warm-runtimes", daemon=True).start()


class _Heartbeat(threading.Thread):
    """Renews a lease every third of its length until stopped (or the lease is lost)."""

    def __init__(self, jobs: JobStore, lease: Lease, lease_s: float) -> None:
        super().__init__(name=f"heartbeat-{lease.job_id}", daemon=True)
        self.jobs, self.lease, self.lease_s = jobs, lease, lease_s
        self._stop_event = threading.Event()
        self.lost = False

    def run(self) -> None:
        while not self._stop_event.wait(self.lease_s / 3):
            try:
                if not self.jobs.heartbeat(self.lease, self.lease_s):
                    self.lost = True
                    log.warning("job %s: lease lost by %s", self.lease.job_id, self.lease.worker)
                    return
            except Exception:  # noqa: BLE001 -- a failed beat is retried at the next tick
                log.exception("job %s: heartbeat failed", self.lease.job_id)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=5)


class Verifier:
    """Claims a job, runs the version's submission checks with heartbeats, records the
    verdict. One per worker thread (or per call)."""

    def __init__(self, market: Market, worker: str | None = None,
                 lease_s: float = DEFAULT_LEASE_S) -> None:
        self.market = market
        self.worker = worker or worker_name()
        self.lease_s = lease_s

    def step(self, job_id: str | None = None) -> tuple[bool, AddResult | None]:
        """(claimed a job?, its verdict -- None if there was none to record)."""
        lease = self.market.jobs.claim(self.worker, self.lease_s, job_id)
        if lease is None:
            return False, None
        beat = _Heartbeat(self.market.jobs, lease, self.lease_s)
        beat.start()
        try:
            result = self.market.store.verify_job(lease, self.market.jobs)
        except LeaseLost:
            log.warning("job %s: lease lost before the verdict; another worker retries it",
                        lease.job_id)
            return True, None
        except Exception as exc:  # noqa: BLE001 -- a worker fault: retry or fail the job
            log.exception("job %s: verification failed", lease.job_id)
            state = self.market.jobs.release(lease, f"{type(exc).__name__}: {exc}"[:2000])
            log.info("job %s is now %s", lease.job_id, state)
            return True, None
        finally:
            beat.stop()
        if result is not None:
            log.info("job %s: learnware %s version %s %s", lease.job_id, result.learnware_id,
                     result.version, result.status)
        return True, result

    def run_one(self, job_id: str | None = None) -> AddResult | None:
        """Run one job (the given one if it is queued, else the oldest queued)."""
        return self.step(job_id)[1]


class ThreadQueue:
    """Embedded workers: ``workers`` daemon threads in this process."""

    kind = "threads"

    def __init__(self, market: Market, workers: int = 1, *, lease_s: float = DEFAULT_LEASE_S,
                 poll_s: float = 2.0, name: str = "verifier") -> None:
        if workers < 0:
            raise ValueError("workers must be >= 0")
        self.market, self.workers, self.lease_s, self.poll_s = market, workers, lease_s, poll_s
        self.name = name
        self._wake = threading.Semaphore(0)
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._busy = 0
        self._lock = threading.Lock()
        self.processed = 0

    def enqueue(self, job_id: str) -> None:
        self._wake.release()

    def start(self) -> None:
        if self._threads:
            return
        self._stopping.clear()
        if self.workers:
            warm_runtimes()
        for i in range(self.workers):
            th = threading.Thread(target=self._loop, args=(i,), name=f"{self.name}-{i}",
                                  daemon=True)
            th.start()
            self._threads.append(th)

    def _loop(self, i: int) -> None:
        verifier = Verifier(self.market, worker_name(f"{self.name}-{i}"), self.lease_s)
        while not self._stopping.is_set():
            try:
                with self._lock:
                    self._busy += 1
                try:
                    claimed, _ = verifier.step()
                finally:
                    with self._lock:
                        self._busy -= 1
            except Exception:  # noqa: BLE001 -- e.g. the database is down: wait, try again
                log.exception("verification worker %s", verifier.worker)
                claimed = False
            if claimed:
                self.processed += 1
            else:
                self._wake.acquire(timeout=self.poll_s)

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        for _ in self._threads:
            self._wake.release()
        for th in self._threads:
            th.join(timeout=timeout)
        self._threads = []

    def stats(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "workers": self.workers,
            "alive": sum(th.is_alive() for th in self._threads),
            "busy": self._busy,
            "lease_s": self.lease_s,
            "processed": self.processed,
        }


class InlineQueue:
    """Runs each job in ``enqueue`` itself (no threads)."""

    kind = "inline"

    def __init__(self, market: Market, *, lease_s: float = DEFAULT_LEASE_S) -> None:
        self.verifier = Verifier(market, worker_name("inline"), lease_s)

    def enqueue(self, job_id: str) -> None:
        self.verifier.run_one(job_id)

    def start(self) -> None:
        pass

    def stop(self, timeout: float = 10.0) -> None:
        pass

    def stats(self) -> dict[str, Any]:
        return {"kind": self.kind, "workers": 0}


class NullQueue:
    """Runs nothing: jobs wait in the database for workers elsewhere."""

    kind = "external"

    def enqueue(self, job_id: str) -> None:
        pass

    def start(self) -> None:
        pass

    def stop(self, timeout: float = 10.0) -> None:
        pass

    def stats(self) -> dict[str, Any]:
        return {"kind": self.kind, "workers": 0}

