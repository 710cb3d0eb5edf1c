"""The Redis verification queue (RQ) piece by piece, on the real Redis of 127.0.0.1:6379 (one
queue name per test) and a SQLite market: a message delivered twice verifies once; a message
lost (API killed after its commit, Redis restarted empty, Redis down at upload) is sent again by
the reaper; an expired lease is reaped and sent at once; a worker fault is retried at once; one
reaper per interval does the work; the worker runs nothing but verification jobs. And the
settings that choose it: environment, settings file, what the API runs, what it reports."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from learndock.market import Market
from learndock.market.verification import NullQueue, ThreadQueue
from market_helpers import digits_package

pytest_plugins = ["market_helpers"]
pytestmark = pytest.mark.integration

REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture(scope="module")
def redis_conn() -> Iterator[Any]:
    pytest.importorskip("rq", reason="the Redis queue needs RQ: pip install rq")
    import redis

    conn = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2, socket_timeout=5)
    try:
        conn.ping()
    except Exception as exc:  # noqa: BLE001 -- no Redis to test against
        pytest.skip(f"Redis at {REDIS_URL} is unreachable: {exc}")
    yield conn
    conn.close()


def purge_redis_queue(conn: Any, name: str) -> None:
    """Delete what a test's queue left in Redis: its keys and its RQ jobs' hashes and results."""
    for key in conn.scan_iter("rq:job:*", count=1000):
        if conn.hget(key, "origin") == name.encode():
            conn.delete(key, key.replace(b"rq:job:", b"rq:results:", 1))
    keys = list(conn.scan_iter(f"*{name}*", count=1000))
    if keys:
        conn.delete(*keys)


@pytest.fixture
def queue_name(redis_conn: Any) -> Iterator[str]:
    name = f"learndock-unit-{uuid.uuid4().hex[:10]}"
    yield name
    purge_redis_queue(redis_conn, name)


@pytest.fixture
def rqueue(queue_name: str) -> Iterator[Any]:
    from learndock.market.redis_queue import RedisQueue

    q = RedisQueue(REDIS_URL, queue_name, requeue_after_s=30)
    yield q
    q.stop()


@pytest.fixture
def market(tmp_path: Path) -> Iterator[Market]:
    m = Market(tmp_path / "home")
    yield m
    m.close()


@pytest.fixture(scope="module")
def pkg(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return digits_package(tmp_path_factory.mktemp("rq-pkg"), (0, 1, 2))


def drain(market: Market, rqueue: Any, **kw: Any) -> None:
    """An RQ worker in burst mode: runs what is on the queue, then returns."""
    from learndock.market.redis_queue import run_worker

    run_worker(market, rqueue, lease_s=kw.pop("lease_s", 5.0), burst=True,
               logging_level="WARNING", **kw)


def rq_results(rqueue: Any) -> list[dict[str, Any]]:
    from rq.job import Job
    from rq.registry import FinishedJobRegistry

    reg = FinishedJobRegistry(rqueue.name, connection=rqueue.redis)
    return [Job.fetch(i, connection=rqueue.redis, serializer=rqueue.serializer).return_value()
            for i in reg.get_job_ids()]


def test_a_message_delivered_twice_verifies_once(market: Market, rqueue: Any,
                                                 pkg: Path) -> None:
    sub = market.submit(pkg, owner="dev")
    rqueue.enqueue(sub.job_id)
    rqueue.enqueue(sub.job_id)  # a duplicate (a resend crossing the first delivery)
    assert rqueue.stats()["pending"] == 2
    drain(market, rqueue)
    job = market.jobs.get(sub.job_id)
    assert job.state == "done" and job.attempts == 1 and job.worker.startswith("rq@")
    assert market.get(sub.learnware_id).status == "accepted"
    results = rq_results(rqueue)
    assert sorted(r["claimed"] for r in results) == [False, True]
    assert [r["status"] for r in results if r["claimed"]] == ["accepted"]
    assert rqueue.stats()["pending"] == 0


def test_a_lost_message_is_sent_again_by_the_reaper(market: Market, rqueue: Any,
                                                    pkg: Path) -> None:
    from learndock.market.redis_queue import Reaper

    sub = market.submit(pkg, owner="dev")  # committed; the API died before sending it
    reaper = Reaper(market, rqueue, interval_s=1.0, grace_s=0.0)
    assert reaper.tick(force=True) == {"reaped": [], "sent": [sub.job_id]}
    assert reaper.tick(force=True)["sent"] == []  # sent recently: not again
    rqueue.rq_queue.empty()  # ... and Redis restarts empty (no persistence): message and mark
    rqueue.redis.delete(rqueue._mark_key(sub.job_id))
    assert rqueue.stats()["pending"] == 0
    assert reaper.tick(force=True)["sent"] == [sub.job_id]
    drain(market, rqueue)
    job = market.jobs.get(sub.job_id)
    assert job.state == "done" and job.attempts == 1


def test_a_fresh_job_is_left_to_the_api_that_is_sending_it(market: Market, rqueue: Any,
                                                           pkg: Path) -> None:
    from learndock.market.redis_queue import Reaper

    sub = market.submit(pkg, owner="dev")
    assert Reaper(market, rqueue, interval_s=1.0).tick(force=True)["sent"] == []  # grace
    rqueue.enqueue(sub.job_id)
    assert Reaper(market, rqueue, interval_s=1.0, grace_s=0.0).tick(force=True)["sent"] == []


def test_redis_down_at_upload_loses_nothing(market: Market, rqueue: Any, queue_name: str,
                                            pkg: Path) -> None:
    from learndock.market.redis_queue import Reaper, RedisQueue

    down = RedisQueue("redis://:hunter2@127.0.0.1:1/0", queue_name, socket_timeout_s=0.5)
    sub = market.submit(pkg, owner="dev")
    down.enqueue(sub.job_id)  # logged, not raised: the upload succeeds
    stats = down.stats()
    assert stats["ok"] is False and stats["kind"] == "redis"
    assert "hunter2" not in str(stats) and stats["url"] == "redis://:***@127.0.0.1:1/0"
    assert Reaper(market, rqueue, interval_s=1.0, grace_s=0.0).tick(force=True)["sent"] == [
        sub.job_id]
    drain(market, rqueue)
    assert market.jobs.get(sub.job_id).state == "done"


def test_an_expired_lease_is_reaped_and_sent_at_once(market: Market, rqueue: Any,
                                                     pkg: Path) -> None:
    import time

    from learndock.market.redis_queue import Reaper

    sub = market.submit(pkg, owner="dev")
    rqueue.enqueue(sub.job_id)
    rqueue.rq_queue.empty()  # a worker took the message ...
    lease = market.jobs.claim("doomed-worker", lease_s=0.3, job_id=sub.job_id)
    assert lease is not None  # ... claimed the job, and was killed
    time.sleep(0.5)
    out = Reaper(market, rqueue, interval_s=1.0).tick(force=True)
    assert out == {"reaped": [sub.job_id], "sent": [sub.job_id]}  # the mark is older
    drain(market, rqueue)
    job = market.jobs.get(sub.job_id)
    assert job.state == "done" and job.attempts == 2
    assert "doomed-worker stopped renewing its lease" in job.last_error


def test_a_worker_fault_is_retried_at_once(market: Market, rqueue: Any, pkg: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    real = market.store.verify_job
    calls = []

    def flaky(lease: Any, jobs: Any) -> Any:
        calls.append(lease.job_id)
        if len(calls) == 1:
            raise ConnectionError("the database went away")
        return real(lease, jobs)

    monkeypatch.setattr(market.store, "verify_job", flaky)
    sub = market.submit(pkg, owner="dev")
    rqueue.enqueue(sub.job_id)
    drain(market, rqueue)  # run_job sends the released job again: the same burst runs it
    job = market.jobs.get(sub.job_id)
    assert calls == [sub.job_id, sub.job_id]
    assert job.state == "done" and job.attempts == 2
    assert "the database went away" in job.last_error


def test_one_reaper_per_interval_does_the_work(market: Market, rqueue: Any) -> None:
    from learndock.market.redis_queue import Reaper

    first, second = Reaper(market, rqueue, 5.0), Reaper(market, rqueue, 5.0)
    assert first.tick() is not None
    assert second.tick() is None and first.tick() is None  # the lock holds for the interval
    rqueue.redis.delete(rqueue.lock_key)  # (it expires: 90% of the interval)
    assert second.tick() is not None


def test_the_worker_runs_only_verification_jobs(market: Market, rqueue: Any,
                                                tmp_path: Path) -> None:
    from rq.job import Job

    marker = tmp_path / "should-not-exist"
    job = rqueue.rq_queue.enqueue_call("pathlib.Path.touch", args=(str(marker),))
    drain(market, rqueue)
    job = Job.fetch(job.id, connection=rqueue.redis, serializer=rqueue.serializer)
    assert job.get_status() == "failed"
    assert "refused RQ job" in (job.latest_result().exc_string or "")
    assert not marker.exists()


def test_run_job_needs_the_worker_context() -> None:
    from learndock.market.redis_queue import run_job

    with pytest.raises(RuntimeError, match="learndock worker"):
        run_job("0123456789abcdef")


# ---------------------------------------------------------------------- settings
def _forget(monkeypatch: pytest.MonkeyPatch, *keys: str) -> None:
    """Unset ``keys`` now and again after the test (a settings file may set them)."""
    for k in keys:
        monkeypatch.setenv(k, "placeholder")
        monkeypatch.delenv(k)


def test_settings_from_environment_and_file(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from learndock.server.settings import ServerSettings, apply_config_file

    _forget(monkeypatch, "LEARNDOCK_DATABASE_URL", "LEARNDOCK_BLOB_URL", "LEARNDOCK_QUEUE_URL",
            "LEARNDOCK_SERVER_LEASE_S", "LEARNDOCK_CONFIG", "LEARNDOCK_QUEUE_NAME",
            "LEARNDOCK_S3_REGION", "LEARNDOCK_SERVER_WORKERS")
    monkeypatch.setenv("LEARNDOCK_QUEUE_URL", "redis://127.0.0.1:6379/5")
    monkeypatch.setenv("LEARNDOCK_DATABASE_URL", "postgresql+psycopg://u@db/dock")
    s = ServerSettings()
    assert s.queue_url == "redis://127.0.0.1:6379/5"
    assert s.database_url == "postgresql+psycopg://u@db/dock"
    assert ServerSettings(queue_url="redis://x/1").queue_url == "redis://x/1"  # args win
    # A settings file: the environment wins over it; it feeds the library settings too.
    cfg = tmp_path / "dock.env"
    cfg.write_text("# shared backends\nLEARNDOCK_QUEUE_URL=redis://file/0\n"
                   "LEARNDOCK_BLOB_URL=s3://bucket/pfx\nLEARNDOCK_SERVER_LEASE_S=7\n"
                   "LEARNDOCK_S3_REGION=eu-west-3\n", encoding="utf-8")
    monkeypatch.setenv("LEARNDOCK_CONFIG", str(cfg))
    s = ServerSettings.load(workers=None, lease_s=None)
    assert s.queue_url == "redis://127.0.0.1:6379/5"  # from the environment
    assert s.blob_url == "s3://bucket/pfx" and s.lease_s == 7.0  # from the file
    assert s.market_settings().s3_region == "eu-west-3" and s.workers == 1
    assert ServerSettings.load(lease_s=2.5).lease_s == 2.5  # arguments win over both
    bad = tmp_path / "bad.env"
    bad.write_text("PATH=/tmp\n", encoding="utf-8")
    with pytest.raises(ValueError, match="PATH not allowed"):
        apply_config_file(bad)
    with pytest.raises(ValueError, match="does not exist"):
        apply_config_file(tmp_path / "missing.env")


def test_urls_are_shown_without_secrets() -> None:
    from learndock.server.settings import redact_url

    assert redact_url("redis://:pw@h:6379/0") == "redis://:***@h:6379/0"
    assert redact_url("postgresql+psycopg://dock:s3cr3t@db:5432/m?sslmode=require&password=x") \
        == "postgresql+psycopg://dock:***@db:5432/m?sslmode=require&password=***"
    assert redact_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"


def test_with_a_redis_queue_the_api_runs_no_verification_threads(
        tmp_path: Path, queue_name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from fastapi.testclient import TestClient

    from learndock.market.redis_queue import RedisQueue
    from learndock.server import ServerSettings, create_app

    for k in ("LEARNDOCK_DATABASE_URL", "LEARNDOCK_BLOB_URL", "LEARNDOCK_QUEUE_URL"):
        monkeypatch.delenv(k, raising=False)
    app = create_app(ServerSettings(home=tmp_path / "api", queue_url=REDIS_URL,
                                    queue_name=queue_name, workers=4))
    assert isinstance(app.state.dock.queue, RedisQueue)
    before = {t.name for t in threading.enumerate()}
    with TestClient(app) as client:
        health = client.get("/api/v1/health").json()
        started = {t.name for t in threading.enumerate()} - before
    assert not [n for n in started if n.startswith("verifier")]
    described = {k: v for k, v in app.state.dock.queue.describe().items() if k != "url"}
    assert health["queue"]["workers"] == {**described, "workers": 0, "pending": 0, "ok": True}
    assert health["blob_store"] == {"kind": "local"}  # anonymous: kinds only
    assert health["database"]["dialect"] == "sqlite" and "url" not in health["database"]
    from learndock.server.settings import describe_backends

    detail = describe_backends(app.state.dock.market)  # what admins and the banner see
    assert detail["blob_store"] == {"kind": "local", "path": str(tmp_path / "api" / "blobs")}
    assert detail["database"]["url"].endswith("/api/market.db")
    # Without a queue URL: threads (or none), as before.
    plain = ServerSettings(home=tmp_path / "plain")
    m = plain.open_market()
    try:
        assert isinstance(plain.open_queue(m), ThreadQueue)
        assert isinstance(ServerSettings(home=tmp_path / "plain", workers=0).open_queue(m),
                          NullQueue)
    finally:
        m.close()


def test_worker_command_with_a_redis_queue_runs_one_job_at_a_time(tmp_path: Path) -> None:
    from learndock.cli.server_cmd import app

    res = CliRunner().invoke(app, ["worker", "--home", str(tmp_path / "w"), "--queue-url",
                                   REDIS_URL, "--workers", "2"])
    assert res.exit_code == 1
    assert "start several `learndock worker` processes" in " ".join(res.output.split())
