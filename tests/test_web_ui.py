"""The web UI in a real browser: headless Debian Chromium (Playwright) against a real dock
server on loopback. Register, create a token, submit, watch it verify, search by spec, open the
card, download; a rejected upload and its log; the admin pages; untrusted text rendered as text;
every page screenshotted at 1280 px and 390 px with no horizontal overflow.

One server and one browser for the module (each test opens its own browser context).
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from sklearn.datasets import load_digits

from learndock.spec import RKMETableSpec
from market_helpers import digits_package, one_blas_thread, wrong_labels_package
from server_helpers import PASSWORD, LiveServer
from web_helpers import chromium_browser, shoot

pytestmark = pytest.mark.integration

TIMEOUT_MS = 120_000


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with LiveServer(tmp_path_factory.mktemp("web") / "home", workers=1) as s:
        yield s


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    yield from chromium_browser()


@pytest.fixture(scope="module")
def packages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    w = tmp_path_factory.mktemp("web-packages")
    with one_blas_thread():
        return {
            "good": digits_package(w, (0, 1, 2, 3, 4), name="digits-low",
                                   title="Digits 0-4 reader",
                                   description="Recognises handwritten digits 0 to 4."),
            "other": digits_package(w, (5, 6, 7, 8, 9), name="digits-high",
                                    title="Digits 5-9 reader",
                                    description="Recognises handwritten digits 5 to 9."),
            "wrong": wrong_labels_package(w),
            "mine-v1": digits_package(w, (2, 3), name="digits-23", title="Twos and threes"),
            "mine-v2": digits_package(w, (2, 3), name="digits-23", version="1.1.0",
                                      title="Twos and threes"),
            "hostile": digits_package(
                w, (1, 7), name="digits-17",
                title='<img src=x onerror="window.__pwned=1">seven',
                description='Ones and sevens. <script>window.__pwned = 2;</script> '
                            '<b onmouseover="window.__pwned=3">bold?</b>'),
        }


def _context(browser: Any, srv: LiveServer) -> Any:
    ctx = browser.new_context(base_url=srv.url, viewport={"width": 1280, "height": 800},
                              accept_downloads=True)
    ctx.set_default_timeout(30_000)
    return ctx


def _sign_in(page: Any, email: str, password: str = PASSWORD) -> None:
    page.goto("/login")
    page.get_by_label("E-mail address").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/me/learnwares")


def _upload(page: Any, zip_path: Path) -> str:
    """Submit a package through the form; returns the learnware id from the progress URL."""
    page.goto("/submit")
    page.get_by_label("Package zip").set_input_files(str(zip_path))
    page.get_by_role("button", name="Upload").click()
    page.wait_for_url("**/progress?version=*")
    return page.url.split("/learnwares/")[1].split("/")[0]


def _user_spec(srv: LiveServer, classes: tuple[int, ...], path: Path) -> Path:
    X, y = load_digits(return_X_y=True)
    rows = (X / 16.0)[np.isin(y, classes)][:300]
    kernel = srv.client().kernel_for(64)  # the island's kernel, as a user would fetch it
    with one_blas_thread():
        RKMETableSpec.fit(rows, 10, kernel=kernel, random_state=0).save(path)
    return path


def _assert_fits(widths: dict[str, tuple[int, int]], what: str) -> None:
    for label, (scroll, viewport) in widths.items():
        assert scroll <= viewport, f"{what} overflows horizontally at {label}: {scroll} > {viewport}"


# ---------------------------------------------------------------------- the user's journey
def test_register_token_submit_verify_search_card_download(
        srv: LiveServer, browser: Any, packages: dict[str, Path], tmp_path: Path) -> None:
    ctx = _context(browser, srv)
    page = ctx.new_page()
    email = f"dev{uuid.uuid4().hex[:8]}@example.org"

    # Register: signed in at once, on the account page.
    page.goto("/register")
    _assert_fits(shoot(page, "register"), "register")
    page.get_by_label("E-mail address").fill(email)
    page.locator("#password").fill(PASSWORD)
    page.get_by_label("Password again").fill(PASSWORD)
    page.get_by_role("button", name="Create account").click()
    page.wait_for_url("**/me")
    assert email in page.locator("main").inner_text()
    cookie = next(c for c in ctx.cookies() if c["name"] == "ld_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax" and not cookie["secure"]

    # An API token, shown once, that works against the API.
    page.goto("/me/tokens")
    page.get_by_label("Name").fill("laptop")
    page.get_by_role("button", name="Create token").click()
    secret = page.locator(".new-token pre code").first.inner_text().strip()
    assert secret.startswith("ld_")
    r = httpx.get(f"{srv.api}/me", headers={"Authorization": f"Bearer {secret}"})
    assert r.status_code == 200 and r.json()["email"] == email
    _assert_fits(shoot(page, "tokens"), "tokens")
    page.reload()
    assert secret not in page.content()  # shown once only
    assert "laptop" in page.locator("table").inner_text()

    # Submit: queued, then verified live (the page polls) to published, with the log.
    page.goto("/submit")
    _assert_fits(shoot(page, "submit"), "submit")
    lw_id = _upload(page, packages["good"])
    page.locator("#state .state-published").wait_for(timeout=TIMEOUT_MS)
    assert page.locator('[data-step="end"]').inner_text() == "published"
    log = page.locator("#log").inner_text()
    assert "model runs" in log and "✘" not in log
    _assert_fits(shoot(page, "progress"), "progress")
    info = srv.client().get(lw_id)
    assert info.current_version == 1 and info.owner is not None
    # A second learnware for the mixture and the projection (through the API, with the token).
    other = srv.client(secret).upload(packages["other"], wait=True)
    assert other.state == "published"

    # Search by spec: the spec file of digits 0-4 finds our learnware first.
    spec_path = _user_spec(srv, (0, 1, 2, 3, 4), tmp_path / "my_spec.json")
    page.goto("/search")
    page.get_by_label("Data type").select_option("Table")
    page.get_by_label("Statistical spec").set_input_files(str(spec_path))
    page.get_by_role("button", name="Search").click()
    rows = page.locator("table.results-single tbody tr")
    rows.first.wait_for()
    first = rows.first
    assert first.locator("a").get_attribute("href") == f"/learnwares/{lw_id}"
    score = float(first.locator("td").nth(2).inner_text())
    assert 0.0 < score <= 1.0
    assert page.locator(".explain li").count() >= 1
    _assert_fits(shoot(page, "search-results"), "search results")

    # The card: contract, versions with SHA-256, projection, snippet; then download.
    first.locator("a").click()
    page.wait_for_url(f"**/learnwares/{lw_id}")
    assert page.locator("h1").inner_text() == "Digits 0-4 reader"
    version = srv.client().versions(lw_id)[0]
    assert page.locator("code.hash").first.inner_text() == version.package_sha256
    assert page.locator("section:has(h2#io-h) table").first.locator("tbody tr").count() == 64
    dots = page.locator("figure.projection circle")
    assert dots.count() >= 20  # this learnware's 20 points and the other's
    assert "PC 1 (" in page.locator("figure.projection svg").text_content()
    assert f'client.load("{lw_id}")' in page.locator("section:has(h2#use-h)").inner_text()
    _assert_fits(shoot(page, "card"), "card")
    before = srv.client().get(lw_id).download_count
    with page.expect_download() as dl:
        page.get_by_role("link", name="Download the package").click()
    saved = tmp_path / "download.zip"
    dl.value.save_as(saved)
    assert hashlib.sha256(saved.read_bytes()).hexdigest() == version.package_sha256
    assert srv.client().get(lw_id).download_count == before + 1

    # My learnwares lists both; the account page; browsing finds it by a word in the URL.
    page.goto("/me/learnwares")
    assert "Digits 0-4 reader" in page.locator("table").inner_text()
    _assert_fits(shoot(page, "my-learnwares"), "my learnwares")
    page.goto("/me")
    _assert_fits(shoot(page, "account"), "account")
    page.goto("/?q=handwritten&task_type=Classification&sort=name")
    names = page.locator(".cards h3").all_inner_texts()
    hrefs = [a.get_attribute("href") for a in page.locator(".cards h3 a").all()]
    by_name = srv.client().list({"text": "handwritten", "task_type": "Classification"},
                                sort="name", page_size=12)
    assert hrefs == [f"/learnwares/{i.id}" for i in by_name.items]
    assert "Digits 0-4 reader" in names
    assert page.get_by_label("Classification").is_checked()
    ctx.close()


def test_search_with_example_spec_and_the_kernel_file(srv: LiveServer, browser: Any,
                                                      tmp_path: Path, packages: dict[str, Path],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    # its own learnwares (the tests of this module may run on different xdist workers)
    owner, _ = srv.account()
    for name in ("good", "other"):
        assert owner.upload(packages[name], wait=True).state == "published"
    ctx = _context(browser, srv)
    page = ctx.new_page()
    page.goto("/search")
    page.get_by_label("Handwritten digits 0–4").check()
    page.get_by_role("button", name="Search").click()
    page.locator("table.results-single tbody tr").first.wait_for()
    text = page.locator("section.results").inner_text()
    assert "digits-low" in text and "How this was decided" in text
    _assert_fits(shoot(page, "search-example"), "search with the example spec")
    # The island's kernel file is offered, and it is the market's kernel.
    link = page.get_by_role("link", name="kernel file").first
    r = httpx.get(srv.url + link.get_attribute("href"))
    assert r.status_code == 200
    kernel = r.json()["kernel"]
    assert kernel["gamma"] == pytest.approx(srv.client().kernel_for(64).gamma)
    assert kernel["scale"] == pytest.approx(srv.client().kernel_for(64).scale.tolist())
    # The page's Python snippet, run as given, fits a spec under exactly that kernel.
    (tmp_path / "kernel.json").write_bytes(r.content)
    code = page.get_by_role("button", name="Copy the Python code").get_attribute("data-copy")
    X, _ = load_digits(return_X_y=True)
    monkeypatch.chdir(tmp_path)
    with one_blas_thread():
        exec(code, {"X": X[:200] / 16.0})  # noqa: S102 -- the page's own snippet
    fitted = RKMETableSpec.load(tmp_path / "my_spec.json")
    assert fitted.kernel.gamma == pytest.approx(kernel["gamma"])
    ctx.close()


def test_rejected_upload_shows_its_log(srv: LiveServer, browser: Any,
                                       packages: dict[str, Path], tmp_path: Path) -> None:
    ctx = _context(browser, srv)
    page = ctx.new_page()
    _, email = srv.account()
    _sign_in(page, email)
    # Not a package at all: refused at once, on the submit page, nothing stored.
    junk = tmp_path / "junk.zip"
    junk.write_bytes(b"PK this is no zip")
    page.goto("/submit")
    page.get_by_label("Package zip").set_input_files(str(junk))
    page.get_by_role("button", name="Upload").click()
    alert = page.get_by_role("alert")
    assert "refused before storage" in alert.inner_text()
    assert "✘" in alert.inner_text()
    _assert_fits(shoot(page, "submit-refused"), "submit refused")
    # Readable but wrong: queued, then rejected by the checks, with the failing check's log.
    lw_id = _upload(page, packages["wrong"])
    page.locator("#state .state-rejected").wait_for(timeout=TIMEOUT_MS)
    log = page.locator("#log").inner_text()
    assert "✘" in log and "label" in log.lower()
    _assert_fits(shoot(page, "progress-rejected"), "rejected progress")
    # Invisible to others.
    r = httpx.get(f"{srv.url}/learnwares/{lw_id}")
    assert r.status_code == 404
    ctx.close()


def test_my_learnwares_new_version_and_delete(srv: LiveServer, browser: Any,
                                              packages: dict[str, Path]) -> None:
    owner, email = srv.account()
    first = owner.upload(packages["mine-v1"], wait=True)
    assert first.state == "published"
    ctx = _context(browser, srv)
    page = ctx.new_page()
    _sign_in(page, email)
    row = page.locator("tr", has_text="Twos and threes")
    row.get_by_role("link", name="new version").click()
    page.get_by_label("Package zip").set_input_files(str(packages["mine-v2"]))
    page.get_by_role("button", name="Upload").click()
    page.wait_for_url(f"**/learnwares/{first.learnware_id}/progress?version=2")
    page.locator("#state .state-published").wait_for(timeout=TIMEOUT_MS)
    assert srv.client().get(first.learnware_id).current_version == 2
    page.goto(f"/learnwares/{first.learnware_id}")
    assert page.locator("table.versions tbody tr").count() == 2
    # Delete, confirming the dialog.
    page.goto("/me/learnwares")
    page.once("dialog", lambda d: d.accept())
    page.get_by_role("button", name="Delete Twos and threes").click()
    page.wait_for_url("**/me/learnwares")
    assert "Deleted" in page.locator(".flash").inner_text()
    assert page.locator("tr", has_text="Twos and threes").count() == 0
    assert httpx.get(f"{srv.api}/learnwares/{first.learnware_id}").status_code == 404
    ctx.close()


def test_untrusted_text_renders_as_text(srv: LiveServer, browser: Any,
                                        packages: dict[str, Path]) -> None:
    owner, _ = srv.account()
    sub = owner.upload(packages["hostile"], wait=True)
    assert sub.state == "published"
    ctx = _context(browser, srv)
    page = ctx.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    for url in (f"/learnwares/{sub.learnware_id}", "/?q=sevens"):
        page.goto(url)
        body = page.locator("main").inner_text()
        assert "<script>window.__pwned = 2;</script>" in body
        assert '<img src=x onerror="window.__pwned=1">seven' in body
        page.locator("main").hover()
        assert page.evaluate("typeof window.__pwned") == "undefined"
        assert page.locator("main script, main img[src=x], main b[onmouseover]").count() == 0
    assert errors == []
    ctx.close()


def test_admin_users_queue_and_statistics(srv: LiveServer, browser: Any,
                                          packages: dict[str, Path]) -> None:
    _, admin_email = srv.account(admin=True)
    user, user_email = srv.account()
    # its own jobs (the tests of this module may run on different workers): one published,
    # one rejected
    assert user.upload(packages["other"], wait=True).state == "published"
    assert user.upload(packages["wrong"], wait=True).state == "rejected"
    ctx = _context(browser, srv)
    page = ctx.new_page()
    # A plain user gets no admin page.
    _sign_in(page, user_email)
    r = page.goto("/admin/users")
    assert r is not None and r.status == 403
    ctx.close()

    ctx = _context(browser, srv)
    page = ctx.new_page()
    _sign_in(page, admin_email)
    page.goto("/admin/stats")
    charts = page.locator("figure.chart")
    assert charts.count() == 6
    published = page.locator("figure.chart", has_text="Learnwares by state")
    assert "published" in published.locator("svg title").text_content()
    _assert_fits(shoot(page, "admin-stats"), "admin statistics")
    # Roles: make the user an admin, through the form.
    page.get_by_role("link", name="Users and roles").click()
    page.get_by_label(f"Role of {user_email}").select_option("admin")
    page.locator("tr", has_text=user_email).get_by_role("button", name="Save").click()
    assert f"{user_email} is now admin" in page.locator(".flash").inner_text()
    assert user.me().role == "admin"
    _assert_fits(shoot(page, "admin-users"), "admin users")
    # The queue lists the finished jobs (done, and the rejected one).
    page.goto("/admin/queue")
    assert page.locator("tbody tr").count() >= 2
    assert "done" in page.locator("tbody").inner_text()
    _assert_fits(shoot(page, "admin-queue"), "admin queue")
    # Keyboard: the first Tab reaches the skip link, which moves focus to the content.
    page.goto("/")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "main"
    ctx.close()


def test_public_pages_fit_both_widths(srv: LiveServer, browser: Any) -> None:
    ctx = _context(browser, srv)
    page = ctx.new_page()
    for name, url in (("browse", "/"), ("search", "/search"), ("login", "/login"),
                      ("not-found", "/learnwares/doesnotexist")):
        page.goto(url)
        _assert_fits(shoot(page, name), name)
    assert page.locator("h1").inner_text() == "Not found"
    ctx.close()
