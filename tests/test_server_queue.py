"""Dock server: the verification queue -- queued versions stay private, a worker that dies
mid-job (its lease expires) leaves the job retried, never stuck; bounded attempts end in
``failed`` with a message an admin can retry; a bounded concurrent load loses nothing."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from learndock.errors import NotFoundError
from learndock.market import Market
from learndock.market.jobs import LeaseLost
from learndock.market.verification import ThreadQueue, Verifier
from learndock.spec import RKMETableSpec
from server_helpers import LiveServer, error_of, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A dock with no verification workers of its own: the tests play the workers."""
    with LiveServer(tmp_path_factory.mktemp("dock") / "home", workers=0, max_attempts=3) as s:
        yield s


@pytest.fixture
def node(srv: LiveServer) -> Iterator[Market]:
    """Another process's view of the same dock (another node: same database and blobs)."""
    m = Market(srv.settings.resolved_home)
    try:
        yield m
    finally:
        m.close()


def _state(srv: LiveServer, owner, lid: str) -> tuple[str, object]:
    v = owner.status(lid).versions[-1]
    return v.state, v.job


def test_queued_versions_are_private_until_published(srv: LiveServer, node: Market,
                                                     skops_clf_zip: Path) -> None:
    owner, _ = srv.account()
    sub = owner.upload(skops_clf_zip)
    lid = sub.learnware_id
    time.sleep(0.5)  # no worker runs in this dock: it stays queued
    st = owner.status(lid)
    assert st.state == "queued" and st.current_version is None
    assert st.versions[0].job.state == "queued" and st.versions[0].job.attempts == 0
    anon = srv.client()
    with pytest.raises(NotFoundError):
        anon.get(lid)
    with srv.http() as h:
        assert h.get(f"/learnwares/{lid}/download").status_code == 404
        assert h.get(f"/learnwares/{lid}/download", params={"version": 1}).status_code == 404
        health = h.get("/health").json()
    assert health["queue"]["depth"] >= 1 and health["queue"]["workers"]["kind"] == "external"
    assert lid not in [i.id for i in anon.list(page_size=100).items]
    assert lid not in anon.search({"text": "digits classifier"}).learnware_ids
    assert owner.download(lid, version=1).is_file()  # the owner may fetch what it sent
    assert [i.status for i in owner.list(mine=True).items if i.id == lid] == ["queued"]
    result = Verifier(node, "test-worker").run_one(sub.job_id)
    assert result is not None and result.status == "accepted"
    assert owner.status(lid).state == "published"
    assert lid in anon.search({"text": "digits classifier"}).learnware_ids


def test_a_worker_killed_mid_job_leaves_it_retried(srv: LiveServer, node: Market,
                                                   skops_clf_zip: Path) -> None:
    owner, _ = srv.account()
    sub = owner.upload(skops_clf_zip)
    lid = sub.learnware_id
    # A worker on another node claims the job, then dies: no heartbeat, no verdict.
    lease = node.jobs.claim("doomed-worker", lease_s=0.5, job_id=sub.job_id)
    assert lease is not None and lease.job.attempts == 1
    state, job = _state(srv, owner, lid)
    assert state == "verifying" and job.state == "running" and job.worker == "doomed-worker"
    # A live worker does not steal a job whose lease is still valid.
    assert node.jobs.claim("eager-worker", lease_s=5, job_id=sub.job_id) is None
    time.sleep(0.8)  # the lease expires
    # Any worker reclaims it: the server's embedded queue, polling.
    queue = ThreadQueue(srv.dock.market, 1, lease_s=10, poll_s=0.1, name="rescuer")
    queue.start()
    try:
        v = owner.wait(lid, timeout=60)
    finally:
        queue.stop()
    assert v.state == "published" and v.job.state == "done" and v.job.attempts == 2
    assert "doomed-worker stopped renewing its lease" in v.job.last_error  # the history
    assert v.job.worker.startswith("rescuer")
    # The dead worker coming back cannot record a stale verdict: nothing changes.
    with pytest.raises(LeaseLost):
        node.store.verify_job(lease, node.jobs)
    assert owner.status(lid).versions[0].state == "published"
    assert node.jobs.get(sub.job_id).state == "done"


def test_attempts_are_bounded_then_failed_with_a_message(srv: LiveServer, node: Market,
                                                         skops_clf_zip: Path) -> None:
    owner, _ = srv.account()
    sub = owner.upload(skops_clf_zip)
    lid = sub.learnware_id
    for attempt in (1, 2, 3):
        lease = node.jobs.claim(f"doomed-{attempt}", lease_s=0.3, job_id=sub.job_id)
        assert lease is not None and lease.job.attempts == attempt
        time.sleep(0.5)
        node.jobs.reap()
    st = owner.status(lid)
    v = st.versions[0]
    assert st.state == "failed" and v.state == "failed" and v.job.state == "failed"
    msg = v.job.last_error
    assert "did not finish after 3 attempt(s)" in msg and "doomed-3" in msg
    assert any(c["name"] == "verification" and not c["ok"] and "3 attempt(s)" in c["message"]
               for c in v.report["checks"])
    assert node.jobs.claim("late-worker", lease_s=5, job_id=sub.job_id) is None  # not stuck
    admin, _ = srv.account(admin=True)
    with srv.http(admin.token) as h:
        q = h.get("/admin/queue", params={"state": "failed"}).json()
        assert sub.job_id in [j["id"] for j in q["items"]] and q["counts"]["failed"] >= 1
        r = h.post(f"/admin/queue/{sub.job_id}/retry")
        assert r.status_code == 202 and r.json()["state"] == "queued"
        r = h.post(f"/admin/queue/{sub.job_id}/retry")
        assert r.status_code == 409 and error_of(r)["code"] == "conflict"
        assert h.post("/admin/queue/nosuchjob/retry").status_code == 404
    with srv.http(owner.token) as h:
        assert h.post(f"/admin/queue/{sub.job_id}/retry").status_code == 403
    assert owner.status(lid).state == "queued"
    assert Verifier(node, "retry-worker").run_one(sub.job_id).status == "accepted"
    assert owner.status(lid).state == "published"


def test_a_worker_fault_releases_the_job_for_a_retry(srv: LiveServer, node: Market,
                                                     skops_clf_zip: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    owner, _ = srv.account()
    sub = owner.upload(skops_clf_zip)

    def broken(lease, jobs):  # e.g. the database went away mid-job
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(node.store, "verify_job", broken)
    claimed, result = Verifier(node, "faulty").step(sub.job_id)
    assert claimed and result is None
    job = node.jobs.get(sub.job_id)
    assert job.state == "queued" and job.attempts == 1
    assert "attempt 1 failed: RuntimeError: disk on fire" in job.last_error
    assert owner.status(sub.learnware_id).state == "queued"
    monkeypatch.undo()
    assert Verifier(node, "healthy").run_one(sub.job_id).status == "accepted"


def test_deleting_a_queued_learnware_cancels_its_job(srv: LiveServer, node: Market,
                                                     skops_clf_zip: Path) -> None:
    owner, _ = srv.account()
    sub = owner.upload(skops_clf_zip)
    owner.delete(sub.learnware_id)
    assert node.jobs.get(sub.job_id).state == "cancelled"
    assert Verifier(node, "w").step(sub.job_id) == (False, None)
    with pytest.raises(NotFoundError):
        owner.status(sub.learnware_id)


def test_concurrent_uploads_and_searches_lose_nothing(tmp_path: Path, skops_clf_zip: Path,
                                                      digits_spec: RKMETableSpec) -> None:
    n_threads, per_thread = 4, 3
    with LiveServer(tmp_path / "home", workers=2) as s:
        accounts = [s.account() for _ in range(n_threads)]
        spec = digits_spec.to_dict()
        results: dict[int, list[str]] = {}
        errors: list[BaseException] = []
        searches = [0]
        lock = threading.Lock()

        def work(i: int) -> None:
            c = accounts[i][0]
            mine = []
            try:
                for _ in range(per_thread):
                    mine.append(c.upload(skops_clf_zip).learnware_id)
                    res = c.search({"task_type": "Classification"}, spec=spec)
                    assert all(m.score is not None for m in res.single)
                    c.list(page_size=50)
                    with lock:
                        searches[0] += 1
            except BaseException as exc:  # noqa: BLE001 -- reported by the test
                errors.append(exc)
            results[i] = mine

        threads = [threading.Thread(target=work, args=(i,)) for i in range(n_threads)]
        t0 = time.monotonic()
        for th in threads:
            th.start()
        for th in threads:
            th.join(timeout=300)
        assert not errors, errors
        ids = [lid for i in range(n_threads) for lid in results[i]]
        assert len(ids) == len(set(ids)) == n_threads * per_thread
        assert searches[0] == n_threads * per_thread
        for (c, _), i in zip(accounts, range(n_threads), strict=True):
            for lid in results[i]:
                assert c.wait(lid, timeout=300).state == "published"
        assert time.monotonic() - t0 < 300
        anon = s.client()
        assert anon.list(page_size=100).total == len(ids)
        res = anon.search({"task_type": "Classification"}, spec=spec, top_k=100)
        assert {m.learnware_id for m in res.single} == set(ids)
        with s.http() as h:
            metrics = h.get("/metrics").json()
        assert metrics["queue"]["depth"] == 0
        assert metrics["queue"]["jobs"]["done"] == len(ids)
        assert metrics["versions"] == {"published": len(ids)}
        assert wait_for(lambda: s.dock.queue.stats()["processed"] == len(ids), timeout=30)
        assert s.dock.market.verify() == []
