"""The web UI's safety without a browser (in-process ASGI over httpx): CSRF refusals, the
security headers, session cookie flags and signing, logout revoking the session's token, no
open redirect, autoescaped untrusted text; and the projection's geometry."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from learndock.server import ServerSettings, create_app
from learndock.server.security import read_signing_key
from learndock.web import plots
from learndock.web.security import COOKIE, Session, sign, unsign
from market_helpers import digits_package, one_blas_thread
from server_helpers import FAST_ARGON2, PASSWORD
from web_helpers import csrf_of

HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>'


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    home = tmp_path_factory.mktemp("web-sec") / "home"
    yield create_app(ServerSettings(home=home, workers=0, **FAST_ARGON2))


@pytest.fixture
def client(app: object) -> Iterator[TestClient]:
    with TestClient(app, follow_redirects=False) as c:  # type: ignore[arg-type]
        yield c


def _register(c: TestClient, email: str) -> None:
    token = csrf_of(c.get("/register").text)
    r = c.post("/register", data={"csrf_token": token, "email": email, "password": PASSWORD,
                                  "password2": PASSWORD})
    assert r.status_code == 303 and r.headers["location"] == "/me", r.text


def test_pages_carry_a_strict_csp_and_no_sniffing(client: TestClient) -> None:
    for path in ("/", "/search", "/login", "/static/style.css", "/learnwares/nope"):
        r = client.get(path)
        csp = r.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp, path
        assert "unsafe-inline" not in csp and "default-src 'none'" in csp
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["x-frame-options"] == "DENY"
    html = client.get("/").text
    assert "<script src=\"/static/app.js\"" in html
    assert re.search(r"<script>|\son[a-z]+=|style=", html) is None  # nothing inline
    api = client.get("/api/v1/health")
    assert api.headers["x-content-type-options"] == "nosniff"
    assert api.status_code == 200 and api.headers["content-type"].startswith("application/json")


def test_forms_without_the_csrf_token_are_refused(client: TestClient) -> None:
    _register(client, "csrf@example.org")
    good = csrf_of(client.get("/me/tokens").text)
    for data in ({"name": "x"}, {"name": "x", "csrf_token": "forged" * 8},
                 {"name": "x", "csrf_token": ""}):
        r = client.post("/me/tokens", data=data)
        assert r.status_code == 403 and "CSRF" in r.text
    r = client.post("/me/tokens", data={"name": "ok", "csrf_token": good})
    assert r.status_code == 201 and "ld_" in r.text
    # Uploads stream their body: the token travels in the query; without it nothing is read.
    r = client.post("/submit", files={"file": ("a.zip", b"PK")})
    assert r.status_code == 403
    # Another browser's token (a different session) is no good either.
    with TestClient(client.app, follow_redirects=False) as other:  # type: ignore[arg-type]
        theirs = csrf_of(other.get("/login").text)
    assert client.post("/me/tokens", data={"name": "x", "csrf_token": theirs}).status_code == 403


def test_session_cookie_flags_signature_and_logout(app: object, tmp_path: Path) -> None:
    with TestClient(app, follow_redirects=False) as c:  # type: ignore[arg-type]
        token = csrf_of(c.get("/register").text)
        r = c.post("/register", data={"csrf_token": token, "email": "flags@example.org",
                                      "password": PASSWORD, "password2": PASSWORD})
        set_cookie = r.headers["set-cookie"]
        assert set_cookie.startswith(f"{COOKIE}=")
        assert "HttpOnly" in set_cookie and "SameSite=lax" in set_cookie
        assert "Path=/" in set_cookie and "Secure" not in set_cookie
        key = read_signing_key(app.state.dock.settings.resolved_home)  # type: ignore[attr-defined]
        session = Session.load(key, c.cookies[COOKIE])
        assert session.token and session.token.startswith("ld_")
        assert session.csrf != token  # a fresh CSRF nonce with the signed-in session
        me = c.get("/api/v1/me", headers={"Authorization": f"Bearer {session.token}"})
        assert me.status_code == 200 and me.json()["email"] == "flags@example.org"
        # A tampered cookie is not trusted: signed out.
        good = c.cookies[COOKIE]
        body, _, mac = good.rpartition(".")
        for bad in (body + "." + mac[::-1], body[:-1] + "." + mac, "x" + good):
            c.cookies.clear()
            c.cookies.set(COOKIE, bad)
            assert c.get("/me").status_code == 303
        c.cookies.clear()
        c.cookies.set(COOKIE, good)
        assert c.get("/me").status_code == 200
        # Signing out revokes the token behind the session.
        r = c.post("/logout", data={"csrf_token": session.csrf})
        assert r.status_code == 303
        me = c.get("/api/v1/me", headers={"Authorization": f"Bearer {session.token}"})
        assert me.status_code == 401
    with TestClient(app, base_url="https://testserver",  # type: ignore[arg-type]
                    follow_redirects=False) as s:
        assert "Secure" in s.get("/login").headers["set-cookie"]


def test_signing_rejects_other_keys_and_edits() -> None:
    value = sign(b"k" * 32, {"c": "n" * 40})
    assert unsign(b"k" * 32, value) == {"c": "n" * 40}
    assert unsign(b"j" * 32, value) is None
    body, _, mac = value.rpartition(".")
    assert unsign(b"k" * 32, body[:-1] + ("A" if body[-1] != "A" else "B") + "." + mac) is None
    for junk in ("", "x", "a.b", "." * 10, "é.é", "x" * 5000):
        assert unsign(b"k" * 32, junk) is None


def test_login_redirects_only_to_this_site(client: TestClient) -> None:
    _register(client, "next@example.org")
    client.post("/logout", data={"csrf_token": csrf_of(client.get("/me").text)})
    for target, expect in (("//evil.example/x", "/me/learnwares"),
                           ("https://evil.example/", "/me/learnwares"),
                           ("/\\evil.example", "/me/learnwares"), ("/search", "/search")):
        token = csrf_of(client.get("/login").text)
        r = client.post("/login", data={"csrf_token": token, "email": "next@example.org",
                                        "password": PASSWORD, "next": target})
        assert r.status_code == 303 and r.headers["location"] == expect, target
        client.post("/logout", data={"csrf_token": csrf_of(client.get("/me").text)})
    token = csrf_of(client.get("/login").text)
    r = client.post("/login", data={"csrf_token": token, "email": "next@example.org",
                                    "password": "wrong password"})
    assert r.status_code == 401 and "wrong e-mail address or password" in r.text


def test_untrusted_names_and_descriptions_are_escaped(app: object, tmp_path: Path) -> None:
    with one_blas_thread():
        z = digits_package(tmp_path, (0, 1), name="escaped", title=HOSTILE,
                           description=f"Zeros and ones {HOSTILE}")
    res = app.state.dock.market.add(z)  # type: ignore[attr-defined]
    with TestClient(app) as c:  # type: ignore[arg-type]
        for path in (f"/learnwares/{res.learnware_id}", "/?q=zeros"):
            html = c.get(path).text
            assert HOSTILE not in html and "<img src=x" not in html
            assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in html


def test_unknown_ids_are_not_found_pages(client: TestClient) -> None:
    for path in ("/learnwares/does-not-exist", "/learnwares/0000000000000000"):
        r = client.get(path)
        assert r.status_code == 404 and "<h1>Not found</h1>" in r.text


def test_projection_separates_different_data_and_keeps_dots_in_the_frame() -> None:
    rng = np.random.default_rng(0)
    own = (rng.normal(0, 1, (20, 8)), np.full(20, 1 / 20))
    near = ("near", rng.normal(0, 1, (20, 8)), np.full(20, 1 / 20))
    far = ("far", rng.normal(6, 1, (20, 8)), np.full(20, 1 / 20))
    p = plots.projection(own, [near, far], np.ones(8), "mine")
    assert p is not None and p.n_others == 2 and len(p.dots) == 60
    assert p.x_label.startswith("PC 1 (") and "% of variance" in p.x_label
    for d in p.dots:
        assert p.pad <= d.x <= p.width - p.pad and p.pad <= d.y <= p.height - p.pad
    centre = {name: np.mean([d.x for d in p.dots if d.label == name])
              for name in ("mine", "near", "far")}
    assert abs(centre["mine"] - centre["near"]) < abs(centre["mine"] - centre["far"]) / 4
    assert all(d.own == (d.label == "mine") for d in p.dots)
    assert plots.projection((np.zeros((1, 1)), np.ones(1)), [], None, "x") is None
    # One light point far away does not squeeze the frame: it is drawn on the edge, flagged.
    z = np.vstack([rng.normal(0, 1, (19, 8)), np.full((1, 8), 50.0)])
    beta = np.r_[np.full(19, 0.05), 0.001]
    q = plots.projection((z, beta), [], np.ones(8), "mine")
    assert q is not None and q.n_clipped == 1 and [d.clipped for d in q.dots].count(True) == 1
    xs = [d.x for d in q.dots if not d.clipped]
    assert max(xs) - min(xs) > 0.5 * (q.width - 2 * q.pad)


def test_uploads_stream_past_the_json_body_cap(client: TestClient) -> None:
    """A package upload is read by the API's streaming reader (capped at the upload limit),
    not buffered under the 1 MB cap of form bodies: a 2 MB non-zip is refused as a package."""
    _register(client, "big@example.org")
    page = client.get("/submit").text
    token = csrf_of(client.get("/me/tokens").text)
    assert f'action="/submit?csrf={token}"' in page
    junk = b"PK" + b"\0" * (2 * 1024 * 1024)
    r = client.post(f"/submit?csrf={token}", files={"file": ("big.zip", junk)})
    assert r.status_code == 422 and "refused before storage" in r.text
    assert r.headers["content-type"].startswith("text/html")
    r = client.post("/search", data={"csrf_token": token, "text": "x" * (2 * 1024 * 1024)})
    assert r.status_code == 413  # ordinary forms keep the cap
