"""The reference's own client (``learnware.client.LearnwareClient`` from PyPI ``learnware``
0.4.0.post1, unchanged, in the test-only ``.venv-ref``) against a real dock server on loopback:
``/beimingwu`` serves the part of the reference dock's API it calls.

One script runs inside the reference environment (it never imports learndock) and drives the
whole life of learnwares through the client -- connect, log in with an account's e-mail and a
learndock API token, upload reference-format zips (the reference dock's own test zip and two
written by the reference's template API) in chunks, wait for verification, list, read a semantic
spec, search by semantic spec and by a reference RKME table spec (single and mixture results),
download and load with the client's own ``load_learnware`` and predict, update, delete -- and
loads a learnware uploaded in learndock's format (skops) through ``/api/v1``. It writes what it
saw as JSON and its predictions as ``.npy``; the tests compare them with learndock's own loads.

The HTTP-level tests below (auth mapping, envelope, chunk protocol) and the wrapper tests
(learndock packages as reference zips, run here with learndock's stand-in for the reference's
``BaseModel``) need no reference environment.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
import sys
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml
from sklearn.datasets import load_digits

from learndock.errors import NotFoundError
from learndock.sandbox import jail_support
from reference_env import require_reference_python, run_reference
from server_helpers import PASSWORD, LiveServer, wait_for

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "reference-dock"
N_FEATURES = 8

# ---------------------------------------------------------------------- the reference side
CLIENT_SCRIPT = r'''
import json, os, sys, tempfile, time, traceback
import numpy as np


def main(cfg_path):
    cfg = json.load(open(cfg_path))
    out = cfg["out"]
    from learnware.client import LearnwareClient
    from learnware.market import BaseUserInfo
    from learnware.specification import (RKMETableSpecification, generate_rkme_table_spec,
                                         generate_semantic_spec)
    from learnware.tests.templates import LearnwareTemplate, PickleModelTemplate, StatSpecTemplate
    from sklearn.linear_model import LogisticRegression
    import pickle

    res = {"steps": []}

    def step(name):
        res["steps"].append(name)
        json.dump(res, open(os.path.join(out, "result.json"), "w"), indent=1)

    host, dim = cfg["host"], cfg["dim"]
    client = LearnwareClient(host=host, timeout=120)
    res["connected"] = client.is_connected()
    res["connected_elsewhere"] = LearnwareClient(host=cfg["base"] + "/nowhere").is_connected()
    try:
        client.login(cfg["email"], "ld_" + "x" * 43)
        res["bad_login"] = "accepted"
    except Exception as exc:
        res["bad_login"] = str(exc)
    client.login(cfg["email"], cfg["token"])
    res["logged_in"] = client.is_login()
    from learnware.client.learnware_client import SemanticSpecificationKey
    res["tasks"] = client.list_semantic_specification_values(SemanticSpecificationKey.TASK_TYPE)
    step("login")

    # Two table learnwares written by the reference's template API, on two regions of a space.
    data = {k: np.load(os.path.join(out, f"x_{k}.npy")) for k in ("a", "b", "a_user", "mixed")}
    tmp = tempfile.mkdtemp(dir=out)
    ids = {}

    def sem(name, desc):
        return generate_semantic_spec(
            name=name, description=desc, data_type="Table", task_type="Classification",
            library_type="Scikit-learn", scenarios=["Education"], license="MIT",
            input_description={"Dimension": dim,
                               "Description": {str(i): f"feature {i}" for i in range(dim)}},
            output_description={"Dimension": 2, "Description": {"0": "low", "1": "high"}})

    sems = {}
    for key in ("a", "b"):
        X = data[key]
        y = (X[:, 0] + X[:, 1] > np.median(X[:, 0] + X[:, 1])).astype(int)
        pkl = os.path.join(tmp, key + ".pkl")
        pickle.dump(LogisticRegression().fit(X, y), open(pkl, "wb"))
        spec = generate_rkme_table_spec(X, gamma=0.1, reduced_set_size=20, cuda_idx=-1)
        spec_path = os.path.join(tmp, key + "_stat.json")
        spec.save(spec_path)
        zip_path = os.path.join(out, key + ".zip")
        LearnwareTemplate.generate_learnware_zipfile(
            zip_path,
            PickleModelTemplate(pickle_filepath=pkl, model_kwargs={
                "input_shape": (dim,), "output_shape": (2,), "predict_method": "predict_proba"}),
            StatSpecTemplate(filepath=spec_path, type="RKMETableSpecification"),
            requirements=["scikit-learn"],
        )
        if key == "b":  # other files may ride along: 2.5 MB of them make the upload 3 chunks
            import zipfile
            with zipfile.ZipFile(zip_path, "a") as z:
                z.writestr("weights.bin", np.random.default_rng(0).bytes(2_500_000))
            res["size_b"] = os.path.getsize(zip_path)
        sems[key] = sem(f"Synthetic region {key.upper()} classifier",
                        f"A logistic regression on region {key.upper()} of a synthetic table.")
        ids[key] = client.upload_learnware(zip_path, sems[key])
    if cfg.get("fixture_zip"):
        fixture_sem = json.load(open(cfg["fixture_semantic"]))
        fixture_sem["Model"] = {"Type": "Optional", "Values": ["Others"]}
        ids["fixture"] = client.upload_learnware(cfg["fixture_zip"], fixture_sem)
    res["uploaded"] = ids
    step("upload")

    def statuses():
        return {lw["learnware_id"]: lw["verify_status"] for lw in client.list_learnware()}

    def wait(wanted, what):
        deadline = time.time() + 600
        while True:
            seen = statuses()
            res["status_" + what] = {i: seen.get(i) for i in wanted}
            if all(seen.get(i) in ("SUCCESS", "FAIL") for i in wanted):
                return
            if time.time() > deadline:
                raise TimeoutError(f"verification did not finish: {seen}")
            time.sleep(0.5)

    seen_waiting = statuses()
    res["first_statuses"] = seen_waiting
    wait(list(ids.values()), "after_upload")
    step("verified")

    listed = client.list_learnware()
    res["listed"] = sorted(lw["learnware_id"] for lw in listed)
    res["listed_keys"] = sorted(listed[0])
    res["semantic_a"] = client.get_semantic_specification(ids["a"])
    client.download_learnware(ids["b"], os.path.join(out, "b_served.zip"))
    step("list")

    table = generate_semantic_spec(data_type="Table", task_type="Classification")
    found = client.search_learnware(BaseUserInfo(semantic_spec=table))
    res["search_semantic"] = found["single"]["learnware_ids"]
    named = generate_semantic_spec(name="region", data_type="Table")
    res["search_named"] = client.search_learnware(BaseUserInfo(semantic_spec=named))["single"]["learnware_ids"]
    res["search_none"] = client.search_learnware(BaseUserInfo(semantic_spec=generate_semantic_spec(
        name="nothingmatchesthisword")))["single"]["learnware_ids"]
    step("search semantic")

    for key in ("a_user", "mixed"):
        spec = generate_rkme_table_spec(data[key], gamma=0.1, reduced_set_size=20, cuda_idx=-1)
        path = os.path.join(out, f"user_{key}.json")
        spec.save(path)
        user_spec = RKMETableSpecification()
        user_spec.load(path)  # the reference-format JSON, as a user would keep it
        found = client.search_learnware(BaseUserInfo(
            semantic_spec=table, stat_info={"RKMETableSpecification": user_spec}))
        res["search_" + key] = found
    step("search statistical")

    def load_and_predict(learnware_id, x_name, out_name):
        lw = client.load_learnware(learnware_id=learnware_id)
        if lw is None:
            raise RuntimeError(f"load_learnware returned None for {learnware_id}")
        X = np.load(os.path.join(out, x_name))
        np.save(os.path.join(out, out_name), np.asarray(lw.predict(X), dtype=np.float64))
        return lw

    lw = load_and_predict(ids["a"], "x_a_test.npy", "pred_a.npy")
    res["loaded_a"] = {"id": lw.id, "specs": sorted(lw.specification.get_stat_spec()),
                       "name": lw.specification.get_semantic_spec()["Name"]["Values"]}
    if "fixture" in ids:
        lw = load_and_predict(ids["fixture"], "x_digits_raw.npy", "pred_fixture.npy")
        res["loaded_fixture"] = {"id": lw.id, "class": type(lw.model).__name__}
    lw = load_and_predict(cfg["learndock_id"], "x_digits.npy", "pred_learndock.npy")
    model = lw.get_model()
    rkme = lw.specification.get_stat_spec()["RKMETableSpecification"]
    res["loaded_learndock"] = {
        "id": lw.id, "class": type(model).__name__, "loaded_with": model.runtime.loaded_with,
        "input_shape": list(model.input_shape), "output_shape": list(model.output_shape),
        "spec_points": int(rkme.z.shape[0]), "spec_dim": int(rkme.z.shape[1]),
        "spec_self_dist": float(rkme.dist(rkme)),
        "semantic_name": lw.specification.get_semantic_spec()["Name"]["Values"]}
    np.save(os.path.join(out, "proba_learndock.npy"),
            model.predict_proba(np.load(os.path.join(out, "x_digits.npy"))))
    step("load")

    new_sem = client.get_semantic_specification(ids["a"])
    new_sem["Description"]["Values"] = "Updated through the reference client."
    client.update_learnware(ids["a"], new_sem)
    client.update_learnware(ids["b"], sems["b"], os.path.join(out, "b.zip"))
    wait([ids["a"], ids["b"]], "after_update")
    res["semantic_a_updated"] = client.get_semantic_specification(ids["a"])["Description"]["Values"]
    step("update")

    client.delete_learnware(ids["b"])
    res["listed_after_delete"] = sorted(lw["learnware_id"] for lw in client.list_learnware())
    try:
        client.get_semantic_specification(ids["b"])
        res["deleted_info"] = "found"
    except Exception as exc:
        res["deleted_info"] = str(exc)
    step("delete")
    client.logout()
    try:
        client.login(cfg["email"], cfg["token"])
        client.headers = {"Authorization": "Bearer " + cfg["revoked_session"]}
        client.list_learnware()
        res["revoked_session"] = "accepted"
    except Exception as exc:
        res["revoked_session"] = str(exc)
    step("done")


if __name__ == "__main__":
    try:
        main(sys.argv[1])
    except Exception:
        traceback.print_exc()
        sys.exit(1)
'''


# ---------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with LiveServer(tmp_path_factory.mktemp("bmw") / "home", workers=1,
                    search_per_min=60000, search_burst=1000) as s:
        yield s


def _account(srv: LiveServer, admin: bool = False) -> tuple[str, str]:
    """A fresh account and a live API token of it (as `learndock tokens create` makes)."""
    email = f"ref{uuid.uuid4().hex[:10]}@example.org"
    user = srv.dock.accounts.create_user(email, PASSWORD, "admin" if admin else "user")
    return email, srv.dock.accounts.create_token(user.id, "reference client", kind="api").secret


def _regions() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    a = rng.normal(0.0, 1.0, size=(300, N_FEATURES))
    b = rng.normal(4.0, 1.0, size=(300, N_FEATURES))
    return {"a": a[:200], "b": b[:200], "a_test": a[200:], "a_user": a[200:],
            "mixed": np.vstack([a[200:], b[200:]])}


@pytest.fixture(scope="module")
def reference_run(srv: LiveServer, tmp_path_factory: pytest.TempPathFactory,
                  skops_clf_zip: Path) -> dict:
    python = require_reference_python()
    if not jail_support().available:
        pytest.skip(f"reference uploads are python models, verified in the jail: "
                    f"{jail_support().explain()}")
    out = tmp_path_factory.mktemp("reference-client")
    email, token = _account(srv)
    # A learndock-format (skops) learnware, uploaded through /api/v1 by the same account.
    api = srv.client(token)
    sub = api.upload(skops_clf_zip)
    api.wait(sub.learnware_id, timeout=300)
    # A session revoked by logout must stop working: one made (and revoked) ahead of time.
    session = srv.dock.accounts.create_token(srv.dock.accounts.find_user(email).id, "s",
                                             kind="login")
    srv.dock.accounts.revoke_token(session.token.id)
    X, _ = load_digits(return_X_y=True)
    for name, x in {**{f"x_{k}": v for k, v in _regions().items()},
                    "x_digits": X[:200] / 16.0, "x_digits_raw": X[:200]}.items():
        np.save(out / f"{name}.npy", x, allow_pickle=False)
    fixture = FIXTURES / "test_learnware.zip"
    cfg = {"host": srv.url + "/beimingwu", "base": srv.url, "dim": N_FEATURES, "email": email, "token": token,
           "out": str(out), "learndock_id": sub.learnware_id,
           "revoked_session": session.secret,
           "fixture_zip": str(fixture) if fixture.is_file() else None,
           "fixture_semantic": str(FIXTURES / "semantic_beimingwu.json")}
    (out / "config.json").write_text(json.dumps(cfg))
    script = out / "client_side.py"
    script.write_text(CLIENT_SCRIPT, encoding="utf-8")
    try:
        run_reference(python, script, [str(out / "config.json")], out / "home", timeout=1200)
    finally:
        partial = out / "result.json"
        steps = json.loads(partial.read_text())["steps"] if partial.is_file() else []
        print(f"reference client steps done: {steps}")
    result = json.loads((out / "result.json").read_text())
    return {"result": result, "out": out, "learndock_id": sub.learnware_id, "email": email}


# ---------------------------------------------------------------------- the real client
def test_client_connects_and_logs_in_with_an_api_token(reference_run: dict) -> None:
    r = reference_run["result"]
    assert r["steps"][-1] == "done"
    assert r["connected"] is True and r["connected_elsewhere"] is False
    assert '"code": 53' in r["bad_login"] and r["logged_in"] is True
    assert "Classification" in r["tasks"] and "Regression" in r["tasks"]
    assert '"code": 11' in r["revoked_session"]


def test_uploads_are_verified_and_listed(reference_run: dict, srv: LiveServer) -> None:
    r = reference_run["result"]
    ids = r["uploaded"]
    assert len(set(ids.values())) == len(ids) >= 2
    assert set(r["first_statuses"].values()) <= {"WAITING", "PROCESSING", "SUCCESS"}
    assert r["status_after_upload"] == {i: "SUCCESS" for i in ids.values()}
    assert set(ids.values()) | {reference_run["learndock_id"]} == set(r["listed"])
    assert {"learnware_id", "verify_status", "semantic_specification",
            "last_modify"} <= set(r["listed_keys"])
    assert r["semantic_a"]["Name"]["Values"] == "Synthetic region A classifier"
    assert r["semantic_a"]["Input"]["Dimension"] == N_FEATURES
    # B went up in 3 chunks of the client's 1 MiB, and comes back with every file it had.
    assert r["size_b"] > 2 * 1024 * 1024
    out = reference_run["out"]
    with zipfile.ZipFile(out / "b.zip") as sent, zipfile.ZipFile(out / "b_served.zip") as got:
        assert got.read("weights.bin") == sent.read("weights.bin")
        assert got.read("model.pkl") == sent.read("model.pkl")
        assert {"learnware.yaml", "semantic_specification.json", "__init__.py"} <= set(
            got.namelist())
        served = yaml.safe_load(got.read("learnware.yaml"))  # no !!python/tuple left
    assert served["id"] == ids["b"] and served["model"]["kwargs"]["input_shape"] == [N_FEATURES]
    # Through the same two-phase path as /api/v1: stored, verified in the jail, owned.
    owner = srv.dock.accounts.find_user(reference_run["email"]).id
    for key, i in ids.items():
        if key == "b":
            continue  # deleted at the end of the run
        first = srv.dock.market.versions(i)[0]
        assert srv.dock.market.get(i).owner == owner and first.uploaded_by == owner
        assert first.status == "accepted"
        checks = {c["name"]: c for c in first.report["checks"]}
        assert checks["isolation"]["message"].startswith("bubblewrap")


def test_semantic_search(reference_run: dict) -> None:
    r = reference_run["result"]
    ids = r["uploaded"]
    assert {ids["a"], ids["b"], reference_run["learndock_id"]} <= set(r["search_semantic"])
    assert set(r["search_named"]) == {ids["a"], ids["b"]}
    assert r["search_none"] == []


def test_statistical_search_single_and_multiple(reference_run: dict) -> None:
    r = reference_run["result"]
    ids = r["uploaded"]
    single = r["search_a_user"]["single"]
    assert single["learnware_ids"][0] == ids["a"]
    assert single["matching"][0] > single["matching"][1]
    assert r["search_a_user"]["multiple"]["learnware_ids"] == []
    mixed = r["search_mixed"]
    assert set(mixed["single"]["learnware_ids"][:2]) == {ids["a"], ids["b"]}
    assert sorted(mixed["multiple"]["learnware_ids"]) == sorted([ids["a"], ids["b"]])
    assert mixed["multiple"]["matching"] > max(mixed["single"]["matching"])


def test_downloaded_reference_learnwares_predict_as_ours(reference_run: dict,
                                                         srv: LiveServer) -> None:
    r, out = reference_run["result"], reference_run["out"]
    ids = r["uploaded"]
    assert r["loaded_a"] == {"id": ids["a"], "specs": ["RKMETableSpecification"],
                             "name": "Synthetic region A classifier"}
    cases = [("a", "x_a_test.npy", "pred_a.npy")]
    if "fixture" in ids:
        assert r["loaded_fixture"] == {"id": ids["fixture"], "class": "SVM"}
        cases.append(("fixture", "x_digits_raw.npy", "pred_fixture.npy"))
    for key, x_name, pred in cases:
        with srv.dock.market.load(ids[key], 1, runtime="sandbox") as lw:
            ours = lw.predict(np.load(out / x_name))
        theirs = np.load(out / pred)
        assert theirs.shape == ours.shape and ours.ndim == 2
        np.testing.assert_allclose(theirs, ours, rtol=1e-9, atol=1e-12)


def test_learndock_format_learnware_loads_in_the_reference(reference_run: dict,
                                                           srv: LiveServer) -> None:
    r, out = reference_run["result"], reference_run["out"]
    loaded = r["loaded_learndock"]
    assert loaded["id"] == reference_run["learndock_id"]
    assert loaded["class"] == "LearndockModel"
    # .venv-ref has no skops: the dock's pickle of the same estimator was used.
    assert loaded["loaded_with"] == "pickle"
    assert loaded["input_shape"] == [64] and loaded["output_shape"] == [1]
    assert loaded["semantic_name"] == "digits classifier"
    X = np.load(out / "x_digits.npy")
    with srv.dock.market.load(reference_run["learndock_id"]) as lw:
        ours, proba = lw.predict(X), lw.predict_proba(X)
        spec = lw.stat_spec
    np.testing.assert_array_equal(np.load(out / "pred_learndock.npy"), ours)
    np.testing.assert_allclose(np.load(out / "proba_learndock.npy"), proba, rtol=1e-9, atol=1e-12)
    assert (loaded["spec_points"], loaded["spec_dim"]) == spec.z.shape
    assert loaded["spec_self_dist"] == pytest.approx(0.0, abs=1e-9)


def test_update_and_delete(reference_run: dict, srv: LiveServer) -> None:
    r = reference_run["result"]
    ids = r["uploaded"]
    assert r["status_after_update"] == {ids["a"]: "SUCCESS", ids["b"]: "SUCCESS"}
    assert r["semantic_a_updated"] == "Updated through the reference client."
    versions = srv.dock.market.versions(ids["a"])
    assert [v.number for v in versions] == [1, 2] and versions[1].current
    assert srv.dock.market.get(ids["a"]).semantic.description == \
        "Updated through the reference client."
    assert ids["b"] not in r["listed_after_delete"] and ids["a"] in r["listed_after_delete"]
    assert '"code": 71' in r["deleted_info"]
    with pytest.raises(NotFoundError):
        srv.dock.market.get(ids["b"])


# ---------------------------------------------------------------------- over plain HTTP
def _post(srv: LiveServer, path: str, token: str | None = None, **kw):  # noqa: ANN202
    import httpx

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.post(f"{srv.url}/beimingwu{path}", headers=headers, timeout=60, **kw)


def _session(srv: LiveServer, email: str, token: str) -> str:
    r = _post(srv, "/auth/login_by_token", json={"email": email, "token": token})
    assert r.status_code == 200 and r.json()["code"] == 0
    return r.json()["data"]["token"]


def test_login_maps_onto_api_tokens(srv: LiveServer) -> None:
    email, token = _account(srv)
    other, other_token = _account(srv)
    # is_connected posts an empty body: never a 404.
    empty = _post(srv, "/auth/login_by_token")
    assert empty.status_code == 400 and empty.json()["code"] == 21
    for body in ({"email": email, "token": other_token},  # another account's token
                 {"email": email, "token": "ld_" + "y" * 43},  # no such token
                 {"email": "nobody@example.org", "token": token}):
        r = _post(srv, "/auth/login_by_token", json=body)
        assert r.status_code == 401 and r.json()["code"] == 53
        assert r.json()["msg"] == "login failed: wrong e-mail address or token"
    session = _session(srv, email.upper(), token)
    user = srv.dock.accounts.find_user(email)
    tokens = {t.kind: t for t in srv.dock.accounts.list_tokens(user.id)}
    assert tokens["login"].expires_at - tokens["login"].created_at <= 86400 + 1
    # A session cannot mint sessions (only API tokens log in); it is stored only as a hash.
    r = _post(srv, "/auth/login_by_token", json={"email": email, "token": session})
    assert r.json()["code"] == 53
    listed = _post(srv, "/user/list_learnware", session, json={"page": 0, "limit": 10000})
    assert listed.json() == {"code": 0, "msg": "Request success.", "data": {
        "learnware_list": [], "page": 0, "limit": 10000, "total_pages": 0, "total": 0}}
    assert _post(srv, "/user/list_learnware").json()["code"] == 11
    assert _post(srv, "/user/list_learnware").status_code == 401
    assert _post(srv, "/auth/logout", session).json()["code"] == 0
    gone = _post(srv, "/user/list_learnware", session, json={})
    assert gone.status_code == 401 and gone.json()["code"] == 11
    # A session never outlives the API token it came from.
    short = srv.dock.accounts.create_token(user.id, "short", kind="api", ttl_days=0.01)
    _session(srv, email, short.secret)
    latest = max(srv.dock.accounts.list_tokens(user.id), key=lambda t: t.created_at)
    assert latest.kind == "login" and latest.expires_at <= short.token.expires_at + 1
    del other


def test_errors_use_the_envelope_with_http_statuses(srv: LiveServer) -> None:
    import httpx

    email, token = _account(srv)
    session = _session(srv, email, token)
    info = httpx.get(f"{srv.url}/beimingwu/engine/learnware_info",
                     params={"learnware_id": "nosuchid"})
    assert info.status_code == 404 and info.json()["code"] == 71
    bad = httpx.get(f"{srv.url}/beimingwu/engine/learnware_info",
                    params={"learnware_id": "../../etc"})
    assert bad.status_code == 404 and bad.json()["code"] == 71
    dl = httpx.get(f"{srv.url}/beimingwu/engine/download_learnware",
                   params={"learnware_id": "nosuchid"})
    assert dl.status_code == 404 and dl.json()["code"] == 71
    spec = {"type": "RKMETableSpecification", "gamma": 0.1, "num_points": 3,
            "z": [[0.0, 1.0], [1.0, 0.0]], "beta": [-1.0, 2.0]}
    r = _post(srv, "/engine/search_learnware", session,
              data={"semantic_specification": "{}", "limit": "10", "page": "0"},
              files={"statistical_specification": ("s.json", json.dumps(spec))})
    assert r.status_code == 422 and r.json()["code"] == 41 and "negative" in r.json()["msg"]
    r = _post(srv, "/engine/search_learnware", data={"semantic_specification": "[1]"})
    assert r.status_code == 422 and r.json()["code"] == 21
    r = _post(srv, "/engine/search_learnware", data={"limit": "x"})
    assert r.status_code == 422 and r.json()["code"] == 21
    r = _post(srv, "/engine/search_learnware", data={
        "semantic_specification": json.dumps({"Task": {"Type": "Class", "Values": ["Dance"]}})})
    assert r.status_code == 422 and r.json()["code"] == 41
    r = _post(srv, "/user/delete_learnware", session, json={"learnware_id": "nosuchid"})
    assert r.status_code == 404 and r.json()["code"] == 71
    r = _post(srv, "/user/delete_learnware", session, content=b"{not json")
    assert r.status_code == 400 and r.json()["code"] == 21
    vocab = httpx.get(f"{srv.url}/beimingwu/engine/semantic_specification").json()["data"]
    assert "Classification" in vocab["semantic_specification"]["Task"]["Values"]
    assert vocab["semantic_specification"]["Model"]["Values"] == ["Others"]


def test_chunked_upload_protocol(srv: LiveServer, tmp_path: Path) -> None:
    email, token = _account(srv)
    session = _session(srv, email, token)
    payload = b"not a zip at all " * 100
    md5 = hashlib.md5(payload).hexdigest()

    def chunk(data: bytes, begin: int, file_hash: str = md5):  # noqa: ANN202
        return _post(srv, "/user/chunked_upload", session,
                     data={"file_hash": file_hash, "chunk_begin": str(begin)},
                     files={"chunk_file": ("chunk_file", data)})

    r = chunk(payload[:1000], 500)  # nothing started
    assert r.status_code == 409 and r.json()["code"] == 21
    assert chunk(payload[:1000], 0).json()["data"]["received"] == 1000
    r = chunk(payload[1000:], 999)  # not where the staged file ends
    assert r.status_code == 409 and "1000 bytes" in r.json()["msg"]
    assert chunk(payload[1000:], 1000).json()["data"]["received"] == len(payload)
    r = chunk(b"x", 0, "z" * 32)
    assert r.status_code == 422 and r.json()["code"] == 21
    # Another account cannot add (or even see) this staged upload.
    other_email, other_token = _account(srv)
    other = _session(srv, other_email, other_token)
    r = _post(srv, "/user/add_learnware_uploaded", other,
              json={"file_hash": md5, "semantic_specification": "{}"})
    assert r.status_code == 409 and r.json()["code"] == 21
    # The bytes are not a zip: refused as a package, nothing stored, the staged file gone.
    sem = json.dumps({"Data": {"Type": "Class", "Values": ["Table"]}})
    r = _post(srv, "/user/add_learnware_uploaded", session,
              json={"file_hash": md5, "semantic_specification": sem})
    assert r.status_code == 422 and r.json()["code"] == 41
    assert not list(srv.settings.tmp_dir.glob("bmw-*"))
    # A claimed hash the bytes do not have is refused before any reading.
    assert chunk(payload, 0).json()["code"] == 0
    wrong = hashlib.md5(b"other").hexdigest()
    chunk(payload, 0, wrong)
    r = _post(srv, "/user/add_learnware_uploaded", session,
              json={"file_hash": wrong, "semantic_specification": sem})
    assert r.status_code == 422 and "upload the file again" in r.json()["msg"]
    r = _post(srv, "/user/chunked_upload", session, data={"file_hash": md5, "chunk_begin": "0"})
    assert r.status_code == 422 and r.json()["code"] == 21  # no chunk_file part


def test_learndock_zip_through_chunks_and_back(srv: LiveServer, skops_clf_zip: Path,
                                              tmp_path: Path) -> None:
    import httpx

    email, token = _account(srv)
    session = _session(srv, email, token)
    data = skops_clf_zip.read_bytes()
    md5 = hashlib.md5(data).hexdigest()
    step = len(data) // 3 + 1
    for begin in range(0, len(data), step):
        r = _post(srv, "/user/chunked_upload", session,
                  data={"file_hash": md5, "chunk_begin": str(begin)},
                  files={"chunk_file": ("chunk_file", data[begin:begin + step])})
        assert r.json()["code"] == 0
    r = _post(srv, "/user/add_learnware_uploaded", session,
              json={"file_hash": md5, "semantic_specification": "{}"})
    assert r.status_code == 200 and r.json()["code"] == 0
    lid = r.json()["data"]["learnware_id"]
    srv.client(token).wait(lid, timeout=300)
    assert srv.dock.market.get(lid).owner == srv.dock.accounts.find_user(email).id
    for _ in range(2):  # built, then served from the cache
        r = httpx.get(f"{srv.url}/beimingwu/engine/download_learnware",
                      params={"learnware_id": lid})
        assert r.status_code == 200 and int(r.headers["content-length"]) == len(r.content)
        (tmp_path / "got.zip").write_bytes(r.content)
        with zipfile.ZipFile(tmp_path / "got.zip") as z:
            names = set(z.namelist())
            manifest = yaml.safe_load(z.read("learnware.yaml"))
        assert {"__init__.py", "learndock/learnware.yaml", "learndock/model.skops",
                "learndock_model.pkl", "stat_spec.json", "semantic_specification.json"} <= names
        assert manifest["id"] == lid
    assert srv.dock.market.get(lid).download_count == 2
    user_id = srv.dock.accounts.find_user(email).id
    assert not list(srv.settings.tmp_dir.glob(f"bmw-chunks-{user_id}-*"))
    wait_for(lambda: not list(srv.settings.tmp_dir.glob("bmw-download-*")), timeout=10)


def test_others_cannot_manage_and_unpublished_stay_private(srv: LiveServer,
                                                            skops_clf_zip: Path) -> None:
    import httpx

    email, token = _account(srv)
    api = srv.client(token)
    srv.dock.queue.stop(timeout=30)  # keep the next upload queued
    try:
        lid = api.upload(skops_clf_zip).learnware_id
        other_email, other_token = _account(srv)
        other = _session(srv, other_email, other_token)
        r = httpx.get(f"{srv.url}/beimingwu/engine/learnware_info",
                      params={"learnware_id": lid})
        assert r.status_code == 404 and r.json()["code"] == 71
        mine = _session(srv, email, token)
        r = httpx.get(f"{srv.url}/beimingwu/engine/learnware_info",
                      params={"learnware_id": lid}, headers={"Authorization": f"Bearer {mine}"})
        assert r.json()["data"]["learnware_info"]["verify_status"] == "WAITING"
        r = _post(srv, "/user/delete_learnware", other, json={"learnware_id": lid})
        assert r.status_code == 404 and r.json()["code"] == 71
    finally:
        srv.dock.queue.start()
    api.wait(lid, timeout=300)
    r = _post(srv, "/user/delete_learnware", other, json={"learnware_id": lid})
    assert r.status_code == 403 and r.json()["code"] == 31
    r = _post(srv, "/user/update_learnware", other,
              data={"learnware_id": lid, "semantic_specification": "{}"})
    assert r.status_code == 403 and r.json()["code"] == 31


# ---------------------------------------------------------------------- the wrapper, here
def _import_wrapper(root: Path):  # noqa: ANN202
    from learndock.package.compat import install_reference_shim

    install_reference_shim()  # learnware.model.BaseModel, as the reference provides it
    spec = importlib.util.spec_from_file_location(f"wrapped_{uuid.uuid4().hex}",
                                                  root / "__init__.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


@pytest.mark.parametrize("fmt", ["skops", "pickle", "onnx"])
def test_wrapped_learndock_package_predicts_as_ours(fmt: str, tmp_path: Path, digits_clf,
                                                    digits_spec, monkeypatch) -> None:
    from helpers import table_semantic
    from learndock.package import load_learnware, pack, write_package
    from learndock.server.compat.refzip import build_reference_zip

    write_package(tmp_path / "pkg", digits_clf, name="digits-lr", semantic=table_semantic(64),
                  spec=digits_spec, model_format="onnx" if fmt == "onnx" else "skops")
    pack(tmp_path / "pkg", tmp_path / "pkg.zip")
    build_reference_zip(tmp_path / "pkg.zip", "lw1", tmp_path / "ref.zip")
    with zipfile.ZipFile(tmp_path / "ref.zip") as z:
        z.extractall(tmp_path / "ref")
        names = set(z.namelist())
    manifest = yaml.safe_load((tmp_path / "ref" / "learnware.yaml").read_text())
    assert manifest["id"] == "lw1" and manifest["model"]["class_name"] == "LearndockModel"
    assert manifest["semantic_specification"] == {"file_name": "semantic_specification.json"}
    ref_spec = json.loads((tmp_path / "ref" / "stat_spec.json").read_text())
    assert ref_spec["type"] == "RKMETableSpecification"
    assert np.allclose(ref_spec["z"], digits_spec.z) and ref_spec["num_points"] == 1797
    assert ("learndock_model.pkl" in names) == (fmt != "onnx")
    X = load_digits(return_X_y=True)[0][:100] / 16.0
    with load_learnware(tmp_path / "pkg.zip") as lw:
        ours, proba = lw.predict(X), lw.predict_proba(X)
        ours_row = lw.predict(X[0])
    if fmt == "pickle":
        monkeypatch.setitem(sys.modules, "skops", None)
        monkeypatch.setitem(sys.modules, "skops.io", None)
    model = _import_wrapper(tmp_path / "ref").LearndockModel()
    assert model.runtime.loaded_with == {"skops": "skops", "pickle": "pickle",
                                         "onnx": "onnxruntime"}[fmt]
    assert model.input_shape == (64,) and model.output_shape == (1,)
    np.testing.assert_array_equal(model.predict(X), ours)
    np.testing.assert_allclose(model.predict_proba(X), proba, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(model.predict(X[0]), ours_row)  # one row, as learndock takes


def test_reference_upload_comes_back_in_its_own_layout(tmp_path: Path) -> None:
    from learndock.config import ArchiveLimits
    from learndock.market.intake import _canonicalise
    from learndock.server.compat.refzip import ReferenceZips

    if not (FIXTURES / "test_learnware.zip").is_file():
        pytest.skip(f"the reference dock's test zips are not here ({FIXTURES})")
    sem = json.loads((FIXTURES / "semantic_beimingwu.json").read_text())
    canonical = _canonicalise(FIXTURES / "test_learnware.zip", sem, ArchiveLimits(), tmp_path)
    zips = ReferenceZips(tmp_path / "cache")
    sha = hashlib.sha256(canonical.read_bytes()).hexdigest()
    first = zips.serve(canonical, sha, "abc", tmp_path / "first.zip")
    with zipfile.ZipFile(first) as z:
        assert sorted(z.namelist()) == ["__init__.py", "learnware.yaml", "requirements.txt",
                                        "semantic_specification.json", "stat.json", "svm.pkl"]
        manifest = yaml.safe_load(z.read("learnware.yaml"))
        served_sem = json.loads(z.read("semantic_specification.json"))
        with zipfile.ZipFile(FIXTURES / "test_learnware.zip") as orig:
            for name in ("__init__.py", "svm.pkl", "stat.json", "requirements.txt"):
                assert z.read(name) == orig.read(name)
    assert manifest == {
        "id": "abc",
        "model": {"class_name": "SVM", "kwargs": {}, "module_path": "__init__.py"},
        "stat_specifications": [{"module_path": "learnware.specification",
                                 "class_name": "RKMEStatSpecification", "file_name": "stat.json",
                                 "kwargs": {}}],
        "semantic_specification": {"file_name": "semantic_specification.json"}}
    assert served_sem["Input"] == sem["Input"] and served_sem["Model"]["Values"] == ["Others"]
    # Cached by package sha256: the second answer is the same bytes without a rebuild; a
    # tampered cache entry is rebuilt, not served.
    cached = next((tmp_path / "cache").glob("*.zip"))
    inode = cached.stat().st_ino
    second = zips.serve(canonical, sha, "abc", tmp_path / "second.zip")
    assert second.read_bytes() == first.read_bytes() and cached.stat().st_ino == inode
    cached.unlink()
    shutil.copyfile(first, cached)
    with open(cached, "ab") as f:
        f.write(b"tampered")
    third = zips.serve(canonical, sha, "abc", tmp_path / "third.zip")
    assert third.read_bytes() == first.read_bytes()
    assert cached.read_bytes() == first.read_bytes()  # rebuilt
    zips.forget("abc")
    assert not list((tmp_path / "cache").glob("abc-*"))
    # The cache is bounded: past its size the least recently served zips go.
    small = ReferenceZips(tmp_path / "small", max_bytes=1)
    assert small.serve(canonical, sha, "abc", tmp_path / "fourth.zip").read_bytes() == \
        first.read_bytes()
    assert not list((tmp_path / "small").glob("*.zip"))
