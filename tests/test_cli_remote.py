"""``learndock login/logout/upload/status/search/download`` against a real dock on loopback,
and the same commands on the local market when no dock is named or logged in to.

Every test runs with ``XDG_CONFIG_HOME`` (where ``login`` saves credentials) and
``LEARNDOCK_HOME`` (local market, download cache) in its own tmp dir.
"""

from __future__ import annotations

import hashlib
import json
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

import learndock.cli.market_cmd as market_cmd
from learndock.cli import client_cmd
from learndock.cli import main as cli_main
from learndock.client import AuthenticationError
from learndock.market import Market
from learndock.package import package_digest
from learndock.spec import RKMETableSpec
from server_helpers import PASSWORD, LiveServer, free_port

pytestmark = pytest.mark.integration

app = cli_main.full_app()  # every command, `reuse` included
runner = CliRunner()


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with LiveServer(tmp_path_factory.mktemp("dock") / "home", workers=1) as s:
        yield s


@pytest.fixture(autouse=True)
def _private_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("LEARNDOCK_HOME", str(tmp_path / "market"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run(*args: str, code: int = 0, input: str | None = None) -> Any:
    """Invoke ``learndock ARGS``; parse stdout as JSON when ``--json`` is among the args."""
    res = runner.invoke(app, list(args), input=input)
    assert res.exit_code == code, (f"{args} -> {res.exit_code}\nstdout: {res.stdout}\n"
                                   f"stderr: {res.stderr}\n{res.exception!r}")
    if code == 0 and "--json" in args:
        return json.loads(res.stdout)
    return res


def one_line(text: str) -> str:
    """Rich wraps long lines; compare messages with their whitespace collapsed."""
    return " ".join(text.split())


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _login(srv: LiveServer) -> tuple[str, dict]:
    _, email = srv.account()
    out = run("login", "--url", srv.url, "--email", email, "--password-stdin", "--json",
              input=PASSWORD + "\n")
    return email, out


def _user_spec(tmp_path: Path, digits, digits_spec: RKMETableSpec) -> Path:
    """A user's spec of some digits rows, built with the learnware's kernel."""
    path = tmp_path / "user.json"
    RKMETableSpec.fit(digits[0][::3], 10, kernel=digits_spec.kernel, random_state=1).save(path)
    return path


# ---------------------------------------------------------------------- login / logout
def test_login_saves_credentials_0600_and_logout_revokes_and_removes(srv: LiveServer,
                                                                     tmp_path: Path) -> None:
    email, out = _login(srv)
    path = tmp_path / "config" / "learndock" / "credentials.json"
    assert out == {"url": srv.url, "email": email, "role": "user", "kind": "login",
                   "credentials": str(path)}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    saved = json.loads(path.read_text())
    token = saved["docks"][srv.url]["token"]
    assert saved["default"] == srv.url and token.startswith("ld_")
    assert srv.client(token).me().email == email  # the saved token works

    res = run("logout")
    assert not path.exists()
    assert "logged out of" in res.stdout and "token revoked" in res.stdout
    with pytest.raises(AuthenticationError):
        srv.client(token).me()
    assert "not logged in" in run("logout").stdout


def test_login_with_an_api_token_and_a_url_given_with_the_api_suffix(srv: LiveServer,
                                                                     tmp_path: Path) -> None:
    client, email = srv.account()
    new = client.create_token("ci")
    out = run("login", "--url", srv.api + "/", "--token", "-", "--json",
              input=new.token + "\n")
    assert out["url"] == srv.url and out["email"] == email and out["kind"] == "token"
    # logout forgets a given API token here but does not revoke it on the dock
    assert run("logout", "--json") == {"url": srv.url, "logged_out": True, "revoked": False}
    assert srv.client(new.token).me().email == email


def test_bad_token_exits_1_with_a_clear_message_and_no_traceback(srv: LiveServer,
                                                                 tmp_path: Path) -> None:
    bogus = "ld_" + "x" * 43
    res = run("login", "--url", srv.url, "--token", bogus, code=1)
    msg = one_line(res.stderr)
    assert f"the dock at {srv.url} refused this token (401" in msg and "nothing was saved" in msg
    assert "Traceback" not in res.output and isinstance(res.exception, SystemExit)
    assert bogus not in res.output
    assert not (tmp_path / "config" / "learndock" / "credentials.json").exists()

    # a saved token that stops working (revoked on the dock): every remote command says so
    _, out = _login(srv)
    token = json.loads(Path(out["credentials"]).read_text())["docks"][srv.url]["token"]
    srv.client(token).logout()
    for args in (("search", "--text", "digits"), ("status", "0123456789abcdef"),
                 ("download", "0123456789abcdef")):
        res = run(*args, code=1)
        msg = one_line(res.stderr)
        assert f"the dock at {srv.url} refused the saved token (401" in msg, msg
        assert f"learndock login --url {srv.url}" in msg
        assert "Traceback" not in res.output and isinstance(res.exception, SystemExit)


def test_upload_without_login_says_to_log_in(srv: LiveServer, skops_clf_zip: Path) -> None:
    res = run("upload", str(skops_clf_zip), "--url", srv.url, code=1)
    msg = one_line(res.stderr)
    assert "needs an account for this (401" in msg and f"learndock login --url {srv.url}" in msg


def test_unreachable_dock_is_one_clear_line(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    res = run("search", "--url", url, "--text", "digits", code=1)
    msg = one_line(res.stderr)
    assert f"cannot reach the dock at {url}/api/v1" in msg and "is the dock running" in msg
    assert "Traceback" not in res.output and isinstance(res.exception, SystemExit)


def test_url_and_local_options_are_exclusive(srv: LiveServer, tmp_path: Path) -> None:
    res = run("search", "--url", srv.url, "--home", str(tmp_path / "h"), code=1)
    assert "give one or the other" in one_line(res.stderr)


# ---------------------------------------------------------------------- the round trip
def test_upload_wait_status_search_download_on_a_dock(srv: LiveServer, skops_clf_zip: Path,
                                                       skops_clf_dir: Path, tmp_path: Path,
                                                       digits, digits_spec: RKMETableSpec
                                                       ) -> None:
    _login(srv)  # then no --url: the saved login names the dock
    up = run("upload", str(skops_clf_zip), "--wait", "--json")
    lid = up["learnware_id"]
    assert (up["status"], up["state"], up["version"], up["url"]) == (
        "accepted", "published", 1, srv.url)
    assert up["report"]["ok"] is True and up["job_id"]
    assert {c["name"] for c in up["report"]["checks"]} >= {"archive", "model runs"}
    assert srv.dock.market.get(lid).current_version == 1  # it is on the dock, not local
    with Market(tmp_path / "market") as local:
        assert len(local) == 0

    st = run("status", lid, "--json")
    assert st["learnware_id"] == lid and st["state"] == "published"
    [v] = st["versions"]
    assert v["state"] == "published" and v["current"] is True and v["report"]["ok"] is True
    assert v["job"]["state"] == "done"
    text = one_line(run("status", lid).stdout)
    assert f"learnware {lid}: published" in text and "[ok] model runs" in text

    hits = run("search", "--text", "digits", "--task-type", "Classification", "--json")
    assert lid in [s["learnware_id"] for s in hits["single"]]
    assert run("search", "--text", "digits", "--task-type", "Regression",
               "--json")["single"] == []
    spec_hits = run("search", "--spec", str(_user_spec(tmp_path, digits, digits_spec)), "--json")
    assert spec_hits["single"][0]["learnware_id"] == lid
    assert 0.5 < spec_hits["single"][0]["score"] <= 1.0

    out_dir = tmp_path / "downloads"  # made by the command
    d = run("download", lid, "-o", str(out_dir), "--json")
    path = Path(d["path"])
    assert path == out_dir / f"{lid}-v1.zip" and d["version"] == 1
    assert d["sha256"] == _sha256(path) == v["package_sha256"] == up["package_sha256"]
    assert package_digest(path) == package_digest(skops_clf_zip)
    # a file name and an explicit version; the second time from the client's cache
    d2 = run("download", lid, "-o", str(tmp_path / "again.zip"), "--version", "1", "--json")
    assert d2["sha256"] == d["sha256"] and Path(d2["path"]).read_bytes() == path.read_bytes()
    assert (tmp_path / "market" / "cache" / "downloads" / f"{d['sha256']}.zip").is_file()

    # a new version of it (--learnware) from the package folder (zipped on the way), text
    # output, without --wait: queued, then published
    res = run("upload", str(skops_clf_dir), "--learnware", lid)
    assert f"learnware {lid} version 2, queued" in one_line(res.stdout)
    srv.client(json.loads(Path(client_cmd.credentials_path()).read_text())
               ["docks"][srv.url]["token"]).wait(lid, 2, timeout=120)
    versions = run("status", lid, "--json")["versions"]
    assert [v["state"] for v in versions] == ["published"] * 2
    d3 = run("download", lid, "-o", str(tmp_path / "v2.zip"), "--json")
    assert d3["version"] == 2 and package_digest(Path(d3["path"])) == package_digest(skops_clf_dir)


def test_refused_and_rejected_uploads_print_the_message_and_check_log(
        srv: LiveServer, tmp_path: Path) -> None:
    from market_helpers import wrong_labels_package

    _login(srv)
    garbage = tmp_path / "garbage.zip"
    garbage.write_bytes(b"definitely not a zip")
    res = run("upload", str(garbage), "--url", srv.url, code=1)
    msg = one_line(res.stderr)
    assert f"the dock at {srv.url} refused the upload: package rejected" in msg
    assert "[FAIL] archive" in msg and "Traceback" not in res.output

    # readable, but its model fails a check: stored, then rejected by the worker
    bad = wrong_labels_package(tmp_path)
    r = runner.invoke(app, ["upload", str(bad), "--wait", "--json"])
    assert r.exit_code == 1, r.output
    out = json.loads(r.stdout)
    assert out["state"] == "rejected" and out["stored"] is True
    failed = [c for c in out["report"]["checks"] if not c["ok"]]
    assert [c["name"] for c in failed] == ["model runs"] and "label set" in failed[0]["message"]
    res = run("upload", str(bad), "--wait", code=1)
    text = one_line(res.stdout)
    assert "[FAIL] model runs" in text and "rejected" in text


# ---------------------------------------------------------------------- the local market
def test_without_url_or_login_the_commands_act_on_the_local_market(
        skops_clf_zip: Path, tmp_path: Path, digits, digits_spec: RKMETableSpec) -> None:
    up = run("upload", str(skops_clf_zip), "--json")
    lid = up["learnware_id"]
    assert (up["status"], up["state"], up["stored"], up["url"]) == (
        "accepted", "published", True, None)
    with Market(tmp_path / "market") as m:  # LEARNDOCK_HOME
        assert m.get(lid).current_version == 1

    st = run("status", lid, "--json")
    assert st["state"] == "published" and st["versions"][0]["report"]["ok"] is True
    hits = run("search", "--text", "digits", "--json")
    assert [s["learnware_id"] for s in hits["single"]] == [lid]
    spec = str(_user_spec(tmp_path, digits, digits_spec))
    assert run("search", "--spec", spec, "--json")["single"][0]["learnware_id"] == lid
    d = run("download", lid, "--json")  # default: the current directory
    assert Path(d["path"]) == tmp_path / f"{lid}-v1.zip"
    assert d["sha256"] == _sha256(Path(d["path"])) == up["package_sha256"]

    # `market add/search/download` are the same commands (aliases), not copies
    aliases = {c.name: c.callback for c in market_cmd.market_app.registered_commands}
    assert aliases["add"] is client_cmd.upload
    assert aliases["search"] is client_cmd.search
    assert aliases["download"] is client_cmd.download
    assert run("market", "search", "--spec", spec, "--json")["single"] == run(
        "search", "--spec", spec, "--json")["single"]

    res = run("status", "0123456789abcdef", code=1)
    assert "0123456789abcdef" in one_line(res.stderr) and "Traceback" not in res.output
    res = run("upload", str(tmp_path / "missing.zip"), code=1)
    assert "missing.zip" in one_line(res.stderr) and "Traceback" not in res.output
    res = run("download", lid, "-o", str(tmp_path / "no" / "such" / "dir" / "x.zip"), code=1)
    assert "no folder" in res.stderr and "x.zip" in res.stderr and "Traceback" not in res.output


def test_local_flag_overrides_a_saved_login(srv: LiveServer, skops_clf_zip: Path,
                                            tmp_path: Path) -> None:
    _login(srv)
    up = run("upload", str(skops_clf_zip), "--local", "--json")
    assert up["url"] is None and up["state"] == "published"
    with Market(tmp_path / "market") as m:
        assert m.get(up["learnware_id"]).current_version == 1


def test_reuse_against_a_dock_downloads_into_the_cache(srv: LiveServer, skops_clf_zip: Path,
                                                       tmp_path: Path, digits) -> None:
    _login(srv)
    lid = run("upload", str(skops_clf_zip), "--wait", "--json")["learnware_id"]
    X, y = digits
    np.save(tmp_path / "user.npy", X[::4])
    out = run("reuse", "--data", str(tmp_path / "user.npy"), "-o", str(tmp_path / "p.csv"),
              "--json")
    assert out["url"] == srv.url and out["rows"] == X[::4].shape[0]
    assert out["reuser"].startswith("auto without labels")
    used = [lw["learnware_id"] for lw in out["learnwares"]]
    assert used and all(srv.dock.market.get(i).name == "digits-lr" for i in used)
    pred = np.loadtxt(tmp_path / "p.csv", delimiter=",", skiprows=1)
    assert np.mean(pred == y[::4]) > 0.9
    # the packages came through the client's download cache (SHA-256 named)
    assert list((tmp_path / "market" / "cache" / "downloads").glob("*.zip"))
    # naming the learnware skips the search
    out = run("reuse", "--data", str(tmp_path / "user.npy"), "-o", str(tmp_path / "q.csv"),
              "--learnware", lid, "--reuser", "top1", "--json")
    assert [lw["learnware_id"] for lw in out["learnwares"]] == [lid] and out["reuser"] == "top1"
