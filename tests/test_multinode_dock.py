"""A multi-node dock on loopback, every part a separate OS process: PostgreSQL (a fresh database)
for metadata, a moto S3 server for packages, Redis + RQ for verification, two API processes
(``learndock serve``) and one verification worker (``learndock worker``).

What it shows: uploads through one API are verified by the worker and visible, searchable and
downloadable (right SHA-256, bytes in the bucket, nothing under any local home) through the
other; a worker killed (``kill -9``) in the middle of a verification leaves the job retried by the
next worker within the lease bound, never stuck in ``verifying``; a burst of uploads across both
APIs loses nothing. Leases, reaper interval and resend delay are shortened through settings.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from learndock.client import Client
from learndock.package import pack
from market_helpers import (
    CHILD_ENV_EXTRA,
    digits_package,
    fresh_pg_database,
    pg_url,
    semantic,
    small_spec,
    wrong_labels_package,
)
from s3_helpers import CREDENTIALS, REGION, MotoServer
from server_helpers import PASSWORD, free_port, wait_for
from test_multinode_queue import purge_redis_queue

pytest_plugins = ["market_helpers", "s3_helpers"]
pytestmark = [pytest.mark.integration, pytest.mark.postgres]

REDIS_URL = "redis://127.0.0.1:6379/0"
LEASE_S = 3.0  # heartbeats every second; a dead worker's job is reclaimable 3 s later
REAP_INTERVAL_S = 0.5
SLOW_PREDICT_S = 5.0  # the killed job's model: one predict call during its checks
#: From a kill to the verdict: the lease runs out, a reaper tick, the job runs again (plus slack
#: for process start-up on a busy 2-core machine).
KILL_BOUND_S = LEASE_S + REAP_INTERVAL_S + SLOW_PREDICT_S + 20.0
BURST = 10  # uploads at once, across both APIs

PY_MODEL = """
import time

import numpy as np


class Model:
    def __init__(self, delay=0.0):
        self.delay = float(delay)

    def predict(self, X):
        time.sleep(self.delay)
        return np.asarray(X, dtype=np.float64).sum(axis=1)
"""


# ---------------------------------------------------------------------- packages
def python_zip(workdir: Path, name: str, delay: float = 0.0) -> Path:
    """A ``python``-format regression package (runs only in the jail) sleeping ``delay`` s in
    predict."""
    d = workdir / f"{name}-{uuid.uuid4().hex[:6]}"
    d.mkdir(parents=True)
    (d / "model.py").write_text(PY_MODEL, encoding="utf-8")
    small_spec().save(d / "spec.json")
    manifest = {
        "format_version": 1, "name": name, "version": "1.0.0",
        "semantic": semantic(4, name=name, description=f"Sums its inputs ({name}).",
                             task="Regression", n_out=1, library="Others"),
        "model": {"format": "python", "module": "model.py", "class_name": "Model",
                  "kwargs": {"delay": delay}},
        "input": {"shape": [4], "features": [{"name": f"x{i}"} for i in range(4)]},
        "output": {"kind": "value", "shape": []},
        "stat_specs": [{"type": "rkme-table", "file": "spec.json"}],
    }
    (d / "learnware.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False),
                                      encoding="utf-8")
    out = d.parent / f"{d.name}.zip"
    pack(d, out)
    return out


def skops_zip(workdir: Path, name: str, title: str | None = None) -> Path:
    """A skops digits classifier package named ``name`` (its own bytes, its own blob)."""
    return digits_package(workdir, (0, 1, 2), name=name,
                          title=title or f"{name} digits classifier")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---------------------------------------------------------------------- processes
def learndock_cmd() -> list[str]:
    local = Path(sys.executable).parent / "learndock"
    if local.exists():
        return [str(local)]
    return [sys.executable, "-c", "from learndock.cli.main import main; main()"]


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen
    log: Path

    def tail(self, n: int = 3000) -> str:
        try:
            return f"--- {self.name} ({self.log}) ---\n" + self.log.read_text(errors="replace")[-n:]
        except OSError:
            return f"--- {self.name}: no log ---"

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=10)


@dataclass
class Dock:
    root: Path
    env: dict[str, str]
    config: Path
    bucket: str
    queue_name: str
    moto: MotoServer
    apis: dict[str, str] = field(default_factory=dict)  # name -> base URL
    procs: list[Proc] = field(default_factory=list)
    worker: Proc | None = None
    homes: list[Path] = field(default_factory=list)
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:8])  # words to search for
    pkgs: dict[str, Path] = field(default_factory=dict)

    def build_packages(self, burst: int) -> None:
        """Every package the tests upload (built while the dock's processes start)."""
        w, tag = self.root / "packages", self.tag
        w.mkdir()
        self.pkgs["skops"] = skops_zip(w, f"skops{tag}")
        self.pkgs["python"] = python_zip(w, f"pyfmt{tag}")
        self.pkgs["bad"] = wrong_labels_package(w, name=f"badlabels{tag}")
        self.pkgs["slow"] = python_zip(w, f"slow{tag}", delay=SLOW_PREDICT_S)
        for i in range(burst):
            self.pkgs[f"burst{i}"] = skops_zip(w, f"burst{tag}n{i}",
                                               title=f"burst{tag} classifier {i}")

    def spawn(self, name: str, args: list[str], env: dict[str, str] | None = None) -> Proc:
        home = self.root / f"home-{name}"
        self.homes.append(home)
        log = self.root / f"{name}.log"
        with open(log, "wb") as out:
            p = subprocess.Popen([*learndock_cmd(), *args],
                                 env={**(env or self.env), "LEARNDOCK_HOME": str(home)},
                                 stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 cwd=self.root)
        proc = Proc(name, p, log)
        self.procs.append(proc)
        return proc

    def start_api(self, name: str, *, use_config: bool) -> Proc:
        port = free_port()
        if use_config:  # the backends from the settings file only
            env = {k: v for k, v in self.env.items()
                   if k not in ("LEARNDOCK_DATABASE_URL", "LEARNDOCK_BLOB_URL",
                                "LEARNDOCK_S3_ENDPOINT_URL", "LEARNDOCK_QUEUE_URL")}
            proc = self.spawn(name, ["serve", "--port", str(port), "--config", str(self.config),
                                     "--log-level", "warning"], env)
        else:
            proc = self.spawn(name, ["serve", "--port", str(port), "--log-level", "warning"])
        self.apis[name] = f"http://127.0.0.1:{port}"
        return proc

    def start_worker(self, name: str) -> Proc:
        self.worker = self.spawn(name, ["worker", "--config", str(self.config)])
        return self.worker

    def logs(self) -> str:
        return "\n".join(p.tail() for p in self.procs)

    def client(self, api: str, token: str | None = None) -> Client:
        home = self.root / f"client-{api}-{uuid.uuid4().hex[:6]}"
        return Client(self.apis[api], token, home=home, progress=False, retries=2, backoff=0.1)

    def health(self, api: str) -> dict[str, Any]:
        r = httpx.get(f"{self.apis[api]}/api/v1/health", timeout=10)
        assert r.status_code == 200, (r.text, self.logs())
        return r.json()

    def wait_up(self, api: str, proc: Proc, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert proc.popen.poll() is None, f"{api} exited\n{self.logs()}"
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.apis[api]}/api/v1/health", timeout=2).status_code == 200:
                    return
            time.sleep(0.2)
        raise AssertionError(f"{api} did not answer within {timeout} s\n{self.logs()}")

    def wait_worker(self, timeout: float = 60.0) -> float:
        """Wait until the current worker listens on the queue; when it did (time.time())."""
        assert self.worker is not None
        deadline = time.monotonic() + timeout
        while f"Listening on {self.queue_name}" not in self.worker.log.read_text(errors="replace"):
            assert self.worker.popen.poll() is None, f"the worker exited\n{self.logs()}"
            assert time.monotonic() < deadline, f"no RQ worker after {timeout} s\n{self.logs()}"
            time.sleep(0.1)
        return time.time()


def _redis_unreachable() -> str | None:
    try:
        import redis
    except ImportError as exc:
        return f"redis-py is not installed ({exc}): pip install rq"
    try:
        conn = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2, socket_timeout=2)
        conn.ping()
        conn.close()
    except Exception as exc:  # noqa: BLE001 -- any failure: no Redis to test against
        return f"Redis at {REDIS_URL} is unreachable: {exc}"
    return None


@pytest.fixture(scope="module")
def dock(tmp_path_factory: pytest.TempPathFactory, moto_server: MotoServer) -> Iterator[Dock]:
    pytest.importorskip("rq", reason="the Redis queue needs RQ: pip install rq")
    reason = _redis_unreachable()
    if reason:
        pytest.skip(reason)
    root = tmp_path_factory.mktemp("multinode")
    queue_name = f"learndock-test-{uuid.uuid4().hex[:10]}"
    bucket = f"learndock-multinode-{uuid.uuid4().hex[:10]}"
    with fresh_pg_database() as dbname:
        backends = {
            "LEARNDOCK_DATABASE_URL": pg_url(dbname),
            "LEARNDOCK_BLOB_URL": f"s3://{bucket}/packages",
            "LEARNDOCK_S3_ENDPOINT_URL": moto_server.endpoint_url,
            "LEARNDOCK_QUEUE_URL": REDIS_URL,
        }
        config = root / "dock.env"
        config.write_text("# the dock's shared backends\n"
                          + "".join(f"{k}={v}\n" for k, v in backends.items()),
                          encoding="utf-8")
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("LEARNDOCK_", "AWS_"))}
        env.update(CHILD_ENV_EXTRA)
        env.update(CREDENTIALS)
        env.update({
            "AWS_DEFAULT_REGION": REGION, "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull, "AWS_EC2_METADATA_DISABLED": "true",
            **backends,
            "LEARNDOCK_QUEUE_NAME": queue_name,
            "LEARNDOCK_SERVER_LEASE_S": str(LEASE_S),
            "LEARNDOCK_SERVER_REAP_INTERVAL_S": str(REAP_INTERVAL_S),
            "LEARNDOCK_SERVER_REQUEUE_AFTER_S": "20",
            "LEARNDOCK_SERVER_ARGON2_TIME_COST": "1", "LEARNDOCK_SERVER_ARGON2_MEMORY_KIB": "1024",
            "LEARNDOCK_SERVER_ARGON2_PARALLELISM": "1",
            "LEARNDOCK_SERVER_UPLOAD_PER_MIN": "6000", "LEARNDOCK_SERVER_UPLOAD_BURST": "1000",
            "LEARNDOCK_SERVER_LOGIN_PER_MIN": "6000", "LEARNDOCK_SERVER_LOGIN_BURST": "1000",
        })
        d = Dock(root, env, config, bucket, queue_name, moto_server)
        try:
            a = d.start_api("api-a", use_config=False)
            b = d.start_api("api-b", use_config=True)
            d.start_worker("worker-1")
            d.build_packages(BURST)
            d.wait_up("api-a", a)
            d.wait_up("api-b", b)
            d.wait_worker()
            yield d
        finally:
            for p in d.procs:
                p.stop()
            import redis

            conn = redis.Redis.from_url(REDIS_URL)
            purge_redis_queue(conn, queue_name)
            conn.close()


@pytest.fixture(scope="module")
def owner(dock: Dock) -> tuple[str, str]:
    """An account registered and logged in on API A: (e-mail, token)."""
    email = f"dev{uuid.uuid4().hex[:8]}@example.org"
    a = dock.client("api-a")
    a.register(email, PASSWORD)
    return email, a.login(email, PASSWORD)


def wait_final(dock: Dock, client: Client, lid: str, timeout: float) -> Any:
    """The latest version once it is published, rejected or failed."""
    try:
        return client.wait(lid, timeout=timeout, poll=0.2)
    except Exception as exc:
        raise AssertionError(f"{lid} did not finish: {exc}\n{dock.logs()}") from exc


# ---------------------------------------------------------------------- tests
def test_two_api_processes_and_a_worker_share_one_dock(
        dock: Dock, owner: tuple[str, str], tmp_path: Path) -> None:
    # Every process says which backends it uses, without secrets; the APIs verify nothing.
    for api in ("api-a", "api-b"):
        h = dock.health(api)
        # anonymous callers learn the kinds, not where the backends live
        assert h["database"] == {"dialect": "postgresql", "ok": True,
                                 "latency_ms": h["database"]["latency_ms"]}
        assert h["blob_store"] == {"kind": "s3"}
        q = h["queue"]["workers"]
        assert "url" not in q
        assert q["kind"] == "redis" and q["queue"] == dock.queue_name and q["ok"] is True
        assert q["workers"] >= 1  # the RQ worker process, seen through Redis
    for p in dock.procs:
        out = p.log.read_text(errors="replace")
        assert "database: postgresql+psycopg://postgres@127.0.0.1" in out, p.tail()
        assert f"s3://{dock.bucket}/packages" in out and dock.queue_name in out, p.tail()
        assert "testing" not in out  # the AWS secret never shows
        if p.name.startswith("api"):
            assert "verification: none here" in out, p.tail()

    email, token = owner
    a, b = dock.client("api-a", token), dock.client("api-b", token)  # one login, both APIs
    assert b.me().email == email
    tag = dock.tag
    skops, python, bad = dock.pkgs["skops"], dock.pkgs["python"], dock.pkgs["bad"]
    subs = {k: a.upload(z) for k, z in (("skops", skops), ("python", python), ("bad", bad))}
    assert all(s.state == "queued" for s in subs.values())
    final = {k: wait_final(dock, b, s.learnware_id, 60) for k, s in subs.items()}
    assert final["skops"].state == "published", final["skops"]
    assert final["python"].state == "published", final["python"]
    assert final["bad"].state == "rejected", final["bad"]
    for v in final.values():
        assert v.job.attempts == 1 and v.job.worker.startswith("rq@")  # the worker process ran it

    anon_b = dock.client("api-b")
    s3 = dock.moto.client()
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=dock.bucket).get("Contents", [])}
    for kind, zpath, word in (("skops", skops, f"skops{tag}"), ("python", python, f"pyfmt{tag}")):
        lid = subs[kind].learnware_id
        info = anon_b.get(lid)
        assert info.current_version == 1
        assert [m.learnware_id for m in anon_b.search({"text": word}).single] == [lid]
        assert lid in [i.id for i in anon_b.list(page_size=100).items]
        got = anon_b.download(lid, tmp_path / f"{kind}-from-b.zip")
        assert sha256(got) == final[kind].package_sha256 == sha256(zpath)
        assert any(final[kind].package_sha256 in k for k in keys), keys
    # The rejected one is the owner's only, and searchable by nobody.
    assert not anon_b.search({"text": f"badlabels{tag}"}).single
    # No package bytes under any process's home: the bucket holds them.
    for home in dock.homes:
        blobs = home / "blobs"
        assert not blobs.exists() or not [p for p in blobs.rglob("*") if p.is_file()], home


def test_a_worker_killed_mid_job_leaves_it_retried_never_stuck(
        dock: Dock, owner: tuple[str, str]) -> None:
    _, token = owner
    b = dock.client("api-b", token)
    assert dock.worker is not None
    killed = dock.worker
    sub = b.upload(dock.pkgs["slow"])
    lid = sub.learnware_id

    def running() -> Any:
        v = b.status(lid).versions[-1]
        return v if v.state == "verifying" else None

    v = wait_for(running, timeout=30, poll=0.1)
    assert v.job.state == "running" and f":{killed.popen.pid}:" in v.job.worker
    time.sleep(1.5)  # inside predict's sleep, in the jail
    killed.popen.send_signal(signal.SIGKILL)
    killed.popen.wait(timeout=10)
    t_kill, t0 = time.time(), time.monotonic()
    v = b.status(lid).versions[-1]
    assert v.state == "verifying" and v.job.state == "running"  # nobody has noticed yet

    dock.start_worker("worker-2")
    t_ready = dock.wait_worker()
    final = wait_final(dock, b, lid, KILL_BOUND_S)
    assert time.monotonic() - t0 < KILL_BOUND_S
    # Reclaimed as soon as both the lease had run out and a worker was there, plus one reaper
    # interval (and some slack for a busy machine).
    assert final.job.claimed_at <= max(t_kill + LEASE_S, t_ready) + REAP_INTERVAL_S + 3.0, (
        final.job, t_kill, t_ready)
    assert final.state in ("published", "failed"), final
    if final.state == "failed":
        assert final.job.last_error, final
    else:
        assert final.job.state == "done" and final.job.attempts == 2
        assert f":{killed.popen.pid}:" not in final.job.worker  # the new worker finished it
    assert "stopped renewing its lease" in (final.job.last_error or "")
    assert str(killed.popen.pid) in final.job.last_error  # which worker died, for the record


def test_a_burst_of_uploads_across_both_apis_loses_nothing(
        dock: Dock, owner: tuple[str, str]) -> None:
    _, token = owner
    n, tag = BURST, dock.tag
    zips = [dock.pkgs[f"burst{i}"] for i in range(n)]
    subs: dict[int, Any] = {}
    errors: list[BaseException] = []

    def upload(i: int) -> None:
        try:
            subs[i] = dock.client("api-a" if i % 2 else "api-b", token).upload(zips[i])
        except BaseException as exc:  # noqa: BLE001 -- reported below
            errors.append(exc)

    threads = [threading.Thread(target=upload, args=(i,)) for i in range(n)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=60)
    assert not errors, errors
    assert len(subs) == n and len({s.learnware_id for s in subs.values()}) == n
    a, b = dock.client("api-a", token), dock.client("api-b", token)
    for i, s in subs.items():
        v = wait_final(dock, b if i % 2 else a, s.learnware_id, 60)  # read on the other API
        assert v.state == "published" and v.job.state == "done", v
    anon = dock.client("api-a")
    found = {m.learnware_id for m in anon.search({"text": f"burst{tag}"}, top_k=50).single}
    assert found >= {s.learnware_id for s in subs.values()}
    jobs = dock.health("api-b")["queue"]["jobs"]
    assert jobs["queued"] == 0 and jobs["running"] == 0, jobs
