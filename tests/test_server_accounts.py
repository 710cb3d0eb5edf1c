"""Dock server: accounts, tokens, roles, rate limits, the signing key and the operator commands
-- against a real uvicorn server on loopback, through ``Client`` and raw httpx."""

from __future__ import annotations

import json
import stat
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select, update
from typer.testing import CliRunner

from learndock.cli.server_cmd import app as server_cli
from learndock.client import AuthenticationError, ConflictError, ForbiddenError
from learndock.market import schema as t
from learndock.server.errors import RateLimitedError, ValidationFailedError
from server_helpers import PASSWORD, LiveServer, error_of

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with LiveServer(tmp_path_factory.mktemp("dock") / "home", workers=0) as s:
        yield s


def _email() -> str:
    return f"a{uuid.uuid4().hex[:8]}@example.org"


def test_register_login_me_logout(srv: LiveServer) -> None:
    email = _email()
    c = srv.client()
    user = c.register(email.upper(), PASSWORD)
    assert user.email == email and user.role == "user"
    token = c.login(email, PASSWORD)
    assert token.startswith("ld_") and len(token) > 40
    me = c.me()
    assert me.id == user.id and me.last_login_at is not None
    # The raw answer of login and me never carries a password or a hash.
    with srv.http() as h:
        raw = h.post("/auth/login", json={"email": email, "password": PASSWORD})
        assert raw.status_code == 200
        text = raw.text
        assert PASSWORD not in text and "argon2" not in text and "password" not in text
    c.logout()
    with srv.http(token) as h:
        r = h.get("/me")
    assert r.status_code == 401
    assert error_of(r)["code"] == "unauthorized"
    assert "revoked" in error_of(r)["message"]


def test_passwords_are_argon2id_hashes(srv: LiveServer) -> None:
    email = _email()
    srv.client().register(email, PASSWORD)
    with srv.dock.market.engine.connect() as conn:
        stored = conn.execute(select(t.users.c.password_hash)
                              .where(t.users.c.email == email)).scalar_one()
    assert stored.startswith("$argon2id$") and PASSWORD not in stored


def test_bad_credentials_and_duplicates(srv: LiveServer) -> None:
    email = _email()
    c = srv.client()
    c.register(email, PASSWORD)
    with pytest.raises(ConflictError, match="exists"):
        c.register(email, PASSWORD)
    with pytest.raises(AuthenticationError) as wrong_pw:
        c.login(email, PASSWORD + "x")
    with pytest.raises(AuthenticationError) as no_user:
        c.login(_email(), PASSWORD)
    assert str(wrong_pw.value) == str(no_user.value)  # no hint which part was wrong
    with pytest.raises(ValidationFailedError, match="password"):
        c.register(_email(), "short")
    with pytest.raises(ValidationFailedError, match="e-mail"):
        c.register("not-an-email", PASSWORD)
    with srv.http() as h:
        r = h.post("/auth/register", json={"email": _email()})
        assert r.status_code == 422 and error_of(r)["code"] == "validation_error"
        r = h.post("/auth/register", json={"email": "a\x00b@example.org", "password": PASSWORD})
        assert r.status_code == 422
        r = h.post("/auth/login", content=b"{not json", headers={"content-type":
                                                                "application/json"})
        assert r.status_code == 422


def test_token_create_list_revoke(srv: LiveServer) -> None:
    c, _ = srv.account()
    new = c.create_token("ci", expires_in_days=7)
    assert new.token.startswith("ld_") and new.prefix == new.token[:len(new.prefix)]
    assert 6.9 * 86400 < new.expires_at - new.created_at < 7.1 * 86400
    listed = c.list_tokens()
    assert {t_.id for t_ in listed} >= {new.id}
    with srv.http(c.token) as h:
        raw = h.get("/tokens").text
    assert new.token not in raw and "token_hash" not in raw  # no secrets in listings
    ci = srv.client(new.token)
    assert ci.me().email == c.me().email
    # The database holds the SHA-256 of the secret, not the secret.
    with srv.dock.market.engine.connect() as conn:
        row = conn.execute(select(t.api_tokens).where(t.api_tokens.c.id == new.id)).mappings().one()
    assert new.token not in json.dumps(dict(row), default=str)
    c.revoke_token(new.id)
    with pytest.raises(AuthenticationError, match="revoked"):
        ci.me()
    assert new.id not in {t_.id for t_ in c.list_tokens()}
    # Someone else's token id: not found (ids cannot be probed), and it keeps working.
    other, _ = srv.account()
    theirs = other.create_token("mine")
    with pytest.raises(Exception) as exc:
        c.revoke_token(theirs.id)
    assert getattr(exc.value, "status", None) == 404
    assert srv.client(theirs.token).me().email == other.me().email


def test_expired_and_malformed_tokens_are_refused(srv: LiveServer) -> None:
    c, _ = srv.account()
    new = c.create_token("short-lived")
    assert srv.client(new.token).me()
    with srv.dock.market.engine.begin() as conn:
        conn.execute(update(t.api_tokens).where(t.api_tokens.c.id == new.id)
                     .values(expires_at=time.time() - 1))
    with pytest.raises(AuthenticationError, match="expired"):
        srv.client(new.token).me()
    for header in (f"Bearer {new.token}", "Bearer ld_" + "A" * 43, "Bearer nonsense",
                   "Basic dXNlcjpwYXNz", "Bearer", f"Token {c.token}"):
        with srv.http() as h:
            r = h.get("/me", headers={"Authorization": header})
        assert r.status_code == 401, header
        assert error_of(r)["code"] == "unauthorized"
    # A bad token is refused even on endpoints that need no account.
    with srv.http("ld_" + "B" * 43) as h:
        assert h.get("/learnwares").status_code == 401
    with srv.http() as h:
        assert h.get("/me").status_code == 401
        assert h.get("/learnwares").status_code == 200


def test_roles_and_admin_endpoints(srv: LiveServer) -> None:
    admin, _ = srv.account(admin=True)
    user, user_email = srv.account()
    with srv.http(user.token) as h:
        for method, path in (("GET", "/admin/users"), ("GET", "/admin/queue"),
                             ("GET", "/admin/stats"), ("PATCH", "/admin/users/abc")):
            r = h.request(method, path, json={"role": "admin"})
            assert r.status_code == 403, path
            assert error_of(r)["code"] == "forbidden"
    with srv.http() as h:
        assert h.get("/admin/users").status_code == 401
    with srv.http(admin.token) as h:
        users = h.get("/admin/users", params={"page_size": 500}).json()
        assert user_email in {u["email"] for u in users["items"]}
        assert "password" not in json.dumps(users)
        uid = user.me().id
        r = h.patch(f"/admin/users/{uid}", json={"role": "admin"})
        assert r.status_code == 200 and r.json()["role"] == "admin"
        assert user.me().role == "admin"  # the role is read again on every request
        r = h.patch(f"/admin/users/{uid}", json={"role": "emperor"})
        assert r.status_code == 422
        r = h.patch("/admin/users/nosuchuser", json={"role": "user"})
        assert r.status_code == 404
        stats = h.get("/admin/stats").json()
        assert stats["users"]["admin"] >= 2
        assert set(stats) >= {"learnwares_by_state", "versions_by_state", "uploads_by_day"}


def test_the_last_admin_cannot_be_demoted(tmp_path: Path) -> None:
    with LiveServer(tmp_path / "home", workers=0) as s:
        admin, _ = s.account(admin=True)
        me = admin.me()
        with s.http(admin.token) as h:
            r = h.patch(f"/admin/users/{me.id}", json={"role": "user"})
        assert r.status_code == 409 and "last admin" in error_of(r)["message"]


def test_login_and_upload_are_rate_limited(tmp_path: Path, skops_clf_zip: Path) -> None:
    with LiveServer(tmp_path / "home", workers=0, login_per_min=1, login_burst=3,
                    upload_per_min=1, upload_burst=2) as s:
        email = _email()
        s.dock.accounts.create_user(email, PASSWORD)
        c = s.client()
        for _ in range(2):
            with pytest.raises(AuthenticationError):
                c.login(email, "wrong password!")
        c.login(email, PASSWORD)  # the third try is still within the burst
        with pytest.raises(RateLimitedError) as exc:
            c.login(email, PASSWORD)
        assert exc.value.retry_after >= 1
        with s.http() as h:
            r = h.post("/auth/login", json={"email": email, "password": PASSWORD})
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        assert error_of(r)["code"] == "rate_limited"
        c.upload(skops_clf_zip)
        c.upload(skops_clf_zip)
        with pytest.raises(RateLimitedError, match="uploads"):
            c.upload(skops_clf_zip)


def test_registration_can_be_closed(tmp_path: Path) -> None:
    with LiveServer(tmp_path / "home", workers=0, allow_registration=False) as s, \
            pytest.raises(ForbiddenError, match="registration is closed"):
        s.client().register(_email(), PASSWORD)


def test_signing_key_is_created_private_and_kept(srv: LiveServer) -> None:
    key = srv.settings.resolved_home / "secret.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert len(bytes.fromhex(key.read_text().strip())) == 32
    before = key.read_text()
    from learndock.server.security import ensure_signing_key

    key.chmod(0o644)
    ensure_signing_key(srv.settings.resolved_home)
    assert key.read_text() == before and stat.S_IMODE(key.stat().st_mode) == 0o600


def test_operator_commands(srv: LiveServer, tmp_path: Path) -> None:
    home = str(srv.settings.resolved_home)
    runner = CliRunner()
    email = _email()
    r = runner.invoke(server_cli, ["users", "create", email, "--admin", "--password-stdin",
                                   "--home", home, "--json"], input=PASSWORD + "\n")
    assert r.exit_code == 0, r.output
    user = json.loads(r.output)
    assert user["role"] == "admin" and user["email"] == email and "password" not in r.output
    # The password from stdin works against the running server.
    assert srv.client().login(email, PASSWORD).startswith("ld_")
    r = runner.invoke(server_cli, ["users", "create", email, "--password-stdin", "--home", home],
                      input=PASSWORD + "\n")
    assert r.exit_code == 1 and "exists" in r.output
    r = runner.invoke(server_cli, ["tokens", "create", email, "--name", "deploy", "--home", home,
                                   "--json"])
    assert r.exit_code == 0, r.output
    tok = json.loads(r.output)
    assert tok["name"] == "deploy" and tok["token"].startswith("ld_")
    c = srv.client(tok["token"])
    assert c.me().role == "admin"
    r = runner.invoke(server_cli, ["tokens", "list", email, "--home", home, "--json"])
    assert r.exit_code == 0 and tok["id"] in r.output and tok["token"] not in r.output
    r = runner.invoke(server_cli, ["tokens", "revoke", tok["id"], "--home", home, "--json"])
    assert r.exit_code == 0 and json.loads(r.output)["revoked_at"] is not None
    with pytest.raises(AuthenticationError):
        c.me()
    r = runner.invoke(server_cli, ["tokens", "create", _email(), "--home", home])
    assert r.exit_code == 1 and "no account" in r.output
    r = runner.invoke(server_cli, ["tokens", "revoke", "nosuchtoken", "--home", home])
    assert r.exit_code == 1 and "no token" in r.output
    r = runner.invoke(server_cli, ["users", "list", "--home", home, "--json"])
    assert r.exit_code == 0 and email in r.output and "argon2" not in r.output
