"""Helpers for the web UI tests: the system Chromium through Playwright, screenshots, forms.

Playwright drives Debian's ``/usr/bin/chromium`` (never a downloaded browser). Tests that need
it call :func:`launch_chromium`, which skips with the reason when Playwright or the browser is
missing. Holds no assertions of its own.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--disable-quic", "--no-first-run"]
#: Where screenshots go: a scratch folder by default, so a test run never rewrites tracked
#: files; ``LEARNDOCK_SCREENSHOTS=docs/screenshots`` refreshes the documented ones.
SCREENSHOTS = Path(os.environ.get("LEARNDOCK_SCREENSHOTS")
                   or Path(tempfile.gettempdir()) / "learndock-screenshots")
WIDTHS = {"desktop": (1280, 800), "phone": (390, 844)}
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def launch_chromium() -> tuple[Any, Any]:
    """(playwright, browser), or skip the test with the reason."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install -e '.[test]')")
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium; .ci/run installs it)")
    pw = sync_playwright().start()
    try:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
    except Exception:
        pw.stop()
        raise
    return pw, browser


def chromium_browser() -> Iterator[Any]:
    """A headless Chromium for a module's tests (yield it from a module-scoped fixture)."""
    pw, browser = launch_chromium()
    try:
        yield browser
    finally:
        browser.close()
        pw.stop()


def csrf_of(html: str) -> str:
    m = _CSRF.search(html)
    if m is None:
        raise LookupError("no csrf_token field on this page")
    return m.group(1)


def page_width(page: Any) -> tuple[int, int]:
    """(document scroll width, viewport width) of the page as laid out now."""
    return page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")


def shoot(page: Any, name: str) -> dict[str, tuple[int, int]]:
    """Screenshots of the current page at every width in :data:`WIDTHS` into :data:`SCREENSHOTS`
    (``<name>-desktop.png``, ``<name>-phone.png``); returns each width's (scroll, viewport)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    widths = {}
    for label, (w, h) in WIDTHS.items():
        page.set_viewport_size({"width": w, "height": h})
        page.wait_for_timeout(50)  # one layout pass after the resize
        widths[label] = page_width(page)
        page.screenshot(path=str(SCREENSHOTS / f"{name}-{label}.png"), full_page=True,
                        animations="disabled", caret="initial")
    page.set_viewport_size({"width": WIDTHS["desktop"][0], "height": WIDTHS["desktop"][1]})
    return widths
