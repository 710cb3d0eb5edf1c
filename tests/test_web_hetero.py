"""The web search page shows learnwares of other feature spaces (issue #17) in their own
section, with the verdict and how many columns were bridged -- headless Chromium against a real
dock; the spec file carries its column descriptions (``learndock spec table``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hetero_helpers import two_island_dock, user_data, user_spec
from learndock.spec.table import with_columns
from server_helpers import LiveServer
from web_helpers import chromium_browser, shoot

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    yield from two_island_dock(tmp_path_factory.mktemp("web-hetero"))


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    yield from chromium_browser()


def test_search_page_shows_cross_island_section(srv: LiveServer, browser: Any,
                                                tmp_path: Path) -> None:
    _, names, descs = user_data()
    spec_path = tmp_path / "my_spec.json"
    with_columns(user_spec(), names, descs).save(spec_path)
    plain = tmp_path / "plain_spec.json"
    user_spec().save(plain)
    ctx = browser.new_context(base_url=srv.url, viewport={"width": 1280, "height": 800})
    ctx.set_default_timeout(30_000)
    page = ctx.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto("/search")
    page.get_by_label("Statistical spec").set_input_files(str(spec_path))
    page.get_by_label("What you want predicted").fill(
        "disease progression one year after baseline")
    page.get_by_role("button", name="Search").click()
    rows = page.locator("table.results-cross tbody tr")
    rows.first.wait_for()
    assert page.get_by_role("heading", name="From other feature spaces").is_visible()
    assert rows.count() == 2
    texts = [rows.nth(i).inner_text() for i in range(2)]
    assert "dia-b" in texts[0] and "4 of 7" in texts[0] and "good match" in texts[0]
    assert "dia-a" in texts[1] and "3 of 7" in texts[1]
    score = float(rows.first.locator("td").nth(2).inner_text())
    assert 0 < score <= 1
    assert rows.first.locator("a").get_attribute("href").startswith("/learnwares/")
    assert "map version 1" in page.locator("section.results").inner_text()
    assert any("cross-island" in li for li in page.locator(".explain li").all_inner_texts())
    widths = shoot(page, "search-cross-island")
    assert all(scroll <= view for scroll, view in widths.values()), widths
    assert not [e for e in errors if "Content Security Policy" in e], errors
    # A spec without column descriptions: no such section.
    page.goto("/search")
    page.get_by_label("Statistical spec").set_input_files(str(plain))
    page.get_by_role("button", name="Search").click()
    page.locator("section.results").wait_for()
    assert page.locator("table.results-cross").count() == 0
    ctx.close()
