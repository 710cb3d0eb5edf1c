"""S3BlobStore against a real S3-compatible server (moto's standalone server process).

The store keeps the BlobStore contract of the local store -- content-addressed keys, idempotent
put, streaming read-only open, NotFoundError for a missing blob, paginated list, idempotent
delete -- and adds S3's own: multipart uploads for large files, an upload that never lets bytes
other than the hashed ones appear, errors that name bucket, key and S3 code. The last tests run a
whole Market (SQLite, then PostgreSQL) on it.
"""

from __future__ import annotations

import base64
import collections
import contextlib
import hashlib
import io
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from learndock.errors import MarketError, NotFoundError
from learndock.market import BlobIntegrityError, Market, s3blobs
from learndock.market.blobstore import hash_blob, sha256_file
from learndock.market.s3blobs import (
    S3AccessError,
    S3BlobError,
    S3BlobNotFoundError,
    S3BlobStore,
    S3BucketMissingError,
    S3IntegrityError,
    S3UnavailableError,
)
from market_helpers import class_rows, digits_package, search_ids, user_spec
from s3_helpers import REGION, MotoServer, free_port

pytest_plugins = ["market_helpers", "s3_helpers"]
pytestmark = pytest.mark.integration

MiB = 1024 * 1024
PREFIX = "dock/test"

MakeStore = Callable[..., S3BlobStore]


@pytest.fixture
def make_store(
    moto_server: MotoServer, s3_env: None, s3_bucket: str
) -> Iterator[MakeStore]:
    """Stores on the moto server, built like an operator would (endpoint + the standard
    credential chain); the test's bucket and ``PREFIX`` unless told otherwise."""
    made: list[S3BlobStore] = []

    def make(**kw: Any) -> S3BlobStore:
        kw.setdefault("endpoint_url", moto_server.endpoint_url)
        kw.setdefault("region", REGION)
        store = S3BlobStore(kw.pop("bucket", s3_bucket), kw.pop("prefix", PREFIX), **kw)
        made.append(store)
        return store

    yield make
    for store in made:
        store.close()


@pytest.fixture
def raw(moto_server: MotoServer) -> Any:
    """A plain boto3 client on the same server (to look behind the store's back)."""
    client = moto_server.client()
    yield client
    client.close()


@contextlib.contextmanager
def s3_calls(store: S3BlobStore) -> Iterator[collections.Counter]:
    """Count the S3 API calls the store's client makes (by operation name)."""
    counts: collections.Counter = collections.Counter()

    def hook(model: Any, **_: Any) -> None:
        counts[model.name] += 1

    store.client.meta.events.register("before-call.s3", hook, unique_id="learndock-count")
    try:
        yield counts
    finally:
        store.client.meta.events.unregister("before-call.s3", unique_id="learndock-count")


def write_bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


# ---------------------------------------------------------------------- the contract


def test_round_trip_of_a_real_package(
    make_store: MakeStore, raw: Any, s3_bucket: str, skops_clf_zip: Path
) -> None:
    store = make_store()
    sha, size = store.put_file(skops_clf_zip)
    assert (sha, size) == sha256_file(skops_clf_zip)

    # the bucket was created on first use; the layout is <prefix>/sha256/<aa>/<sha>.zip
    key = f"{PREFIX}/sha256/{sha[:2]}/{sha}.zip"
    assert store.key(sha) == key and store.uri(sha) == f"s3://{s3_bucket}/{key}"
    keys = [o["Key"] for o in raw.list_objects_v2(Bucket=s3_bucket)["Contents"]]
    assert keys == [key]
    head = raw.head_object(Bucket=s3_bucket, Key=key)
    assert head["ContentLength"] == size and head["Metadata"] == {"sha256": sha}

    assert store.exists(sha)
    assert store.local_path(sha) is None
    with store.open(sha) as f:
        assert f.readable() and not f.seekable()
        with pytest.raises(io.UnsupportedOperation):
            f.write(b"x")  # type: ignore[call-overload]
        first = f.read(1000)
        rest = f.read()
    assert first + rest == skops_clf_zip.read_bytes()
    assert hash_blob(store, sha) == sha

    listed = dict(store.list())
    assert list(listed) == [sha]
    assert abs(listed[sha] - head["LastModified"].timestamp()) < 1.0

    with pytest.raises(ValueError, match="SHA-256"):
        store.open("not-a-key")


def test_put_is_idempotent_and_refreshes_the_blob(
    make_store: MakeStore, raw: Any, s3_bucket: str, tmp_path: Path
) -> None:
    store = make_store()
    src = write_bytes(tmp_path / "a.zip", os.urandom(4096))
    sha, size = store.put_file(src)
    before = raw.head_object(Bucket=s3_bucket, Key=store.key(sha))["LastModified"]

    time.sleep(1.1)  # LastModified has one-second resolution
    with s3_calls(store) as calls:
        assert store.put_file(src) == (sha, size)
    # nothing uploaded again; the object is touched so a concurrent sweep keeps it
    assert calls["PutObject"] == 0 and calls["CreateMultipartUpload"] == 0
    assert calls["CopyObject"] == 1
    after = raw.head_object(Bucket=s3_bucket, Key=store.key(sha))
    assert after["LastModified"] > before
    assert after["Metadata"] == {"sha256": sha} and after["ContentLength"] == size

    # an object of the same size but other bytes (no recorded hash) is replaced, not trusted
    raw.put_object(Bucket=s3_bucket, Key=store.key(sha), Body=os.urandom(size))
    assert hash_blob(store, sha) != sha
    with s3_calls(store) as calls:
        assert store.put_file(src) == (sha, size)
    assert calls["PutObject"] == 1
    assert hash_blob(store, sha) == sha
    assert [s for s, _ in store.list()] == [sha]


@pytest.mark.parametrize("size", [1000, 6 * MiB], ids=["single-put", "multipart"])
@pytest.mark.parametrize("checksums", [True, False], ids=["checksums", "no-checksums"])
def test_sha256_checksums_go_with_the_upload(
    make_store: MakeStore, tmp_path: Path, size: int, checksums: bool
) -> None:
    """A single PUT carries the blob's SHA-256 (S3 refuses a body that does not match it),
    each part of a multipart upload its own; ``checksums=False`` (S3-compatible services that
    lack flexible checksums) sends none and keeps the other guarantees."""
    store = make_store(checksums=checksums, part_size=5 * MiB)
    data = os.urandom(size)
    sha = hashlib.sha256(data).hexdigest()
    sent: list[tuple[str, dict]] = []
    store.client.meta.events.register(  # the API parameters of every call
        "before-parameter-build.s3",
        lambda model, params, **_: sent.append((model.name, dict(params))),
        unique_id="learndock-params",
    )
    assert store.put_file(write_bytes(tmp_path / "a.zip", data)) == (sha, size)
    sums = {(op, k, v) for op, p in sent for k, v in p.items() if k.startswith("Checksum")
            and k != "ChecksumMode"}
    if not checksums:
        assert sums == set()
    elif size < store.multipart_threshold:
        assert ("PutObject", "ChecksumSHA256", base64.b64encode(bytes.fromhex(sha)).decode()) \
            in sums
    else:
        assert {("CreateMultipartUpload", "ChecksumAlgorithm", "SHA256"),
                ("UploadPart", "ChecksumAlgorithm", "SHA256")} <= sums
    assert hash_blob(store, sha) == sha


def test_list_paginates_and_skips_foreign_keys(
    make_store: MakeStore, raw: Any, s3_bucket: str, tmp_path: Path
) -> None:
    store = make_store(list_page_size=2)
    shas = {store.put_file(write_bytes(tmp_path / f"{i}.zip", os.urandom(100 + i)))[0]
            for i in range(5)}
    # not blobs: another prefix, a stray file, a key in the wrong fan-out folder
    sha0 = next(iter(shas))
    raw.put_object(Bucket=s3_bucket, Key=f"other/sha256/{sha0[:2]}/{'0' * 64}.zip", Body=b"x")
    raw.put_object(Bucket=s3_bucket, Key=f"{PREFIX}/sha256/README.txt", Body=b"x")
    raw.put_object(Bucket=s3_bucket, Key=f"{PREFIX}/sha256/zz/{'1' * 64}.zip", Body=b"x")
    with s3_calls(store) as calls:
        listed = list(store.list())
    assert {s for s, _ in listed} == shas and len(listed) == 5
    assert calls["ListObjectsV2"] >= 4  # 8 keys under the prefix, 2 per page
    # another prefix in the same bucket is another store
    assert list(make_store(prefix="elsewhere").list()) == []


def test_delete_is_idempotent_and_a_missing_blob_is_not_found(
    make_store: MakeStore, s3_bucket: str, tmp_path: Path
) -> None:
    store = make_store()
    sha, _ = store.put_file(write_bytes(tmp_path / "a.zip", b"some package bytes"))
    store.delete(sha)
    store.delete(sha)  # again: no error
    assert not store.exists(sha)
    assert list(store.list()) == []

    with pytest.raises(NotFoundError) as err:  # what LocalBlobStore raises
        store.open(sha)
    e = err.value
    assert isinstance(e, S3BlobNotFoundError) and isinstance(e, MarketError)
    assert (e.bucket, e.key, e.operation, e.code) == (s3_bucket, store.key(sha), "GetObject",
                                                      "NoSuchKey")
    assert sha in str(e) and f"s3://{s3_bucket}/{store.key(sha)}" in str(e)
    with pytest.raises(NotFoundError):
        hash_blob(store, sha)


def test_a_large_blob_goes_up_in_parts(
    make_store: MakeStore, raw: Any, s3_bucket: str, tmp_path: Path
) -> None:
    store = make_store(part_size=5 * MiB)
    data = os.urandom(20 * MiB)
    src = write_bytes(tmp_path / "big.zip", data)
    with s3_calls(store) as calls:
        sha, size = store.put_file(src)
    assert (sha, size) == (hashlib.sha256(data).hexdigest(), len(data))
    assert calls["CreateMultipartUpload"] == 1 and calls["UploadPart"] == 4
    assert calls["CompleteMultipartUpload"] == 1 and calls["PutObject"] == 0
    head = raw.head_object(Bucket=s3_bucket, Key=store.key(sha))
    assert head["ContentLength"] == len(data) and head["ETag"].endswith('-4"')
    assert hash_blob(store, sha) == sha
    with store.open(sha) as f:
        assert f.read() == data


@pytest.mark.parametrize("size", [64 * 1024, 11 * MiB], ids=["single-put", "multipart"])
def test_bytes_that_change_during_the_upload_never_appear(
    make_store: MakeStore, raw: Any, s3_bucket: str, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, size: int,
) -> None:
    """The file is hashed, then sent: if what is sent no longer hashes to the key (the file
    changed in between), the transfer fails before the object is complete."""
    store = make_store(part_size=5 * MiB)
    src = write_bytes(tmp_path / "a.zip", os.urandom(size))
    claimed = hashlib.sha256(b"what the first pass saw").hexdigest()
    monkeypatch.setattr(s3blobs, "sha256_file", lambda path: (claimed, size))
    with pytest.raises(S3IntegrityError, match="changed while it was uploaded") as err:
        store.put_file(src)
    assert err.value.key == store.key(claimed) and isinstance(err.value, MarketError)
    assert "Contents" not in raw.list_objects_v2(Bucket=s3_bucket)
    assert raw.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []


def test_tampered_object_is_caught_by_the_hash_check(
    make_store: MakeStore, raw: Any, s3_bucket: str, tmp_path: Path
) -> None:
    store = make_store()
    good = os.urandom(10_000)
    sha, _ = store.put_file(write_bytes(tmp_path / "a.zip", good))
    evil = bytearray(good)
    evil[5000] ^= 0xFF  # one flipped byte, same size
    raw.put_object(Bucket=s3_bucket, Key=store.key(sha), Body=bytes(evil),
                   Metadata={"sha256": sha})  # even the recorded hash is forged
    assert store.exists(sha)
    actual = hash_blob(store, sha)
    assert actual == hashlib.sha256(evil).hexdigest() != sha


def test_stale_multipart_uploads_are_aborted(
    make_store: MakeStore, raw: Any, s3_bucket: str
) -> None:
    store = make_store()
    store.ensure_bucket()
    key = store.key("ab" * 32)
    raw.create_multipart_upload(Bucket=s3_bucket, Key=key)  # a writer that crashed
    raw.create_multipart_upload(Bucket=s3_bucket, Key="not-ours/x.zip")
    # (moto reports a fixed "Initiated" date in 2010: "too young" means older than the epoch)
    assert store.abort_stale_uploads(older_than=time.time()) == 0
    assert store.abort_stale_uploads(older_than=0) == 1
    left = raw.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", [])
    assert [u["Key"] for u in left] == ["not-ours/x.zip"]


# ---------------------------------------------------------------------- errors


def test_a_read_cut_short_is_an_s3_error(make_store: MakeStore, tmp_path: Path) -> None:
    from botocore.exceptions import ReadTimeoutError

    store = make_store()
    sha, _ = store.put_file(write_bytes(tmp_path / "a.zip", os.urandom(3 * MiB)))
    f = store.open(sha)
    body = f.raw._body  # type: ignore[attr-defined]

    def fail(*_: Any) -> bytes:
        raise ReadTimeoutError(endpoint_url=store.client.meta.endpoint_url)

    body.read = fail
    with pytest.raises(S3UnavailableError) as err:
        f.read()
    assert err.value.code == "ReadTimeoutError" and err.value.key == store.key(sha)
    f.close()


def test_missing_bucket_is_named_when_creation_is_off(
    make_store: MakeStore, raw: Any, s3_bucket: str
) -> None:
    store = make_store(create_bucket=False)
    with pytest.raises(S3BucketMissingError) as err:
        store.exists("0" * 64)
    e = err.value
    assert e.bucket == s3_bucket and e.code in {"404", "NoSuchBucket"}
    assert s3_bucket in str(e) and "create_bucket" in str(e)
    assert e.__cause__ is None and e.__suppress_context__  # no botocore traceback attached
    assert "Buckets" not in raw.list_buckets() or s3_bucket not in {
        b["Name"] for b in raw.list_buckets()["Buckets"]
    }


def test_connection_refused_is_a_clear_error(make_store: MakeStore) -> None:
    port = free_port()  # nothing listens there
    store = make_store(endpoint_url=f"http://127.0.0.1:{port}", max_attempts=2,
                       connect_timeout=1, read_timeout=1)
    with pytest.raises(S3UnavailableError) as err:
        store.exists("0" * 64)
    e = err.value
    assert e.code == "EndpointConnectionError" and e.operation == "HeadBucket"
    assert f"127.0.0.1:{port}" in str(e) and e.bucket in str(e)
    assert isinstance(e, MarketError) and e.__cause__ is None


def test_bad_or_missing_credentials_are_access_errors(
    make_store: MakeStore, moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    store = make_store()
    sha, _ = store.put_file(write_bytes(tmp_path / "a.zip", b"bytes"))
    with moto_server.auth_enforced():  # the dummy key is unknown to the server's IAM
        fresh = make_store()
        with pytest.raises(S3AccessError) as err:
            fresh.exists(sha)
        assert err.value.code in {"403", "InvalidAccessKeyId"}
        assert "credentials" in str(err.value)
        with pytest.raises(S3AccessError) as err:
            store.open(sha)  # bucket already checked: GetObject itself is refused
        assert err.value.code == "InvalidAccessKeyId" and err.value.key == store.key(sha)

    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(S3AccessError, match="AWS_ACCESS_KEY_ID") as err:
        make_store().exists(sha)
    assert err.value.code == "NoCredentialsError"


def test_every_store_error_is_a_market_error() -> None:
    for cls in (S3BlobNotFoundError, S3AccessError, S3BucketMissingError, S3UnavailableError,
                S3IntegrityError):
        assert issubclass(cls, S3BlobError) and issubclass(cls, MarketError)
    assert issubclass(S3BlobNotFoundError, NotFoundError)
    with pytest.raises(ValueError):
        S3BlobStore("ab")
    with pytest.raises(ValueError):
        S3BlobStore("bucket", part_size=MiB)


# ---------------------------------------------------------------------- a market on S3


def test_market_end_to_end_on_s3(
    make_store: MakeStore, raw: Any, s3_bucket: str, db_url: str | None, tmp_path: Path
) -> None:
    store = make_store()
    home = tmp_path / "home"
    pkg = digits_package(tmp_path, (5, 6))
    with Market(home, database_url=db_url, blob_store=store) as market:
        res = market.add(pkg)
        assert res.accepted, res.report
        sha, lid = res.package_sha256, res.learnware_id
        assert sha == sha256_file(pkg)[0]
        # the package lives in the bucket, not under the market's home
        assert store.exists(sha)
        assert [o["Key"] for o in raw.list_objects_v2(Bucket=s3_bucket)["Contents"]] == [
            store.key(sha)
        ]
        assert not list((home / "blobs").glob("??/??/*"))

        X, y = class_rows((5, 6), train=False)
        assert lid in search_ids(market, {"task_type": "Classification"}, spec=user_spec(X))
        assert lid in search_ids(market, {"text": "handwritten digits"})
        with market.load(lid) as lw:
            assert np.mean(lw.predict(X) == y) > 0.8
        out = market.download(lid, tmp_path / "out.zip")
        assert sha256_file(out)[0] == sha and out.read_bytes() == pkg.read_bytes()
        assert market.get(lid).download_count == 1
        assert market.verify() == []

        # bytes changed in the bucket are refused and reported, then a re-put repairs them
        raw.put_object(Bucket=s3_bucket, Key=store.key(sha), Body=b"not the package")
        with pytest.raises(BlobIntegrityError, match=lid) as err:
            market.download(lid, tmp_path / "bad.zip")
        assert err.value.expected == sha
        assert err.value.actual == hashlib.sha256(b"not the package").hexdigest()
        assert not (tmp_path / "bad.zip").exists()
        problems = market.verify()
        assert len(problems) == 1 and lid in problems[0], problems
        store.put_file(pkg)
        assert market.verify() == []

        # a blob no version references (a crashed add) is swept
        orphan, _ = store.put_file(write_bytes(tmp_path / "orphan.zip", b"left by a crash"))
        assert market.sweep(grace_seconds=0).removed_blobs == [orphan]
        assert not store.exists(orphan) and store.exists(sha)

        # delete releases the package: the object goes
        market.delete(lid)
        assert not store.exists(sha)
        assert "Contents" not in raw.list_objects_v2(Bucket=s3_bucket)
        assert market.verify() == []


def test_settings_choose_the_blob_store(
    moto_server: MotoServer, s3_env: None, s3_bucket: str, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """LEARNDOCK_BLOB_URL=s3://... puts a Market's packages in the bucket: every node that
    shares the database and the bucket sees them."""
    from learndock.config import Settings
    from learndock.market.backends import open_blob_store
    from learndock.market.blobstore import LocalBlobStore

    assert isinstance(open_blob_store(Settings(home=tmp_path)), LocalBlobStore)
    assert isinstance(open_blob_store(Settings(blob_url=f"file://{tmp_path}/b")), LocalBlobStore)
    with pytest.raises(MarketError, match="LEARNDOCK_BLOB_URL"):
        open_blob_store(Settings(blob_url="ftp://host/x"))

    monkeypatch.setenv("LEARNDOCK_BLOB_URL", f"s3://{s3_bucket}/dock")
    monkeypatch.setenv("LEARNDOCK_S3_ENDPOINT_URL", moto_server.endpoint_url)
    pkg = digits_package(tmp_path, (3, 4))
    with Market(tmp_path / "home") as market:
        assert isinstance(market.blobs, s3blobs.S3BlobStore)
        res = market.add(pkg)
        assert res.accepted, res.report
        assert market.blobs.key(res.package_sha256).startswith("dock/sha256/")
        assert market.blobs.exists(res.package_sha256)
    with Market(tmp_path / "other-node-home") as node2:  # same bucket, its own (empty) db
        assert node2.blobs.exists(res.package_sha256)
