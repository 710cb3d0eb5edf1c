"""Dock server on PostgreSQL: the same API over a fresh database (accounts, upload -> queued ->
published, search, download, ownership, injection strings, a reclaimed lease, concurrency)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from learndock.client import AuthenticationError, ForbiddenError
from learndock.errors import NotFoundError
from learndock.market import Market
from learndock.market import schema as t
from learndock.market.jobs import LeaseLost
from learndock.market.verification import ThreadQueue
from learndock.spec import RKMETableSpec
from market_helpers import fresh_pg_database, pg_url
from server_helpers import LiveServer, error_of
from test_server_learnwares import INJECTIONS

pytestmark = [pytest.mark.postgres, pytest.mark.integration]


@pytest.fixture(scope="module")
def pg_srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """The dock on a fresh PostgreSQL database; its workers are started by the tests."""
    with fresh_pg_database() as name, LiveServer(
            tmp_path_factory.mktemp("pg-dock") / "home", database_url=pg_url(name),
            workers=0) as s:
        yield s


@pytest.fixture
def workers(pg_srv: LiveServer) -> Iterator[ThreadQueue]:
    """Two verification workers (polling the database, as workers on other nodes do)."""
    q = ThreadQueue(pg_srv.dock.market, 2, lease_s=5.0, poll_s=0.1, name="pg-worker")
    q.start()
    try:
        yield q
    finally:
        q.stop()


def test_the_dock_runs_on_postgresql(pg_srv: LiveServer, workers: ThreadQueue,
                                     skops_clf_zip: Path, digits_spec: RKMETableSpec) -> None:
    assert pg_srv.dock.market.engine.dialect.name == "postgresql"
    with pg_srv.http() as h:
        assert h.get("/health").json()["database"]["dialect"] == "postgresql"
    owner, email = pg_srv.account()
    sub = owner.upload(skops_clf_zip)
    assert sub.state == "queued"
    v = owner.wait(sub.learnware_id, timeout=120)
    assert v.state == "published" and v.job.attempts == 1
    anon = pg_srv.client()
    res = anon.search({"text": "digits classifier"}, spec=digits_spec)
    assert res.learnware_ids[0] == sub.learnware_id and res.single[0].score > 0.9
    assert anon.download(sub.learnware_id).name == f"{v.package_sha256}.zip"
    other, _ = pg_srv.account()
    with pytest.raises(ForbiddenError):
        other.delete(sub.learnware_id)
    with pytest.raises(ForbiddenError):
        other.update(sub.learnware_id, skops_clf_zip)
    tok = owner.create_token("pg")
    owner.revoke_token(tok.id)
    with pytest.raises(AuthenticationError):
        pg_srv.client(tok.token).me()
    with pg_srv.dock.market.engine.connect() as conn:
        stored = conn.execute(select(t.users.c.password_hash)
                              .where(t.users.c.email == email)).scalar_one()
    assert stored.startswith("$argon2id$")
    # Injection and FTS syntax (NUL included: PostgreSQL refuses NUL in strings) are harmless.
    with pg_srv.http() as h:
        base = h.get("/learnwares", params={"page_size": 100}).json()
        for s in INJECTIONS:
            for field in ("q", "data_type", "scenarios", "owner", "page", "sort"):
                r = h.get("/learnwares", params={field: s, "page_size": 100})
                assert r.status_code in (200, 422), (field, s, r.text)
                if r.status_code == 200:
                    assert r.json()["total"] <= base["total"]
            r = h.post("/search", json={"query": {"text": s}})
            assert r.status_code in (200, 422), (s, r.text)
            r = h.post("/auth/login", json={"email": f"x{s}@example.org", "password": "p" * 10})
            assert r.status_code in (401, 422), (s, r.text)
            assert error_of(r)["code"] in ("unauthorized", "validation_error")
    owner.delete(sub.learnware_id)
    with pytest.raises(NotFoundError):
        anon.get(sub.learnware_id)


def test_an_expired_lease_is_reclaimed_on_postgresql(pg_srv: LiveServer,
                                                     skops_clf_zip: Path) -> None:
    node = Market(pg_srv.settings.resolved_home, database_url=pg_srv.settings.database_url)
    try:
        owner, _ = pg_srv.account()
        sub = owner.upload(skops_clf_zip)
        lease = node.jobs.claim("doomed-pg", lease_s=0.5, job_id=sub.job_id)
        assert lease is not None
        assert owner.status(sub.learnware_id).state == "verifying"
        time.sleep(0.8)  # the worker "died": its lease expires
        queue = ThreadQueue(pg_srv.dock.market, 1, lease_s=5.0, poll_s=0.1, name="rescuer")
        queue.start()
        try:
            v = owner.wait(sub.learnware_id, timeout=120)
        finally:
            queue.stop()
        assert v.state == "published" and v.job.attempts == 2
        assert "doomed-pg stopped renewing its lease" in v.job.last_error
        with pytest.raises(LeaseLost):
            node.store.verify_job(lease, node.jobs)
    finally:
        node.close()


def test_concurrent_uploads_on_postgresql(pg_srv: LiveServer, workers: ThreadQueue,
                                         skops_clf_zip: Path) -> None:
    accounts = [pg_srv.account()[0] for _ in range(4)]
    ids: list[str] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def work(c) -> None:
        try:
            for _ in range(2):
                lid = c.upload(skops_clf_zip).learnware_id
                c.search({"text": "digits"})
                with lock:
                    ids.append(lid)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(c,)) for c in accounts]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=300)
    assert not errors and len(set(ids)) == 8
    owners = {lid: c for c in accounts for lid in [i.id for i in c.list(mine=True).items]}
    for lid in ids:
        assert owners[lid].wait(lid, timeout=120).state == "published"
    assert pg_srv.dock.market.jobs.counts()["queued"] == 0
    assert pg_srv.dock.market.verify() == []
