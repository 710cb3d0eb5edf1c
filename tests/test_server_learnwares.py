"""Dock server: upload -> queued -> published, search, download, versions, ownership, hostile
uploads, size caps, injection strings -- against a real uvicorn server on loopback."""

from __future__ import annotations

import hashlib
import json
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pytest
from sklearn.datasets import load_digits

from hostile import caps_packages as caps
from hostile.jail_packages import hostile_package
from learndock.client import AuthenticationError, ForbiddenError
from learndock.errors import NotFoundError, PackageError
from learndock.sandbox import jail_support
from learndock.spec import RKMETableSpec
from learndock.spec.kernels import GaussianKernel
from market_helpers import digits_package
from server_helpers import LiveServer, error_of, zip_dir

pytestmark = pytest.mark.integration

INJECTIONS = ["' OR 1=1 --", '"', "*", "NEAR(", "a:b", "%", "\x00", "1; DROP TABLE users",
              "') OR ('1'='1", "title:*", "-1", "1e309", "../../etc/passwd", "%00", "\\"]


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with LiveServer(tmp_path_factory.mktemp("dock") / "home", workers=1) as s:
        yield s


@pytest.fixture(scope="module")
def published(srv: LiveServer, skops_clf_zip: Path) -> dict:
    """One published skops digits classifier, its owner's client and id."""
    owner, email = srv.account()
    sub = owner.upload(skops_clf_zip)
    v = owner.wait(sub.learnware_id, timeout=120)
    return {"owner": owner, "email": email, "id": sub.learnware_id, "version": v,
            "sub": sub}


def _digits_user_rows() -> np.ndarray:
    X, y = load_digits(return_X_y=True)
    return (X / 16.0)[np.isin(y, [0, 1, 2])][:200]


# ---------------------------------------------------------------------- lifecycle
def test_upload_is_queued_then_published_and_searchable(srv: LiveServer, published: dict,
                                                        skops_clf_zip: Path) -> None:
    sub, v = published["sub"], published["version"]
    assert sub.state == "queued" and sub.version == 1
    assert sub.package_sha256 == v.package_sha256
    assert [c["name"] for c in sub.report["checks"]] == ["archive", "manifest and specs"]
    assert v.state == "published" and v.current and v.verified_at is not None
    names = [c["name"] for c in v.report["checks"]]
    assert "model runs" in names and all(c["ok"] for c in v.report["checks"])
    assert v.job is not None and v.job.state == "done" and v.job.attempts == 1
    anon = srv.client()
    info = anon.get(published["id"])
    assert info.status == "accepted" and info.current_version == 1
    assert info.owner == published["owner"].me().id
    assert info.semantic.name == "digits classifier"
    assert published["id"] in [i.id for i in anon.list(page_size=100).items]
    # Search with a user's spec built under the island's kernel.
    kernel = anon.kernel_for(64)
    assert kernel is not None
    spec = RKMETableSpec.fit(_digits_user_rows(), 10, kernel=kernel, random_state=0)
    res = anon.search({"data_type": "Table", "task_type": "Classification"}, spec=spec)
    assert published["id"] in [m.learnware_id for m in res.single]
    best = res.single[0]
    assert best.score is not None and 0 < best.score <= 1 and best.island
    assert res.explanation and "total" in res.timings_ms
    # Raw: the response model names every field.
    with srv.http() as h:
        raw = h.post("/search", json={"query": {"task_type": "Classification"},
                                      "spec": spec.to_dict(), "top_k": 3})
    assert raw.status_code == 200
    body = raw.json()
    assert set(body) == {"single", "mixture", "cross_island", "explanation", "timings_ms",
                         "learnware_ids"}
    assert set(body["single"][0]) >= {"learnware_id", "name", "version", "score", "mmd", "island"}
    # Others see the published version without its check log.
    versions = anon.versions(published["id"])
    assert [x.number for x in versions] == [1] and versions[0].report == {}


def test_island_kernel_file_and_admin_revision(srv: LiveServer, published: dict) -> None:
    anon = srv.client()
    island = anon.get(published["id"]).island
    doc = anon.island_kernel(island)
    assert doc["island"] == island and doc["kernel_version"] >= 1
    assert GaussianKernel.from_dict(doc["kernel"]) == anon.kernel_for(64)
    assert [h["version"] for h in doc["history"]][-1] == doc["kernel_version"]
    with srv.http() as h:
        r = h.get("/islands/table:d3:nothing/kernel")
        assert r.status_code == 404 and error_of(r)["code"] == "not_found"
        r = h.post(f"/admin/islands/{island}/revise-kernel")
        assert r.status_code == 401
    with srv.http(published["owner"].token) as h:
        assert h.post(f"/admin/islands/{island}/revise-kernel").status_code == 403
    admin, _ = srv.account(admin=True)
    with srv.http(admin.token) as h:
        r = h.post(f"/admin/islands/{island}/revise-kernel")
    assert r.status_code == 200, r.text
    out = r.json()
    # one spec in the island: too few to judge a kernel by, so it is kept
    assert out["changed"] is False and "too few" in out["reason"]
    assert out["kernel_version"] == doc["kernel_version"]


def test_download_verifies_counts_and_caches(srv: LiveServer, published: dict,
                                             tmp_path: Path) -> None:
    lid, sha = published["id"], published["version"].package_sha256
    with srv.http() as h:
        r = h.get(f"/learnwares/{lid}/download")
    assert r.status_code == 200 and r.headers["content-type"] == "application/zip"
    assert r.headers["x-learndock-sha256"] == sha == hashlib.sha256(r.content).hexdigest()
    assert r.headers["x-learndock-version"] == "1"
    assert zipfile.ZipFile(__import__("io").BytesIO(r.content)).testzip() is None
    count = srv.client().get(lid).download_count
    c = srv.client(home=tmp_path / "client-home")
    path = c.download(lid)
    assert path == tmp_path / "client-home" / "cache" / "downloads" / f"{sha}.zip"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == sha
    assert c.get(lid).download_count == count + 1
    again = c.download(lid, dest=tmp_path)  # from the cache: not downloaded again
    assert again == tmp_path / f"{lid}-v1.zip" and again.read_bytes() == path.read_bytes()
    assert c.get(lid).download_count == count + 1
    path.write_bytes(b"corrupted")  # a damaged cache entry is fetched again
    assert hashlib.sha256(c.download(lid).read_bytes()).hexdigest() == sha
    assert c.get(lid).download_count == count + 2
    lw = c.load(lid)
    try:
        pred = lw.predict(_digits_user_rows()[:20])
        assert pred.shape == (20,) and set(np.unique(pred)) <= set(range(10))
    finally:
        lw.close()
    with pytest.raises(NotFoundError):
        c.download(lid, version=7)
    with pytest.raises(NotFoundError):
        c.get("0123456789abcdef")


def test_new_versions_are_owner_only_and_deletes_owner_or_admin(
        srv: LiveServer, published: dict, skops_clf_dir: Path, tmp_path: Path) -> None:
    owner = published["owner"]
    z = digits_package(tmp_path, (3, 4, 5), description=f"a rival {uuid.uuid4().hex}")
    sub = owner.upload(z, wait=True)
    lid = sub.learnware_id
    assert sub.state == "published"
    z2 = digits_package(tmp_path, (3, 4, 5), version="2.0.0")
    v2 = owner.update(lid, z2, wait=True)
    assert v2.version == 2 and v2.state == "published"
    info = owner.get(lid)
    assert info.current_version == 2 and info.latest_version == 2
    assert [v.semver for v in owner.versions(lid)] == ["1.0.0", "2.0.0"]
    other, _ = srv.account()
    with pytest.raises(ForbiddenError, match="owner"):
        other.update(lid, z2)
    with pytest.raises(ForbiddenError, match="owner"):
        other.delete(lid)
    with pytest.raises(ForbiddenError):
        other.status(lid)
    with pytest.raises(AuthenticationError):
        srv.client().delete(lid)
    with srv.http(other.token) as h:  # raw: a 403 with the typed body
        r = h.delete(f"/learnwares/{lid}")
        assert r.status_code == 403 and error_of(r)["code"] == "forbidden"
        r = h.post(f"/learnwares/{lid}/versions", files={"file": ("x.zip", z2.read_bytes())})
        assert r.status_code == 403
    assert owner.get(lid).latest_version == 2  # nothing was added by the refused upload
    owner.delete(lid)
    with pytest.raises(NotFoundError):
        srv.client().get(lid)
    # An admin deletes anyone's learnware.
    sub3 = other.upload(z, wait=True)
    admin, _ = srv.account(admin=True)
    admin.delete(sub3.learnware_id)
    with pytest.raises(NotFoundError):
        other.get(sub3.learnware_id)


def test_python_model_writing_outside_its_jail_is_rejected(srv: LiveServer, tmp_path: Path,
                                                           gauss_spec: RKMETableSpec) -> None:
    sentinel = tmp_path / "sentinel.txt"
    sentinel.write_text("untouched")
    blobs = srv.settings.resolved_home / "blobs"
    before = sorted(p.name for p in blobs.rglob("*") if p.is_file())
    attacks = f"""
    attempt("blob dir", lambda: write({str(blobs / "evil.zip")!r}, "pwned"))
    write({str(sentinel)!r}, "pwned")
    """
    pkg = zip_dir(hostile_package(tmp_path / "hostile", gauss_spec, attacks,
                                  name="escape-artist"))
    owner, _ = srv.account()
    sub = owner.upload(pkg, wait=True)
    assert sub.state == "rejected"
    st = owner.status(sub.learnware_id)
    assert st.state == "rejected" and st.current_version is None
    log = json.dumps(st.versions[0].report)
    checks = {c["name"]: c for c in st.versions[0].report["checks"]}
    assert not checks["model runs"]["ok"]
    assert "sentinel.txt" in checks["model runs"]["message"]
    if jail_support().available:
        assert checks["isolation"]["message"].startswith("bubblewrap")
    else:
        assert "jail" in log
    assert sentinel.read_text() == "untouched"
    assert not (blobs / "evil.zip").exists()
    # The blob store gained exactly the rejected package (kept, as its log is), nothing else.
    after = {p.name for p in blobs.rglob("*") if p.is_file()}
    assert after == set(before) | {sub.package_sha256}
    # Not published: invisible to others, not searchable, not downloadable.
    other, _ = srv.account()
    with pytest.raises(NotFoundError):
        other.get(sub.learnware_id)
    with srv.http() as h:
        assert h.get(f"/learnwares/{sub.learnware_id}/download").status_code == 404
        assert h.get(f"/learnwares/{sub.learnware_id}/versions").status_code == 404
    assert sub.learnware_id not in srv.client().search({"text": "escape"}).learnware_ids
    assert sub.learnware_id in [i.id for i in owner.list(mine=True).items]


@pytest.mark.parametrize("case", ["traversal", "absolute-path", "symlink", "aggregate-ratio",
                                  "overlapping-entries-bomb", "top-level-billion-laughs"])
def test_hostile_archives_are_refused_with_a_clear_message(srv: LiveServer, tmp_path: Path,
                                                           case: str) -> None:
    build, needles = caps.CASES[case]
    z = build(tmp_path)
    owner, _ = srv.account()
    with srv.http(owner.token) as h:
        r = h.post("/learnwares", files={"file": ("package.zip", z.read_bytes(),
                                                  "application/zip")})
    assert r.status_code in (400, 422), r.text
    err = error_of(r)
    assert err["code"] == "package_rejected"
    for needle in needles:
        assert needle in err["message"], (needle, err["message"])
    assert err["details"]["ok"] is False
    assert owner.list(mine=True).total == 0  # nothing stored
    with pytest.raises(PackageError):  # the client raises it as a package error
        owner.upload(z)


def test_upload_refuses_bodies_that_are_not_a_package(srv: LiveServer, skops_clf_zip: Path) -> None:
    owner, _ = srv.account()
    data = skops_clf_zip.read_bytes()
    with srv.http(owner.token) as h:
        r = h.post("/learnwares", content=data, headers={"content-type": "text/plain"})
        assert r.status_code == 415 and error_of(r)["code"] == "unsupported_media_type"
        r = h.post("/learnwares", files={"other": ("x", b"1")})
        assert r.status_code == 422 and "unexpected form field" in error_of(r)["message"]
        r = h.post("/learnwares", files={"file": ("a.zip", b"PK not a zip at all")})
        assert r.status_code == 422 and error_of(r)["code"] == "package_rejected"
        r = h.post("/learnwares", content=data, headers={"content-type": "application/zip"})
        assert r.status_code == 202 and r.json()["state"] == "queued"  # a raw zip body works
    with srv.http() as h:
        r = h.post("/learnwares", files={"file": ("a.zip", data)})
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"


def test_size_caps_answer_413_while_streaming(tmp_path: Path, skops_clf_zip: Path) -> None:
    cap = 64 * 1024
    with LiveServer(tmp_path / "home", workers=0, max_upload_bytes=cap,
                    max_search_bytes=32 * 1024) as s:
        owner, _ = s.account()
        big = b"PK" + b"\x00" * (4 * cap)
        with s.http(owner.token) as h:
            r = h.post("/learnwares", content=big, headers={"content-type": "application/zip"})
            assert r.status_code == 413 and error_of(r)["details"]["limit"] == cap

            def chunks():  # no Content-Length: the cap is counted while the body streams
                for _ in range(16):
                    yield b"\x00" * (cap // 4)

            r = h.post("/learnwares", content=chunks(),
                       headers={"content-type": "application/zip"})
            assert r.status_code == 413 and error_of(r)["code"] == "payload_too_large"
            r = h.post("/search", content=b'{"query": {"text": "' + b"a" * 40000 + b'"}}',
                       headers={"content-type": "application/json"})
            assert r.status_code == 413
        assert list(s.settings.tmp_dir.iterdir()) == []  # no temp file left behind
        assert owner.list(mine=True).total == 0
        assert owner.upload(skops_clf_zip).state == "queued"  # under the cap: accepted


# ---------------------------------------------------------------------- lists and search
def test_listing_filters_paging_and_sorting(srv: LiveServer, tmp_path: Path) -> None:
    word = f"zq{uuid.uuid4().hex[:8]}"
    owner, _ = srv.account()
    titles = ["Charlie digits", "alpha digits", "Bravo digits"]
    ids = {}
    for i, title in enumerate(titles):
        z = digits_package(tmp_path, (i, i + 1, i + 2), title=title,
                           description=f"digits for the {word} listing test",
                           scenarios=["Education"] if i else ["Financial"])
        ids[title] = owner.upload(z, wait=True).learnware_id
    anon = srv.client()
    pg = anon.list({"text": word}, sort="name")
    assert [i.semantic.name for i in pg.items] == ["alpha digits", "Bravo digits",
                                                   "Charlie digits"]
    assert pg.total == 3
    pages = [anon.list({"text": word}, page=p, page_size=2, sort="name") for p in (0, 1, 2)]
    assert [len(p.items) for p in pages] == [2, 1, 0] and all(p.total == 3 for p in pages)
    assert [i.id for p in pages for i in p.items] == [i.id for i in pg.items]
    recent = anon.list({"text": word})
    assert [i.id for i in recent.items] == [ids[t_] for t_ in reversed(titles)]
    anon.download(ids["Bravo digits"])
    assert anon.list({"text": word}, sort="downloads").items[0].id == ids["Bravo digits"]
    fin = anon.list({"text": word, "scenarios": ["Financial"]})
    assert [i.id for i in fin.items] == [ids["Charlie digits"]]
    assert anon.list({"text": word, "task_type": "Regression"}).total == 0
    owner_id = owner.me().id
    assert anon.list(owner=owner_id).total == 3
    with srv.http() as h:
        r = h.get("/learnwares", params={"sort": "price"})
        assert r.status_code == 422
        r = h.get("/learnwares", params={"page_size": 5000})
        assert r.status_code == 422


def test_injection_strings_are_harmless_everywhere(srv: LiveServer, published: dict) -> None:
    with srv.http() as h:
        baseline = h.get("/learnwares", params={"page_size": 100}).json()
    base_ids = {i["id"] for i in baseline["items"]}
    fields = ["q", "data_type", "task_type", "library_type", "scenarios", "license",
              "input_dimension", "output_dimension", "owner", "page", "page_size", "sort",
              "mine"]
    token = published["owner"].token
    with srv.http() as anon, srv.http(token) as auth:
        for s in INJECTIONS:
            for f in fields:
                for h in (anon, auth) if f == "mine" else (anon,):
                    r = h.get("/learnwares", params={f: s, "page_size": 100})
                    assert r.status_code in (200, 401, 422), (f, s, r.status_code, r.text)
                    if r.status_code == 200:
                        got = {i["id"] for i in r.json()["items"]}
                        assert got <= base_ids, (f, s)  # never more rows
                        assert r.json()["total"] <= baseline["total"]
                    else:
                        assert error_of(r)["code"] in ("validation_error", "invalid_spec",
                                                       "unauthorized")
            for body in ({"query": {"text": s}}, {"query": {"data_type": s}},
                         {"query": {"scenarios": [s]}}, {"query": {s: s}},
                         {"query": {"text": s}, "top_k": s}, {"spec": {"type": s}}):
                r = anon.post("/search", json=body)
                assert r.status_code in (200, 422), (body, r.status_code, r.text)
                if r.status_code == 200:
                    assert {m["learnware_id"] for m in r.json()["single"]} <= base_ids
            e = quote(s, safe="")
            for path in (f"/learnwares/{e}", f"/learnwares/{e}/versions",
                         f"/learnwares/{published['id']}/download?version={e}",
                         f"/learnwares/{published['id']}/versions/{e}", f"/tokens/{e}"):
                r = auth.request("DELETE" if path.startswith("/tokens") else "GET", path)
                assert r.status_code in (404, 405, 422), (path, r.status_code, r.text)
                assert error_of(r)["code"]
            for cred in ({"email": s, "password": s * 8}, {"email": f"x{s}@example.org",
                                                           "password": "p" * 10}):
                r = anon.post("/auth/login", json=cred)
                assert r.status_code in (401, 422), (cred, r.text)
    with srv.http() as h:
        after = h.get("/learnwares", params={"page_size": 100}).json()
    assert {i["id"] for i in after["items"]} >= base_ids
    assert srv.client().get(published["id"]).status == "accepted"
    assert published["owner"].me().email == published["email"]  # users table intact


def test_search_validates_specs(srv: LiveServer, published: dict) -> None:
    anon = srv.client()
    kernel = anon.kernel_for(64)
    spec = RKMETableSpec.fit(_digits_user_rows(), 5, kernel=kernel, random_state=0).to_dict()
    bad = {**spec, "z": [[float("nan")] * 64] * 5}
    with srv.http() as h:
        r = h.post("/search", content=json.dumps({"spec": bad}).replace("NaN", "1e400"),
                   headers={"content-type": "application/json"})
        assert r.status_code == 422 and error_of(r)["code"] == "invalid_spec"
        r = h.post("/search", json={"spec": {**spec, "z": [[0.0] * 64] * 6000,
                                             "beta": [1 / 6000] * 6000}})
        assert r.status_code in (413, 422)
        assert "5000" in error_of(r)["message"] or error_of(r)["code"] == "payload_too_large"
        other = RKMETableSpec.fit(_digits_user_rows(), 5, gamma=0.5, random_state=0)
        r = h.post("/search", json={"spec": other.to_dict()})
        assert r.status_code == 200
        assert any("kernel" in line for line in r.json()["explanation"])
        r = h.post("/search", json={"query": {"task_type": "Teleportation"}})
        assert r.status_code == 422 and "task_type" in error_of(r)["message"]
        r = h.post("/search", json={"unknown": 1})
        assert r.status_code == 422 and error_of(r)["code"] == "validation_error"


# ---------------------------------------------------------------------- operations
def test_health_metrics_openapi_and_typed_errors(srv: LiveServer, published: dict) -> None:
    with srv.http() as h:
        health = h.get("/health").json()
        assert health["status"] == "ok" and health["database"]["ok"] is True
        assert health["jail"]["available"] == jail_support().available
        assert health["queue"]["workers"]["kind"] == "threads"
        assert {"depth", "jobs"} <= set(health["queue"])
        metrics = h.get("/metrics").json()
        assert metrics["learnwares"]["published"] >= 1
        assert metrics["versions"]["published"] >= 1 and metrics["queue"]["jobs"]["done"] >= 1
        schema = h.get("/openapi.json").json()
        assert schema["openapi"].startswith("3.")
        assert "/api/v1/search" in schema["paths"] and "/api/v1/learnwares" in schema["paths"]
        comps = schema["components"]["schemas"]
        assert {"SearchResponse", "LearnwareOut", "ErrorResponse", "VersionOut"} <= set(comps)
        assert "multipart/form-data" in \
            schema["paths"]["/api/v1/learnwares"]["post"]["requestBody"]["content"]
        r = h.get("/no/such/route")
        assert r.status_code == 404 and error_of(r)["code"] == "not_found"
        r = h.put("/health")
        assert r.status_code == 405 and error_of(r)["code"] == "method_not_allowed"
        r = h.get("/learnwares/0123456789abcdef")
        assert r.status_code == 404 and "0123456789abcdef" in error_of(r)["message"]
